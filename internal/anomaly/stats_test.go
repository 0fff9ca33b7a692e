package anomaly

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBaselineLeavesOutAPastIncident: one baseline window with five times the drops (an
// incident an hour ago) is left out of the level; windows of a small group, whose counts are
// mostly noise, are not.
func TestBaselineLeavesOutAPastIncident(t *testing.T) {
	var ws []Counts
	for i := range 8 {
		ws = append(ws, Counts{Num: 100 + float64(i%3-1)*8, Den: 250})
	}
	ws[3].Num = 500
	b := estimateBaseline(KindRate, ws)
	require.Equal(t, 1, b.Dropped)
	require.Equal(t, 7, b.Kept)
	require.InDelta(t, 0.4, b.Level, 0.02)
	// The present at the usual rate is no move, though the incident would have made it look
	// like a fall.
	f, z := b.test(Counts{Num: 100, Den: 250})
	require.InDelta(t, 1, f, 0.05)
	require.Less(t, z, 1.0)

	// A small group: 0, 1, 0, 2, 0, 0, 1, 0 drops. A window of 2 is Poisson noise, not an
	// incident, and stays.
	small := []Counts{{0, 5}, {1, 5}, {0, 5}, {2, 5}, {0, 5}, {0, 5}, {1, 5}, {0, 5}}
	b = estimateBaseline(KindRate, small)
	require.Zero(t, b.Dropped)
	require.InDelta(t, 4.0/40, b.Level, 1e-9)
	// Poisson noise at that rate, not the MAD of 0.
	require.InDelta(t, 0.1, b.UnitVar, 1e-9)
}
