package source

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// cpuTimes are the aggregate CPU times of the "cpu" line of /proc/stat, in
// clock ticks.
type cpuTimes struct {
	busy, total uint64
}

// parseStat reads the aggregate "cpu" line of /proc/stat (proc(5)): user
// nice system idle iowait irq softirq steal [guest guest_nice]. Idle time is
// idle + iowait; guest time is already part of user and nice, so it is not
// added again.
func parseStat(data []byte) (cpuTimes, error) {
	for line := range bytes.Lines(data) {
		f := strings.Fields(string(line))
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return cpuTimes{}, fmt.Errorf("cpu line has %d fields, want at least 5", len(f))
		}
		var v [8]uint64
		for i := 0; i < len(v) && i+1 < len(f); i++ {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("cpu line field %d: %w", i+1, err)
			}
			v[i] = n
		}
		var total uint64
		for _, n := range v {
			total += n
		}
		idle := v[3] + v[4]
		return cpuTimes{busy: total - idle, total: total}, nil
	}
	return cpuTimes{}, errors.New("no cpu line")
}

// cpuUsage is the busy share of the CPU time between two readings, in
// percent. ok is false when no time passed or a counter went backwards
// (another boot, a counter wrap).
func cpuUsage(prev, cur cpuTimes) (pct float64, ok bool) {
	if cur.total <= prev.total || cur.busy < prev.busy {
		return 0, false
	}
	dt := cur.total - prev.total
	db := cur.busy - prev.busy
	if db > dt {
		db = dt
	}
	return 100 * float64(db) / float64(dt), true
}

// parseMeminfo returns MemTotal and MemAvailable of /proc/meminfo in bytes.
// Kernels before 3.14 have no MemAvailable; it is then estimated as
// MemFree + Buffers + Cached.
func parseMeminfo(data []byte) (total, avail uint64, err error) {
	vals := make(map[string]uint64, 8)
	for line := range bytes.Lines(data) {
		key, rest, ok := strings.Cut(string(line), ":")
		if !ok {
			continue
		}
		switch key {
		case "MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached":
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, 0, fmt.Errorf("%s has no value", key)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", key, err)
		}
		mult := uint64(1)
		if len(f) > 1 && f[1] == "kB" {
			mult = 1024
		}
		vals[key] = n * mult
	}
	total, ok := vals["MemTotal"]
	if !ok {
		return 0, 0, errors.New("no MemTotal")
	}
	avail, ok = vals["MemAvailable"]
	if !ok {
		avail = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return total, min(avail, total), nil
}

// parseUptime returns the first field of /proc/uptime, seconds since boot.
func parseUptime(data []byte) (float64, error) {
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, errors.New("empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 || v != v || v > 1e15 {
		return 0, fmt.Errorf("bad uptime %q", f[0])
	}
	return v, nil
}

// parseLoadavg returns the 1, 5 and 15 minute load averages of
// /proc/loadavg.
func parseLoadavg(data []byte) ([3]float64, error) {
	var l [3]float64
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return l, fmt.Errorf("%d fields, want at least 3", len(f))
	}
	for i := range l {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || v < 0 || v != v || v > 1e15 {
			return l, fmt.Errorf("bad load average %q", f[i])
		}
		l[i] = v
	}
	return l, nil
}

// netDev is one interface's byte counters from /proc/net/dev.
type netDev struct {
	name   string
	rx, tx uint64
}

// parseNetDev reads /proc/net/dev: two header lines, then per interface
// "name: rx_bytes rx_packets … (8 receive fields) tx_bytes …".
func parseNetDev(data []byte) ([]netDev, error) {
	var devs []netDev
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // header lines
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if len(f) < 9 {
			return nil, fmt.Errorf("interface %q: %d fields, want at least 9", name, len(f))
		}
		rx, err1 := strconv.ParseUint(f[0], 10, 64)
		tx, err2 := strconv.ParseUint(f[8], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("interface %q: %w", name, err)
		}
		devs = append(devs, netDev{name: name, rx: rx, tx: tx})
	}
	return devs, sc.Err()
}

// parseMilliCelsius parses a thermal zone's temp file: an integer in
// millidegrees Celsius.
func parseMilliCelsius(data []byte) (float64, error) {
	s := strings.TrimSpace(string(data))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad temperature %q", s)
	}
	return float64(n) / 1000, nil
}
