package millwrightcli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestAPICommands drives the devices, tokens and operators commands against a real server:
// what they print with -o json decodes into the API's types, field for field, and the tables
// show the same.
func TestAPICommands(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	conn := []string{"--server", "https://" + srv.HTTPAddr().String(), "--data", srv.DataDir()}
	cli := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := run(append(args, conn...)...)
		require.Zero(t, code, "%v: %s", args, stderr)
		return stdout
	}
	decode := func(out string, v any) {
		t.Helper()
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(v), out)
	}
	for _, id := range []string{"line-1", "line-2"} {
		cli("dev", "cert", "--device", id, "--out", t.TempDir())
	}

	// A device command prints the device as the API answered.
	device := func(args ...string) apitypes.Device {
		t.Helper()
		var d apitypes.Device
		decode(cli(append(append([]string{"devices"}, args...), "-o", "json")...), &d)
		return d
	}
	d := device("tag", "line-1", "site=plant-7", "hall=2")
	require.Equal(t, map[string]string{"site": "plant-7", "hall": "2"}, d.Tags)
	d = device("untag", "line-1", "hall")
	require.Equal(t, map[string]string{"site": "plant-7"}, d.Tags)
	d = device("group", "line-1", "hall-2", "press")
	require.Equal(t, []string{"hall-2", "press"}, d.Groups)
	d = device("group", "--remove", "line-1", "press")
	require.Equal(t, []string{"hall-2"}, d.Groups)
	d = device("suspend", "line-2")
	require.Equal(t, apitypes.DeviceSuspended, d.Status)

	var devs []apitypes.Device
	decode(cli("devices", "list", "--status", "active", "-o", "json"), &devs)
	require.Len(t, devs, 1)
	require.Equal(t, "line-1", devs[0].ID)
	require.False(t, devs[0].CreatedAt.IsZero())
	devs = nil // decoding into a used slice would merge the maps of its old elements
	decode(cli("devices", "list", "--limit", "1", "--all", "-o", "json"), &devs)
	require.Len(t, devs, 2, "--all follows the pages")
	table := cli("devices", "list")
	require.Contains(t, table, "line-1")
	require.Contains(t, table, "site=plant-7")
	require.Contains(t, table, "suspended")
	require.Regexp(t, `Groups:\s+hall-2`, cli("devices", "show", "line-1"))
	d = device("resume", "line-2")
	require.Equal(t, apitypes.DeviceActive, d.Status)
	code, _, stderr := run(append([]string{"devices", "revoke", "line-2"}, conn...)...)
	require.Equal(t, 2, code, "a destructive command run by a script without --yes is refused")
	require.Contains(t, stderr, "revoke device line-2: give --yes to confirm")
	require.Equal(t, apitypes.DeviceActive, device("show", "line-2").Status, "and does nothing")
	d = device("revoke", "line-2", "--yes")
	require.Equal(t, apitypes.DeviceRevoked, d.Status)
	code, _, stderr = run(append([]string{"devices", "delete", "line-2"}, conn...)...)
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "erase device line-2 and all its data: give --yes to confirm")
	require.Equal(t, "deleted line-2: its records, certificates, series and 0 event(s)\n", cli("devices", "delete", "line-2", "--yes"))
	code, _, stderr = run(append([]string{"devices", "show", "line-2"}, conn...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "not found")

	var toks apitypes.TokensCreated
	decode(cli("tokens", "create", "--count", "2", "--expires", "2h", "-o", "json"), &toks)
	require.Len(t, toks.Tokens, 2)
	require.Equal(t, "2h0m0s", toks.ExpiresIn)
	require.Len(t, strings.Fields(cli("tokens", "create")), 1)

	var created apitypes.OperatorCreated
	decode(cli("operators", "create", "ci", "--role", "operator", "-o", "json"), &created)
	require.Equal(t, apitypes.RoleOperator, created.Operator.Role)
	require.NotEmpty(t, created.Token)
	var ops []apitypes.Operator
	decode(cli("operators", "list", "-o", "json"), &ops)
	require.Len(t, ops, 1)
	require.Equal(t, created.Operator.ID, ops[0].ID)
	require.True(t, ops[0].RevokedAt.IsZero())

	// The operator's token: devices yes, operators no.
	tokenFile := filepath.Join(t.TempDir(), "ci.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(created.Token+"\n"), 0o600))
	cli("devices", "list", "--token-file", tokenFile)
	code, _, stderr = run(append([]string{"operators", "list", "--token-file", tokenFile}, conn...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(forbidden)")

	require.Equal(t, "revoked "+created.Operator.ID+"\n", cli("operators", "revoke", created.Operator.ID, "--yes"))
	ops = nil
	decode(cli("operators", "list", "-o", "json"), &ops)
	require.False(t, ops[0].RevokedAt.IsZero())
	code, _, stderr = run(append([]string{"devices", "list", "--token-file", tokenFile}, conn...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(unauthorized)")
}
