package registry

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

func TestCommandLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "pump-1", nil, nil, "op", "")
		require.NoError(t, err)

		m, err := r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.connectivity", Args: map[string]string{"lines": "5"}, TTL: time.Hour}, "op", "10.0.0.1")
		require.NoError(t, err)
		require.NoError(t, protocol.ValidateMessageID(m.ID))
		require.Equal(t, MessageQueued, m.State)
		var c protocol.Command
		require.NoError(t, json.Unmarshal(m.Payload, &c))
		require.Equal(t, protocol.Command{ID: m.ID, Name: "diag.connectivity", Args: map[string]string{"lines": "5"}, ExpiresAt: testStart.Add(time.Hour).Truncate(time.Millisecond)}, c)

		open, err := r.OpenMessages(ctx, "pump-1", KindCommand)
		require.NoError(t, err)
		require.Len(t, open, 1)
		require.Equal(t, m.ID, open[0].ID)
		require.Equal(t, map[string]string{"lines": "5"}, open[0].Args)

		require.NoError(t, r.RecordProgress(ctx, []Progress{{ID: m.ID, State: MessageDelivered}}))
		got, err := r.Message(ctx, m.ID)
		require.NoError(t, err)
		require.Equal(t, MessageDelivered, got.State)
		require.Equal(t, 1, got.Attempts)
		require.NoError(t, r.RecordProgress(ctx, []Progress{{ID: m.ID, State: MessageAcknowledged}, {ID: m.ID, State: MessageDelivered}}))
		got, err = r.Message(ctx, m.ID)
		require.NoError(t, err)
		require.Equal(t, MessageAcknowledged, got.State, "delivered never moves an acknowledged message back")
		require.Equal(t, 2, got.Attempts)

		// Another device cannot answer it.
		_, err = r.CreateDevice(ctx, "pump-2", nil, nil, "op", "")
		require.NoError(t, err)
		_, err = r.CompleteCommand(ctx, "pump-2", m.ID, protocol.Reply{State: protocol.ReplySucceeded})
		require.ErrorIs(t, err, ErrNotFound)

		done, err := r.CompleteCommand(ctx, "pump-1", m.ID, protocol.Reply{State: protocol.ReplySucceeded, Result: json.RawMessage(`{"rtt_ms":41}`)})
		require.NoError(t, err)
		require.Equal(t, MessageSucceeded, done.State)
		// A reply sent again changes nothing.
		again, err := r.CompleteCommand(ctx, "pump-1", m.ID, protocol.Reply{State: protocol.ReplyFailed, Reason: "error"})
		require.NoError(t, err)
		require.Equal(t, MessageSucceeded, again.State)
		got, err = r.Message(ctx, m.ID)
		require.NoError(t, err)
		require.JSONEq(t, `{"rtt_ms":41}`, string(got.Result))

		open, err = r.OpenMessages(ctx, "pump-1", "")
		require.NoError(t, err)
		require.Empty(t, open)
		require.Contains(t, auditActions(t, r), ActionCommandSend)
	})
}

func TestCommandExpiry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "pump-1", nil, nil, "op", "")
		require.NoError(t, err)
		short, err := r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.spool", TTL: time.Minute}, "op", "")
		require.NoError(t, err)
		long, err := r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.logs", TTL: time.Hour}, "op", "")
		require.NoError(t, err)

		fakeClock(r).Advance(2 * time.Minute)
		open, err := r.OpenMessages(ctx, "pump-1", KindCommand)
		require.NoError(t, err)
		require.Len(t, open, 1, "an expired message is not delivered even before ExpireMessages runs")
		require.Equal(t, long.ID, open[0].ID)

		expired, err := r.ExpireMessages(ctx)
		require.NoError(t, err)
		require.Len(t, expired, 1)
		require.Equal(t, short.ID, expired[0].ID)
		got, err := r.Message(ctx, short.ID)
		require.NoError(t, err)
		require.Equal(t, MessageExpired, got.State)
		// A late reply does not revive it.
		got, err = r.CompleteCommand(ctx, "pump-1", short.ID, protocol.Reply{State: protocol.ReplySucceeded})
		require.NoError(t, err)
		require.Equal(t, MessageExpired, got.State)
	})
}

func TestCommandRefusals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "pump-1", nil, nil, "op", "")
		require.NoError(t, err)
		_, err = r.SendCommand(ctx, CommandSpec{Device: "nope", Name: "diag.spool"}, "op", "")
		require.ErrorIs(t, err, ErrNotFound)
		for _, name := range []string{"", "Diag", "1diag", "diag spool", "diag/x"} {
			_, err = r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: name}, "op", "")
			require.ErrorIs(t, err, ErrInvalid, name)
		}
		_, err = r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "x", TTL: MaxCommandExpiry + time.Hour}, "op", "")
		require.ErrorIs(t, err, ErrInvalid)
		big := map[string]string{}
		for i := range MaxCommandArgs + 1 {
			big[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
		}
		_, err = r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "x", Args: big}, "op", "")
		require.ErrorIs(t, err, ErrInvalid)

		for range 3 {
			_, err = r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.spool", MaxOpen: 3}, "op", "")
			require.NoError(t, err)
		}
		_, err = r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.spool", MaxOpen: 3}, "op", "")
		require.ErrorIs(t, err, ErrMailboxFull)

		require.NoError(t, r.SetStatus(ctx, "pump-1", StatusRevoked, "op", ""))
		_, err = r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.spool"}, "op", "")
		require.ErrorIs(t, err, ErrDeviceRevoked)
	})
}

