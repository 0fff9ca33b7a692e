package agentcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestEnrollCommand enrolls through the command line against a real server.
func TestEnrollCommand(t *testing.T) {
	s := servertest.Start(t, nil)
	toks, err := s.Registry().CreateEnrollmentTokens(context.Background(), registry.TokenSpec{Count: 1, DeviceID: "pump-3"}, "test")
	require.NoError(t, err)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, s.CA().PEM, 0o644))
	_, port, _ := net.SplitHostPort(s.HTTPAddr().String())
	dir := t.TempDir()

	var out, errb bytes.Buffer
	code := Main([]string{"enroll", "--server", "https://localhost:" + port, "--ca", caFile, "--token", toks[0], "--dir", dir}, &out, &errb)
	require.Zero(t, code, errb.String())
	require.Contains(t, out.String(), "enrolled as pump-3")
	_, err = tls.LoadX509KeyPair(filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key"))
	require.NoError(t, err)

	// The token is spent; missing flags are usage errors.
	errb.Reset()
	code = Main([]string{"enroll", "--server", "https://localhost:" + port, "--ca", caFile, "--token", toks[0], "--dir", t.TempDir()}, &out, &errb)
	require.Equal(t, 1, code)
	require.Contains(t, errb.String(), "already used")
	errb.Reset()
	code = Main([]string{"enroll", "--ca", caFile, "--token", "x"}, &out, &errb)
	require.Equal(t, 2, code)
	require.True(t, strings.Contains(errb.String(), "--server is required"), errb.String())
}
