package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

func benchConnections(e *env) (string, error) {
	o := e.opts
	const prefix = "idle"
	// One data directory for every Millwright run: the simulator issues and registers the
	// devices once and reuses them.
	data, err := e.newServerData("connections", "", nil)
	if err != nil {
		return "", err
	}
	runMW := func(name string, env []string) (connResult, error) {
		mw, err := newMillwright(e.bin, data)
		if err != nil {
			return connResult{}, err
		}
		mw.env = env
		if err := mw.start(); err != nil {
			return connResult{}, err
		}
		defer stopProc(mw.cmd, 30*time.Second)
		scrape := e.scraper(mw)
		connected := e.connectedClients(mw)
		r, err := holdIdle(e, mw.mqttAddr, "https://"+mw.https, data, prefix, o.idleDevs, mw.pid(), connected, scrape)
		r.target = name
		if err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		return r, nil
	}
	mwr, err := runMW("Millwright", nil)
	if err != nil {
		return "", err
	}
	// The same with GOGC=100 in the environment, which the server leaves as set: the collector
	// unpaced, to show what the pacing saves.
	mwrFixed, err := runMW("Millwright, GOGC=100 (collector not paced)", []string{"GOGC=100"})
	if err != nil {
		return "", err
	}
	// The same with the runtime setting an operator can add (docs/operations.md).
	mwrStack, err := runMW("Millwright, GODEBUG=adaptivestackstart=0 (operator setting)", []string{"GODEBUG=adaptivestackstart=0"})
	if err != nil {
		return "", err
	}

	mq, err := startMosquitto(e.work, e.ca)
	if err != nil {
		return "", err
	}
	_, portS, _ := net.SplitHostPort(mq.addr)
	port, _ := strconv.Atoi(portS)
	mqr, err := holdIdle(e, mq.addr, "", data, prefix, o.idleDevs, mq.pid(), func() int { return established(port) }, func() map[string]float64 { return nil })
	stopProc(mq.cmd, 30*time.Second)
	if err != nil {
		return "", fmt.Errorf("mosquitto: %w", err)
	}
	mqr.target = "Mosquitto " + mq.version
	return connReport(e, mwr, mwrFixed, mwrStack, mqr), nil
}

func connReport(e *env, mw, mwFixed, mwStack, mq connResult) string {
	o := e.opts
	soft, _ := fdLimit()
	var b strings.Builder
	fmt.Fprintf(&b, `### Connections: idle TLS devices in one server process

%d devices connect over mutual TLS (TLS 1.3, P-256 certificates, one per device) and stay
idle: the fleet simulator (`+"`millwright sim --metrics idle`"+`, real agents, MQTT 5, keep-alive
60 s, full-jitter backoff) in %d processes, each connecting from its own source address
(127.0.0.2 …), because the open-file limit of %d per process (hard, not raisable here) applies
to each side and an agent holds four files. The server's resident set (VmRSS) is read before the
first device connects (3 s after start) and 10 s after the last one connected (steady state,
no forced garbage collection; a device is connected when the server holds it, by its own gauge
or, for Mosquitto, an established socket, and its simulator has its CONNACK); RSS per connection is the difference divided by the devices. The
figure 20 s later shows whether it was still moving. Peer: Mosquitto, its own TLS listener
(same CA, `+"`require_certificate true`"+`), the same load. The middle rows are the same server
started with `+"`GOGC=100`"+` in its environment, which it leaves as set (its collector then runs
unpaced, as a Go program does by default: the first row's figure against this one is what the
pacing saves), and with `+"`GODEBUG=adaptivestackstart=0`"+`, a runtime setting an operator can
add for a server of mostly idle devices (docs/operations.md, "Connections and reconnect
storms"; the server cannot set it for itself).

`, o.idleDevs, o.simProcs(o.idleDevs), soft)
	t := newTable("server", ">devices held", ">open files in the server (limit)", ">connect time", ">RSS before", ">RSS held", ">RSS 20 s later", ">RSS per connection", ">ratio to Mosquitto")
	for _, r := range []connResult{mw, mwFixed, mwStack, mq} {
		t.add(r.target, num(float64(r.devices), 0), fmt.Sprintf("%s (%s)", num(float64(r.fds), 0), num(float64(soft), 0)),
			fmt.Sprintf("%.1f s", r.connectTime.Seconds()), mib(float64(r.rssBefore)), mib(float64(r.rssAfter)), mib(float64(r.rssLater)),
			kib(r.perConn()), ratio(r.perConn(), mq.perConn()))
	}
	b.WriteString(t.String())
	n := float64(mw.devices)
	fmt.Fprintf(&b, `
Where Millwright's memory per connection goes (Go runtime figures from its /metrics, held minus
before, per connection): heap in use %s, goroutine stacks %s (%.1f goroutines per connection),
the rest of the resident growth (%s) is heap the runtime keeps for reuse between collections
and allocator overhead. `+"`go test ./internal/gateway -run '^$' -bench IdleConnectionMemory -benchtime 2000x`"+`
measures the same in one process after forced collections, and with `+"`MW_HEAP_PROFILE=FILE`"+`
writes a heap profile while the connections are held. The server paced its collector
(package `+"`internal/gcpace`"+`: headroom in proportion to the live heap alone, not to heap plus
goroutine stacks) to a GC percent of %s while the devices were held (%s with the operator
setting). The fleet monitor (docs/monitoring.md) is part of these figures: it added %s series
per connected device to the TSDB's head (%s before the devices, %s held), and its writes of
every device's series took %s each on average (every 15 s).

- Target ≥ 19,000 idle TLS devices in one server process: %s (%s held; the server had %s
  files open against its limit of %s).
- Target ≤ 40 KiB RSS per connection: %s (%s; %s with the collector not paced, %s with the
  operator setting; Mosquitto %s).
`, kib((mw.heapInuse-mw.heapInuseBefore)/n), kib((mw.stackInuse-mw.stackBefore)/n), mw.goroutines/n,
		kib(mw.perConn()-(mw.heapInuse-mw.heapInuseBefore+mw.stackInuse-mw.stackBefore)/n),
		num(mw.gcPercent, 0), num(mwStack.gcPercent, 0),
		num((mw.seriesHeld-mw.seriesBefore)/n, 1), num(mw.seriesBefore, 0), num(mw.seriesHeld, 0),
		fmt.Sprintf("%.0f ms", 1000*mw.flushSeconds),
		verdict(mw.devices >= 19000), num(n, 0), num(float64(mw.fds), 0), num(float64(soft), 0),
		verdict(mw.perConn() <= 40*1024), kib(mw.perConn()), kib(mwFixed.perConn()), kib(mwStack.perConn()), kib(mq.perConn()))
	return b.String()
}
