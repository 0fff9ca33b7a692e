package eventlog

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
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
	for _, k := range []string{key, nameKey(q.Name)} {
		if k == "" || k == nameKey("") {
			continue
		}
		offs := a.post[k]
		i := len(offs)
		for i > 0 && offs[i-1] >= l.written {
			i--
		}
		view.post[k] = slices.Clone(offs[:i])
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
		floor := int64(math.MinInt64)
		if len(out) >= q.Limit {
			floor = out[q.Limit-1].t
		}
		hits, cut, err := l.read(s, q, key, floor, q.Limit)
		if err != nil {
			return nil, err
		}
		out = merge(out, hits, q.Limit)
		if cut != math.MinInt64 && (len(out) < q.Limit || out[q.Limit-1].t < cut) {
			// Identical lines, folded, left the page short of what the cut assumed: read the
			// segment again without it.
			if hits, _, err = l.read(s, q, key, floor, math.MaxInt); err != nil {
				return nil, err
			}
			out = merge(out, hits, q.Limit)
		}
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

// read returns the lines of s matching q. Lines older than floor cannot make the page and are
// left out, and so are those older than the segment's limit newest matching lines; it returns
// the time it cut at for the latter (math.MinInt64 for none).
func (l *Log) read(s *segment, q Query, key string, floor int64, limit int) ([]hit, int64, error) {
	var offs []int64
	if key != "" {
		var err error
		if offs, err = l.postings(s, key, s.post[key]); err != nil {
			return nil, 0, err
		}
		if q.Device != "" && q.Name != "" {
			names, err := l.postings(s, nameKey(q.Name), s.post[nameKey(q.Name)])
			if err != nil {
				return nil, 0, err
			}
			offs = intersect(offs, names)
		}
		if len(offs) == 0 {
			return nil, math.MinInt64, nil
		}
	}
	f, err := os.Open(segPath(l.dir, s.seq))
	if err != nil {
		return nil, 0, fmt.Errorf("read event log: %w", err)
	}
	defer f.Close()
	c := cutter{q: q, floor: floor, seq: s.seq, top: newestTimes{limit: limit}}
	if key != "" && len(offs) < 256 {
		// A few lines: read each.
		for _, off := range offs {
			line, err := readLine(f, off, s.size)
			if err != nil {
				return nil, 0, fmt.Errorf("read event log: %w", err)
			}
			if err := c.add(off, line); err != nil {
				return nil, 0, err
			}
		}
		return c.result()
	}
	buf := make([]byte, s.size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, s.size), buf); err != nil {
		return nil, 0, fmt.Errorf("read event log: %w", err)
	}
	if key != "" {
		for _, off := range offs {
			if off >= int64(len(buf)) {
				return nil, 0, fmt.Errorf("event log index of segment %d points past its end", s.seq)
			}
			n := bytes.IndexByte(buf[off:], '\n')
			if n < 0 {
				return nil, 0, fmt.Errorf("event log line at %d runs past the segment", off)
			}
			if err := c.add(off, buf[off:off+int64(n)+1]); err != nil {
				return nil, 0, err
			}
		}
		return c.result()
	}
	for off := 0; off < len(buf); {
		n := bytes.IndexByte(buf[off:], '\n')
		if n < 0 {
			break
		}
		if err := c.add(int64(off), buf[off:off+n+1]); err != nil {
			return nil, 0, err
		}
		off += n + 1
	}
	return c.result()
}

// intersect returns the offsets in both ascending lists.
func intersect(a, b []int64) []int64 {
	var out []int64
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// cutter collects the lines of one segment that can make the page.
type cutter struct {
	q     Query
	floor int64
	seq   int64
	top   newestTimes
	hits  []hit
}

// add takes a line that matches q's device and name, and keeps it when its time can make
// the page.
func (c *cutter) add(off int64, line []byte) error {
	t, ok := lineTime(line)
	if !ok {
		var h lineHead
		if err := json.Unmarshal(line, &h); err != nil {
			return fmt.Errorf("decode event log line: %w", err)
		}
		t = h.Time
	}
	if t >= c.q.Start && (c.q.End == 0 || t <= c.q.End) && t >= c.floor && c.top.add(t) {
		c.hits = append(c.hits, hit{t: t, seq: c.seq, off: off, line: line})
	}
	return nil
}

func (c *cutter) result() ([]hit, int64, error) {
	cut := c.top.min()
	if cut <= c.floor {
		return c.hits, math.MinInt64, nil
	}
	return slices.DeleteFunc(c.hits, func(h hit) bool { return h.t < cut }), cut, nil
}

// newestTimes keeps the limit newest times seen, in a min-heap.
type newestTimes struct {
	limit int
	h     []int64
}

// add offers t and reports whether it is among the newest so far.
func (n *newestTimes) add(t int64) bool {
	h := n.h
	if len(h) < n.limit {
		h = append(h, t)
		for i := len(h) - 1; i > 0; {
			p := (i - 1) / 2
			if h[p] <= h[i] {
				break
			}
			h[p], h[i] = h[i], h[p]
			i = p
		}
		n.h = h
		return true
	}
	if t < h[0] {
		return false
	}
	h[0] = t
	for i := 0; ; {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && h[c+1] < h[c] {
			c++
		}
		if h[i] <= h[c] {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	return true
}

// min is the oldest of the newest times, or math.MinInt64 while fewer than limit were seen.
func (n *newestTimes) min() int64 {
	if len(n.h) < n.limit {
		return math.MinInt64
	}
	return n.h[0]
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
