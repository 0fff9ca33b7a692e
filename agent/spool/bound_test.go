package spool_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
)

func boundOptions(p spool.SyncPolicy) spool.Options {
	o := testOptions(p)
	o.MaxBytes = 8 << 10
	o.SegmentBytes = 1 << 10
	return o
}

func boundPayload(class string, i int) []byte {
	return fmt.Appendf(nil, "%s-%06d-%s", class, i, bytes.Repeat([]byte("x"), 27)) // 40 bytes
}

func TestBoundDropsRawBeforeEvents(t *testing.T) {
	for _, p := range []spool.SyncPolicy{spool.SyncAlways, spool.SyncNever} {
		t.Run(p.String(), func(t *testing.T) {
			opts := boundOptions(p)
			s := openT(t, t.TempDir(), opts)
			defer s.Close()
			const n = 3000
			var raws, events int
			for i := range n {
				c, name := spool.ClassRaw, "raw"
				if i%100 == 0 {
					c, name = spool.ClassEvent, "evt"
				}
				_, err := s.Append(c, boundPayload(name, i))
				require.NoError(t, err, "appends never fail because the spool is full")
				if c == spool.ClassEvent {
					events++
				} else {
					raws++
				}
				require.LessOrEqual(t, s.Stats().Bytes, opts.MaxBytes)
			}
			recs := readAll(t, s)
			st := s.Stats()
			var presentEvents, presentRaw []int
			for i, r := range recs {
				if i > 0 {
					require.Greater(t, r.ID, recs[i-1].ID)
				}
				var name string
				var idx int
				_, err := fmt.Sscanf(string(r.Payload[:10]), "%3s-%06d", &name, &idx)
				require.NoError(t, err)
				if r.Class == spool.ClassEvent {
					require.Equal(t, "evt", name)
					presentEvents = append(presentEvents, idx)
				} else {
					presentRaw = append(presentRaw, idx)
				}
			}
			require.Len(t, presentEvents, events, "every event survives while raw records remain")
			require.Equal(t, uint64(0), st.DroppedOverflowEvents)
			require.Positive(t, st.MovedEvents)
			require.Equal(t, uint64(raws), st.DroppedOverflow+uint64(len(presentRaw)), "every raw record is present or counted")
			require.Equal(t, uint64(len(recs)), st.Records)
			// The raw records kept are the newest ones.
			require.Equal(t, n-1, presentRaw[len(presentRaw)-1])
			for i := 1; i < len(presentRaw); i++ {
				step := presentRaw[i] - presentRaw[i-1]
				require.True(t, step == 1 || (step == 2 && (presentRaw[i]-1)%100 == 0), "gap in kept raw records at %d", presentRaw[i])
			}
		})
	}
}

func TestBoundDropsOldestEventsWhenOnlyEventsRemain(t *testing.T) {
	opts := boundOptions(spool.SyncNever)
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	for i := range 50 {
		_, err := s.Append(spool.ClassRaw, boundPayload("raw", i))
		require.NoError(t, err)
	}
	const n = 1000
	var prevDropped uint64
	for i := range n {
		_, err := s.Append(spool.ClassEvent, boundPayload("evt", i))
		require.NoError(t, err)
		st := s.Stats()
		require.LessOrEqual(t, st.Bytes, opts.MaxBytes)
		if st.DroppedOverflowEvents > prevDropped {
			if prevDropped == 0 {
				for _, r := range readAll(t, s) {
					require.Equal(t, spool.ClassEvent, r.Class, "events are dropped only when no raw record is left")
				}
			}
			prevDropped = st.DroppedOverflowEvents
		}
	}
	st := s.Stats()
	recs := readAll(t, s)
	require.Positive(t, st.DroppedOverflowEvents)
	require.Equal(t, uint64(50), st.DroppedOverflow)
	require.Equal(t, uint64(n), st.DroppedOverflowEvents+uint64(len(recs)))
	require.Equal(t, boundPayload("evt", n-1), recs[len(recs)-1].Payload, "the newest event is kept")
}

func TestBoundDoesNotCountAcknowledgedRecords(t *testing.T) {
	opts := boundOptions(spool.SyncAlways)
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	for i := range 100 {
		_, err := s.Append(spool.ClassRaw, boundPayload("raw", i))
		require.NoError(t, err)
	}
	require.NoError(t, s.Ack(5))
	for i := 100; i < 1000; i++ {
		_, err := s.Append(spool.ClassRaw, boundPayload("raw", i))
		require.NoError(t, err)
	}
	st := s.Stats()
	require.Positive(t, st.DroppedOverflow)
	require.Equal(t, uint64(1000), st.Records+st.DroppedOverflow+5)
}

func TestAckOfMovedEventAcksItsCopy(t *testing.T) {
	opts := boundOptions(spool.SyncAlways)
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	id, err := s.Append(spool.ClassEvent, boundPayload("evt", 0))
	require.NoError(t, err)
	inFlight, err := s.Peek(1, 0)
	require.NoError(t, err)
	require.Equal(t, id, inFlight[0].ID)

	// Overflow drops the event's segment while the batch is in flight; the
	// event is moved to the tail with a new ID.
	for i := 1; i < 400; i++ {
		_, err := s.Append(spool.ClassRaw, boundPayload("raw", i))
		require.NoError(t, err)
	}
	require.Positive(t, s.Stats().MovedEvents)
	var copies int
	for _, r := range readAll(t, s) {
		if r.Class == spool.ClassEvent {
			copies++
			require.Equal(t, inFlight[0].Payload, r.Payload)
			require.True(t, r.Time.Equal(inFlight[0].Time), "a moved event keeps its append time")
		}
	}
	require.Equal(t, 1, copies)

	// The server acknowledges the original: the copy is not sent again.
	require.NoError(t, s.AckIDs(id))
	for _, r := range readAll(t, s) {
		require.Equal(t, spool.ClassRaw, r.Class)
	}
}

func TestBoundSealsActiveSegmentToDropIt(t *testing.T) {
	// Two event-only segments and raw records only in the active segment:
	// making room seals the active segment and drops its raw records.
	opts := testOptions(spool.SyncAlways)
	opts.MaxBytes, opts.SegmentBytes, opts.MaxRecordBytes = 4<<10, 2<<10, 1<<10
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	big := func(tag string) []byte { return append([]byte(tag), bytes.Repeat([]byte("."), 1000-len(tag))...) }
	for _, tag := range []string{"e1", "e2"} {
		_, err := s.Append(spool.ClassEvent, big(tag))
		require.NoError(t, err)
	}
	for _, tag := range []string{"r1", "r2", "r3"} {
		_, err := s.Append(spool.ClassRaw, big(tag))
		require.NoError(t, err)
		require.LessOrEqual(t, s.Stats().Bytes, opts.MaxBytes)
	}
	st := s.Stats()
	require.Positive(t, st.DroppedOverflow)
	var tags []string
	for _, r := range readAll(t, s) {
		tags = append(tags, string(r.Payload[:2]))
	}
	require.Contains(t, tags, "e1")
	require.Contains(t, tags, "e2")
	require.Contains(t, tags, "r3")
	require.NotContains(t, tags, "r1")
}