func TestListMessagesPages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "pump-1", nil, nil, "op", "")
		require.NoError(t, err)
		var ids []string
		for range 5 {
			m, err := r.SendCommand(ctx, CommandSpec{Device: "pump-1", Name: "diag.spool"}, "op", "")
			require.NoError(t, err)
			ids = append(ids, m.ID)
			fakeClock(r).Advance(time.Millisecond)
		}
		page, err := r.ListMessages(ctx, "pump-1", KindCommand, 2, "")
		require.NoError(t, err)
		require.Equal(t, []string{ids[4], ids[3]}, []string{page[0].ID, page[1].ID})
		page, err = r.ListMessages(ctx, "pump-1", KindCommand, 10, page[1].ID)
		require.NoError(t, err)
		require.Len(t, page, 3)
		require.Equal(t, ids[2], page[0].ID)
	})
}

func TestConfigLayers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "pump-1", map[string]string{"site": "north"}, []string{"line-a", "line-b"}, "op", "")
		require.NoError(t, err)
		_, err = r.CreateDevice(ctx, "pump-2", nil, []string{"line-a"}, "op", "")
		require.NoError(t, err)

		msgs, err := r.SetConfigLayer(ctx, ScopeFleet, "", json.RawMessage(`{"schedule":{"interval":"60s","jitter":"10s"},"log":{"level":"info"}}`), "op", "")
		require.NoError(t, err)
		require.Len(t, msgs, 2)
		_, err = r.SetConfigLayer(ctx, ScopeGroup, "line-b", json.RawMessage(`{"schedule":{"interval":"20s"}}`), "op", "")
		require.NoError(t, err)
		_, err = r.SetConfigLayer(ctx, ScopeGroup, "line-a", json.RawMessage(`{"schedule":{"interval":"30s"},"health":{"interval":"5m"}}`), "op", "")
		require.NoError(t, err)
		_, err = r.SetConfigLayer(ctx, ScopeTag, "site=north", json.RawMessage(`{"log":{"level":"debug"}}`), "op", "")
		require.NoError(t, err)
		msgs, err = r.SetConfigLayer(ctx, ScopeDevice, "pump-1", json.RawMessage(`{"health":null}`), "op", "")
		require.NoError(t, err)
		require.Len(t, msgs, 1)

		dc, err := r.DeviceConfig(ctx, "pump-1")
		require.NoError(t, err)
		// fleet < group line-a < group line-b < tag site=north < device; null removes.
		require.JSONEq(t, `{"schedule":{"interval":"20s","jitter":"10s"},"log":{"level":"debug"}}`, string(dc.Desired))
		require.Equal(t, []string{"fleet", "group line-a", "group line-b", "tag site=north", "device pump-1"}, dc.Layers)
		require.EqualValues(t, 5, dc.DesiredVersion, "one version per layer that changed the document")

		open, err := r.OpenMessages(ctx, "pump-1", KindConfig)
		require.NoError(t, err)
		require.Len(t, open, 1, "older config messages are superseded")
		var d protocol.DesiredConfig
		require.NoError(t, json.Unmarshal(open[0].Payload, &d))
		require.Equal(t, dc.DesiredVersion, d.Version)
		require.JSONEq(t, string(dc.Desired), string(d.Config))

		// Setting the same layer again changes no document: no message.
		msgs, err = r.SetConfigLayer(ctx, ScopeTag, "site=north", json.RawMessage(`{"log": {"level": "debug"}}`), "op", "")
		require.NoError(t, err)
		require.Empty(t, msgs)

		// The device reports: the message succeeds; a refused key fails the next one.
		require.NoError(t, r.ReportConfig(ctx, "pump-1", protocol.ReportedConfig{Version: d.Version, Applied: dc.Desired}))
		got, err := r.Message(ctx, open[0].ID)
		require.NoError(t, err)
		require.Equal(t, MessageSucceeded, got.State)
		msgs, err = r.SetConfigLayer(ctx, ScopeDevice, "pump-1", json.RawMessage(`{"log":{"level":"warn"}}`), "op", "")
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		require.NoError(t, r.ReportConfig(ctx, "pump-1", protocol.ReportedConfig{Version: msgs[0].Version, Refused: map[string]string{"log.level": "no"}}))
		got, err = r.Message(ctx, msgs[0].ID)
		require.NoError(t, err)
		require.Equal(t, MessageFailed, got.State)
		dc, err = r.DeviceConfig(ctx, "pump-1")
		require.NoError(t, err)
		require.Equal(t, msgs[0].Version, dc.AppliedVersion)
		require.Equal(t, map[string]string{"log.level": "no"}, dc.Refused)

		// Removing a layer recomputes too; a membership change needs RefreshConfig.
		_, err = r.SetConfigLayer(ctx, ScopeGroup, "line-b", nil, "op", "")
		require.NoError(t, err)
		require.NoError(t, r.SetGroups(ctx, "pump-2", nil, []string{"line-a"}, "op", ""))
		msgs, err = r.RefreshConfig(ctx, []string{"pump-2", "unknown-device"})
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		dc, err = r.DeviceConfig(ctx, "pump-2")
		require.NoError(t, err)
		require.JSONEq(t, `{"schedule":{"interval":"60s","jitter":"10s"},"log":{"level":"info"}}`, string(dc.Desired))

		for _, bad := range []string{`[1]`, `"x"`, `{`} {
			_, err = r.SetConfigLayer(ctx, ScopeFleet, "", json.RawMessage(bad), "op", "")
			require.ErrorIs(t, err, ErrInvalid, bad)
		}
		_, err = r.SetConfigLayer(ctx, ScopeTag, "nokv", json.RawMessage(`{}`), "op", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, err = r.SetConfigLayer(ctx, "planet", "", json.RawMessage(`{}`), "op", "")
		require.ErrorIs(t, err, ErrInvalid)
		layers, err := r.ConfigLayers(ctx)
		require.NoError(t, err)
		require.Equal(t, "fleet", layers[0].Label())
	})
}

