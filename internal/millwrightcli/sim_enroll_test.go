package millwrightcli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/registry/registrytest"
	"github.com/millwright/millwright/internal/server"
)

// createTokens makes n one-time enrollment tokens through `millwright tokens create`.
func (s *simServer) createTokens(t *testing.T, n int, extra ...string) []string {
	t.Helper()
	code, stdout, stderr := run(append([]string{"tokens", "create", "--count", fmt.Sprint(n),
		"--server", "https://" + s.srv.HTTPAddr().String(), "--data", s.dir}, extra...)...)
	require.Zero(t, code, stderr)
	tokens := strings.Fields(stdout)
	require.Len(t, tokens, n)
	return tokens
}

// storedDeviceIDs returns the common names of the certificates in a simulator credentials
// file, in file order.
func storedDeviceIDs(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var ids []string
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			require.NoError(t, err)
			ids = append(ids, c.Subject.CommonName)
		}
	}
	return ids
}

// simDevices returns the registry's devices and, for each, its certificates' serials.
func (s *simServer) simDevices(t *testing.T) ([]registry.Device, map[string][]string) {
	t.Helper()
	ctx := context.Background()
	devs, _, err := s.srv.Registry().ListDevices(ctx, registry.ListFilter{Limit: 1000})
	require.NoError(t, err)
	serials := map[string][]string{}
	for _, d := range devs {
		certs, err := s.srv.Registry().DeviceCertificates(ctx, d.ID)
		require.NoError(t, err)
		for _, c := range certs {
			serials[d.ID] = append(serials[d.ID], c.Serial)
		}
	}
	return devs, serials
}

// promDevices returns the devices that have samples of the simulated sensors (the server's
// own series aside) up to at, and the number of those samples.
func (s *simServer) promDevices(t *testing.T, at time.Time) ([]string, int) {
	t.Helper()
	seen := map[string]bool{}
	samples := 0
	for _, r := range s.query(t, `{device=~".+", __name__!~"millwright_.*"}[10m]`, at) {
		seen[r.Metric["device"]] = true
		samples += len(r.Values)
	}
	var ids []string
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, samples
}

