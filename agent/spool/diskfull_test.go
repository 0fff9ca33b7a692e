package spool

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// faultFS wraps the real file system and fails writes or fsyncs of segment
// files on demand, the way a full disk does.
type faultFS struct {
	osFS
	mu         sync.Mutex
	full       bool // WriteAt and file creation fail with ENOSPC
	partial    bool // a failing WriteAt first writes half its bytes
	failSyncs  int  // the next failSyncs fsyncs of segment files fail with ENOSPC
	createFail bool // creating files fails with ENOSPC
}

func (f *faultFS) set(fn func(*faultFS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f.mu.Lock()
	fail := f.createFail && flag&os.O_CREATE != 0
	f.mu.Unlock()
	if fail {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	fl, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: fl, fs: f, name: name}, nil
}

type faultFile struct {
	file
	fs   *faultFS
	name string
}

func (ff *faultFile) WriteAt(b []byte, off int64) (int, error) {
	ff.fs.mu.Lock()
	full, partial := ff.fs.full, ff.fs.partial
	ff.fs.mu.Unlock()
	if full {
		n := 0
		if partial {
			n, _ = ff.file.WriteAt(b[:len(b)/2], off)
		}
		return n, &os.PathError{Op: "write", Path: ff.name, Err: syscall.ENOSPC}
	}
	return ff.file.WriteAt(b, off)
}

func (ff *faultFile) Sync() error {
	ff.fs.mu.Lock()
	fail := ff.fs.failSyncs > 0 && strings.HasSuffix(ff.name, segSuffix)
	if fail {
		ff.fs.failSyncs--
	}
	ff.fs.mu.Unlock()
	if fail {
		return &os.PathError{Op: "fsync", Path: ff.name, Err: syscall.ENOSPC}
	}
	return ff.file.Sync()
}

func faultOptions(p SyncPolicy) Options {
	return Options{MaxBytes: 1 << 20, SegmentBytes: 4 << 10, Sync: p, Clock: clock.NewFake(time.Unix(1e9, 0))}
}

func appendPayloads(t *testing.T, s *Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		_, err := s.Append(ClassRaw, fmt.Appendf(nil, "p%05d", i))
		require.NoError(t, err)
	}
}

// checkAll reopens the spool and checks it holds exactly payloads 0..n-1 in
// order, with nothing torn.
func checkAll(t *testing.T, dir string, n int) {
	t.Helper()
	s, err := Open(dir, faultOptions(SyncAlways))
	require.NoError(t, err)
	defer s.Close()
	recs, err := s.Peek(0, 0)
	require.NoError(t, err)
	require.Len(t, recs, n)
	for i, r := range recs {
		require.Equal(t, fmt.Sprintf("p%05d", i), string(r.Payload))
		if i > 0 {
			require.Greater(t, r.ID, recs[i-1].ID)
		}
	}
	require.Zero(t, s.Stats().TornRecords)
}

func TestDiskFullOnWrite(t *testing.T) {
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial=%v", partial), func(t *testing.T) {
			dir := t.TempDir()
			fsys := &faultFS{}
			s, err := openFS(dir, faultOptions(SyncAlways), fsys)
			require.NoError(t, err)
			appendPayloads(t, s, 0, 100)

			fsys.set(func(f *faultFS) { f.full, f.partial = true, partial })
			for range 5 {
				id, err := s.Append(ClassRaw, []byte("lost"))
				require.ErrorIs(t, err, ErrDiskFull)
				require.ErrorIs(t, err, syscall.ENOSPC)
				require.Zero(t, id)
			}
			recs, err := s.Peek(0, 0)
			require.NoError(t, err)
			require.Len(t, recs, 100, "nothing durable is lost")
			require.Equal(t, uint64(5), s.Stats().WriteErrors)

			fsys.set(func(f *faultFS) { f.full = false })
			appendPayloads(t, s, 100, 200) // works again, across a rotation
			require.NoError(t, s.Close())
			checkAll(t, dir, 200)
		})
	}
}

