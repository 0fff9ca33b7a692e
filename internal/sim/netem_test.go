package sim

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// echoServer accepts connections on loopback and echoes what it reads.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func testDialer(clk clock.Clock, n Network, fwDrop time.Duration, seed uint64) *dialer {
	return &dialer{clk: clk, net: n, fwDrop: fwDrop, faults: &faults{}, rnd: &lockedRand{r: rand.New(rand.NewPCG(seed, 1))}}
}

// TestFirmwareDropRate: devices whose firmware drops its connection every 10 minutes on
// average, each reconnecting at once, drop about N·T/10min times in T — on a fake clock,
// two hours in well under a second.
func TestFirmwareDropRate(t *testing.T) {
	addr := echoServer(t)
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	const (
		devices = 100
		mean    = 10 * time.Minute
		span    = 2 * time.Hour
	)
	d := testDialer(clk, Network{}, mean, 7)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range devices {
		wg.Go(func() {
			buf := make([]byte, 16)
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					return
				}
				for {
					if _, err := c.Read(buf); err != nil {
						break // dropped: reconnect at once, as a device would after its backoff
					}
				}
				_ = c.Close()
			}
		})
	}
	// Each live connection keeps one drop timer armed.
	for step := time.Duration(0); step < span; step += 10 * time.Second {
		clk.BlockUntil(devices)
		clk.Advance(10 * time.Second)
	}
	clk.BlockUntil(devices)
	got := d.faults.firmwareDrops.Load()
	want := float64(devices) * float64(span) / float64(mean)
	t.Logf("%d devices, mean time between firmware drops %v, %v: %d drops, expected %.0f (±%.0f at 3σ)", devices, mean, span, got, want, 3*math.Sqrt(want))
	require.InDelta(t, want, float64(got), 3*math.Sqrt(want))
	cancel()
	clk.Advance(span) // cut the last connections so the devices see ctx
	wg.Wait()
}

// TestNATIdleTimeout: a connection idle past the NAT timeout is silently dead — writes
// vanish, nothing arrives — while one with traffic inside the timeout lives.
func TestNATIdleTimeout(t *testing.T) {
	addr := echoServer(t)
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	d := testDialer(clk, Network{NATIdleTimeout: time.Minute}, 0, 1)
	c, err := d.DialContext(context.Background(), "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	buf := make([]byte, 4)
	clk.Advance(50 * time.Second)
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err, "traffic within the timeout keeps the mapping")
	clk.Advance(61 * time.Second)
	n, err := c.Write([]byte("ping"))
	require.NoError(t, err, "the device cannot tell")
	require.Equal(t, 4, n)
	read := make(chan error, 1)
	go func() { _, err := c.Read(buf); read <- err }()
	select {
	case err := <-read:
		t.Fatalf("a read on a dead mapping returned: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	require.Equal(t, uint64(1), d.faults.natKills.Load())
	_ = c.Close() // the agent gives up (keepalive) and closes
	require.ErrorIs(t, <-read, net.ErrClosed)
}

// TestOutage: dials fail during an outage, and open connections go silent at its start.
func TestOutage(t *testing.T) {
	addr := echoServer(t)
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	d := testDialer(clk, Network{}, 0, 1)
	d.outage = newOutage(Outage{Every: time.Hour, Duration: time.Minute}, d.faults)
	d.outage.start = start
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.outage.run(ctx, clk)
	c, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	clk.BlockUntil(1)
	clk.Advance(time.Hour + time.Second)
	require.Eventually(t, func() bool { return d.faults.outages.Load() == 1 }, 5*time.Second, time.Millisecond)
	_, err = d.DialContext(ctx, "tcp", addr)
	require.True(t, errors.Is(err, errOutage), "dial during the outage: %v", err)
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	require.True(t, c.(*conn).isSilent())
	clk.Advance(time.Minute)
	c2, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err, "after the outage")
	require.NoError(t, c2.Close())
}
