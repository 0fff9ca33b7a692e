package registry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/millwright/millwright/internal/registry"
)

// Example enrolls a device with a single-use token on the embedded SQLite backend.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "registry-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	r, err := registry.Open(ctx, "", dir, nil) // "" = SQLite in dir/registry.db
	if err != nil {
		panic(err)
	}
	defer r.Close()

	// An operator creates a token for a known device ID, restricted to one hardware model.
	tokens, err := r.CreateEnrollmentTokens(ctx, registry.TokenSpec{
		TTL: time.Hour, Model: "mx-100", DeviceID: "pump-17", Tags: map[string]string{"site": "berlin"},
	}, "o-admin")
	if err != nil {
		panic(err)
	}

	// The EST endpoint enrolls the device; issue signs its certificate (self-signed here).
	issue := func(id string) (*x509.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: id},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	dev, cert, err := r.Enroll(ctx, tokens[0], "mx-100", "192.0.2.1:50123", issue)
	if err != nil {
		panic(err)
	}
	fmt.Println(dev.ID, dev.Status, dev.Tags["site"], cert.Subject.CommonName, registry.SerialHex(cert))

	// The token is spent.
	_, _, err = r.Enroll(ctx, tokens[0], "mx-100", "192.0.2.1:50123", issue)
	fmt.Println(errors.Is(err, registry.ErrTokenUsed))
	// Output:
	// pump-17 active berlin pump-17 2a
	// true
}
