package spool_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
)

var epoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testOptions are small, fake-clocked options: the sync loop never fires on
// its own, so tests call Sync (or use SyncAlways) to make records readable.
func testOptions(p spool.SyncPolicy) spool.Options {
	return spool.Options{
		MaxBytes:     1 << 20,
		SegmentBytes: 4 << 10,
		Sync:         p,
		Clock:        clock.NewFake(epoch),
	}
}

func openT(t testing.TB, dir string, opts spool.Options) *spool.Spool {
	t.Helper()
	s, err := spool.Open(dir, opts)
	require.NoError(t, err)
	return s
}

func payload(i int) []byte { return fmt.Appendf(nil, "record-%06d", i) }

// appendN appends n records with payload(start..start+n-1); every tenth is
// an event. It returns their IDs.
func appendN(t testing.TB, s *spool.Spool, start, n int) []uint64 {
	t.Helper()
	ids := make([]uint64, 0, n)
	for i := start; i < start+n; i++ {
		c := spool.ClassRaw
		if i%10 == 0 {
			c = spool.ClassEvent
		}
		id, err := s.Append(c, payload(i))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

// readAll reads every readable unacknowledged record.
func readAll(t testing.TB, s *spool.Spool) []spool.Record {
	t.Helper()
	recs, err := s.Peek(0, 0)
	require.NoError(t, err)
	return recs
}

func recordIDs(recs []spool.Record) []uint64 {
	ids := make([]uint64, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	return ids
}

// segmentFiles lists the segment files in dir, oldest first.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".seg") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644))
	}
	return dst
}
