package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// TestRolloutRecords: a rollout, one step's records, offers and history written together,
// the offers' mailbox states read back with the records, an offer withdrawn, a state change
// audited, a device's update report kept, the history paged — on both backends.
func TestRolloutRecords(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		n, err := r.ImportDevices(ctx, []DeviceImport{
			{ID: "a", Model: "gw", Firmware: "1.0.0", Tags: map[string]string{"ring": "test"}, Groups: []string{"north"}},
			{ID: "b", Model: "gw", Firmware: "1.0.0"},
		}, "test", "")
		require.NoError(t, err)
		require.Equal(t, 2, n)
		n, err = r.ImportDevices(ctx, []DeviceImport{{ID: "a"}, {ID: "c", Model: "gw"}}, "test", "")
		require.NoError(t, err)
		require.Equal(t, 1, n, "an existing device is skipped")
		d, err := r.Device(ctx, "a")
		require.NoError(t, err)
		require.Equal(t, "test", d.Tags["ring"])
		require.Equal(t, []string{"north"}, d.Groups)
		require.Equal(t, StatusActive, d.Status)

		ro, err := r.CreateRollout(ctx, Rollout{ID: "r-1", Version: "1.1.0", Selector: `{}`, Plan: `{}`, PlanName: "guide", CreatedBy: "alice"}, "")
		require.NoError(t, err)
		require.Equal(t, RolloutRunning, ro.State)
		_, err = r.CreateRollout(ctx, Rollout{ID: "r-1", Version: "1.1.0"}, "")
		require.ErrorIs(t, err, ErrExists)

		manifest := `{"m":"` + strings.Repeat("x", 3000) + `"}`
		step := RolloutStep{
			Offers: []CommandSpec{
				{Device: "a", Name: protocol.CmdFirmwareUpdate, TTL: time.Hour, MaxArgLen: MaxManifestLen, Args: map[string]string{protocol.ArgManifest: manifest}},
				{Device: "b", Name: protocol.CmdFirmwareUpdate, TTL: time.Hour, MaxArgLen: MaxManifestLen, Args: map[string]string{protocol.ArgManifest: manifest}},
			},
			Devices: []RolloutDevice{
				{Rollout: "r-1", Device: "a", Phase: 0, From: "1.0.0", Target: "1.1.0", State: UpdateOffered, Command: OfferRef(0), OfferedAt: r.now()},
				{Rollout: "r-1", Device: "b", Phase: 1, From: "1.0.0", Target: "1.1.0", State: UpdateOffered, Command: OfferRef(1), OfferedAt: r.now()},
				{Rollout: "r-1", Device: "c", Phase: 1, Target: "1.1.0", State: UpdateWaiting},
			},
			History: []UpdateEvent{{Device: "a", Rollout: "r-1", Event: UpdateOffered, From: "1.0.0", To: "1.1.0"}},
			Actor:   "rollout-engine",
		}
		msgs, err := r.ApplyRolloutStep(ctx, step, "")
		require.NoError(t, err)
		require.Len(t, msgs, 2)
		_, err = r.ApplyRolloutStep(ctx, RolloutStep{Offers: []CommandSpec{{Device: "a", Name: protocol.CmdFirmwareUpdate, Args: map[string]string{protocol.ArgManifest: manifest}}}}, "")
		require.ErrorIs(t, err, ErrInvalid, "without MaxArgLen the API's bound holds")

		_, err = r.CompleteCommand(ctx, "a", msgs[0].ID, protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailVerify, Detail: "bad signature"})
		require.NoError(t, err)
		recs, err := r.RolloutDevices(ctx, "r-1")
		require.NoError(t, err)
		require.Len(t, recs, 3)
		require.Equal(t, msgs[0].ID, recs[0].Command)
		require.Equal(t, MessageFailed, recs[0].CommandState)
		require.Equal(t, protocol.FailVerify, recs[0].CommandReason)
		require.Equal(t, MessageQueued, recs[1].CommandState)
		require.Equal(t, UpdateWaiting, recs[2].State)

		require.NoError(t, r.RecordUpdateReport(ctx, "b", protocol.UpdateReport{Command: msgs[1].ID, Rollout: "r-1", Version: "1.1.0", Phase: protocol.UpdateDownloading}))
		require.NoError(t, r.RecordUpdateReport(ctx, "b", protocol.UpdateReport{Command: "m-unknown", Version: "9.9.9", Phase: protocol.UpdateFailed, Reason: protocol.FailPrecheck, Detail: "no offer of ours"}))
		recs, err = r.RolloutDevices(ctx, "r-1")
		require.NoError(t, err)
		require.Equal(t, protocol.UpdateDownloading, recs[1].Reported)

		_, err = r.ApplyRolloutStep(ctx, RolloutStep{Cancel: []string{msgs[1].ID}}, "")
		require.NoError(t, err)
		m, err := r.Message(ctx, msgs[1].ID)
		require.NoError(t, err)
		require.Equal(t, MessageSuperseded, m.State)

		ro2, err := r.ChangeRollout(ctx, "r-1", "alice", ActionRolloutPause, "", func(ro *Rollout) (string, error) {
			ro.State = RolloutPaused
			return "paused", nil
		})
		require.NoError(t, err)
		require.Equal(t, RolloutPaused, ro2.State)
		active, err := r.Rollouts(ctx, true)
		require.NoError(t, err)
		require.Len(t, active, 1)
		_, err = r.ChangeRollout(ctx, "nope", "alice", ActionRolloutPause, "", func(*Rollout) (string, error) { return "", nil })
		require.ErrorIs(t, err, ErrNotFound)

		hist, err := r.UpdateHistory(ctx, "b", 1, 0)
		require.NoError(t, err)
		require.Len(t, hist, 1)
		require.Equal(t, "precheck: no offer of ours", hist[0].Detail, "a failure's reason leads its detail")
		require.Empty(t, hist[0].Rollout)
		hist, err = r.UpdateHistory(ctx, "b", 10, hist[0].ID)
		require.NoError(t, err)
		require.Len(t, hist, 1)
		require.Equal(t, protocol.UpdateDownloading, hist[0].Event)
		require.Equal(t, "r-1", hist[0].Rollout)
		require.Equal(t, "1.0.0", hist[0].From)
	})
}
