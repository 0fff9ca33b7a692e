package agent

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// TestPingerKeepaliveLoss: the pinger pings after a quiet interval on the agent's clock, goes on
// while PINGRESPs come, and reports errKeepalive — a type, not a message to match — when one
// does not.
func TestPingerKeepaliveLoss(t *testing.T) {
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	p := newPinger(clk)
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	pings := make(chan struct{}, 8)
	go func() {
		for {
			cp, err := packets.ReadPacket(server)
			if err != nil {
				return
			}
			if cp.Type == packets.PINGREQ {
				pings <- struct{}{}
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background(), client, 10) }()

	<-pings // the first ping goes at once
	p.PingResp()
	clk.BlockUntil(1)
	clk.Advance(10 * time.Second)
	<-pings // answered, so another one after the interval
	clk.BlockUntil(1)
	clk.Advance(10 * time.Second) // … and this one is not answered
	select {
	case err := <-done:
		require.ErrorIs(t, err, errKeepalive)
	case <-time.After(10 * time.Second):
		t.Fatal("the pinger did not give up on a missing PINGRESP")
	}
}
