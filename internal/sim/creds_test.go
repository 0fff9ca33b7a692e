package sim

import (
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
)

func TestCredsRoundTrip(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	require.NoError(t, err)
	creds := map[string]tls.Certificate{}
	names := []string{"sim-1", "sim-2", "sim-3"}
	for _, n := range names {
		creds[n], err = ca.DeviceKeyPair(n, time.Now(), time.Hour)
		require.NoError(t, err)
	}
	path := filepath.Join(t.TempDir(), "sim.pem")
	require.NoError(t, saveCreds(path, names, creds))
	back, err := loadCreds(path)
	require.NoError(t, err)
	require.Len(t, back, 3)
	for _, n := range names {
		require.Equal(t, creds[n].Certificate, back[n].Certificate)
		require.True(t, usable(back[n], ca.Pool(), n, time.Now().Add(time.Minute)))
	}
	require.False(t, usable(back["sim-1"], ca.Pool(), "sim-2", time.Now()), "another device's certificate")
	require.False(t, usable(back["sim-1"], ca.Pool(), "sim-1", time.Now().Add(2*time.Hour)), "expires during the run")
	other, err := pki.NewCA("other", time.Now())
	require.NoError(t, err)
	require.False(t, usable(back["sim-1"], other.Pool(), "sim-1", time.Now()), "from another CA")

	missing, err := loadCreds(filepath.Join(t.TempDir(), "none.pem"))
	require.NoError(t, err)
	require.Empty(t, missing)
	_, err = parseCreds([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	require.ErrorContains(t, err, "no Sim-Device header")
}

func FuzzParseCreds(f *testing.F) {
	ca, err := pki.NewCA("test", time.Now())
	require.NoError(f, err)
	pair, err := ca.DeviceKeyPair("sim-1", time.Now(), time.Hour)
	require.NoError(f, err)
	data, err := encodeCreds([]string{"sim-1"}, map[string]tls.Certificate{"sim-1": pair})
	require.NoError(f, err)
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add([]byte("not pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		creds, err := parseCreds(data)
		if err != nil {
			return
		}
		for name, c := range creds {
			require.NotEmpty(t, name)
			require.NotNil(t, c.Leaf)
			require.NotNil(t, c.PrivateKey)
		}
	})
}
