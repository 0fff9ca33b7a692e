package millwrightcli

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/server"
)

// TestHangupReloadsRules: SIGHUP makes millwright server read its rule files again.
func TestHangupReloadsRules(t *testing.T) {
	file := filepath.Join(t.TempDir(), "r.yml")
	rules := func(group string) {
		require.NoError(t, os.WriteFile(file, []byte("groups:\n  - name: "+group+"\n    rules:\n      - record: x:sum\n        expr: sum(x)\n"), 0o644))
	}
	rules("before")
	o := server.DefaultOptions()
	o.DataDir = t.TempDir()
	o.MQTT.Listen, o.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	o.Alerting.RuleFiles, o.Alerting.DefaultRules = []string{file}, false
	srv, err := server.New(o, clock.Real(), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	reloadOnHangup(ctx, srv, nil)
	groups := func() []string {
		var n []string
		for _, g := range srv.Alerting().RuleGroups() {
			n = append(n, g.Name())
		}
		return n
	}
	require.Eventually(t, func() bool { return len(groups()) == 1 && groups()[0] == "before" }, 10*time.Second, 5*time.Millisecond)
	rules("after")
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	require.Eventually(t, func() bool { return len(groups()) == 1 && groups()[0] == "after" }, 10*time.Second, 5*time.Millisecond)
}
