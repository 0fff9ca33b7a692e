package millwrightcli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	notJSON := file("broken.json", "{\n  \"schedule\": {\"interval\": 30s}\n}")
	array := file("array.json", `[{"schedule": {}}]`)
	tooMany := []string{"commands", "send", "d1", "diag.x"}
	for i := range 33 {
		tooMany = append(tooMany, "--arg", fmt.Sprintf("k%d=v", i))
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"server", "--fsync", "sometimes"}, `unknown fsync policy "sometimes"`},
		{[]string{"server", "--retention", "soon"}, `invalid argument "soon" for "--retention"`},
		{[]string{"server", "--retention", "-1h"}, "invalid --retention"},
		{[]string{"server", "--log-level", "loud"}, `invalid --log-level "loud"`},
		{[]string{"server", "--max-series-per-device", "0"}, "invalid --max-series-per-device 0: must be positive"},
		{[]string{"server", "--max-event-bytes-per-hour", "-1"}, "invalid --max-event-bytes-per-hour -1: must be positive"},
		{[]string{"server", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"dev", "cert", "--device", "Bad_ID", "--data", t.TempDir()}, "invalid --device"},
		{[]string{"dev", "cert", "--data", t.TempDir()}, `required flag(s) "device" not set`},
		{[]string{"dev", "cert", "--device", "d1", "--database", "postgres://x/y"}, "--database is no longer taken: millwright dev cert registers devices through the API"},
		{[]string{"sim", "--database", "postgres://x/y"}, "--database is no longer taken: millwright sim registers devices through the API"},
		{[]string{"config", "set", "--file", array}, "give exactly one of --device, --group, --tag and --fleet"},
		{[]string{"config", "set", "--fleet", "--group", "g", "--file", array}, "give exactly one of --device, --group, --tag and --fleet"},
		{[]string{"config", "set", "--tag", "site", "--file", array}, `invalid --tag "site": want key=value`},
		{[]string{"config", "set", "--tag", "=x", "--file", array}, `invalid --tag "=x": want key=value`},
		{[]string{"config", "set", "--fleet"}, "give --file with the layer's document (--file - reads standard input), or --clear to remove the layer"},
		{[]string{"config", "set", "--fleet", "--file", array, "--clear"}, "give --file or --clear, not both"},
		{[]string{"config", "set", "--fleet", "--file", filepath.Join(dir, "missing.json")}, "read --file: open " + filepath.Join(dir, "missing.json")},
		{[]string{"config", "set", "--fleet", "--file", notJSON}, notJSON + ": not JSON: line 2, column 30: invalid character 's'"},
		{[]string{"config", "set", "--fleet", "--file", array}, array + ": the document must be a JSON object"},
		{[]string{"config", "show"}, "accepts 1 arg(s), received 0"},
		{[]string{"commands", "send", "d1"}, "accepts 2 arg(s), received 1"},
		{[]string{"commands", "send", "d1", "diag.x", "--arg", "probe"}, `invalid --arg "probe": want key=value`},
		{[]string{"commands", "send", "d1", "diag.x", "--arg", "a=1", "--arg", "a=2"}, `invalid --arg "a=2": a given twice`},
		{tooMany, "33 --arg flags: a command takes at most 32"},
		{[]string{"commands", "send", "d1", "diag.x", "--wait", "soon"}, `invalid argument "soon" for "--wait"`},
		{[]string{"commands", "send", "d1", "diag.x", "--wait", "10m"}, "invalid --wait 10m: want 0 to 5m"},
		{[]string{"commands", "send", "d1", "diag.x", "--expires", "0s"}, "invalid --expires 0s: want more than 0 and at most 1y"},
		{[]string{"commands", "send", "d1", "diag.x", "--expires", "366d"}, "invalid --expires 366d: want more than 0 and at most 1y"},
		{[]string{"commands", "show", "m-1-2", "--wait", "-1s"}, "invalid --wait -1s: want 0 to 5m"},
		{[]string{"commands", "list", "d1", "--limit", "0"}, "invalid --limit 0: want 1 to 10000"},
		{[]string{"commands", "list", "d1", "-o", "yaml"}, `invalid --output "yaml": want table or json`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := run(tc.args...)
			require.NotZero(t, code)
			require.Contains(t, stderr, tc.want)
		})
	}
}

