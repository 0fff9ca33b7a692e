package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
)

// TestInsecureListenerOnlyForDevelopment: the plain listener, where a client ID alone names
// a device, starts only with the development CA the server made and on a loopback address.
func TestInsecureListenerOnlyForDevelopment(t *testing.T) {
	opCA, err := pki.NewCA("Acme Plant Devices CA", time.Now())
	require.NoError(t, err)
	caDir := t.TempDir()
	keyPEM, err := pki.EncodeKey(opCA.Key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(caDir, "ca.pem"), opCA.PEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(caDir, "ca.key"), keyPEM, 0o600))
	cases := []struct {
		name, addr string
		operatorCA bool
		want       string
	}{
		{"operator CA", "127.0.0.1:0", true, "needs the development CA"},
		{"all interfaces", ":0", false, "binds a loopback address only"},
		{"unspecified address", "0.0.0.0:0", false, "binds a loopback address only"},
		{"a routable address", "192.0.2.1:0", false, "binds a loopback address only"},
		{"loopback", "127.0.0.1:0", false, ""},
		{"IPv6 loopback", "[::1]:0", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := server.DefaultOptions()
			opts.DataDir = t.TempDir()
			opts.MQTT.Listen, opts.HTTPListen, opts.MQTT.InsecureListen = "127.0.0.1:0", "127.0.0.1:0", tc.addr
			if tc.operatorCA {
				opts.CACert, opts.CAKey = filepath.Join(caDir, "ca.pem"), filepath.Join(caDir, "ca.key")
			}
			var logs bytes.Buffer
			srv, err := server.New(opts, clock.Real(), slog.New(slog.NewTextHandler(&logs, nil)))
			if tc.want != "" {
				require.ErrorContains(t, err, tc.want)
				require.ErrorContains(t, err, "--insecure-mqtt-listen")
				return
			}
			require.NoError(t, err)
			require.NotNil(t, srv.InsecureMQTTAddr())
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.NoError(t, srv.Run(ctx))
			require.Contains(t, logs.String(), "INSECURE development listener")
		})
	}
}

// TestServerRunsWithOperatorGOGC: with GOGC set by the operator the collector is not paced, and
// the server runs all the same (its pacer part waits instead of ending and stopping the rest).
func TestServerRunsWithOperatorGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	s := startServer(t, nil)
	mustConnect(t, s, "gogc-1")
	code, _ := s.get(t, "/api/v1/query", url.Values{"query": {"up"}})
	require.Equal(t, http.StatusOK, code)
}
