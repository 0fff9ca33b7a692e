package spool_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
)

var policies = []spool.SyncPolicy{spool.SyncAlways, spool.SyncBatch, spool.SyncNever}

func TestAppendPeekAckReopen(t *testing.T) {
	for _, p := range policies {
		t.Run(p.String(), func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions(p)
			s := openT(t, dir, opts)
			ids := appendN(t, s, 0, 500) // spans several 4 KiB segments
			for i, id := range ids {
				require.Equal(t, uint64(i+1), id)
			}
			require.NoError(t, s.Sync())
			require.Equal(t, uint64(500), s.Durable())

			recs := readAll(t, s)
			require.Len(t, recs, 500)
			for i, r := range recs {
				require.Equal(t, ids[i], r.ID)
				require.Equal(t, payload(i), r.Payload)
				require.Equal(t, i%10 == 0, r.Class == spool.ClassEvent)
				require.True(t, r.Time.Equal(epoch), "append time from the injected clock")
			}
			segsBefore := s.Stats().Segments
			require.Greater(t, segsBefore, 3)

			require.NoError(t, s.Ack(300))
			st := s.Stats()
			require.Equal(t, uint64(200), st.Records)
			require.Equal(t, uint64(300), st.AckedID)
			require.Less(t, st.Segments, segsBefore, "fully acknowledged segments are deleted")
			require.Len(t, segmentFiles(t, dir), st.Segments)
			require.NoError(t, s.Close())

			// Reopen: acknowledged records stay gone, IDs continue.
			s = openT(t, dir, opts)
			recs = readAll(t, s)
			require.Equal(t, ids[300:], recordIDs(recs))
			more := appendN(t, s, 500, 10)
			require.Equal(t, uint64(501), more[0])
			require.NoError(t, s.Ack(500))
			require.NoError(t, s.Sync())
			require.Equal(t, more, recordIDs(readAll(t, s)))
			require.NoError(t, s.Ack(510))
			require.Empty(t, readAll(t, s))
			require.Equal(t, uint64(0), s.Stats().Records)
			require.NoError(t, s.Close())

			// Everything acknowledged: one (new, empty) segment is left and
			// the ID sequence still survives.
			s = openT(t, dir, opts)
			require.Empty(t, readAll(t, s))
			require.Equal(t, 1, s.Stats().Segments)
			id, err := s.Append(spool.ClassRaw, []byte("x"))
			require.NoError(t, err)
			require.Equal(t, uint64(511), id)
			require.NoError(t, s.Close())
		})
	}
}

func TestReadFromInFlightBatches(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(spool.SyncAlways)
	s := openT(t, dir, opts)
	defer s.Close()
	appendN(t, s, 0, 100)

	b1, err := s.ReadFrom(0, 10, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(1), b1[0].ID)
	require.Len(t, b1, 10)
	b2, err := s.ReadFrom(b1[len(b1)-1].ID, 10, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(11), b2[0].ID)
	// maxBytes: 13-byte payloads, 40 bytes -> 3 records.
	b3, err := s.ReadFrom(b2[len(b2)-1].ID, 0, 40)
	require.NoError(t, err)
	require.Equal(t, []uint64{21, 22, 23}, recordIDs(b3))
	// A record larger than maxBytes is still returned alone.
	b4, err := s.ReadFrom(23, 5, 1)
	require.NoError(t, err)
	require.Equal(t, []uint64{24}, recordIDs(b4))

	// The server acknowledges batch 2 before batch 1.
	require.NoError(t, s.AckIDs(recordIDs(b2)...))
	st := s.Stats()
	require.Equal(t, uint64(0), st.AckedID, "watermark waits for batch 1")
	require.Equal(t, uint64(90), st.Records)
	recs, err := s.Peek(15, 0)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 21, 22, 23, 24, 25}, recordIDs(recs))

	require.NoError(t, s.AckIDs(recordIDs(b1)...))
	require.Equal(t, uint64(20), s.Stats().AckedID)
	recs, err = s.Peek(1, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(21), recs[0].ID)

	// Acknowledging what readers cannot have seen is refused.
	require.ErrorIs(t, s.Ack(101), spool.ErrUnknownID)
	require.ErrorIs(t, s.AckIDs(5, 1000), spool.ErrUnknownID)
	require.NoError(t, s.Ack(10), "acking below the watermark is a no-op")
}

