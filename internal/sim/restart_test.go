package sim_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/internal/sim"
)

// registryRegistrar registers the simulator's certificates in the server's registry
// directly, as the command line's API client does through the API.
type registryRegistrar struct{ srv *server.Server }

func (r registryRegistrar) RegisterCertificates(ctx context.Context, certs []*x509.Certificate) (int, error) {
	for _, c := range certs {
		if err := r.srv.Registry().AddCertificate(ctx, c.Subject.CommonName, c, true); err != nil {
			return 0, err
		}
	}
	return len(certs), nil
}

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSimulatedDeviceRestarts: a simulated device told agent.restart answers it, and the
// simulator starts a new agent for it in the process, which answers the next command.
func TestSimulatedDeviceRestarts(t *testing.T) {
	srv := servertest.Start(t, nil)
	_, port, _ := net.SplitHostPort(srv.MQTTAddr().String())
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		s   *sim.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := sim.Run(ctx, sim.Config{Server: "localhost:" + port, DataDir: srv.DataDir(), Registrar: registryRegistrar{srv},
			Devices: 1, IDPrefix: "simr", SpoolDir: t.TempDir(), Seed: 1, DrainTimeout: time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		done <- result{s, err}
	}()
	send := func(name string) apitypes.Command {
		b, _ := json.Marshal(apitypes.CommandRequest{Name: name, Wait: "30s"})
		req, err := http.NewRequest(http.MethodPost, "https://"+srv.HTTPAddr().String()+"/api/v1/devices/simr-1/commands", bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool(), ServerName: "localhost"}}}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var env apitypes.Response[apitypes.Command]
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
		require.Equal(t, http.StatusOK, resp.StatusCode, env.Error)
		return env.Data
	}
	// The device exists once the simulator registered it.
	require.Eventually(t, func() bool {
		_, err := srv.Registry().Device(context.Background(), "simr-1")
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	c := send("agent.restart")
	require.Equal(t, "succeeded", c.State, "%+v", c)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "agent restarted, as the server asked") }, 30*time.Second, 20*time.Millisecond)
	c = send("diag.health")
	require.Equal(t, "succeeded", c.State, "the new agent answers: %+v", c)
	cancel()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.NotNil(t, r.s)
	case <-time.After(60 * time.Second):
		t.Fatal("the simulation did not end")
	}
}
