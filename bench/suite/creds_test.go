package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
)

func TestIssue(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	require.NoError(t, err)
	certs, err := issue(ca, "t-", 5)
	require.NoError(t, err)
	require.Equal(t, "t-00003", certs[3].Leaf.Subject.CommonName)
	for i := range certs {
		require.Equal(t, deviceID("t-", i), certs[i].Leaf.Subject.CommonName)
		require.NoError(t, certs[i].Leaf.CheckSignatureFrom(ca.Cert))
	}
}
