package ingest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSeqState counts gaps, late arrivals and repeats of a device's batch numbers, without
// storage.
func TestSeqState(t *testing.T) {
	cases := []struct {
		name                string
		start               uint64 // highest number stored before; 0: none
		seqs                []uint64
		gaps, late, repeats float64
		highest             uint64
	}{
		{"in order", 0, []uint64{1, 2, 3}, 0, 0, 0, 3},
		{"first number is not a gap", 0, []uint64{7, 8}, 0, 0, 0, 8},
		{"a gap", 0, []uint64{1, 2, 5}, 2, 0, 0, 5},
		{"a gap filled late", 0, []uint64{1, 4, 3, 2}, 2, 2, 0, 4},
		{"retransmits", 0, []uint64{1, 2, 2, 1}, 0, 0, 2, 2},
		{"late once, then a repeat", 0, []uint64{1, 3, 2, 2}, 1, 1, 1, 3},
		{"below the window counts as a repeat", 0, []uint64{1, 100, 2}, 98, 0, 1, 100},
		{"a jump past the window forgets it", 0, []uint64{1, 2, 200, 199}, 197, 1, 0, 200},
		{"goes on from the stored highest", 10, []uint64{11, 13}, 1, 0, 0, 13},
		{"the stored highest again is a repeat", 10, []uint64{10}, 0, 0, 1, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s seqState
			if tc.start > 0 {
				s.start(tc.start)
			}
			for _, seq := range tc.seqs {
				s.observe(seq)
			}
			require.Equal(t, tc.gaps, s.gaps, "gaps")
			require.Equal(t, tc.late, s.late, "late")
			require.Equal(t, tc.repeats, s.repeats, "repeats")
			require.Equal(t, tc.highest, s.highest, "highest")
		})
	}
}
