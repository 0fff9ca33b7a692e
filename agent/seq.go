package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// SeqFile is the name of the batch sequence counter file in the spool
// directory.
const SeqFile = "mw_seq"

// seqCounter is the persisted batch sequence counter (mw_seq). It holds the
// number of the oldest batch not yet acknowledged: the batch in flight, or
// the next new one. So a batch keeps its number across retransmissions, and
// after a crash the re-sent batch reuses the number it had (the server
// counts a repeat if it had received it, and nothing if not).
//
// The file has two 16-byte slots, written alternately in place (value,
// CRC32C, padding); the higher valid value wins, so a torn write leaves the
// other slot. Writes are not fsynced except at close: a process crash loses
// nothing (the kernel keeps the write), a power cut may take the counter
// back, and the numbers after it are then reused (the server counts
// repeats, never a gap).
type seqCounter struct {
	mu   sync.Mutex
	f    *os.File
	next uint64
	slot int
}

const seqSlotSize = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func openSeq(dir string) (*seqCounter, error) {
	f, err := os.OpenFile(filepath.Join(dir, SeqFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open sequence counter: %w", err)
	}
	var buf [2 * seqSlotSize]byte
	n, err := f.ReadAt(buf[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		_ = f.Close()
		return nil, fmt.Errorf("read sequence counter: %w", err)
	}
	s := &seqCounter{f: f, next: 1}
	for i := 0; i < 2; i++ {
		if n < (i+1)*seqSlotSize {
			break
		}
		b := buf[i*seqSlotSize : (i+1)*seqSlotSize]
		v := binary.LittleEndian.Uint64(b)
		if crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) || v == 0 {
			continue
		}
		if v >= s.next {
			s.next, s.slot = v, 1-i // write the other slot next
		}
	}
	return s, nil
}

// current returns the number for the batch in flight or the next one.
func (s *seqCounter) current() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// done records that batch n was acknowledged or dropped: the next batch
// gets n+1.
func (s *seqCounter) done(n uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n+1 <= s.next {
		return nil
	}
	s.next = n + 1
	var b [seqSlotSize]byte
	binary.LittleEndian.PutUint64(b[:], s.next)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	if _, err := s.f.WriteAt(b[:], int64(s.slot*seqSlotSize)); err != nil {
		return fmt.Errorf("write sequence counter: %w", err)
	}
	s.slot = 1 - s.slot
	return nil
}

func (s *seqCounter) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Sync()
	err = errors.Join(err, s.f.Close())
	s.f = nil
	if err != nil {
		return fmt.Errorf("close sequence counter: %w", err)
	}
	return nil
}
