package server

import (
	"context"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/dnsserver"
)

// DeviceMover is what the mover needs of the gateway.
type DeviceMover interface {
	MoveDevice(id, serverRef string) bool
	Devices() []string
	LocalAddr(id string) (netip.Addr, bool)
}

// mover tells the connected devices that DNS routing moved to reconnect, one after the other
// at a bounded rate: MQTT 5 devices with DISCONNECT 0x9C and their own name as the Server
// Reference, so they resolve it again and reach their new gateway.
type mover struct {
	dns   *dnsserver.Server
	gw    DeviceMover
	clk   clock.Clock
	log   *slog.Logger
	zone  string
	rate  float64       // default devices a second
	next  atomic.Uint64 // float64 bits of the rate for the next batch (a drain's); 0: rate
	moves *prometheus.CounterVec

	mu      sync.Mutex
	queue   []moveItem
	pending map[string]bool
	wake    chan struct{}
}

func (mv *mover) answer(device string) []netip.Addr {
	if mv.dns == nil {
		return nil
	}
	return mv.dns.Answer(device)
}

type moveItem struct {
	device string
	rate   float64
}

var _ api.Routing = (*mover)(nil)

func newMover(dns *dnsserver.Server, gw DeviceMover, clk clock.Clock, log *slog.Logger, reg prometheus.Registerer, zone string, rate float64) *mover {
	mv := &mover{dns: dns, gw: gw, clk: clk, log: log, zone: strings.TrimSuffix(zone, "."), rate: rate,
		pending: map[string]bool{}, wake: make(chan struct{}, 1),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_moves_total",
			Help: "Devices whose DNS answer changed, by result: moved (a connected device was told to reconnect), stays (its new answer is this node's address) or absent (not connected here)."}, []string{"result"})}
	reg.MustRegister(mv.moves)
	dns.OnMoved(mv.onMoved)
	return mv
}

// Moved is the API's word that the registry changed: the zone is reloaded at once, which
// tells onMoved the devices whose answer changed; a drain's rate applies to them.
func (mv *mover) Moved(_ []string, perSecond float64) {
	mv.setNext(perSecond)
	if err := mv.dns.Reload(context.Background()); err != nil {
		mv.log.Error("reload the dns zone after a change", "err", err)
	}
	mv.setNext(0)
}

// setNext sets the rate of the next batch onMoved queues (0: the default).
func (mv *mover) setNext(perSecond float64) { mv.next.Store(math.Float64bits(max(perSecond, 0))) }

// onMoved queues the devices whose answer changed (and, when the wildcard's did, every
// connected device without a route of its own).
func (mv *mover) onMoved(devices []string, unrouted bool) {
	rate := mv.rate
	if r := math.Float64frombits(mv.next.Swap(0)); r > 0 {
		rate = r
	}
	if unrouted {
		for _, d := range mv.gw.Devices() {
			if !mv.dns.HasRoute(d) {
				devices = append(devices, d)
			}
		}
	}
	mv.mu.Lock()
	for _, d := range devices {
		if !mv.pending[d] {
			mv.pending[d] = true
			mv.queue = append(mv.queue, moveItem{d, rate})
		}
	}
	mv.mu.Unlock()
	select {
	case mv.wake <- struct{}{}:
	default:
	}
}

// Run moves the queued devices until ctx ends, waiting 1/rate after each connected one.
func (mv *mover) Run(ctx context.Context) error {
	for {
		mv.mu.Lock()
		var it moveItem
		ok := len(mv.queue) > 0
		if ok {
			it = mv.queue[0]
			mv.queue = mv.queue[1:]
			delete(mv.pending, it.device)
		}
		mv.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-mv.wake:
				continue
			}
		}
		// A device whose new answer includes the address it reached here stays: this node
		// is where it is sent (the other nodes move their devices here).
		local, ok := mv.gw.LocalAddr(it.device)
		if ok && local.IsValid() && slices.Contains(mv.answer(it.device), local) {
			mv.moves.WithLabelValues("stays").Inc()
			continue
		}
		if !ok || !mv.gw.MoveDevice(it.device, it.device+"."+mv.zone) {
			mv.moves.WithLabelValues("absent").Inc()
			continue
		}
		mv.moves.WithLabelValues("moved").Inc()
		mv.log.Info("device told to reconnect: its DNS answer changed", "device", it.device)
		if !clock.Sleep(ctx, mv.clk, time.Duration(float64(time.Second)/it.rate)) {
			return nil
		}
	}
}
