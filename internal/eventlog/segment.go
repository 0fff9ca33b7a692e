package eventlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// segment describes one segment file: its time range and where each device's and each name's
// lines are. For a closed segment the offsets are in its index file (ref); for the active one
// they are in memory (post).
type segment struct {
	seq   int64
	size  int64 // bytes of whole lines (for the active segment, as of its last index update)
	count int
	min   int64 // earliest event time, math.MaxInt64 when empty
	max   int64 // latest event time, math.MinInt64 when empty
	ref   map[string]postRef
	blob  int64 // offset of the postings in the index file
	post  map[string][]int64
}

// postRef locates a key's postings in an index file: a byte range of uvarint-encoded offset
// deltas.
type postRef struct {
	Pos int64 `json:"p"`
	Len int64 `json:"l"`
}

// indexHeader is the first line of an index file.
type indexHeader struct {
	Size  int64              `json:"size"`
	Count int                `json:"count"`
	Min   int64              `json:"min"`
	Max   int64              `json:"max"`
	Keys  map[string]postRef `json:"keys"`
}

func deviceKey(d string) string { return "d:" + d }
func nameKey(n string) string   { return "n:" + n }

func newSegment(seq int64) *segment {
	return &segment{seq: seq, min: math.MaxInt64, max: math.MinInt64, post: map[string][]int64{}}
}

// has reports whether the segment holds lines under key.
func (s *segment) has(key string) bool {
	if s.post != nil {
		return len(s.post[key]) > 0
	}
	_, ok := s.ref[key]
	return ok
}

// add records a line at off.
func (s *segment) add(off int64, t int64, device, name string) {
	s.count++
	s.min, s.max = min(s.min, t), max(s.max, t)
	s.post[deviceKey(device)] = append(s.post[deviceKey(device)], off)
	s.post[nameKey(name)] = append(s.post[nameKey(name)], off)
}

// lineHead is what the index needs of a line.
type lineHead struct {
	Time   int64  `json:"t"`
	Device string `json:"device"`
	Name   string `json:"name"`
}

// scanSegment reads f's lines into a segment with in-memory postings, returning the length of
// the longest prefix of whole, valid JSON lines and the file's size.
func scanSegment(f *os.File, seq int64) (s *segment, good, size int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, 0, err
	}
	size = st.Size()
	s = newSegment(seq)
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err == io.EOF {
			s.size = good
			return s, good, size, nil // a line without its newline is torn
		}
		if err != nil {
			return nil, 0, 0, err
		}
		var h lineHead
		if json.Unmarshal(line, &h) != nil {
			s.size = good
			return s, good, size, nil
		}
		s.add(good, h.Time, h.Device, h.Name)
		good += int64(len(line))
	}
}

// writeIndex writes s's in-memory postings as its index file (beside it, fsynced, renamed into
// place) and turns s into a closed segment whose postings are on disk.
func writeIndex(dir string, s *segment) error {
	keys := make([]string, 0, len(s.post))
	for k := range s.post {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var blob []byte
	ref := make(map[string]postRef, len(keys))
	for _, k := range keys {
		start := len(blob)
		prev := int64(0)
		for _, off := range s.post[k] {
			blob = binary.AppendUvarint(blob, uint64(off-prev))
			prev = off
		}
		ref[k] = postRef{Pos: int64(start), Len: int64(len(blob) - start)}
	}
	head, err := json.Marshal(indexHeader{Size: s.size, Count: s.count, Min: s.min, Max: s.max, Keys: ref})
	if err != nil {
		return fmt.Errorf("encode event log index: %w", err)
	}
	head = append(head, '\n')
	path := idxPath(dir, s.seq)
	tmp := path + ".tmp"
	err = writeSynced(tmp, append(head, blob...))
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write event log index: %w", err)
	}
	s.ref, s.blob, s.post = ref, int64(len(head)), nil
	return nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// readIndex loads a closed segment's index header; it fails when the index is missing,
// unreadable or does not match the segment's size.
func readIndex(dir string, seq int64) (*segment, error) {
	f, err := os.Open(idxPath(dir, seq))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 64<<10).ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var h indexHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, err
	}
	st, err := os.Stat(segPath(dir, seq))
	if err != nil {
		return nil, err
	}
	if st.Size() != h.Size {
		return nil, fmt.Errorf("event log index of segment %d is stale", seq)
	}
	if h.Keys == nil {
		h.Keys = map[string]postRef{}
	}
	return &segment{seq: seq, size: h.Size, count: h.Count, min: h.Min, max: h.Max, ref: h.Keys, blob: int64(len(line))}, nil
}

// postings returns the offsets of the lines under key, below limit.
func (l *Log) postings(s *segment, key string, active []int64) ([]int64, error) {
	if active != nil || s.post != nil {
		return active, nil
	}
	r, ok := s.ref[key]
	if !ok {
		return nil, nil
	}
	f, err := os.Open(idxPath(l.dir, s.seq))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, r.Len)
	if _, err := f.ReadAt(b, s.blob+r.Pos); err != nil {
		return nil, fmt.Errorf("read event log index: %w", err)
	}
	var offs []int64
	prev := int64(0)
	for len(b) > 0 {
		d, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("read event log index of segment %d: corrupt postings", s.seq)
		}
		prev += int64(d)
		offs = append(offs, prev)
		b = b[n:]
	}
	return offs, nil
}

// readLine reads the line starting at off.
func readLine(f io.ReaderAt, off, end int64) ([]byte, error) {
	buf := make([]byte, 0, 256)
	for {
		n := min(int64(cap(buf)-len(buf)), end-off-int64(len(buf)))
		if n <= 0 {
			return nil, fmt.Errorf("event log line at %d runs past the segment", off)
		}
		chunk := buf[len(buf) : len(buf)+int(n)]
		m, err := f.ReadAt(chunk, off+int64(len(buf)))
		if i := bytes.IndexByte(chunk[:m], '\n'); i >= 0 {
			return buf[:len(buf)+i+1], nil
		}
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
	}
}
