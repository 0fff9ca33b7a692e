package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

func deviceID(prefix string, i int) string { return fmt.Sprintf("%s%05d", prefix, i) }

// fleet is a set of connected MQTT devices, each with its own data generator.
type fleet struct {
	clients []*paho.Client
	ids     []string
	gens    []*generator
}

// connectFleet connects n MQTT 5 devices over mutual TLS.
func connectFleet(ctx context.Context, addr string, tlsFor func(int) *tls.Config, prefix string, n int, start time.Time, step time.Duration) (*fleet, error) {
	f := &fleet{clients: make([]*paho.Client, n), ids: make([]string, n), gens: make([]*generator, n)}
	var (
		wg      sync.WaitGroup
		connErr atomic.Value
		sem     = make(chan struct{}, 32)
	)
	for i := range n {
		f.ids[i] = deviceID(prefix, i)
		f.gens[i] = newGenerator(i, start, step)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := dialMQTT(ctx, addr, tlsFor, f.ids[i], i)
			if err != nil {
				connErr.Store(fmt.Errorf("device %d: %w", i, err))
				return
			}
			f.clients[i] = cl
		}()
	}
	wg.Wait()
	if err, ok := connErr.Load().(error); ok {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *fleet) close() {
	for _, cl := range f.clients {
		if cl != nil {
			_ = cl.Disconnect(&paho.Disconnect{})
		}
	}
}

func dialMQTT(ctx context.Context, addr string, tlsFor func(int) *tls.Config, id string, i int) (*paho.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: tlsFor(i)}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
	if _, err := cl.Connect(dctx, &paho.Connect{ClientID: id, KeepAlive: 120, CleanStart: true}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return cl, nil
}

// loadResult is what one measured window acknowledged.
type loadResult struct {
	measurements, requests, refused int64
	elapsed                         time.Duration
	p50, p99                        time.Duration
	serverCPU                       time.Duration
	serverRSS                       int64
}

func (r loadResult) rate() float64 { return float64(r.measurements) / r.elapsed.Seconds() }

func (r loadResult) cpuPerMillion(d time.Duration) string {
	if r.measurements == 0 || d == 0 {
		return "n/a"
	}
	return num(d.Seconds()/(float64(r.measurements)/1e6), 2)
}

func (r loadResult) cpuPerRequestValue() float64 {
	if r.requests == 0 {
		return 0
	}
	return float64(r.serverCPU.Microseconds()) / float64(r.requests)
}

func (r loadResult) cpuPerRequest() string {
	if r.requests == 0 || r.serverCPU == 0 {
		return "n/a"
	}
	return num(r.cpuPerRequestValue(), 1)
}

// window runs send on every device, in a loop, through the warm-up and the measured window.
// send returns the measurements a request carried, whether it was refused, and an error that
// ends the run.
func window(n int, warmup, dur time.Duration, pid int, send func(ctx context.Context, dev int) (int, bool, error)) (loadResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		measuring         atomic.Bool
		meas, reqs, refus atomic.Int64
		latMu             sync.Mutex
		lats              []time.Duration
		runErr            atomic.Value
		wg                sync.WaitGroup
	)
	for dev := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				t0 := time.Now()
				k, refused, err := send(ctx, dev)
				lat := time.Since(t0)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					runErr.Store(fmt.Errorf("device %d: %w", dev, err))
					cancel()
					break
				}
				if !measuring.Load() {
					continue
				}
				if refused {
					refus.Add(1)
					continue
				}
				meas.Add(int64(k))
				reqs.Add(1)
				local = append(local, lat)
			}
			latMu.Lock()
			lats = append(lats, local...)
			latMu.Unlock()
		}()
	}
	clock.Sleep(ctx, clock.Real(), warmup)
	cpu0 := procCPU(pid)
	measuring.Store(true)
	t0 := time.Now()
	clock.Sleep(ctx, clock.Real(), dur)
	measuring.Store(false)
	elapsed := time.Since(t0)
	cpu1 := procCPU(pid)
	rss, _ := procRSS(pid)
	cancel()
	wg.Wait()
	if err, ok := runErr.Load().(error); ok {
		return loadResult{}, err
	}
	slices.Sort(lats)
	return loadResult{measurements: meas.Load(), requests: reqs.Load(), refused: refus.Load(), elapsed: elapsed,
		p50: percentile(lats, 50), p99: percentile(lats, 99), serverCPU: cpu1 - cpu0, serverRSS: rss}, nil
}