func TestOutOfOrderAcksResentAfterCrash(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(spool.SyncAlways)
	s := openT(t, dir, opts)
	appendN(t, s, 0, 20)
	require.NoError(t, s.Ack(5))
	require.NoError(t, s.AckIDs(10, 11, 12))
	require.NoError(t, s.Close())

	// Only the contiguous watermark is persisted: 10..12 come back
	// (at-least-once; the server deduplicates).
	s = openT(t, dir, opts)
	defer s.Close()
	recs := readAll(t, s)
	require.Len(t, recs, 15)
	require.Equal(t, uint64(6), recs[0].ID)
}

func TestBatchRecordsVisibleAfterGroupCommit(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(spool.SyncBatch)
	fake := opts.Clock.(*clock.Fake)
	s := openT(t, dir, opts)
	defer s.Close()

	id, err := s.Append(spool.ClassRaw, []byte("a"))
	require.NoError(t, err)
	require.Empty(t, readAll(t, s), "not durable yet, so not readable")
	require.Equal(t, uint64(0), s.Durable())

	waited := make(chan error, 1)
	go func() { waited <- s.Wait(context.Background(), 0) }()

	fake.BlockUntil(1) // the sync loop's timer is armed
	fake.Advance(opts.SyncInterval + spool.DefaultSyncInterval)
	select {
	case err := <-waited:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the group commit")
	}
	require.Equal(t, id, s.Durable())
	require.Equal(t, []uint64{id}, recordIDs(readAll(t, s)))
	st := s.Stats()
	require.GreaterOrEqual(t, st.Syncs, uint64(1))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.Wait(ctx, id), context.DeadlineExceeded)
}

func TestSyncBytesTriggersEarlyCommit(t *testing.T) {
	opts := testOptions(spool.SyncBatch)
	opts.SyncBytes = 1 << 10
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	appendN(t, s, 0, 100) // ~3 KiB, no clock advance
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Wait(ctx, 0))
	require.Positive(t, s.Durable())
}

func TestConcurrentAppendAndSend(t *testing.T) {
	opts := spool.Options{SegmentBytes: 16 << 10, SyncInterval: 2 * time.Millisecond}
	s := openT(t, t.TempDir(), opts)
	const writers, perWriter = 8, 1500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				_, err := s.Append(spool.ClassRaw, payload(w*perWriter+i))
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// The sender keeps two batches in flight and acknowledges them out of
	// order.
	got := make(map[string]bool)
	var last, prev uint64
	var pending [][]uint64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(got) < writers*perWriter {
		require.NoError(t, s.Wait(ctx, last))
		recs, err := s.ReadFrom(last, 100, 0)
		require.NoError(t, err)
		for _, r := range recs {
			require.Greater(t, r.ID, prev)
			prev = r.ID
			require.False(t, got[string(r.Payload)], "duplicate %s", r.Payload)
			got[string(r.Payload)] = true
		}
		if len(recs) > 0 {
			last = recs[len(recs)-1].ID
			pending = append(pending, recordIDs(recs))
		}
		if len(pending) == 2 {
			require.NoError(t, s.AckIDs(pending[1]...))
			require.NoError(t, s.AckIDs(pending[0]...))
			pending = pending[:0]
		}
	}
	wg.Wait()
	for _, p := range pending {
		require.NoError(t, s.AckIDs(p...))
	}
	st := s.Stats()
	require.Equal(t, uint64(0), st.Records)
	require.Equal(t, uint64(writers*perWriter), st.AckedID)
	require.NoError(t, s.Close())
}

func TestOldestAge(t *testing.T) {
	opts := testOptions(spool.SyncAlways)
	fake := opts.Clock.(*clock.Fake)
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	require.Zero(t, s.Stats().OldestAge)
	appendN(t, s, 0, 3)
	fake.Advance(time.Minute)
	appendN(t, s, 3, 3)
	fake.Advance(time.Minute)
	require.Equal(t, 2*time.Minute, s.Stats().OldestAge)
	require.NoError(t, s.Ack(3))
	require.Equal(t, time.Minute, s.Stats().OldestAge)
	require.NoError(t, s.Ack(6))
	require.Zero(t, s.Stats().OldestAge)
}

