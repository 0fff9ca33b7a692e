package agentcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestMain runs the command line itself when MW_AGENTCLI_MAIN is set: the test binary is then
// millwright-agent, with the arguments after the program name (TestRunRestartsItself starts
// it so, and its re-execution keeps both).
func TestMain(m *testing.M) {
	if os.Getenv("MW_AGENTCLI_MAIN") != "" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// lineLog collects a process's output lines (it is the process's standard error: Wait
// returns once all of it was written here).
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
}

func (l *lineLog) matching(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			out = append(out, s)
		}
	}
	return out
}

// TestRunRestartsItself: millwright-agent run, told agent.restart by the server, answers and
// executes itself anew: the same process ID starts the agent a second time, which connects
// and answers the next command; SIGTERM then stops it cleanly.
func TestRunRestartsItself(t *testing.T) {
	s := servertest.Start(t, nil)
	const id = "cli-restart"
	dir := t.TempDir()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	_, certPEM, err := s.CA().DeviceCert(id, key.Public(), time.Now(), 24*time.Hour)
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	require.NoError(t, s.Registry().AddCertificate(context.Background(), id, pair.Leaf, true))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "device.crt"), certPEM, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "device.key"), keyPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.pem"), s.CA().PEM, 0o644))
	cfg := fmt.Sprintf(`tls:
  cert_file: device.crt
  key_file: device.key
  ca_file: ca.pem
  server_name: localhost
uplink:
  dev_address: %s
  backoff:
    base: 100ms
    cap: 1s
spool:
  dir: spool
`, s.MQTTAddr())
	cfgFile := filepath.Join(dir, "agent.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o644))

	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "run", "--config", cfgFile)
	cmd.Env = append(os.Environ(), "MW_AGENTCLI_MAIN=1")
	logs := &lineLog{}
	cmd.Stderr = logs
	require.NoError(t, cmd.Start())
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("the agent's log:\n%s", strings.Join(logs.matching(""), "\n"))
		}
	})

	send := func(name string) apitypes.Command {
		b, _ := json.Marshal(apitypes.CommandRequest{Name: name, Wait: "30s"})
		req, err := http.NewRequest(http.MethodPost, "https://"+s.HTTPAddr().String()+"/api/v1/devices/"+id+"/commands", bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken())
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CA().Pool(), ServerName: "localhost"}}}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var env apitypes.Response[apitypes.Command]
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
		require.Equal(t, http.StatusOK, resp.StatusCode, env.Error)
		return env.Data
	}
	// Queued now, the command reaches the agent when it subscribes, or at once if it has.
	c := send("agent.restart")
	require.Equal(t, "succeeded", c.State, "%+v", c)

	pid := regexp.MustCompile(`pid=(\d+)`)
	require.Eventually(t, func() bool { return len(logs.matching("millwright-agent starting")) == 2 }, 30*time.Second, 20*time.Millisecond,
		"the agent starts a second time")
	starts := logs.matching("millwright-agent starting")
	require.Equal(t, pid.FindStringSubmatch(starts[0])[1], pid.FindStringSubmatch(starts[1])[1], "the same process")
	require.Equal(t, fmt.Sprint(cmd.Process.Pid), pid.FindStringSubmatch(starts[1])[1])
	require.Len(t, logs.matching("restarting, as the server asked"), 1)

	c = send("diag.spool")
	require.Equal(t, "succeeded", c.State, "the new run answers: %+v", c)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
		require.NoError(t, waitErr, "exit status after SIGTERM")
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop after SIGTERM")
	}
	require.Len(t, logs.matching("millwright-agent stopped"), 1)
}
