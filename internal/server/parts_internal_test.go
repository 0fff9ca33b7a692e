package server

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// TestPartsOrder: the data directory lock is taken first and released last; the parts start storage first and the listeners last, so that they stop
// the other way round — the listeners, then the pipeline with what it accepted, then storage —
// and nothing acknowledged is lost; the device channel stops after the listeners (whose
// sessions acknowledge its messages) and before the registry it writes to; the monitor stops
// after the listeners and the pipeline, whose last sessions and batches its last write has, and
// before the stores it writes to.
func TestPartsOrder(t *testing.T) {
	opts := DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen, opts.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	s, err := New(opts, clock.Real(), nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.Equal(t, []string{"data directory lock", "registry", "tsdb", "alerting", "anomaly finder", "event log", "retention", "monitor", "device channel", "rollout engine", "dns", "dns mover", "gc pacer", "ingest", "https", "mqtt"}, s.group.Names())
}
