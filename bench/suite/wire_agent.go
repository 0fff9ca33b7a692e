package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/protocol"
)

// countingDialer dials TCP and counts the bytes of every connection it made, below TLS.
type countingDialer struct {
	net.Dialer
	mu    sync.Mutex
	conns []*countingConn
}

var _ agent.Dialer = (*countingDialer)(nil)

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c}
	d.mu.Lock()
	d.conns = append(d.conns, cc)
	d.mu.Unlock()
	return cc, nil
}

// bytes is what crossed every connection so far: written, read.
func (d *countingDialer) bytes() (out, in int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		out += c.out.Load()
		in += c.in.Load()
	}
	return out, in
}

// sendWireAgent sends measurements of r through the device agent library, as the agent
// binary does (its MQTT uplink, spool and batching), one batch of 100 at a time: the suite
// writes 100 measurements to the agent's sink, flushes and waits until the batch is
// acknowledged. The first batch of the connection is not counted (it names the topic and
// its alias, and the TLS session tickets arrive with its acknowledgement).
func sendWireAgent(spoolDir, addr string, cfg *tls.Config, r readings, measurements int) (wireResult, error) {
	const batch = 100
	ac := agent.DefaultConfig()
	ac.TLS.ServerName = cfg.ServerName
	ac.Uplink.DevAddress = addr
	ac.Spool.Dir = spoolDir
	ac.Spool.Sync = spool.SyncNever
	ac.Batch.MaxRecords = batch
	ac.Health.Interval = 0
	d := &countingDialer{}
	a, err := agent.New(ac, agent.Options{Logger: slog.New(slog.DiscardHandler), Dialer: d,
		Certificate: &cfg.Certificates[0], RootCAs: cfg.RootCAs})
	if err != nil {
		return wireResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
		_ = a.Close()
	}()
	if err := waitAgent(ctx, a, func(s agent.Stats) bool { return s.Connected }); err != nil {
		return wireResult{}, fmt.Errorf("connect: %w", err)
	}
	send := func(k uint64) error {
		b, err := protocol.Resolve(r.nextPack(batch), time.Now())
		if err != nil {
			return err
		}
		if err := a.Sink().Write(ctx, b.Pack(), source.ClassRaw); err != nil {
			return err
		}
		a.Flush()
		return waitAgent(ctx, a, func(s agent.Stats) bool { return s.BatchesSent >= k })
	}
	if err := send(1); err != nil {
		return wireResult{}, err
	}
	out0, in0 := d.bytes()
	bytes0 := a.Stats().BytesSent
	k := uint64(1)
	for sent := 0; sent < measurements; sent += batch {
		k++
		if err := send(k); err != nil {
			return wireResult{}, fmt.Errorf("batch %d: %w", k, err)
		}
	}
	out1, in1 := d.bytes()
	st := a.Stats()
	switch {
	case st.Connects != 1:
		return wireResult{}, fmt.Errorf("the agent connected %d times; the bytes would include handshakes", st.Connects)
	case st.BatchesSent != k || st.RecordsSent != k*batch:
		return wireResult{}, fmt.Errorf("the agent sent %d batches of %d measurements in all, want %d of %d", st.BatchesSent, st.RecordsSent, k, k*batch)
	case len(st.Dropped) > 0:
		return wireResult{}, fmt.Errorf("the agent dropped measurements: %v", st.Dropped)
	}
	return wireResult{payload: int64(st.BytesSent - bytes0), up: out1 - out0, down: in1 - in0}, nil
}

// waitAgent polls the agent's stats until ok says so or ctx ends.
func waitAgent(ctx context.Context, a *agent.Agent, ok func(agent.Stats) bool) error {
	for !ok(a.Stats()) {
		select {
		case <-ctx.Done():
			return errors.New("timed out waiting for the agent")
		case <-time.After(200 * time.Microsecond):
		}
	}
	return nil
}
