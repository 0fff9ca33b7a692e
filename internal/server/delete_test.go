package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// TestDeviceDeleteErasesItsData: deleting a device erases its registry record, its series
// (measurements and the monitor's) and its events, even from a compacted block; another
// device's data stays; the deleted device's certificate is refused; a viewer or operator may
// not delete; deleting again answers 404.
func TestDeviceDeleteErasesItsData(t *testing.T) {
	s := startServer(t, nil)
	ctx := context.Background()
	batch := encode(t, protocol.Pack{{Name: "temp", Value: ptr(21.5)}, {Name: "state", StringValue: ptr("running")}}, cborZstd)
	clients := map[string]*http.Client{}
	for _, id := range []string{"gone", "kept"} {
		clients[id] = s.apiClient(s.device(t, id))
		code, br := s.postBatch(t, clients[id], batch)
		require.Equal(t, http.StatusAccepted, code, br.Detail)
	}
	require.NoError(t, s.Monitor().Flush(ctx))
	// Compact the head into a block, so that deletion must rewrite a block too.
	db := s.Store().DB()
	require.NoError(t, db.CompactHead(tsdb.NewRangeHead(db.Head(), db.Head().MinTime(), db.Head().MaxTime())))
	require.NotEmpty(t, db.Blocks())
	code, br := s.postBatch(t, clients["gone"], batch) // and more in the head
	require.Equal(t, http.StatusAccepted, code, br.Detail)
	require.NoError(t, s.Monitor().Flush(ctx))
	series := func(id string) int {
		return len(s.query(t, `{device="`+id+`"}`, time.Now()).Result)
	}
	events := func(id string) int {
		code, pr := s.get(t, "/api/v1/events", url.Values{"device": {id}})
		require.Equal(t, http.StatusOK, code)
		var ev []json.RawMessage
		require.NoError(t, json.Unmarshal(pr.Data, &ev))
		return len(ev)
	}
	require.Positive(t, series("gone"))
	require.Equal(t, 2, events("gone"))
	keptSeries := series("kept")

	var viewer apitypes.OperatorCreated
	code, pr := s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/operators", map[string]any{"name": "ops", "role": "operator"}, &viewer)
	require.Equal(t, http.StatusOK, code, pr.Error)
	code, _ = s.apiCall(t, viewer.Token, http.MethodDelete, "/api/v1/devices/gone", nil, nil)
	require.Equal(t, http.StatusForbidden, code, "erasing a device is an admin's")

	var del apitypes.DeviceDeleted
	code, pr = s.apiCall(t, s.AdminToken(), http.MethodDelete, "/api/v1/devices/gone", nil, &del)
	require.Equal(t, http.StatusOK, code, pr.Error)
	require.Equal(t, apitypes.DeviceDeleted{Deleted: "gone", Events: 2}, del)

	_, err := s.Registry().Device(ctx, "gone")
	require.ErrorIs(t, err, registry.ErrNotFound)
	require.Zero(t, series("gone"), "no series of the device is left")
	require.Zero(t, events("gone"))
	require.NoError(t, s.Monitor().Flush(ctx))
	require.Zero(t, series("gone"), "the monitor does not write it again")
	require.Equal(t, keptSeries, series("kept"))
	for _, b := range s.Store().DB().Blocks() {
		require.Zero(t, b.Meta().Stats.NumTombstones, "blocks are rewritten without the series, not only marked")
	}
	require.Equal(t, 1, events("kept"))
	code, br = s.postBatch(t, clients["gone"], batch)
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, br.Detail, "unknown device")

	code, _ = s.apiCall(t, s.AdminToken(), http.MethodDelete, "/api/v1/devices/gone", nil, nil)
	require.Equal(t, http.StatusNotFound, code)
	audit, err := s.Registry().ListAudit(ctx, 5, 0)
	require.NoError(t, err)
	require.Equal(t, registry.ActionDeviceDelete, audit[0].Action)
	require.Equal(t, "gone", audit[0].Target)
}
