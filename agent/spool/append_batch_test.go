package spool_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
)

// AppendBatch stores what the same Appends would, across segment
// rotations, and the records survive a reopen.
func TestAppendBatch(t *testing.T) {
	for _, p := range policies {
		t.Run(p.String(), func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions(p) // 4 KiB segments: batches span several
			s := openT(t, dir, opts)
			var want [][]byte
			next := uint64(1)
			for _, n := range []int{1, 7, 300, 2, 150} {
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = payload(len(want))
					want = append(want, batch[i])
				}
				first, stored, err := s.AppendBatch(spool.ClassRaw, batch)
				require.NoError(t, err)
				require.Equal(t, next, first)
				require.Equal(t, n, stored)
				next += uint64(n)
			}
			id, err := s.Append(spool.ClassEvent, []byte("after"))
			require.NoError(t, err)
			require.Equal(t, next, id, "IDs continue after a batch")
			want = append(want, []byte("after"))
			require.Greater(t, s.Stats().Segments, 3)

			check := func(s *spool.Spool) {
				require.NoError(t, s.Sync())
				recs := readAll(t, s)
				require.Len(t, recs, len(want))
				for i, r := range recs {
					require.Equal(t, uint64(i+1), r.ID)
					require.Equal(t, want[i], r.Payload)
					require.Equal(t, i == len(want)-1, r.Class == spool.ClassEvent)
				}
				// Reading from the middle uses the segments' indexes.
				mid, err := s.ReadFrom(199, 3, 0)
				require.NoError(t, err)
				require.Equal(t, []uint64{200, 201, 202}, recordIDs(mid))
			}
			check(s)
			require.NoError(t, s.Close())
			s = openT(t, dir, opts)
			check(s)
			require.NoError(t, s.Close())
		})
	}
}

func TestAppendBatchRejectsBadInput(t *testing.T) {
	opts := testOptions(spool.SyncNever)
	opts.MaxRecordBytes = 100
	s := openT(t, t.TempDir(), opts)
	_, _, err := s.AppendBatch(spool.ClassRaw, [][]byte{{1}, make([]byte, 101)})
	require.ErrorIs(t, err, spool.ErrRecordTooLarge)
	require.ErrorContains(t, err, "record 1")
	_, _, err = s.AppendBatch(spool.Class(7), [][]byte{{1}})
	require.ErrorIs(t, err, spool.ErrUnknownClass)
	first, stored, err := s.AppendBatch(spool.ClassRaw, nil)
	require.NoError(t, err)
	require.Zero(t, first)
	require.Zero(t, stored)
	require.Empty(t, readAll(t, s), "a refused batch stores nothing")
	first, _, err = s.AppendBatch(spool.ClassRaw, [][]byte{{1}, {}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), first, "refused batches use no ID")
	require.Len(t, readAll(t, s), 2)
	require.NoError(t, s.Close())
	_, _, err = s.AppendBatch(spool.ClassRaw, [][]byte{{1}})
	require.ErrorIs(t, err, spool.ErrClosed)
}

// A batch larger than the bound drops the oldest raw records first, as
// Appends would.
func TestAppendBatchKeepsTheBound(t *testing.T) {
	opts := testOptions(spool.SyncNever)
	opts.MaxBytes = 16 << 10
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = make([]byte, 100)
	}
	for range 5 {
		_, _, err := s.AppendBatch(spool.ClassRaw, batch)
		require.NoError(t, err)
	}
	st := s.Stats()
	require.LessOrEqual(t, st.Bytes, opts.MaxBytes)
	require.NotZero(t, st.DroppedOverflow)
	require.Equal(t, uint64(501), st.NextID)
	require.Equal(t, 500-st.DroppedOverflow, st.Records)
}
