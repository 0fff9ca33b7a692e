package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/sim"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(d, 50))
	require.Equal(t, 99*time.Millisecond, percentile(d, 99))
	require.Equal(t, 100*time.Millisecond, percentile(d, 100))
	require.Equal(t, time.Millisecond, percentile(d, 0))
	require.Equal(t, time.Duration(0), percentile(nil, 50))
	require.Equal(t, 7*time.Second, percentile([]time.Duration{7 * time.Second}, 99))
}

func TestSummariseSeconds(t *testing.T) {
	s := summariseSeconds([]int{0, 0, 10, 30, 8, 2}, 50)
	require.Equal(t, 50, s.back)
	require.Equal(t, 30, s.peak)
	require.InDelta(t, 12.5, s.mean, 1e-9, "50 connects over the 4 seconds from the first to the last")
	require.Equal(t, 5*time.Second, s.to95, "48 of 50 by the end of second 4")
	require.Equal(t, 6*time.Second, s.to100)
	short := summariseSeconds([]int{5}, 10)
	require.Equal(t, time.Duration(-1), short.to95)
	require.Equal(t, 5.0, short.mean)
}

func TestPerSecondSince(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := sim.Summary{Started: t0, Timeline: []sim.Second{
		{Second: 0, Connects: 100, Connected: 100},
		{Second: 10, Connects: 7, Connected: 107},
		{Second: 12, Connects: 3, Connected: 110},
	}}
	b := sim.Summary{Started: t0.Add(500 * time.Millisecond), Timeline: []sim.Second{{Second: 10, Connects: 5, Connected: 5}}}
	// Killed at 9.2 s: a's second 10 ends at 11 s (bucket 1), b's at 11.5 s (bucket 2), a's
	// second 12 at 13 s (bucket 3); the first connects ended before the kill.
	require.Equal(t, []int{0, 7, 5, 3}, perSecondSince([]sim.Summary{a, b}, t0.Add(9200*time.Millisecond)))
}

func TestCountEstablished(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:22B8 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:22B8 0300007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0200007F:9C40 0100007F:22B8 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:22B8 0400007F:9C42 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
`
	require.Equal(t, 2, countEstablished(bufio.NewScanner(strings.NewReader(tcp)), 8888))
}

func TestGaugePerSecond(t *testing.T) {
	ms := time.Millisecond
	got := gaugePerSecond([]gaugeSample{{250 * ms, 0}, {500 * ms, 0}, {1250 * ms, 40}, {1750 * ms, 100}, {2000 * ms, 90}, {3100 * ms, 150}})
	// 100 in second 1 (two readings), a drop to 90 counts nothing, then +60 in second 3.
	require.Equal(t, []int{0, 100, 0, 60}, got)
	require.Nil(t, gaugePerSecond(nil))
}

func TestLastConnected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sim.log")
	require.NoError(t, os.WriteFile(path, []byte("time=x level=WARN msg=y\n"), 0o644))
	_, ok := lastConnected(path)
	require.False(t, ok, "no progress line yet")
	require.NoError(t, os.WriteFile(path, []byte(
		"sim running elapsed=1s devices=3800 connected=12 sampled_per_s=0.0 acked_per_s=0.0 backlog=0 reconnects=0 dropped=0\n"+
			"time=x level=WARN msg=y\n"+
			"sim running elapsed=2s devices=3800 connected=3799 sampled_per_s=0.0 acked_per_s=0.0 backlog=0 reconnects=1 dropped=0\n"), 0o644))
	n, ok := lastConnected(path)
	require.True(t, ok)
	require.Equal(t, 3799, n)
	_, ok = lastConnected(filepath.Join(t.TempDir(), "missing.log"))
	require.False(t, ok)
}
