package eventlog

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// The listing benchmark's log: benchEvents events of benchDevices devices and benchNames
// names, one every 100 ms of sample time. Set MILLWRIGHT_BENCH_EVENTS to change the count
// and MILLWRIGHT_BENCH_DIR to keep the generated logs between runs (they take a while to write).
const (
	benchDevices = 1000
	benchNames   = 10
)

func benchCount() int {
	if n, err := strconv.Atoi(os.Getenv("MILLWRIGHT_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 10_000_000
}

func benchEvent(i int) Event {
	v := [...]string{"idle", "running", "stopped", "fault"}[i%4]
	return Event{Time: 1_764_900_000_000 + int64(i)*100, Device: fmt.Sprintf("dev-%04d", (i*7919)%benchDevices), Name: fmt.Sprintf("state-%d", i%benchNames), String: &v}
}

// benchLogs writes (once) the same events as segments and as the one file of earlier versions.
func benchLogs(b *testing.B, n int) (segDir, oneFile string) {
	root := os.Getenv("MILLWRIGHT_BENCH_DIR")
	if root == "" {
		root = b.TempDir()
	}
	base := filepath.Join(root, fmt.Sprintf("events-%d", n))
	segDir, oneFile = filepath.Join(base, "segments"), filepath.Join(base, "one", FileName)
	if _, err := os.Stat(filepath.Join(base, "done")); err == nil {
		return segDir, oneFile
	}
	if err := os.RemoveAll(base); err != nil {
		b.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Dir(oneFile), 0o700))
	l, err := Open(segDir)
	must(err)
	f, err := os.Create(oneFile)
	must(err)
	w := bufio.NewWriterSize(f, 1<<20)
	batch := make([]Event, 0, 1000)
	for i := range n {
		e := benchEvent(i)
		line, err := json.Marshal(e)
		must(err)
		_, err = w.Write(append(line, '\n'))
		must(err)
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == n-1 {
			must(l.Append(batch...))
			must(l.Flush(false))
			batch = batch[:0]
		}
	}
	must(w.Flush())
	must(f.Close())
	must(l.Close())
	must(os.WriteFile(filepath.Join(base, "done"), nil, 0o600))
	return segDir, oneFile
}

// listOneFile is the List of earlier versions: the whole file scanned, every line decoded.
func listOneFile(path string, q Query) ([]Event, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	seen := map[string]bool{}
	var out []Event
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, err
		}
		if !q.match(&e) {
			continue
		}
		key := string(bytes.TrimSpace(line))
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b Event) int { return cmp.Compare(b.Time, a.Time) })
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// BenchmarkList lists the newest page (1000 events) of a log of 10 million events: unfiltered,
// of one device, of one name; from segments, and from the one file of earlier versions.
//
//	MILLWRIGHT_BENCH_DIR=/var/tmp/mw-bench go test ./internal/eventlog -run '^$' -bench BenchmarkList -benchtime 20x
func BenchmarkList(b *testing.B) {
	n := benchCount()
	segDir, oneFile := benchLogs(b, n)
	l, err := Open(segDir)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	queries := []struct {
		name string
		q    Query
	}{
		{"newest", Query{}},
		{"device", Query{Device: "dev-0042"}},
		{"name", Query{Name: "state-3"}},
	}
	for _, c := range queries {
		want, err := l.List(c.q)
		if err != nil || len(want) == 0 {
			b.Fatalf("%s: %d events, %v", c.name, len(want), err)
		}
		old, err := listOneFile(oneFile, c.q)
		if err != nil || !slices.EqualFunc(old, want, func(x, y Event) bool { return x.Time == y.Time && x.Device == y.Device && x.Name == y.Name }) {
			b.Fatalf("%s: the listings differ (%v)", c.name, err)
		}
		b.Run("segments/"+c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := l.List(c.q); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("onefile/"+c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := listOneFile(oneFile, c.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
