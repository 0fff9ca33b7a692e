package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Ack acknowledges every record with an ID up to and including upTo: they
// will not be returned again, and segments holding only acknowledged
// records are deleted. upTo must not exceed the highest readable ID.
//
// The watermark is persisted atomically (temporary file, fsync, rename,
// directory fsync): under SyncAlways before Ack returns, otherwise with the
// next group commit (within SyncInterval) and at Close. A crash before that
// makes the records be read and sent again: delivery is at least once.
func (s *Spool) Ack(upTo uint64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if r := s.readable(); upTo > r {
		s.mu.Unlock()
		return fmt.Errorf("ack records: %w: %d is above the readable watermark %d", ErrUnknownID, upTo, r)
	}
	if upTo > s.acked {
		for old, cp := range s.moved {
			if old <= upTo {
				s.ackOne(cp)
				delete(s.moved, old)
			}
		}
		s.acked = upTo
		for id := range s.ackSet {
			if id <= upTo {
				delete(s.ackSet, id)
			}
		}
		s.advanceAcks()
		s.deleteAcked()
	}
	always := s.opts.Sync == SyncAlways
	s.mu.Unlock()
	if always {
		return s.persistAcks()
	}
	return nil
}

// AckIDs acknowledges individual records, in any order: a sender retrying
// batch 1 may get the server's acknowledgement for batch 2 first. Records
// above the contiguous acknowledged prefix are remembered in memory only, so
// after a crash they are sent again; their segments are deleted once the
// prefix reaches them. Every ID must be readable, or nothing is acknowledged.
func (s *Spool) AckIDs(ids ...uint64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	r := s.readable()
	for _, id := range ids {
		if id > r {
			s.mu.Unlock()
			return fmt.Errorf("ack records: %w: %d is above the readable watermark %d", ErrUnknownID, id, r)
		}
	}
	before := s.acked
	for _, id := range ids {
		if cp, ok := s.moved[id]; ok {
			s.ackOne(cp)
			delete(s.moved, id)
		}
		s.ackOne(id)
	}
	s.advanceAcks()
	s.deleteAcked()
	persist := s.opts.Sync == SyncAlways && s.acked != before
	s.mu.Unlock()
	if persist {
		return s.persistAcks()
	}
	return nil
}

// ackOne marks one stored record acknowledged. s.mu is held.
func (s *Spool) ackOne(id uint64) {
	if id > s.acked && s.isLive(id) {
		s.ackSet[id] = struct{}{}
	}
}

// advanceAcks moves the watermark over acknowledged records and over IDs
// that no longer exist (dropped on overflow or lost to damage). s.mu is held.
func (s *Spool) advanceAcks() {
	for {
		n, ok := s.nextLive(s.acked)
		if !ok {
			return
		}
		if n-1 > s.acked {
			s.acked = n - 1
		}
		if _, ok := s.ackSet[n]; !ok {
			return
		}
		delete(s.ackSet, n)
		s.acked = n
	}
}

// deleteAcked deletes sealed segments whose records are all acknowledged.
// s.mu is held.
func (s *Spool) deleteAcked() {
	for len(s.segs) > 1 {
		g := s.segs[0]
		if g.count > 0 && g.lastID() > s.acked {
			return
		}
		s.removeSegment(0)
	}
}

// persistAcks writes the watermark to the ack file if it changed.
func (s *Spool) persistAcks() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	w, done := s.acked, s.acked == s.ackPersisted
	s.mu.Unlock()
	if done {
		return nil
	}
	if err := writeAckFile(s.fs, s.dir, w, s.opts.Sync != SyncNever); err != nil {
		return fmt.Errorf("persist acks: %w", err)
	}
	s.mu.Lock()
	s.ackPersisted = max(s.ackPersisted, w)
	s.mu.Unlock()
	return nil
}

// Ack file layout (little endian), versioned like segment headers:
//
//	0   4  magic "MWAK"
//	4   1  major version (1)
//	5   1  minor version (0)
//	6   2  length L, CRC included (20 in 1.0)
//	8   8  acknowledged watermark
//	..     fields added by later minor versions
//	L-4 4  CRC32C of bytes 0..L-5
const (
	ackMagic = "MWAK"
	ackMajor = 1
	ackMinor = 0
	ackSize  = 20
)

func encodeAck(w uint64) []byte { return encodeFixed(ackMagic, ackMajor, ackMinor, w) }

// encodeFixed encodes the 20-byte layout the ack file and segment headers share: magic (4
// bytes), major and minor version, length (uint16, 20), one uint64 and a CRC32C of what comes
// before it, little-endian.
func encodeFixed(magic string, major, minor uint8, v uint64) []byte {
	const size = 20
	b := make([]byte, 0, size)
	b = append(b, magic...)
	b = append(b, major, minor)
	b = binary.LittleEndian.AppendUint16(b, size)
	b = binary.LittleEndian.AppendUint64(b, v)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeAck(b []byte) (uint64, error) {
	if len(b) < 8 || !bytes.Equal(b[0:4], []byte(ackMagic)) {
		return 0, fmt.Errorf("%w: bad ack file header", ErrCorrupt)
	}
	if b[4] != ackMajor {
		return 0, fmt.Errorf("%w: ack format %d.%d, this build reads %d.x", ErrUnsupportedVersion, b[4], b[5], ackMajor)
	}
	n := int(binary.LittleEndian.Uint16(b[6:8]))
	if n < ackSize || n > len(b) {
		return 0, fmt.Errorf("%w: ack file length %d", ErrCorrupt, n)
	}
	if crc32.Checksum(b[:n-4], castagnoli) != binary.LittleEndian.Uint32(b[n-4:n]) {
		return 0, fmt.Errorf("%w: ack file checksum mismatch", ErrCorrupt)
	}
	return binary.LittleEndian.Uint64(b[8:16]), nil
}

// readAckFile returns the persisted watermark; 0 if there is none or it is
// damaged (everything is then sent again).
func (s *Spool) readAckFile() (uint64, error) {
	path := s.path(ackName)
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open ack file %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<16))
	if err != nil {
		return 0, fmt.Errorf("read ack file %s: %w", path, err)
	}
	w, err := decodeAck(b)
	if errors.Is(err, ErrUnsupportedVersion) {
		return 0, fmt.Errorf("read ack file %s: %w", path, err)
	}
	if err != nil {
		s.log.Warn("ignoring damaged ack file; unacknowledged state restarts at 0", "file", path, "err", err)
		return 0, nil
	}
	return w, nil
}

// writeAckFile replaces the ack file atomically and durably.
// writeAckFile replaces the ack file atomically; with sync it also fsyncs the file and the
// directory (every policy but SyncNever, which leaves flushing to the OS).
func writeAckFile(fsys fileSystem, dir string, w uint64, sync bool) error {
	path := dir + string(os.PathSeparator) + ackName
	tmp := path + tmpExt
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return ioErr("create", tmp, err, nil)
	}
	_, err = f.WriteAt(encodeAck(w), 0)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err == nil && sync {
		err = syncDir(fsys, dir)
	}
	if err != nil {
		_ = fsys.Remove(tmp)
		return ioErr("write ack file", path, err, nil)
	}
	return nil
}
