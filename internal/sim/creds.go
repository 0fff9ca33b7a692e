package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/millwright/millwright/agent/estclient"
	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/internal/pki"
)

// credsHeader is the PEM header naming the simulated device a block belongs to.
const credsHeader = "Sim-Device"

// credsFile is the credentials file of an ID prefix inside the credentials directory.
func credsFile(dir, prefix string) string { return filepath.Join(dir, prefix+".pem") }

// parseCreds reads a credentials file: for each device, a CERTIFICATE block and then its
// PRIVATE KEY block, both with a Sim-Device header naming the device's local name
// (<prefix>-<n>). The certificate's common name is the device ID.
func parseCreds(data []byte) (map[string]tls.Certificate, error) {
	out := map[string]tls.Certificate{}
	var certDER []byte
	var certName string
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		name := b.Headers[credsHeader]
		if name == "" {
			return nil, fmt.Errorf("block %d (%s): no %s header", n, b.Type, credsHeader)
		}
		switch b.Type {
		case "CERTIFICATE":
			certDER, certName = b.Bytes, name
		case "PRIVATE KEY":
			if certDER == nil || certName != name {
				return nil, fmt.Errorf("block %d: key of %s without its certificate before it", n, name)
			}
			pair, err := tls.X509KeyPair(
				pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
				pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b.Bytes}))
			if err != nil {
				return nil, fmt.Errorf("block %d: credentials of %s: %w", n, name, err)
			}
			out[name] = pair
			certDER = nil
		default:
			return nil, fmt.Errorf("block %d: unexpected PEM block %q", n, b.Type)
		}
	}
	if certDER != nil {
		return nil, fmt.Errorf("certificate of %s without its key", certName)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	return out, nil
}

// encodeCreds writes credentials in the order of names.
func encodeCreds(names []string, creds map[string]tls.Certificate) ([]byte, error) {
	var buf bytes.Buffer
	for _, name := range names {
		pair, ok := creds[name]
		if !ok {
			continue
		}
		key, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("encode key of %s: %w", name, err)
		}
		h := map[string]string{credsHeader: name}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Headers: h, Bytes: pair.Certificate[0]})
		_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Headers: h, Bytes: key})
	}
	return buf.Bytes(), nil
}

// loadCreds reads the credentials file; a missing one is empty.
func loadCreds(path string) (map[string]tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]tls.Certificate{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	c, err := parseCreds(data)
	if err != nil {
		return nil, fmt.Errorf("read credentials %s: %w (delete the file to start afresh)", path, err)
	}
	return c, nil
}

func saveCreds(path string, names []string, creds map[string]tls.Certificate) error {
	data, err := encodeCreds(names, creds)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create credentials directory: %w", err)
	}
	return atomicfile.Write(path, data, 0o600)
}

