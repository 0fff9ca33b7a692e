package devicechannel

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// TestMessageRateLimit: a device may send MessageBurst channel messages at once and
// MessageRate per second after that; the others are refused with ErrChannelRateLimited and
// counted, and another device is not affected.
func TestMessageRateLimit(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))
	reg, err := registry.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "r.db"), "", clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Close()) })
	ctx := context.Background()
	for _, id := range []string{"pump-1", "pump-2"} {
		_, err := reg.CreateDevice(ctx, id, nil, nil, "test", "")
		require.NoError(t, err)
	}
	mreg := prometheus.NewRegistry()
	s := New(reg, nil, Options{Clock: clk, MessageRate: 2, MessageBurst: 10}, nil, mreg)
	state := []byte(`{"firmware_version":"1.0"}`)
	for i := range 10 {
		require.NoError(t, s.Message(ctx, "pump-1", protocol.TopicState, state), "message %d", i)
	}
	err = s.Message(ctx, "pump-1", protocol.TopicState, state)
	require.ErrorIs(t, err, gateway.ErrChannelRateLimited)
	require.NoError(t, s.Message(ctx, "pump-2", protocol.TopicState, state), "another device has its own bucket")
	clk.Advance(time.Second)
	require.NoError(t, s.Message(ctx, "pump-1", protocol.TopicState, state))
	require.NoError(t, s.Message(ctx, "pump-1", protocol.TopicState, state))
	require.ErrorIs(t, s.Message(ctx, "pump-1", protocol.TopicState, state), gateway.ErrChannelRateLimited)
	require.Equal(t, 2.0, testutil.ToFloat64(s.met.refused.WithLabelValues(refusedRate)))
}