// TestSimEnrollTokens: with --token-file and --ca the simulated devices enroll over EST, each
// with the token on its line; the server assigns their IDs and registers them, their data
// arrives under those IDs, a second run reuses the stored credentials without spending a
// token, and a spent or unknown token is an error naming its line of the token file.
func TestSimEnrollTokens(t *testing.T) {
	t.Parallel()
	s := startSimServer(t)
	const n = 20
	tokens := s.createTokens(t, n, "--model", "gw-200")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "tokens.txt")
	// A comment and a blank line first: line numbers in errors are the file's own.
	require.NoError(t, os.WriteFile(tokenFile, []byte("# simulated fleet\n\n"+strings.Join(tokens, "\n")+"\n"), 0o600))
	credsDir := filepath.Join(dir, "creds")
	common := []string{"--server", s.srv.MQTTAddr().String(), "--est-server", "https://" + s.srv.HTTPAddr().String(),
		"--ca", filepath.Join(s.dir, pki.CAFile), "--creds-dir", credsDir, "--id-prefix", "est", "--hardware-model", "gw-200"}

	sm := runSim(t, append(common, "--token-file", tokenFile, "--devices", fmt.Sprint(n),
		"--interval", "1s", "--jitter", "1s", "--sample-interval", "1s", "--duration", "4s")...)
	end := sm.Started.Add(time.Duration((sm.RunSeconds + sm.DrainSeconds + 1) * float64(time.Second)))
	t.Logf("enrolled %d devices in %.2f s; %d sampled, %d acknowledged, %d left", sm.Provisioning.Enrolled,
		sm.Provisioning.Seconds, sm.Measurements.Sampled, sm.Measurements.Acknowledged, sm.Measurements.BacklogAtEnd)
	require.Equal(t, n, sm.Provisioning.Enrolled)
	require.Zero(t, sm.Provisioning.Reused)
	require.Zero(t, sm.Provisioning.Issued)
	require.Equal(t, n, sm.ConnectedAtEnd)
	require.Positive(t, sm.Measurements.Acknowledged)
	require.Zero(t, sm.Measurements.BacklogAtEnd)
	require.Equal(t, sm.Measurements.Sampled, sm.Measurements.Acknowledged)

	// The registry holds the enrolled devices — and only them — active, each with the
	// certificate stored in the credentials file.
	stored := storedDeviceIDs(t, filepath.Join(credsDir, "est.pem"))
	require.Len(t, stored, n)
	devs, serials := s.simDevices(t)
	require.Len(t, devs, n)
	var ids []string
	for _, d := range devs {
		ids = append(ids, d.ID)
		require.Equal(t, registry.StatusActive, d.Status, d.ID)
		require.Equal(t, "gw-200", d.HardwareModel, d.ID)
		require.False(t, d.EnrolledAt.IsZero(), d.ID)
		require.Len(t, serials[d.ID], 1, d.ID)
		require.True(t, strings.HasPrefix(d.ID, "d-"), "the server assigns the IDs, got %s", d.ID)
	}
	require.ElementsMatch(t, ids, stored)
	toks, err := s.srv.Registry().ListEnrollmentTokens(context.Background(), true)
	require.NoError(t, err)
	require.Len(t, toks, n)
	for _, tok := range toks {
		require.False(t, tok.UsedAt.IsZero(), "token %s", tok.ID)
		require.Contains(t, ids, tok.UsedBy, "token %s", tok.ID)
	}

	// PromQL holds the data of exactly those devices, as much as the agents saw acknowledged.
	slices.Sort(ids)
	got, samples := s.promDevices(t, end)
	t.Logf("PromQL: %d devices, %d samples", len(got), samples)
	require.Equal(t, ids, got)
	require.Equal(t, int(sm.Measurements.Acknowledged), samples)

	// A second run reuses every device: a token spent again would be refused.
	again := runSim(t, append(common, "--token-file", tokenFile, "--devices", fmt.Sprint(n), "--metrics", "idle", "--duration", "5s")...)
	require.Equal(t, n, again.Provisioning.Reused)
	require.Zero(t, again.Provisioning.Enrolled)
	require.Equal(t, n, again.ConnectedAtEnd)
	devs, _ = s.simDevices(t)
	require.Len(t, devs, n, "no device enrolled again")

	// Fresh credentials, two new tokens and then a spent one on line 4: est-3 fails naming its
	// line, and the two devices that did enroll are kept.
	fresh := s.createTokens(t, 3, "--model", "gw-200")
	bad := filepath.Join(dir, "bad.txt")
	require.NoError(t, os.WriteFile(bad, []byte(fresh[0]+"\n"+fresh[1]+"\n\n"+tokens[0]+"\n"), 0o600))
	other := append(slices.Clone(common), "--creds-dir", filepath.Join(dir, "other"), "--devices", "3", "--metrics", "idle", "--duration", "1s")
	code, _, stderr := run(append([]string{"sim", "--json", "--log-level", "warn", "--token-file", bad}, other...)...)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "enroll est-3 with the token on line 4 of "+bad+":")
	require.Contains(t, stderr, "used at")
	require.Len(t, storedDeviceIDs(t, filepath.Join(dir, "other", "est.pem")), 2)
	devs, _ = s.simDevices(t)
	require.Len(t, devs, n+2)

	// With a good token on line 4 the next run reuses est-1 and est-2 and enrolls only est-3.
	good := filepath.Join(dir, "good.txt")
	require.NoError(t, os.WriteFile(good, []byte(fresh[0]+"\n"+fresh[1]+"\n\n"+fresh[2]+"\n"), 0o600))
	fixed := runSim(t, append([]string{"--token-file", good}, other...)...)
	require.Equal(t, 2, fixed.Provisioning.Reused)
	require.Equal(t, 1, fixed.Provisioning.Enrolled)
	require.Equal(t, 3, fixed.ConnectedAtEnd)

	// An unknown token, and a token file too short for the fleet.
	unknown := filepath.Join(dir, "unknown.txt")
	require.NoError(t, os.WriteFile(unknown, []byte("# one device\nmwe_00000000000000000000000000000000\n"), 0o600))
	code, _, stderr = run(append([]string{"sim", "--log-level", "warn", "--token-file", unknown, "--devices", "1"},
		append(slices.Clone(common), "--creds-dir", filepath.Join(dir, "unknown"))...)...)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "enroll est-1 with the token on line 2 of "+unknown+":")
	require.Contains(t, stderr, "HTTP 403")
	code, _, stderr = run(append([]string{"sim", "--log-level", "warn", "--token-file", unknown, "--devices", "2"},
		append(slices.Clone(common), "--creds-dir", filepath.Join(dir, "short"))...)...)
	require.NotZero(t, code)
	require.Contains(t, stderr, "device est-2 needs an enrollment token, but "+unknown+" holds only 1")
}