// usable reports whether a stored certificate can be used again: it chains to roots, names
// the device expected (want "" for any: enrolled devices get their ID from the server), and
// stays valid until after the run.
func usable(pair tls.Certificate, roots *x509.CertPool, want string, until time.Time) bool {
	leaf := pair.Leaf
	if leaf == nil {
		return false
	}
	if want != "" && leaf.Subject.CommonName != want {
		return false
	}
	if !until.Before(leaf.NotAfter) {
		return false
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// provision is what getting the devices' credentials did.
type provision struct {
	Reused, Issued, Enrolled, Registered int
	Took                                 time.Duration
}

// devCertValidity is the lifetime of the certificates the simulator issues itself.
const devCertValidity = 365 * 24 * time.Hour

// provisionDev issues certificates from the development CA for the devices that have no
// usable one in the credentials file, stores them, and registers every device's certificate
// with reg (none when reg is nil). It returns the certificates in the order of names.
func provisionDev(ctx context.Context, ca *pki.CA, reg Registrar, path string, names []string, until time.Time) ([]tls.Certificate, provision, error) {
	start := time.Now()
	var p provision
	creds, err := loadCreds(path)
	if err != nil {
		return nil, p, err
	}
	roots := ca.Pool()
	var missing []string
	for _, n := range names {
		if c, ok := creds[n]; ok && usable(c, roots, n, until) {
			p.Reused++
			continue
		}
		missing = append(missing, n)
	}
	issued, err := parallel(ctx, missing, func(name string) (tls.Certificate, error) {
		pair, err := ca.DeviceKeyPair(name, time.Now(), devCertValidity)
		if err != nil {
			return pair, fmt.Errorf("issue certificate for %s: %w", name, err)
		}
		return pair, nil
	})
	if err != nil {
		return nil, p, err
	}
	for i, n := range missing {
		creds[n] = issued[i]
	}
	p.Issued = len(missing)
	if p.Issued > 0 {
		if err := saveCreds(path, names, creds); err != nil {
			return nil, p, err
		}
	}
	out := make([]tls.Certificate, len(names))
	leaves := make([]*x509.Certificate, len(names))
	for i, n := range names {
		out[i] = creds[n]
		leaves[i] = out[i].Leaf
	}
	if reg != nil {
		if p.Registered, err = reg.RegisterCertificates(ctx, leaves); err != nil {
			return nil, p, fmt.Errorf("register devices: %w", err)
		}
	}
	p.Took = time.Since(start)
	return out, p, nil
}

// provisionEnroll enrolls, over EST with one token each, the devices that have no usable
// certificate in the credentials file: device i uses the i-th token and states models[i] as
// its hardware model (a token may require one). Enrolled devices are saved at once, so a
// failure part way loses no spent token.
func provisionEnroll(ctx context.Context, c *estclient.Client, tokens tokenList, models []string, path string, names []string, until time.Time) ([]tls.Certificate, provision, error) {
	start := time.Now()
	var p provision
	creds, err := loadCreds(path)
	if err != nil {
		return nil, p, err
	}
	var missing []string
	idx := map[string]int{} // device name -> its index in names
	for i, n := range names {
		if cr, ok := creds[n]; ok && usable(cr, c.Roots, "", until) {
			p.Reused++
			continue
		}
		if i >= len(tokens.tokens) {
			return nil, p, cfgErr("--token-file", "device %s needs an enrollment token, but %s holds only %d (one per device, device n taking the n-th)",
				n, tokens.source, len(tokens.tokens))
		}
		missing = append(missing, n)
		idx[n] = i
	}
	enrolled, err := parallel(ctx, missing, func(name string) (tls.Certificate, error) {
		i := idx[name]
		key, err := estclient.NewKey()
		if err != nil {
			return tls.Certificate{}, err
		}
		dc := *c
		dc.Model = models[i]
		cert, err := dc.Enroll(ctx, tokens.tokens[i].value, key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("enroll %s with %s: %w", name, tokens.tokens[i].where, err)
		}
		return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
	})
	for i, n := range missing {
		if enrolled[i].Leaf != nil {
			creds[n] = enrolled[i]
			p.Enrolled++
		}
	}
	if p.Enrolled > 0 {
		if serr := saveCreds(path, names, creds); serr != nil {
			return nil, p, errors.Join(err, serr)
		}
	}
	if err != nil {
		return nil, p, err
	}
	out := make([]tls.Certificate, len(names))
	for i, n := range names {
		out[i] = creds[n]
	}
	p.Took = time.Since(start)
	return out, p, nil
}

// parallel runs fn over items on every core and returns the results in order; the first
// error stops the work (results of items done so far are kept).
func parallel(ctx context.Context, items []string, fn func(string) (tls.Certificate, error)) ([]tls.Certificate, error) {
	out := make([]tls.Certificate, len(items))
	work := make(chan int)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range min(len(items), 2*runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for i := range work {
				r, err := fn(items[i])
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					out[i] = r
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range items {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return out, first
}
