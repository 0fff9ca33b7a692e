package gateway

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// MQTT 5 CONNECT user properties in which a device reports what it is.
const (
	PropHardwareModel   = "hw_model"
	PropNetworkOperator = "net_operator"
	PropFirmwareVersion = "fw_version"
)

// Facts is what a device reports about itself when it connects; empty fields are unknown.
type Facts struct {
	HardwareModel, NetworkOperator, FirmwareVersion string
	Seen                                            time.Time
}

// FactReporter stores reported facts and last-seen times.
type FactReporter interface {
	ReportFacts(ctx context.Context, id, model, operator, firmware string, seen time.Time) error
	MarkSeen(ctx context.Context, seen map[string]time.Time) error
}

// connectFacts reads the facts from a CONNECT's user properties, copied out of the packet's
// buffer (which the fact queue would otherwise keep alive).
func connectFacts(pk *packets.Packet) Facts {
	f := Facts{Seen: time.Now()}
	for _, p := range pk.Properties.User {
		switch p.Key {
		case PropHardwareModel:
			f.HardwareModel = strings.Clone(p.Val)
		case PropNetworkOperator:
			f.NetworkOperator = strings.Clone(p.Val)
		case PropFirmwareVersion:
			f.FirmwareVersion = strings.Clone(p.Val)
		}
	}
	return f
}

// factQueue writes facts in the background so that a connect never waits on the registry. Facts
// are written only when they differ from what this gateway last stored for the device; last-seen
// times of everything waiting are written together in one transaction. When the queue is full (a
// reconnect storm) a report is dropped and counted — the device reports again at its next
// connect.
type factQueue struct {
	rep     FactReporter
	log     *slog.Logger
	ch      chan factReport
	dropped prometheus.Counter
	wg      sync.WaitGroup
	once    sync.Once
}

type factReport struct {
	device string
	f      Facts
}

func newFactQueue(rep FactReporter, logger *slog.Logger, reg prometheus.Registerer) *factQueue {
	q := &factQueue{rep: rep, log: logger, ch: make(chan factReport, 4096),
		dropped: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_fact_reports_dropped_total",
			Help: "Connect-time device reports (model, operator, firmware, last seen) dropped because the registry fell behind.",
		})}
	q.wg.Go(q.run)
	return q
}

func (q *factQueue) report(device string, f Facts) {
	select {
	case q.ch <- factReport{device, f}:
	default:
		q.dropped.Inc()
	}
}

func (q *factQueue) run() {
	known := map[string]Facts{} // last facts stored per device, Seen cleared
	for r := range q.ch {
		batch := []factReport{r}
	drain:
		for len(batch) < 4096 {
			select {
			case r, ok := <-q.ch:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		seen := map[string]time.Time{}
		for _, r := range batch {
			f := r.f
			f.Seen = time.Time{}
			if f != (Facts{}) && known[r.device] != f {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := q.rep.ReportFacts(ctx, r.device, f.HardwareModel, f.NetworkOperator, f.FirmwareVersion, r.f.Seen)
				cancel()
				if err != nil {
					q.log.Warn("store device report", "device", r.device, "error", err)
					continue
				}
				known[r.device] = f
				continue
			}
			if r.f.Seen.After(seen[r.device]) {
				seen[r.device] = r.f.Seen
			}
		}
		if len(seen) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := q.rep.MarkSeen(ctx, seen); err != nil {
				q.log.Warn("store last-seen times", "devices", len(seen), "error", err)
			}
			cancel()
		}
	}
}

func (q *factQueue) close() {
	q.once.Do(func() { close(q.ch) })
	q.wg.Wait()
}
