package api

import (
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
)

// FuzzParseCertificatePEM: any entry of a POST /api/v1/certificates body parses to one
// certificate or is refused with an error — no panic.
func FuzzParseCertificatePEM(f *testing.F) {
	ca, err := pki.NewCA("fuzz", time.Now())
	require.NoError(f, err)
	pair, err := ca.DeviceKeyPair("d1", time.Now(), time.Hour)
	require.NoError(f, err)
	one := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Certificate[0]}))
	for _, s := range []string{one, one + one, "", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		strings.Replace(one, "CERTIFICATE", "PRIVATE KEY", 2), one[:len(one)/2]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCertificatePEM(s)
		require.Equal(t, err == nil, c != nil)
	})
}