func TestMergePatch(t *testing.T) {
	// RFC 7386 appendix A examples.
	for _, c := range []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	} {
		var target, patch any
		require.NoError(t, json.Unmarshal([]byte(c.target), &target))
		require.NoError(t, json.Unmarshal([]byte(c.patch), &patch))
		before, _ := json.Marshal(target)
		got, err := json.Marshal(mergePatch(target, patch))
		require.NoError(t, err)
		require.JSONEq(t, c.want, string(got), "%s + %s", c.target, c.patch)
		after, _ := json.Marshal(target)
		require.JSONEq(t, string(before), string(after), "the target is not changed")
	}
}

// TestConfigOversizeDevice: a device whose computed document would exceed the limit keeps its
// previous document and is named; the other devices of the change get theirs, then and later.
func TestConfigOversizeDevice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		for _, id := range []string{"pump-1", "pump-2"} {
			_, err := r.CreateDevice(ctx, id, nil, nil, "op", "")
			require.NoError(t, err)
		}
		half := `{"a":"` + strings.Repeat("x", MaxConfigDocument/2) + `"}`
		_, err := r.SetConfigLayer(ctx, ScopeDevice, "pump-2", json.RawMessage(half), "op", "")
		require.NoError(t, err)
		msgs, err := r.SetConfigLayer(ctx, ScopeFleet, "", json.RawMessage(`{"b":"`+strings.Repeat("y", MaxConfigDocument/2)+`"}`), "op", "")
		var over *OversizeError
		require.ErrorAs(t, err, &over)
		require.ErrorIs(t, err, ErrInvalid)
		require.Equal(t, []string{"pump-2"}, over.Devices)
		require.Len(t, msgs, 1)
		require.Equal(t, "pump-1", msgs[0].Device)

		msgs, err = r.SetConfigLayer(ctx, ScopeFleet, "", json.RawMessage(`{"c":1}`), "op", "")
		require.NoError(t, err, "a later change is not blocked by the oversized device")
		require.Len(t, msgs, 2)
	})
}

// TestReportConfigs: many reports in one transaction; an unknown device fails the call and
// changes nothing.
func TestReportConfigs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		for _, id := range []string{"pump-1", "pump-2"} {
			_, err := r.CreateDevice(ctx, id, nil, nil, "op", "")
			require.NoError(t, err)
		}
		msgs, err := r.SetConfigLayer(ctx, ScopeFleet, "", json.RawMessage(`{"log":{"level":"warn"}}`), "op", "")
		require.NoError(t, err)
		require.Len(t, msgs, 2)
		bad := []ConfigReport{{Device: "pump-1", Report: protocol.ReportedConfig{Version: 1}}, {Device: "ghost", Report: protocol.ReportedConfig{Version: 1}}}
		require.ErrorIs(t, r.ReportConfigs(ctx, bad), ErrNotFound)
		st, err := r.ConfigStatus(ctx)
		require.NoError(t, err)
		require.Equal(t, ConfigStatus{Devices: 2, Pending: 2}, st, "the failed call changed nothing")
		require.NoError(t, r.ReportConfigs(ctx, []ConfigReport{
			{Device: "pump-1", Report: protocol.ReportedConfig{Version: 1, Applied: json.RawMessage(`{"log":{"level":"warn"}}`)}},
			{Device: "pump-2", Report: protocol.ReportedConfig{Version: 1, Refused: map[string]string{"log.level": "fixed"}}},
		}))
		st, err = r.ConfigStatus(ctx)
		require.NoError(t, err)
		require.Equal(t, ConfigStatus{Devices: 2, InSync: 1, Refused: 1}, st)
	})
}
