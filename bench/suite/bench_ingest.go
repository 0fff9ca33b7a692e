package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

var batchSizes = []int{1, 10, 100, 1000}

type ingestRow struct {
	target string
	batch  int // 0: one JSON message per measurement
	r      loadResult
}

func benchIngest(e *env) (string, error) {
	o := e.opts
	const prefix = "ing-"
	certs, err := issue(e.ca, prefix, o.ingestDevs)
	if err != nil {
		return "", err
	}
	tf := tlsFor(e.ca, certs)
	start := time.Now().Add(-time.Hour)
	const step = 10 * time.Millisecond
	var rows []ingestRow

	// Millwright: one process, the same connections for every batch size.
	data, err := e.newServerData("ingest", prefix, certs)
	if err != nil {
		return "", err
	}
	mw, err := newMillwright(e.bin, data, "--fsync", "always")
	if err != nil {
		return "", err
	}
	if err := mw.start(); err != nil {
		return "", err
	}
	ctx := context.Background()
	f, err := connectFleet(ctx, mw.mqttAddr, tf, prefix, o.ingestDevs, start, step)
	if err != nil {
		return "", fmt.Errorf("millwright: %w", err)
	}
	mwRows, err := sweep(o, "millwright", mw.pid(), f.publishBatches)
	if err != nil {
		return "", err
	}
	for _, n := range batchSizes {
		rows = append(rows, ingestRow{"Millwright", n, mwRows[n]})
	}
	f.close()
	stopProc(mw.cmd, 20*time.Second)

	// Mosquitto: the same batches, then one message per measurement.
	mq, err := startMosquitto(e.work, e.ca)
	if err != nil {
		return "", err
	}
	f, err = connectFleet(ctx, mq.addr, tf, prefix, o.ingestDevs, start, step)
	if err != nil {
		return "", fmt.Errorf("mosquitto: %w", err)
	}
	mqName := "Mosquitto " + mq.version
	mqRows, err := sweep(o, "mosquitto", mq.pid(), f.publishBatches)
	if err != nil {
		return "", err
	}
	for _, n := range batchSizes {
		rows = append(rows, ingestRow{mqName, n, mqRows[n]})
	}
	single, err := window(o.ingestDevs, o.warmup, o.measure, mq.pid(), f.publishSingles())
	if err != nil {
		return "", fmt.Errorf("mosquitto singles: %w", err)
	}
	fmt.Fprintf(os.Stderr, "  mosquitto one per measurement: %.0f/s\n", single.rate())
	f.close()
	stopProc(mq.cmd, 10*time.Second)

	// VictoriaMetrics: the same samples over its import API, the same number of senders.
	vm, err := startVictoriaMetrics(e.work)
	if err != nil {
		return "", err
	}
	imp := newVMImporter(vm.addr, prefix, o.ingestDevs, randomWalk, start, step)
	vmRows, err := sweep(o, "victoria-metrics", vm.pid(), imp.send)
	imp.cl.CloseIdleConnections()
	if err != nil {
		return "", err
	}
	stopProc(vm.cmd, 10*time.Second)
	return ingestReport(e, rows, single, vmRows, mqName, vm.version), nil
}

// sweep measures the load that sender(n) makes, one window per batch size, against the
// process pid, and prints each rate as it goes.
func sweep(o options, name string, pid int, sender func(n int) func(context.Context, int) (int, bool, error)) (map[int]loadResult, error) {
	res := map[int]loadResult{}
	for _, n := range batchSizes {
		r, err := window(o.ingestDevs, o.warmup, o.measure, pid, sender(n))
		if err != nil {
			return nil, fmt.Errorf("%s batch %d: %w", name, n, err)
		}
		fmt.Fprintf(os.Stderr, "  %s batch %d: %.0f/s\n", name, n, r.rate())
		res[n] = r
	}
	return res, nil
}

