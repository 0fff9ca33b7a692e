package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/millwright/millwright/protocol"
)

// credentials hands out the device certificate, re-reading the files when
// they change, so a rotated certificate is used from the next connection on
// without a restart.
type credentials struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	size    int64
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls.cert_file %s and tls.key_file %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse tls.cert_file %s: %w", certFile, err)
		}
	}
	return &pair, nil
}

// get returns the current certificate, reloading it when the certificate
// file changed. A reload that fails keeps the previous certificate.
func (c *credentials) get() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.certFile == "" {
		return c.cert, nil
	}
	st, err := os.Stat(c.certFile)
	if err == nil && c.cert != nil && st.ModTime().Equal(c.modTime) && st.Size() == c.size {
		return c.cert, nil
	}
	pair, lerr := loadKeyPair(c.certFile, c.keyFile)
	if lerr != nil {
		if c.cert != nil {
			return c.cert, nil
		}
		return nil, lerr
	}
	c.cert = pair
	if err == nil {
		c.modTime, c.size = st.ModTime(), st.Size()
	}
	return c.cert, nil
}

// deviceFromCert returns the device ID the certificate names (its CN).
func deviceFromCert(cert *tls.Certificate) (string, error) {
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return "", fmt.Errorf("parse device certificate: %w", err)
		}
	}
	cn := leaf.Subject.CommonName
	if err := protocol.ValidateDeviceID(cn); err != nil {
		return "", fmt.Errorf("device certificate common name: %w", err)
	}
	return cn, nil
}

// buildTLS loads the credentials and returns the client TLS configuration
// and the device ID.
func buildTLS(cfg Config, opts Options) (*tls.Config, string, error) {
	creds := &credentials{}
	switch {
	case opts.Certificate != nil:
		creds.cert = opts.Certificate
	case cfg.TLS.CertFile == "":
		return nil, "", configErr("tls.cert_file", "required: the device certificate (and tls.key_file)")
	default:
		creds.certFile, creds.keyFile = cfg.TLS.CertFile, cfg.TLS.KeyFile
		if _, err := creds.get(); err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	cert, _ := creds.get()
	cn, err := deviceFromCert(cert)
	if err != nil {
		return nil, "", configErr("tls.cert_file", "%v", err)
	}
	device := cn
	if cfg.DeviceID != "" && cfg.DeviceID != cn {
		return nil, "", configErr("device_id", "%q differs from the certificate's common name %q; the server authenticates the certificate", cfg.DeviceID, cn)
	}

	roots := opts.RootCAs
	if roots == nil && cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, "", configErr("tls.ca_file", "%v", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, "", configErr("tls.ca_file", "%s holds no PEM certificate", cfg.TLS.CAFile)
		}
	}
	serverName := cfg.TLS.ServerName
	if serverName == "" {
		serverName = hostName(device, cfg.Uplink.Zone)
	}
	tc := &tls.Config{
		RootCAs:    roots,
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return creds.get()
		},
	}
	return tc, device, nil
}

// hostName is the DNS name of the device's gateway, <device-id>.<zone>.
func hostName(device, zone string) string {
	z := zone
	if len(z) > 0 && z[len(z)-1] == '.' {
		z = z[:len(z)-1]
	}
	return device + "." + z
}

// endpoint is where the agent connects: always by DNS name, except for the
// development override.
func endpoint(cfg UplinkConfig, device string, port int) string {
	if cfg.DevAddress != "" {
		return cfg.DevAddress
	}
	return net.JoinHostPort(hostName(device, cfg.Zone), strconv.Itoa(port))
}
