package main

import (
	"context"
	"crypto/tls"
	"fmt"
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
	_, err = reg.AddCertificates(ctx, dcs, "bench", "")
	return err
}