func TestServerRefusesBusyPort(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	ln, err := netListen(addr)
	require.NoError(t, err)
	defer ln.Close()
	code, _, stderr := run("server", "--data", dir, "--mqtt-listen", addr, "--http-listen", "127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "listen MQTT/TLS on "+addr)
}

// TestDevCert: dev cert signs with the development CA of the data directory and registers the
// device through the API of the running server, which audits it; without a CA or a server it
// fails and writes nothing.
func TestDevCert(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := run("dev", "cert", "--data", dir, "--device", "dev-1", "--out", t.TempDir())
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no certificate authority")

	// A data directory with a CA and a token, but no server at --server.
	_, _, err := pki.LoadOrCreateCA(dir, time.Now())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, server.AdminTokenFile), []byte("mwa_test\n"), 0o600))
	out := t.TempDir()
	code, _, stderr = run("dev", "cert", "--data", dir, "--server", "https://"+freeAddr(t), "--device", "dev-1", "--out", out)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "through the API of the running server")
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing is written unless the server registered the certificate")

	srv := servertest.Start(t, nil)
	api := "https://" + srv.HTTPAddr().String()
	code, stdout, stderr := run("dev", "cert", "--data", srv.DataDir(), "--server", api, "--device", "dev-1", "--out", out)
	require.Zero(t, code, stderr)
	require.Equal(t, filepath.Join(out, "dev-1.crt")+"\n"+filepath.Join(out, "dev-1.key")+"\n", stdout)

	certPEM, err := os.ReadFile(filepath.Join(out, "dev-1.crt"))
	require.NoError(t, err)
	cert, err := pki.ParseCertPEM(certPEM)
	require.NoError(t, err)
	require.Equal(t, "dev-1", cert.Subject.CommonName)
	_, err = cert.Verify(x509.VerifyOptions{Roots: srv.CA().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	st, err := os.Stat(filepath.Join(out, "dev-1.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The server holds the device, active, with that certificate; the audit log says who
	// registered it and from where.
	code, stdout, stderr = run("devices", "show", "dev-1", "-o", "json", "--data", srv.DataDir(), "--server", api)
	require.Zero(t, code, stderr)
	var d apitypes.Device
	require.NoError(t, json.Unmarshal([]byte(stdout), &d))
	require.Equal(t, apitypes.DeviceActive, d.Status)
	certs, err := srv.Registry().DeviceCertificates(context.Background(), "dev-1")
	require.NoError(t, err)
	require.Len(t, certs, 1)
	require.Equal(t, registry.SerialHex(cert), certs[0].Serial)
	audit, err := srv.Registry().ListAudit(context.Background(), 100, 0)
	require.NoError(t, err)
	var added []registry.AuditEntry
	for _, e := range audit {
		if e.Action == registry.ActionCertificateAdd {
			added = append(added, e)
		}
	}
	require.Len(t, added, 1)
	require.Equal(t, "admin", added[0].Actor)
	require.Equal(t, "dev-1", added[0].Target)
	require.Contains(t, added[0].Detail, registry.SerialHex(cert))
	require.NotEmpty(t, added[0].Remote)
}

func netListen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// TestDevCertNeedsDevelopmentCA: dev cert makes keys beside the CA, so it refuses a data
// directory whose CA is not the development CA the server made.
func TestDevCertNeedsDevelopmentCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("Acme Plant Devices CA", time.Now())
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(ca.Key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, pki.CAFile), ca.PEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, pki.CAKeyFile), keyPEM, 0o600))
	code, _, stderr := run("dev", "cert", "--data", dir, "--device", "d1", "--out", t.TempDir())
	require.NotZero(t, code)
	require.Contains(t, stderr, "is not the development CA the server makes")
}
