package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// TestMetadataHasUnits: /api/v1/metadata gives each measurement its SenML units and type,
// and the server's own device series their type and unit, so Grafana can show them; metric
// and limit narrow the answer.
func TestMetadataHasUnits(t *testing.T) {
	s := startServer(t, nil)
	batch := encode(t, protocol.Pack{{Name: "temperature", Unit: "Cel", Value: ptr(21.5)}, {Name: "humidity", Unit: "%RH", Value: ptr(40.0)}, {Name: "count", Value: ptr(3.0)}}, cborZstd)
	code, br := s.postBatch(t, s.apiClient(s.device(t, "meta-1")), batch)
	require.Equal(t, http.StatusAccepted, code, br.Detail)
	require.NoError(t, s.Monitor().Flush(context.Background()))

	type entry struct{ Type, Help, Unit string }
	get := func(params url.Values) map[string][]entry {
		code, pr := s.get(t, "/api/v1/metadata", params)
		require.Equal(t, http.StatusOK, code, pr.Error)
		var md map[string][]entry
		require.NoError(t, json.Unmarshal(pr.Data, &md))
		return md
	}
	md := get(nil)
	require.Equal(t, "Cel", md["temperature"][0].Unit)
	require.Equal(t, "gauge", md["temperature"][0].Type)
	require.Equal(t, "%RH", md["humidity"][0].Unit)
	require.Equal(t, "", md["count"][0].Unit, "a measurement without a unit has none")
	require.Equal(t, entry{Type: "counter", Help: "written by the Millwright server (docs/monitoring.md)", Unit: "bytes"}, md["millwright_device_received_bytes_total"][0])
	require.Equal(t, "seconds", md["millwright_device_session_seconds_total"][0].Unit)
	require.Equal(t, "info", md["millwright_device_info"][0].Type)
	require.Equal(t, "gauge", md["millwright_device_online"][0].Type)

	one := get(url.Values{"metric": {"humidity"}})
	require.Len(t, one, 1)
	require.Len(t, get(url.Values{"limit": {"2"}}), 2)
	code, _ = s.get(t, "/api/v1/metadata", url.Values{"limit": {"-1"}})
	require.Equal(t, http.StatusBadRequest, code)
}
