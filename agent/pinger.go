package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/log"

	"github.com/millwright/millwright/clock"
)

// errKeepalive is a connection given up because the server did not answer a PINGREQ within a
// keep-alive interval.
var errKeepalive = errors.New("no PINGRESP within the keep-alive interval")

// pinger is paho's keep-alive (paho.Pinger) on the agent's clock, with a loss the agent can
// recognise: Run returns errKeepalive when a PINGRESP does not come. Like paho's DefaultPinger,
// it pings when nothing was both sent and received for a keep-alive interval, so that a
// half-open connection is found even while the agent only publishes.
type pinger struct {
	clk clock.Clock

	mu                               sync.Mutex
	lastSent, lastReceived, lastResp time.Time
}

var _ interface {
	Run(context.Context, net.Conn, uint16) error
	PacketSent()
	PacketReceived()
	PingResp()
	SetDebug(log.Logger)
} = (*pinger)(nil)

func newPinger(clk clock.Clock) *pinger { return &pinger{clk: clk} }

// Run pings until ctx ends, a PINGRESP is missing (errKeepalive) or a PINGREQ cannot be sent.
func (p *pinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	if keepAlive == 0 {
		return nil
	}
	interval := time.Duration(keepAlive) * time.Second
	timer := p.clk.NewTimer(0)
	defer timer.Stop()
	var lastPing time.Time
	sendErr := make(chan error, 1)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-sendErr:
			return err
		case now := <-timer.C():
			p.mu.Lock()
			due := p.lastReceived
			if p.lastSent.Before(due) {
				due = p.lastSent
			}
			due = due.Add(interval)
			resp := p.lastResp
			p.mu.Unlock()
			if !lastPing.IsZero() && lastPing.After(resp) {
				return errKeepalive
			}
			if now.Before(due) {
				timer.Reset(due.Sub(now))
				continue
			}
			lastPing = now
			go func() {
				// A write can outlast the interval on a slow link; closing the connection
				// ends it.
				if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(conn); err != nil {
					select {
					case sendErr <- fmt.Errorf("send PINGREQ: %w", err):
					default:
					}
				}
			}()
			timer.Reset(interval)
		}
	}
}

func (p *pinger) PacketSent()         { p.mu.Lock(); p.lastSent = p.clk.Now(); p.mu.Unlock() }
func (p *pinger) PacketReceived()     { p.mu.Lock(); p.lastReceived = p.clk.Now(); p.mu.Unlock() }
func (p *pinger) PingResp()           { p.mu.Lock(); p.lastResp = p.clk.Now(); p.mu.Unlock() }
func (p *pinger) SetDebug(log.Logger) {}
