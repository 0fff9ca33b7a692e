package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
)

func TestCredsRoundTrip(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	require.NoError(t, err)
	certs, err := issue(ca, "t-", 5)
	require.NoError(t, err)
	require.Equal(t, "t-00003", certs[3].Leaf.Subject.CommonName)
	path := filepath.Join(t.TempDir(), "creds.pem")
	require.NoError(t, writeCreds(path, certs))
	back, err := readCreds(path)
	require.NoError(t, err)
	require.Len(t, back, 5)
	for i := range certs {
		require.Equal(t, certs[i].Certificate[0], back[i].Certificate[0])
		require.Equal(t, certs[i].PrivateKey, back[i].PrivateKey)
	}
}
