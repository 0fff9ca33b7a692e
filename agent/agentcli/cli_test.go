package agentcli

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMain_(t *testing.T) {
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, 2, "", "Usage:"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"run", "--nope"}, 2, "", "flag provided but not defined: -nope"},
		{[]string{"run", "--config", "x.yml", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"check", "--config", "../testdata/config/unknown-key.bad.yml"}, 1, "", "uplink.keep_alive: unknown key"},
		{[]string{"run", "--config", "../testdata/config/missing-cert.bad.yml"}, 1, "", "tls.cert_file: open ../testdata/certs/does-not-exist.crt: no such file"},
		{[]string{"check", "--config", "../testdata/config/full.good.yml"}, 0, "endpoint:    pump-7.gw.example.net:18443 (https)", ""},
		{[]string{"version"}, 0, "millwright-agent version ", ""},
		{[]string{"--version"}, 0, "  go version: go", ""},
		{[]string{"help"}, 0, "millwright-agent run --config FILE", ""},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := Main(tc.args, &stdout, &stderr)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, stderr.String())
		require.Contains(t, stdout.String(), tc.stdout, "%v", tc.args)
		require.Contains(t, stderr.String(), tc.stderr, "%v", tc.args)
	}
}
