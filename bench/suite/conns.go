package main

import (
	"fmt"
	"os"
	"time"
)

// connResult is one server holding idle devices.
type connResult struct {
	target          string
	devices         int
	connectTime     time.Duration
	rssBefore       int64
	rssAfter        int64
	rssLater        int64
	fds             int
	heapInuse       float64 // Go servers only
	stackInuse      float64
	goroutines      float64
	heapInuseBefore float64
	gcPercent       float64 // the server's millwright_gc_percent while held
	stackBefore     float64
	// The fleet monitor's part: the TSDB head's series before and while held, and the mean
	// time of its writes of every device's series while held.
	seriesBefore, seriesHeld float64
	flushSeconds             float64
}

func (r connResult) perConn() float64 {
	return float64(r.rssAfter-r.rssBefore) / float64(r.devices)
}

// holdIdle connects devices to a running server with the simulator, waits for a steady state
// and measures. The simulator registers the devices through the API at api ("" for a broker
// that is not Millwright). connected reports how many devices the server holds now; a device
// counts as held when the server holds it and its simulator sees it connected.
func holdIdle(e *env, server, api, data, prefix string, devices, pid int, connected func() int, scrape func() map[string]float64) (connResult, error) {
	r := connResult{devices: devices}
	time.Sleep(3 * time.Second) // the server settles after its start
	r.rssBefore, _ = procRSS(pid)
	if m := scrape(); m != nil {
		r.heapInuseBefore, r.stackBefore = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"]
		r.seriesBefore = m["prometheus_tsdb_head_series"]
	}
	t0 := time.Now()
	sims, err := startSims(e, server, api, data, prefix, devices, e.opts.simProcs(devices), "full", 10*time.Minute)
	if err != nil {
		return r, err
	}
	defer func() { _, _ = sims.stop() }()
	held := func() int { return min(connected(), sims.connected()) }
	if err := sims.awaitConnected(held, devices, 5*time.Minute); err != nil {
		return r, err
	}
	r.connectTime = time.Since(t0)
	fmt.Fprintf(os.Stderr, "  %d devices connected in %s\n", devices, r.connectTime.Round(100*time.Millisecond))
	// Steady state: 10 s after the last connect, no forced collection.
	time.Sleep(10 * time.Second)
	r.rssAfter, _ = procRSS(pid)
	r.fds = procFDs(pid)
	if m := scrape(); m != nil {
		r.heapInuse, r.stackInuse, r.goroutines = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"], m["go_goroutines"]
		r.gcPercent = m["millwright_gc_percent"]
	}
	// One more monitor interval (15 s) for the devices' series to be written, within the 20 s
	// that follow anyway.
	time.Sleep(20 * time.Second)
	if m := scrape(); m != nil {
		r.seriesHeld = m["prometheus_tsdb_head_series"]
		if n := m["millwright_monitor_flush_seconds_count"]; n > 0 {
			r.flushSeconds = m["millwright_monitor_flush_seconds_sum"] / n
		}
	}
	r.rssLater, _ = procRSS(pid)
	if n := held(); n < devices {
		return r, fmt.Errorf("only %d of %d devices still connected at the end", n, devices)
	}
	if _, err := sims.stop(); err != nil {
		return r, err
	}
	return r, nil
}