func ingestReport(e *env, rows []ingestRow, single loadResult, vm map[int]loadResult, mqName, vmVersion string) string {
	o := e.opts
	var b strings.Builder
	fmt.Fprintf(&b, `### Ingest: acknowledged measurements per second by batch size

%d devices, each an MQTT 5 client (paho.golang) over mutual TLS with its own certificate,
publish SenML CBOR+zstd batches of realistic readings (ten metrics of a machine: drifting
temperatures, vibration, current, voltage, pressure, flow at 0.01 resolution, a cycle counter, a
state; 10 ms apart) at QoS 1, each device waiting for its acknowledgement before sending the
next. Millwright acknowledges a batch only after it is appended to the TSDB and the WAL is
fsynced (`+"`--fsync always`"+`). Each batch size: %s warm-up, then %s measured.

Peers, fed by the same generator: **Mosquitto** (TLS listener with its own configuration, the
same CA, `+"`require_certificate true`"+`; no subscriber, no persistence: it stores nothing and
acknowledges on receipt), given the same batches and, as an MQTT deployment without batching
would, one SenML JSON message per measurement; **VictoriaMetrics** %s (`+"`-storageDataPath`"+`
its own temporary directory), given the same samples as Prometheus text lines over
`+"`POST /api/v1/import/prometheus`"+` by the same number of concurrent senders, one request per
batch; it answers once the samples are in its in-memory buffers (flushed to disk about every
second), not after an fsync.

`, o.ingestDevs, o.warmup, o.measure, vmVersion)
	t := newTable("target", ">batch", ">acked measurements/s", ">requests/s", ">ack p50", ">ack p99", ">refused", ">server CPU s per 1M", ">server CPU µs per request", ">server RSS", "ratio to Mosquitto, one msg per measurement", "ratio to Mosquitto, same batch", "ratio to VictoriaMetrics, same batch")
	mqSame := map[int]loadResult{}
	for _, r := range rows {
		if r.target != "Millwright" {
			mqSame[r.batch] = r.r
		}
	}
	line := func(target string, batch string, r loadResult, a, bb, c string) {
		t.add(target, batch, num(r.rate(), 0), num(float64(r.requests)/r.elapsed.Seconds(), 0), ms(r.p50), ms(r.p99),
			num(float64(r.refused), 0), r.cpuPerMillion(r.serverCPU), r.cpuPerRequest(), mib(float64(r.serverRSS)), a, bb, c)
	}
	for _, r := range rows {
		if r.target == "Millwright" {
			line("Millwright (stored, fsync always)", num(float64(r.batch), 0), r.r, ratio(r.r.rate(), single.rate()),
				ratio(r.r.rate(), mqSame[r.batch].rate()), ratio(r.r.rate(), vm[r.batch].rate()))
		}
	}
	for _, r := range rows {
		if r.target != "Millwright" {
			line(r.target+" (stores nothing)", num(float64(r.batch), 0), r.r, ratio(r.r.rate(), single.rate()), "1.00×", "")
		}
	}
	line(mqName+", one SenML JSON message per measurement", "1 (JSON)", single, "1.00×", "", "")
	for _, n := range batchSizes {
		r := vm[n]
		line("VictoriaMetrics (in memory, then flushed)", num(float64(n), 0), r, ratio(r.rate(), single.rate()), "", "1.00×")
	}
	b.WriteString(t.String())

	mw := map[int]loadResult{}
	for _, r := range rows {
		if r.target == "Millwright" {
			mw[r.batch] = r.r
		}
	}
	r100 := mw[100]
	fmt.Fprintf(&b, `
What the numbers say:

- **Requests set the load, not measurements.** Millwright's server CPU per request is %s µs
  at batch 1, %s µs at batch 10 and %s µs at batch 100 — a hundred times the measurements for
  %s the CPU — so its CPU per million measurements falls from %s s at batch 1 to %s s at
  batch 100 and %s s at batch 1,000.
- Target ≥ 500,000 acknowledged measurements/s at batch 100: %s (%s/s, durable).
- Target ≥ 20× Mosquitto fed one message per measurement: %s (%s).
- Target ≥ half of VictoriaMetrics' own import rate at batch 100: %s (%s of its %s/s; its
  acknowledgement promises less: samples in memory).
`, mw[1].cpuPerRequest(), mw[10].cpuPerRequest(), r100.cpuPerRequest(), ratio(r100.cpuPerRequestValue(), mw[1].cpuPerRequestValue()),
		mw[1].cpuPerMillion(mw[1].serverCPU), r100.cpuPerMillion(r100.serverCPU), mw[1000].cpuPerMillion(mw[1000].serverCPU),
		verdict(r100.rate() >= 500000), num(r100.rate(), 0),
		verdict(r100.rate() >= 20*single.rate()), ratio(r100.rate(), single.rate()),
		verdict(r100.rate() >= vm[100].rate()/2), ratio(r100.rate(), vm[100].rate()), num(vm[100].rate(), 0))
	return b.String()
}
