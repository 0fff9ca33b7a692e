package millwrightcli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestTokensListAndRevoke: created tokens are listed by ID with their state, never their
// secret; an unused token is revoked by its ID or by the token itself and is gone; a used one
// is refused, as the record of its enrollment; a viewer may not list them.
func TestTokensListAndRevoke(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	var created apitypes.TokensCreated
	decodeStrict(t, cli.ok("tokens", "create", "--count", "3", "--model", "gw-200", "--tag", "site=north", "-o", "json"), &created)
	require.Len(t, created.IDs, 3)

	var listed []apitypes.EnrollmentToken
	decodeStrict(t, cli.ok("tokens", "list", "-o", "json"), &listed)
	require.Len(t, listed, 3)
	require.ElementsMatch(t, created.IDs, []string{listed[0].ID, listed[1].ID, listed[2].ID})
	require.Equal(t, "unused", listed[0].State)
	require.Equal(t, map[string]string{"site": "north"}, listed[0].Tags)
	table := cli.ok("tokens", "list")
	require.Contains(t, table, created.IDs[0])
	for _, tok := range created.Tokens {
		require.NotContains(t, table, tok, "a token's secret is shown once, at creation")
	}

	// The third token enrolls a device.
	_, _, err := srv.Registry().Enroll(context.Background(), created.Tokens[2], "gw-200", "127.0.0.1:1", selfSigned)
	require.NoError(t, err)

	require.Equal(t, "revoked "+created.IDs[0]+"\nrevoked "+created.IDs[1]+"\n", cli.ok("tokens", "revoke", created.IDs[0], created.Tokens[1]))
	decodeStrict(t, cli.ok("tokens", "list", "-o", "json"), &listed)
	require.Empty(t, listed, "revoked and used tokens are not usable")
	decodeStrict(t, cli.ok("tokens", "list", "--all", "-o", "json"), &listed)
	require.Len(t, listed, 1)
	require.Equal(t, "used", listed[0].State)
	require.NotEmpty(t, listed[0].UsedBy)

	code, _, stderr := cli.run("", "tokens", "revoke", created.IDs[2])
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "it enrolled a device")
	code, _, stderr = cli.run("", "tokens", "revoke", "nosuchtoken")
	require.Equal(t, 1, code)
	require.True(t, strings.Contains(stderr, "not found"), stderr)
	_, _, err = srv.Registry().Enroll(context.Background(), created.Tokens[0], "gw-200", "127.0.0.1:1", selfSigned)
	require.Error(t, err, "a revoked token enrolls nothing")

	// The audit log says who revoked them.
	var entries []apitypes.AuditEntry
	decodeStrict(t, cli.ok("audit", "--limit", "2", "-o", "json"), &entries)
	require.Len(t, entries, 2)
	require.Equal(t, "token.delete", entries[0].Action)
	require.Equal(t, created.IDs[1], entries[0].Target)
	require.Equal(t, "admin", entries[0].Actor)
	out := cli.ok("audit", "--limit", "2")
	require.Contains(t, out, "token.delete")
	require.Regexp(t, `more: --before \d+`, out)
	code, _, stderr = cli.run("", "audit", "--limit", "0")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "--limit 0")
}

// selfSigned issues a throwaway certificate for deviceID, as an enrollment's issuer would.
func selfSigned(deviceID string) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: deviceID},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
