package millwrightcli

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/agentcli"
	"github.com/millwright/millwright/buildinfo"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestVersionMatchesBuildinfo: millwright version and --version, millwright-agent version and
// --version print what a running server's /api/v1/status/buildinfo answers.
func TestVersionMatchesBuildinfo(t *testing.T) {
	srv := servertest.Start(t, nil)
	req, err := http.NewRequest(http.MethodGet, "https://"+srv.HTTPAddr().String()+"/api/v1/status/buildinfo", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool(), ServerName: "localhost"}}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body struct {
		Status string `json:"status"`
		Data   struct {
			buildinfo.Info
			Application string `json:"application"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status)
	require.Equal(t, "millwright", body.Data.Application)
	api := body.Data.Info
	for _, f := range []string{api.Version, api.Revision, api.BuildDate, api.GoVersion} {
		require.NotEmpty(t, f)
	}
	require.True(t, strings.HasPrefix(api.GoVersion, "go"), api.GoVersion)

	var want bytes.Buffer
	require.NoError(t, api.Print(&want, "millwright"))
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, stderr := run(args...)
		require.Zero(t, code, stderr)
		require.Equal(t, want.String(), stdout, "millwright %v", args)
	}
	want.Reset()
	require.NoError(t, api.Print(&want, "millwright-agent"))
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var stdout, stderr bytes.Buffer
		require.Zero(t, agentcli.Main(args, &stdout, &stderr), stderr.String())
		require.Equal(t, want.String(), stdout.String(), "millwright-agent %v", args)
	}
}