func TestDiskFullOnRotation(t *testing.T) {
	dir := t.TempDir()
	fsys := &faultFS{}
	s, err := openFS(dir, faultOptions(SyncAlways), fsys)
	require.NoError(t, err)
	fsys.set(func(f *faultFS) { f.createFail = true })
	var failed int
	for i := 0; i < 400; i++ {
		if _, err := s.Append(ClassRaw, fmt.Appendf(nil, "p%05d", i-failed)); err != nil {
			require.ErrorIs(t, err, ErrDiskFull)
			failed++
		}
	}
	require.Positive(t, failed, "the 4 KiB segment filled up and a new one could not be created")
	fsys.set(func(f *faultFS) { f.createFail = false })
	appendPayloads(t, s, 400-failed, 400)
	require.NoError(t, s.Close())
	checkAll(t, dir, 400)
}

func TestFsyncFailureCarriesRecordsOver(t *testing.T) {
	for _, p := range []SyncPolicy{SyncBatch, SyncAlways} {
		t.Run(p.String(), func(t *testing.T) {
			dir := t.TempDir()
			fsys := &faultFS{}
			s, err := openFS(dir, faultOptions(p), fsys)
			require.NoError(t, err)
			appendPayloads(t, s, 0, 30)
			require.NoError(t, s.Sync())

			if p == SyncBatch {
				appendPayloads(t, s, 30, 300) // written, spans rotations, not synced
				fsys.set(func(f *faultFS) { f.failSyncs = 1 })
				err = s.Sync()
			} else {
				appendPayloads(t, s, 30, 299)
				fsys.set(func(f *faultFS) { f.failSyncs = 1 })
				var id uint64
				id, err = s.Append(ClassRaw, []byte("p00299"))
				require.Equal(t, uint64(300), id, "written but not known durable")
			}
			require.ErrorIs(t, err, ErrSyncFailed)
			require.ErrorIs(t, err, ErrDiskFull)
			require.Equal(t, uint64(1), s.Stats().SyncErrors)
			require.Less(t, s.Durable(), uint64(300))
			recs, err := s.Peek(0, 0)
			require.NoError(t, err)
			require.Len(t, recs, int(s.Durable()), "records not known durable are not readable")

			// The next sync copies everything unsynced to fresh segments.
			require.NoError(t, s.Sync())
			require.Equal(t, uint64(300), s.Durable())
			recs, err = s.Peek(0, 0)
			require.NoError(t, err)
			require.Len(t, recs, 300)
			appendPayloads(t, s, 300, 320)
			require.NoError(t, s.Close())
			checkAll(t, dir, 320)
		})
	}
}

func TestOverlapAfterInterruptedCarryOver(t *testing.T) {
	// A crash after the copy was renamed into place but before the original
	// was truncated leaves two segments holding the same IDs: Open keeps
	// the copy and cuts the original.
	dir := t.TempDir()
	s, err := Open(dir, faultOptions(SyncAlways))
	require.NoError(t, err)
	appendPayloads(t, s, 0, 40)
	require.NoError(t, s.Close())
	orig, err := os.ReadFile(dir + "/" + segmentName(1))
	require.NoError(t, err)
	// Build a copy of records 21..40 as carry-over would.
	var copyBytes []byte
	copyBytes = append(copyBytes, encodeSegHeader(21)...)
	rr := newRecordReader()
	rr.reset(readerAt(orig), segHeaderSize, int64(len(orig)))
	for k := 0; k < 40; k++ {
		rec, err := rr.next()
		require.NoError(t, err)
		if k >= 20 {
			copyBytes = appendRecord(copyBytes, rec.class, rec.unixNano, rec.payload)
		}
	}
	require.NoError(t, os.WriteFile(dir+"/"+segmentName(21), copyBytes, 0o644))
	checkAll(t, dir, 40)
}

type readerAt []byte

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r)) {
		return 0, fmt.Errorf("eof")
	}
	n := copy(p, r[off:])
	if n < len(p) {
		return n, fmt.Errorf("short")
	}
	return n, nil
}
