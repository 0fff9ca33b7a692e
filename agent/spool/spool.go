package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/millwright/millwright/clock"
)

// File names inside the spool directory besides the segments.
const (
	lockName = "LOCK"
	ackName  = "ack"
	tmpExt   = ".tmp"
)

// Spool is a durable FIFO of records in one directory. Its methods are safe
// for concurrent use: many goroutines may Append while a sender reads and
// acknowledges.
type Spool struct {
	dir  string
	opts Options
	log  *slog.Logger
	clk  clock.Clock
	fs   fileSystem
	lock *os.File

	// syncMu serialises fsync rounds, acknowledgement writes and failure
	// recovery. Lock order: syncMu before mu.
	syncMu sync.Mutex

	mu          sync.Mutex
	closed      bool
	filesClosed bool       // Close released the handles; nothing may reopen them
	segs        []*segment // ordered by ID; the last one is active
	nextID      uint64
	synced      uint64 // every record with an ID <= synced is durable
	dirtyBytes  int64  // written since the last fsync round began
	dirDirty    bool   // a segment was created or renamed since the last directory fsync
	syncFailed  bool   // the last fsync failed; carry unsynced records over first
	totalBytes  int64

	acked        uint64              // every record with an ID <= acked is acknowledged or gone
	ackSet       map[uint64]struct{} // live acknowledged IDs above acked
	ackPersisted uint64              // acked as last written to the ack file
	moved        map[uint64]uint64   // ID of an event moved on overflow -> ID of its copy

	ready    chan struct{} // closed when the readable watermark advances; nil if nobody waits
	rr       *recordReader
	cursor   cursor
	readSeg  *segment // segment whose read-only handle readFile is
	readFile file
	oldest   struct {
		id   uint64
		nano int64
	}

	st counters

	kick     chan struct{} // wakes the sync loop early
	done     chan struct{} // closed by Close
	loopDone chan struct{}
}

// cursor remembers where the last read stopped, so a sender reading the
// spool in order never rescans a segment.
type cursor struct {
	seg *segment
	id  uint64 // ID of the record at off
	off int64
}

// Open opens the spool in dir, creating the directory if needed, recovers
// what a crash or power cut left (see the package documentation) and starts
// the background sync loop.
func Open(dir string, opts Options) (*Spool, error) {
	return openFS(dir, opts, osFS{})
}

func openFS(dir string, opts Options, fsys fileSystem) (*Spool, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	opts.fill()
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s := &Spool{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger.With("spool", dir),
		clk:      opts.Clock,
		fs:       fsys,
		lock:     lock,
		ackSet:   make(map[uint64]struct{}),
		moved:    make(map[uint64]uint64),
		rr:       newRecordReader(),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	if err := s.recover(); err != nil {
		return nil, errors.Join(fmt.Errorf("open spool: %w", err), s.closeFiles())
	}
	go s.syncLoop()
	return s, nil
}

// Close stops the sync loop, fsyncs every record and the acknowledgement
// watermark (under every policy) and releases the directory. Further calls
// return nil; other methods return ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.done)
	<-s.loopDone
	err := s.syncTo(0)
	if aerr := s.persistAcks(); err == nil {
		err = aerr
	}
	return errors.Join(err, s.closeFiles())
}

// closeFiles closes every handle and the lock.
func (s *Spool) closeFiles() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filesClosed = true
	var errs []error
	for _, g := range s.segs {
		if g.wf != nil {
			errs = append(errs, g.wf.Close())
			g.wf = nil
		}
	}
	s.closeReadFile()
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
		s.lock = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	return nil
}

// active returns the segment appends go to.
func (s *Spool) active() *segment { return s.segs[len(s.segs)-1] }

func (s *Spool) path(name string) string { return filepath.Join(s.dir, name) }

// readable returns the highest ID readers may see: the durable watermark,
// or everything written under SyncNever.
func (s *Spool) readable() uint64 {
	if s.opts.Sync == SyncNever {
		return s.nextID - 1
	}
	return s.synced
}

// signalReady wakes Wait callers; s.mu is held.
func (s *Spool) signalReady() {
	if s.ready != nil {
		close(s.ready)
		s.ready = nil
	}
}

// findSeg returns the index of the first segment holding a record with an
// ID >= id, or len(s.segs) if there is none. Segments are ordered and their
// ID ranges do not overlap, so the end of their ranges grows monotonically.
func (s *Spool) findSeg(id uint64) int {
	return sort.Search(len(s.segs), func(i int) bool {
		g := s.segs[i]
		return g.id+g.count > id
	})
}

// nextLive returns the smallest ID of a stored record greater than id.
func (s *Spool) nextLive(id uint64) (uint64, bool) {
	for i := s.findSeg(id + 1); i < len(s.segs); i++ {
		g := s.segs[i]
		if g.count == 0 {
			continue
		}
		return max(g.id, id+1), true
	}
	return 0, false
}

// isLive reports whether a record with this ID is stored.
func (s *Spool) isLive(id uint64) bool {
	i := s.findSeg(id)
	return i < len(s.segs) && s.segs[i].contains(id)
}

// isAcked reports whether the record id is acknowledged.
func (s *Spool) isAcked(id uint64) bool {
	if id <= s.acked {
		return true
	}
	_, ok := s.ackSet[id]
	return ok
}

// now is the append-time source.
func (s *Spool) now() time.Time { return s.clk.Now() }
