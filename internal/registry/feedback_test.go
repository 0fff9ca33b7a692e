package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFeedback: events recorded against devices keep the firmware each device ran, are listed
// by device, firmware and kind and paged, counted per firmware version, refused with a clear
// error for unknown devices and bad fields, audited, and erased with their device — on both
// backends.
func TestFeedback(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.ImportDevices(ctx, []DeviceImport{
			{ID: "a", Model: "gw", Firmware: "1.0.0"},
			{ID: "b", Model: "gw", Firmware: "1.1.0"},
			{ID: "c", Model: "gw", Firmware: "1.1.0"},
		}, "test", "")
		require.NoError(t, err)

		f, err := r.RecordFeedback(ctx, Feedback{Device: "a", Kind: "incident", Message: "pump stalled"}, "operator:alice", "10.0.0.1:5")
		require.NoError(t, err)
		require.Positive(t, f.ID)
		require.Equal(t, "1.0.0", f.Firmware)
		require.Equal(t, "gw", f.Model)
		require.Equal(t, "warning", f.Severity, "the default severity")
		require.Equal(t, "operator:alice", f.Source)
		require.Equal(t, r.now(), f.At)
		for _, d := range []string{"b", "b", "c"} {
			_, err := r.RecordFeedback(ctx, Feedback{Device: d, Kind: "crash", Severity: "critical", Source: "crashdump"}, "operator:ci", "")
			require.NoError(t, err)
		}
		_, err = r.RecordFeedback(ctx, Feedback{Device: "c", Kind: "feedback", Severity: "info", Message: "display flickers", At: r.now().Add(-time.Hour)}, "operator:bob", "")
		require.NoError(t, err)

		for _, bad := range []struct {
			f    Feedback
			want string
		}{
			{Feedback{Device: "a", Kind: "rumour"}, `kind "rumour" is not one of feedback, incident, crash`},
			{Feedback{Device: "a", Kind: "crash", Severity: "dire"}, `severity "dire" is not one of info, warning, critical`},
			{Feedback{Device: "a", Kind: "crash", Message: strings.Repeat("x", MaxFeedbackMessage+1)}, "at most 2000 bytes"},
			{Feedback{Device: "a", Kind: "crash", Message: "\xff"}, "UTF-8"},
			{Feedback{Device: "a", Kind: "crash", Source: strings.Repeat("x", MaxFeedbackSource+1)}, "at most 100 bytes"},
			{Feedback{Device: "a", Kind: "crash", At: r.now().Add(time.Hour)}, "in the future"},
			{Feedback{Device: "bad id!", Kind: "crash"}, "device ID"},
		} {
			_, err := r.RecordFeedback(ctx, bad.f, "operator:alice", "")
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, bad.want)
		}
		_, err = r.RecordFeedback(ctx, Feedback{Device: "nobody", Kind: "crash"}, "operator:alice", "")
		require.ErrorIs(t, err, ErrNotFound)

		all, err := r.ListFeedback(ctx, FeedbackFilter{})
		require.NoError(t, err)
		require.Len(t, all, 5)
		require.Equal(t, "feedback", all[0].Kind, "newest first")
		require.Equal(t, "operator:ci via crashdump", all[1].Source)
		page, err := r.ListFeedback(ctx, FeedbackFilter{Limit: 2, Before: all[1].ID})
		require.NoError(t, err)
		require.Equal(t, []int64{all[2].ID, all[3].ID}, []int64{page[0].ID, page[1].ID})
		sel, err := r.ListFeedback(ctx, FeedbackFilter{Firmware: "1.1.0", Kind: "crash"})
		require.NoError(t, err)
		require.Len(t, sel, 3)
		sel, err = r.ListFeedback(ctx, FeedbackFilter{Device: "c"})
		require.NoError(t, err)
		require.Len(t, sel, 2)
		none, err := r.ListFeedback(ctx, FeedbackFilter{Device: "nobody"})
		require.NoError(t, err)
		require.NotNil(t, none, "an empty list, not nil")

		sum, err := r.FeedbackSummary(ctx, r.now().Add(-24*time.Hour))
		require.NoError(t, err)
		require.Equal(t, []FeedbackCount{
			{Firmware: "1.0.0", Kind: "incident", Events: 1, Devices: 1, Fleet: 1},
			{Firmware: "1.1.0", Kind: "crash", Events: 3, Devices: 2, Fleet: 2},
			{Firmware: "1.1.0", Kind: "feedback", Events: 1, Devices: 1, Fleet: 2},
		}, sum)
		sum, err = r.FeedbackSummary(ctx, r.now().Add(-time.Minute))
		require.NoError(t, err)
		require.Len(t, sum, 2, "the hour-old event is before since")

		audit, err := r.ListAudit(ctx, 10, 0)
		require.NoError(t, err)
		require.Equal(t, ActionFeedback, audit[0].Action)
		require.Equal(t, "c", audit[0].Target)
		require.Equal(t, "info feedback on 1.1.0", audit[0].Detail)

		// A deleted device's rows go with it; the audit log says so.
		require.NoError(t, r.DeleteDevice(ctx, "c", "operator:alice", ""))
		sel, err = r.ListFeedback(ctx, FeedbackFilter{Device: "c"})
		require.NoError(t, err)
		require.Empty(t, sel, "a deleted device's feedback goes with it")
		_, err = r.Device(ctx, "c")
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, r.DeleteDevice(ctx, "c", "operator:alice", ""), ErrNotFound)
		audit, err = r.ListAudit(ctx, 1, 0)
		require.NoError(t, err)
		require.Equal(t, ActionDeviceDelete, audit[0].Action)
		require.Equal(t, "active device erased with 0 certificate(s)", audit[0].Detail)

	})
}