// TestSimPostgresRegistry runs the server on a PostgreSQL registry, in a schema of its own:
// the simulator registers the devices through the server's API, which records them there
// (the simulator is not told where the registry is), they connect (the server admits only
// registered devices) and their data arrives.
func TestSimPostgresRegistry(t *testing.T) {
	t.Parallel()
	dbURL := registrytest.SchemaURL(t)
	s := startSimServerWith(t, func(o *server.Options) { o.Database = dbURL })
	const n = 30
	sm := runSim(t, "--server", s.srv.MQTTAddr().String(), "--data", s.dir, "--api-server", s.api(), "--devices", fmt.Sprint(n),
		"--id-prefix", "pg", "--interval", "1s", "--jitter", "1s", "--sample-interval", "1s", "--duration", "4s")
	end := sm.Started.Add(time.Duration((sm.RunSeconds + sm.DrainSeconds + 1) * float64(time.Second)))
	t.Logf("%d devices registered in %.2f s; %d sampled, %d acknowledged", sm.Provisioning.Registered,
		sm.Provisioning.Seconds, sm.Measurements.Sampled, sm.Measurements.Acknowledged)
	require.Equal(t, n, sm.Provisioning.Issued)
	require.Equal(t, n, sm.Provisioning.Registered)
	require.Equal(t, n, sm.ConnectedAtEnd)
	require.Zero(t, sm.Measurements.BacklogAtEnd)
	require.Equal(t, sm.Measurements.Sampled, sm.Measurements.Acknowledged)

	// The devices are in the PostgreSQL schema, read by a registry of its own, not the server's.
	reg, err := registry.Open(context.Background(), dbURL, "", nil)
	require.NoError(t, err)
	defer reg.Close()
	require.Equal(t, registry.BackendPostgres, reg.Backend())
	devs, _, err := reg.ListDevices(context.Background(), registry.ListFilter{Limit: 1000})
	require.NoError(t, err)
	var ids, want []string
	for _, d := range devs {
		ids = append(ids, d.ID)
		require.Equal(t, registry.StatusActive, d.Status, d.ID)
		certs, err := reg.DeviceCertificates(context.Background(), d.ID)
		require.NoError(t, err)
		require.Len(t, certs, 1, d.ID)
	}
	for i := range n {
		want = append(want, fmt.Sprintf("pg-%d", i+1))
	}
	require.ElementsMatch(t, want, ids)
	// Registered through the API: each certificate's audit entry names the admin token's
	// holder and where the request came from.
	audit, err := reg.ListAudit(context.Background(), 1000, 0)
	require.NoError(t, err)
	added := 0
	for _, e := range audit {
		if e.Action == registry.ActionCertificateAdd {
			added++
			require.Equal(t, "admin", e.Actor)
			require.NotEmpty(t, e.Remote)
		}
	}
	require.Equal(t, n, added)
	_, err = os.Stat(filepath.Join(s.dir, registry.SQLiteFile))
	require.ErrorIs(t, err, os.ErrNotExist, "no SQLite registry beside it")

	slices.Sort(want)
	got, samples := s.promDevices(t, end)
	t.Logf("PromQL: %d devices, %d samples", len(got), samples)
	require.Equal(t, want, got)
	require.Equal(t, int(sm.Measurements.Acknowledged), samples)

	again := runSim(t, "--server", s.srv.MQTTAddr().String(), "--data", s.dir, "--api-server", s.api(), "--devices", fmt.Sprint(n),
		"--id-prefix", "pg", "--metrics", "idle", "--duration", "5s") // time to connect on loaded CI cores
	require.Equal(t, n, again.Provisioning.Reused)
	require.Zero(t, again.Provisioning.Registered)
	require.Equal(t, n, again.ConnectedAtEnd)
}