// publishBatches sends batches of n measurements in CBOR+zstd, QoS 1, one in flight per device.
func (f *fleet) publishBatches(n int) func(context.Context, int) (int, bool, error) {
	return func(ctx context.Context, dev int) (int, bool, error) {
		payload := encode(f.gens[dev], n, encCBORZstd)
		refused, err := publish(ctx, f.clients[dev], f.ids[dev], payload)
		return n, refused, err
	}
}

// publishSingles sends one SenML JSON message per measurement, QoS 1, one in flight per device.
func (f *fleet) publishSingles() func(context.Context, int) (int, bool, error) {
	pending := make([][][]byte, len(f.clients))
	return func(ctx context.Context, dev int) (int, bool, error) {
		if len(pending[dev]) == 0 {
			pending[dev] = singles(f.gens[dev], 100)
		}
		payload := pending[dev][0]
		pending[dev] = pending[dev][1:]
		refused, err := publish(ctx, f.clients[dev], f.ids[dev], payload)
		return 1, refused, err
	}
}

// publish sends at QoS 1 and waits for the PUBACK; a reason code of 0x80 or more is a refusal
// (Millwright's back-pressure), not an error.
func publish(ctx context.Context, cl *paho.Client, id string, payload []byte) (refused bool, err error) {
	resp, err := cl.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic(id), QoS: 1, Payload: payload})
	if err != nil && resp != nil && resp.ReasonCode >= 0x80 {
		return true, nil
	}
	return false, err
}

// vmImporter posts the same measurements to VictoriaMetrics' Prometheus-text import API.
type vmImporter struct {
	url  string
	cl   *http.Client
	gens []readings
	ids  []string
	bufs []*bytes.Buffer
}

// newVMImporter posts the readings of n devices, device i's made by newReadings(i, start, step).
func newVMImporter(addr, prefix string, n int, newReadings func(int, time.Time, time.Duration) readings, start time.Time, step time.Duration) *vmImporter {
	v := &vmImporter{url: "http://" + addr + "/api/v1/import/prometheus",
		cl: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxIdleConns: n}}}
	for i := range n {
		v.gens = append(v.gens, newReadings(i, start, step))
		v.ids = append(v.ids, deviceID(prefix, i))
		v.bufs = append(v.bufs, new(bytes.Buffer))
	}
	return v
}

// promText writes a resolved pack as Prometheus text lines with millisecond timestamps.
func promText(b *bytes.Buffer, device string, p protocol.Pack) {
	bt := 0.0
	for _, r := range p {
		if r.BaseTime != 0 {
			bt = r.BaseTime
		}
		b.WriteString(r.Name)
		b.WriteString(`{device="`)
		b.WriteString(device)
		b.WriteString(`"} `)
		b.WriteString(strconv.FormatFloat(*r.Value, 'g', -1, 64))
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(int64((bt+r.Time)*1000+0.5), 10))
		b.WriteByte('\n')
	}
}

func (v *vmImporter) send(n int) func(context.Context, int) (int, bool, error) {
	return func(ctx context.Context, dev int) (int, bool, error) {
		b := v.bufs[dev]
		b.Reset()
		promText(b, v.ids[dev], v.gens[dev].nextPack(n))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.url, bytes.NewReader(b.Bytes()))
		if err != nil {
			return 0, false, err
		}
		resp, err := v.cl.Do(req)
		if err != nil {
			return 0, false, err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return 0, false, fmt.Errorf("import: %s: %s", resp.Status, body)
		}
		return n, false, nil
	}
}