func TestAppendRejectsBadInput(t *testing.T) {
	opts := testOptions(spool.SyncNever)
	opts.MaxRecordBytes = 100
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	_, err := s.Append(spool.ClassRaw, make([]byte, 101))
	require.ErrorIs(t, err, spool.ErrRecordTooLarge)
	_, err = s.Append(spool.Class(7), nil)
	require.ErrorIs(t, err, spool.ErrUnknownClass)
	id, err := s.Append(spool.ClassRaw, nil) // empty payloads are fine
	require.NoError(t, err)
	require.Equal(t, uint64(1), id, "rejected appends use no ID")
	recs := readAll(t, s)
	require.Len(t, recs, 1)
	require.Empty(t, recs[0].Payload)
}

func TestClosedAndLocked(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, testOptions(spool.SyncBatch))
	_, err := spool.Open(dir, testOptions(spool.SyncBatch))
	require.ErrorIs(t, err, spool.ErrLocked)

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	_, err = s.Append(spool.ClassRaw, nil)
	require.ErrorIs(t, err, spool.ErrClosed)
	_, err = s.Peek(1, 0)
	require.ErrorIs(t, err, spool.ErrClosed)
	require.ErrorIs(t, s.Ack(1), spool.ErrClosed)
	require.ErrorIs(t, s.AckIDs(1), spool.ErrClosed)
	require.ErrorIs(t, s.Sync(), spool.ErrClosed)
	require.ErrorIs(t, s.Wait(context.Background(), 0), spool.ErrClosed)
	_ = s.Stats()

	s = openT(t, dir, testOptions(spool.SyncBatch)) // lock released
	require.NoError(t, s.Close())
}

func TestOpenFailsOnUnusableDirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(f, nil, 0o644))
	_, err := spool.Open(f, spool.Options{})
	require.Error(t, err)
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name  string
		opts  spool.Options
		field string // empty: valid
	}{
		{name: "zero is default", opts: spool.Options{}},
		{name: "defaults", opts: spool.DefaultOptions()},
		{name: "small bound derives segment size", opts: spool.Options{MaxBytes: 8 << 10}},
		{name: "bound too small", opts: spool.Options{MaxBytes: 1 << 10}, field: "max_bytes"},
		{name: "segment above half the bound", opts: spool.Options{MaxBytes: 1 << 20, SegmentBytes: 600 << 10}, field: "segment_bytes"},
		{name: "segment tiny", opts: spool.Options{SegmentBytes: 10}, field: "segment_bytes"},
		{name: "record above segment", opts: spool.Options{SegmentBytes: 4 << 10, MaxRecordBytes: 5 << 10}, field: "max_record_bytes"},
		{name: "negative record limit", opts: spool.Options{MaxRecordBytes: -1}, field: "max_record_bytes"},
		{name: "unknown policy", opts: spool.Options{Sync: 9}, field: "sync"},
		{name: "negative interval", opts: spool.Options{SyncInterval: -time.Second}, field: "sync_interval"},
		{name: "negative sync bytes", opts: spool.Options{SyncBytes: -1}, field: "sync_bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, spool.ErrInvalidOptions)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	d := spool.DefaultOptions()
	require.Equal(t, int64(64<<20), d.MaxBytes)
	require.Equal(t, int64(1<<20), d.SegmentBytes)
	require.Equal(t, 64<<10, d.MaxRecordBytes)
	require.Equal(t, spool.SyncBatch, d.Sync)
	require.Equal(t, 200*time.Millisecond, d.SyncInterval)
}

func TestSyncPolicyText(t *testing.T) {
	for _, p := range policies {
		b, err := p.MarshalText()
		require.NoError(t, err)
		var q spool.SyncPolicy
		require.NoError(t, q.UnmarshalText(b))
		require.Equal(t, p, q)
	}
	var q spool.SyncPolicy
	err := q.UnmarshalText([]byte("sometimes"))
	require.ErrorIs(t, err, spool.ErrInvalidOptions)
	_, err = spool.SyncPolicy(9).MarshalText()
	require.True(t, errors.Is(err, spool.ErrInvalidOptions))
	require.Equal(t, "event", spool.ClassEvent.String())
	require.Equal(t, "raw", spool.ClassRaw.String())
	require.Equal(t, "class(9)", spool.Class(9).String())
}
