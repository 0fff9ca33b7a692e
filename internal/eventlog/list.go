package eventlog

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
)

// Query selects events.
type Query struct {
	Device string // empty: any
	Name   string // empty: any
	Start  int64  // milliseconds, inclusive
	End    int64  // milliseconds, inclusive; zero means no bound
	Limit  int    // newest first; zero means 1000
}

func (q Query) match(e *Event) bool {
	return (q.Device == "" || e.Device == q.Device) && (q.Name == "" || e.Name == q.Name) &&
		e.Time >= q.Start && (q.End == 0 || e.Time <= q.End)
}

// key is the postings key a filtered query reads, "" for a scan.
func (q Query) key() string {
	switch {
	case q.Device != "":
		return deviceKey(q.Device)
	case q.Name != "":
		return nameKey(q.Name)
	}
	return ""
}

// hit is a matching line: its time, where it is, and the line itself.
type hit struct {
	t    int64
	seq  int64
	off  int64
	line []byte
}

// List returns the events matching q, newest first (equal times in the order they were
// appended), identical entries folded into one. It reads segments from the newest and skips
// those whose time range cannot improve the page, and for a device or name filter reads only
// the lines the segment's index lists.
func (l *Log) List(q Query) ([]Event, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	l.files.RLock()
	defer l.files.RUnlock()
	key := q.key()
	l.mu.Lock()
	segs := slices.Clone(l.closed)
	a := l.active
	view := &segment{seq: a.seq, size: l.written, min: a.min, max: a.max, post: map[string][]int64{}}
	if key != "" {
		offs := a.post[key]
		i := len(offs)
		for i > 0 && offs[i-1] >= l.written {
			i--
		}
		view.post[key] = slices.Clone(offs[:i])
	}
	l.mu.Unlock()
	segs = append(segs, view)

	var out []hit
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		if s.size == 0 || s.max < q.Start || (q.End != 0 && s.min > q.End) {
			continue
		}
		if len(out) >= q.Limit && s.max < out[q.Limit-1].t {
			continue // every event of s is older than the page
		}
		if key != "" && !s.has(key) {
			continue
		}
		hits, err := l.read(s, q, key)
		if err != nil {
			return nil, err
		}
		out = merge(out, hits, q.Limit)
	}
	events := make([]Event, len(out))
	for i, h := range out {
		if err := json.Unmarshal(h.line, &events[i]); err != nil {
			return nil, fmt.Errorf("decode event log line: %w", err)
		}
	}
	return events, nil
}

// merge adds hits to the page, sorts it newest first, folds identical lines and cuts it to
// limit, copying the kept lines out of the segment's buffer.
func merge(page, hits []hit, limit int) []hit {
	if len(page) >= limit {
		floor := page[limit-1].t
		hits = slices.DeleteFunc(hits, func(h hit) bool { return h.t < floor })
	}
	if len(hits) == 0 {
		return page
	}
	page = append(page, hits...)
	slices.SortFunc(page, func(a, b hit) int {
		if c := cmp.Compare(b.t, a.t); c != 0 {
			return c
		}
		if c := cmp.Compare(a.seq, b.seq); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	seen := make(map[string]bool, min(len(page), limit))
	kept := page[:0]
	for _, h := range page {
		k := string(bytes.TrimSpace(h.line))
		if seen[k] {
			continue
		}
		seen[k] = true
		kept = append(kept, h)
		if len(kept) == limit {
			break
		}
	}
	clear(page[len(kept):])
	for i := range kept {
		kept[i].line = bytes.Clone(kept[i].line)
	}
	return kept
}

// read returns the lines of s matching q.
func (l *Log) read(s *segment, q Query, key string) ([]hit, error) {
	f, err := os.Open(segPath(l.dir, s.seq))
	if err != nil {
		return nil, fmt.Errorf("read event log: %w", err)
	}
	defer f.Close()
	if key == "" {
		return scanHits(f, s, q)
	}
	offs, err := l.postings(s, key, s.post[key])
	if err != nil {
		return nil, err
	}
	hits := make([]hit, 0, len(offs))
	for _, off := range offs {
		line, err := readLine(f, off, s.size)
		if err != nil {
			return nil, fmt.Errorf("read event log: %w", err)
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("decode event log line: %w", err)
		}
		if q.match(&e) {
			hits = append(hits, hit{t: e.Time, seq: s.seq, off: off, line: line})
		}
	}
	return hits, nil
}

// scanHits reads the whole segment and returns its lines within q's time range.
func scanHits(f *os.File, s *segment, q Query) ([]hit, error) {
	buf := make([]byte, s.size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, s.size), buf); err != nil {
		return nil, fmt.Errorf("read event log: %w", err)
	}
	var hits []hit
	for off := 0; off < len(buf); {
		n := bytes.IndexByte(buf[off:], '\n')
		if n < 0 {
			break
		}
		line := buf[off : off+n+1]
		t, ok := lineTime(line)
		if !ok {
			var h lineHead
			if err := json.Unmarshal(line, &h); err != nil {
				return nil, fmt.Errorf("decode event log line: %w", err)
			}
			t = h.Time
		}
		if t >= q.Start && (q.End == 0 || t <= q.End) {
			hits = append(hits, hit{t: t, seq: s.seq, off: int64(off), line: line})
		}
		off += n + 1
	}
	return hits, nil
}

// lineTime reads the time of a line as Append writes it, `{"t":123,...`, without decoding it.
func lineTime(line []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"t":`))
	if !ok {
		return 0, false
	}
	neg := len(rest) > 0 && rest[0] == '-'
	if neg {
		rest = rest[1:]
	}
	var t int64
	i := 0
	for ; i < len(rest) && i < 19 && rest[i] >= '0' && rest[i] <= '9'; i++ {
		t = t*10 + int64(rest[i]-'0')
	}
	if i == 0 || i == 19 || i >= len(rest) || rest[i] != ',' {
		return 0, false
	}
	if neg {
		t = -t
	}
	return t, true
}
