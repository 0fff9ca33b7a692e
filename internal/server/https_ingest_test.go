package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/protocol"
)

// postBatch posts one batch over HTTPS with client and decodes the answer.
func (s *testServer) postBatch(t *testing.T, client *http.Client, body []byte) (int, gateway.BatchResponse) {
	t.Helper()
	resp, err := client.Post(s.url(protocol.BatchPath), "application/cbor", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var br gateway.BatchResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&br))
	return resp.StatusCode, br
}

// TestHTTPSIngestRegistry refuses HTTPS batches, with 403 and a reason, from every device the
// registry does not admit over MQTT either, right after the operator's action and on the
// connection the device already had open; an active device's batches are stored.
func TestHTTPSIngestRegistry(t *testing.T) {
	s := startServer(t, nil)
	batch := encode(t, protocol.Pack{{Name: "temp", Value: ptr(21.5)}}, cborZstd)
	cases := []struct {
		name, device string
		actions      []string // operator actions, in order, after a first stored batch
		want         int
		detail       string
	}{
		{name: "active", device: "dev-h-active", want: http.StatusAccepted},
		{name: "suspended", device: "dev-h-sus", actions: []string{"suspend"}, want: http.StatusForbidden, detail: "is suspended"},
		{name: "revoked", device: "dev-h-rev", actions: []string{"revoke"}, want: http.StatusForbidden, detail: "is revoked"},
		{name: "resumed", device: "dev-h-res", actions: []string{"suspend", "resume"}, want: http.StatusAccepted},
	}
	refused := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := s.apiClient(s.device(t, tc.device))
			code, br := s.postBatch(t, client, batch)
			require.Equal(t, http.StatusAccepted, code, br.Detail)
			for _, a := range tc.actions {
				code, pr := s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/devices/"+tc.device+"/"+a, nil, nil)
				require.Equal(t, http.StatusOK, code, pr.Error)
			}
			code, br = s.postBatch(t, client, batch)
			require.Equal(t, tc.want, code, br.Detail)
			if tc.want == http.StatusForbidden {
				refused++
				require.Equal(t, protocol.ReasonNotAuthorized.String(), br.Reason)
				require.Contains(t, br.Detail, tc.detail)
				require.Zero(t, br.Stored)
			} else {
				require.Equal(t, 1, br.Stored)
			}
		})
	}

	// A certificate from the server's CA for a device the registry does not know.
	code, br := s.postBatch(t, s.apiClient(deviceCert(t, s.CA(), "ghost")), batch)
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, br.Detail, "unknown device")
	refused++
	require.Equal(t, float64(refused), s.metric(t, "millwright_http_ingest_requests_total", `code="403"`))
}
