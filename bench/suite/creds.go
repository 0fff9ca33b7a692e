package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
)

// issue makes a key and certificate for each of n devices named prefix00000…, on both cores.
func issue(ca *pki.CA, prefix string, n int) ([]tls.Certificate, error) {
	out := make([]tls.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				out[i], errs[i] = ca.DeviceKeyPair(deviceID(prefix, i), time.Now(), 7*24*time.Hour)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
	}
	return out, nil
}

// register records the certificates in the server's registry (SQLite in its data directory),
// as enrollment would, so that the server admits the devices.
func register(dataDir, prefix string, certs []tls.Certificate) error {
	ctx := context.Background()
	reg, err := registry.Open(ctx, "", dataDir, nil)
	if err != nil {
		return err
	}
	defer reg.Close()
	dcs := make([]registry.DeviceCertificate, len(certs))
	for i, c := range certs {
		dcs[i] = registry.DeviceCertificate{DeviceID: deviceID(prefix, i), Cert: c.Leaf}
	}
	_, err = reg.AddCertificates(ctx, dcs)
	return err
}

// writeCreds stores key pairs as PEM (certificate, then key, per device) for a child process.
func writeCreds(path string, certs []tls.Certificate) error {
	var b bytes.Buffer
	for _, c := range certs {
		key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			return err
		}
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
		_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: key})
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

func readCreds(path string) ([]tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []tls.Certificate
	for {
		var cb, kb *pem.Block
		cb, data = pem.Decode(data)
		if cb == nil {
			return out, nil
		}
		kb, data = pem.Decode(data)
		if kb == nil {
			return nil, fmt.Errorf("%s: certificate %d without its key", path, len(out))
		}
		pair, err := tls.X509KeyPair(pem.EncodeToMemory(cb), pem.EncodeToMemory(kb))
		if err != nil {
			return nil, fmt.Errorf("%s: pair %d: %w", path, len(out), err)
		}
		out = append(out, pair)
	}
}
