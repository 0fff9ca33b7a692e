package devicepolicy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
)

// FactReporter stores reported facts and last-seen times: the registry.
type FactReporter interface {
	ReportFacts(ctx context.Context, id, model, operator, firmware string, seen time.Time, interval time.Duration) error
	MarkSeen(ctx context.Context, seen map[string]time.Time) error
}

// FactOptions bound the FactRecorder.
type FactOptions struct {
	// Queue bounds the connect reports waiting to be written. Default 4,096; a report beyond
	// it (a reconnect storm while the registry is slow) is dropped and counted in
	// millwright_mqtt_fact_reports_dropped_total, and the device reports again at its next
	// connect.
	Queue int
	// Batch bounds the reports written in one pass: their last-seen times go in one
	// transaction. Default 4,096.
	Batch int
	// ReportTimeout bounds writing one device's changed facts. Default 10 s; a write that
	// fails is logged and tried again at the device's next connect.
	ReportTimeout time.Duration
	// SeenTimeout bounds writing one pass's last-seen times. Default 30 s.
	SeenTimeout time.Duration
	// SeenInterval is how often the last-seen times of devices whose batches were accepted
	// (Seen) are written, all in one transaction: a device sending a batch a second costs one
	// row update per interval, not one per batch. Default 5 s.
	SeenInterval time.Duration
	// Clock drives SeenInterval. Default: the real clock.
	Clock clock.Clock
}

// DefaultFactOptions returns the defaults.
func DefaultFactOptions() FactOptions {
	return FactOptions{Queue: 4096, Batch: 4096, ReportTimeout: 10 * time.Second, SeenTimeout: 30 * time.Second,
		SeenInterval: 5 * time.Second}
}

// withDefaults fills the zero fields of o from DefaultFactOptions.
func (o FactOptions) withDefaults() FactOptions {
	d := DefaultFactOptions()
	if o.Queue <= 0 {
		o.Queue = d.Queue
	}
	if o.Batch <= 0 {
		o.Batch = d.Batch
	}
	if o.ReportTimeout <= 0 {
		o.ReportTimeout = d.ReportTimeout
	}
	if o.SeenTimeout <= 0 {
		o.SeenTimeout = d.SeenTimeout
	}
	if o.SeenInterval <= 0 {
		o.SeenInterval = d.SeenInterval
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	return o
}

// FactRecorder is the gateway's ConnectReporter: it writes facts in the background so that a
// connect never waits on the registry. Facts
// are written only when they differ from what this gateway last stored for the device; last-seen
// times of everything waiting are written together in one transaction. When the queue is full (a
// reconnect storm) a report is dropped and counted — the device reports again at its next
// connect.
type FactRecorder struct {
	rep     FactReporter
	opts    FactOptions
	log     *slog.Logger
	ch      chan factReport
	dropped prometheus.Counter
	wg      sync.WaitGroup
	once    sync.Once

	closeMu sync.RWMutex // Connected holds it to read, Close to set closed
	closed  bool

	seenMu sync.Mutex
	seen   map[string]time.Time // accepted batches since the last write, latest per device
	stop   chan struct{}
}

var _ gateway.ConnectReporter = (*FactRecorder)(nil)

type factReport struct {
	device string
	f      gateway.Facts
}

// NewFactRecorder starts writing what devices report to rep; Close stops it.
func NewFactRecorder(rep FactReporter, opts FactOptions, logger *slog.Logger, reg prometheus.Registerer) *FactRecorder {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts = opts.withDefaults()
	q := &FactRecorder{rep: rep, opts: opts, log: logger, ch: make(chan factReport, opts.Queue),
		seen: map[string]time.Time{}, stop: make(chan struct{}),
		dropped: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_fact_reports_dropped_total",
			Help: "Connect-time device reports (model, operator, firmware, last seen) dropped because the registry fell behind.",
		})}
	q.wg.Go(q.run)
	q.wg.Go(q.seenLoop)
	return q
}

// Seen records that a device was heard from at t (an accepted batch); the latest time of each
// device is written every SeenInterval. It never blocks on the registry.
func (q *FactRecorder) Seen(device string, t time.Time) {
	q.seenMu.Lock()
	if t.After(q.seen[device]) {
		q.seen[device] = t
	}
	q.seenMu.Unlock()
}

func (q *FactRecorder) seenLoop() {
	for {
		t := q.opts.Clock.NewTimer(q.opts.SeenInterval)
		select {
		case <-q.stop:
			t.Stop()
			q.flushSeen()
			return
		case <-t.C():
			q.flushSeen()
		}
	}
}

// flushSeen writes the last-seen times gathered since the last write.
func (q *FactRecorder) flushSeen() {
	q.seenMu.Lock()
	seen := q.seen
	q.seen = map[string]time.Time{}
	q.seenMu.Unlock()
	if len(seen) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.opts.SeenTimeout)
	defer cancel()
	if err := q.rep.MarkSeen(ctx, seen); err != nil {
		q.log.Warn("store last-seen times", "devices", len(seen), "error", err)
	}
}

// Connected implements gateway.ConnectReporter: it queues the report, or drops and counts it
// when the queue is full. It never blocks.
func (q *FactRecorder) Connected(device string, f gateway.Facts) {
	// The HTTPS listener may still take a state message while the MQTT side, which closes
	// the recorder, has stopped: such a late report is dropped, not sent on a closed channel.
	q.closeMu.RLock()
	defer q.closeMu.RUnlock()
	if q.closed {
		q.dropped.Inc()
		return
	}
	select {
	case q.ch <- factReport{device, f}:
	default:
		q.dropped.Inc()
	}
}

func (q *FactRecorder) run() {
	known := map[string]gateway.Facts{} // last facts stored per device, Seen cleared
	for r := range q.ch {
		batch := []factReport{r}
	drain:
		for len(batch) < q.opts.Batch {
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
			if f != (gateway.Facts{}) && known[r.device] != f {
				ctx, cancel := context.WithTimeout(context.Background(), q.opts.ReportTimeout)
				err := q.rep.ReportFacts(ctx, r.device, f.HardwareModel, f.NetworkOperator, f.FirmwareVersion, r.f.Seen, f.SendInterval)
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
			ctx, cancel := context.WithTimeout(context.Background(), q.opts.SeenTimeout)
			if err := q.rep.MarkSeen(ctx, seen); err != nil {
				q.log.Warn("store last-seen times", "devices", len(seen), "error", err)
			}
			cancel()
		}
	}
}

// Close implements gateway.ConnectReporter: it writes what is queued and returns once it is
// written. A report after Close is dropped and counted.
func (q *FactRecorder) Close() error {
	q.once.Do(func() {
		q.closeMu.Lock()
		q.closed = true
		q.closeMu.Unlock()
		close(q.ch)
		close(q.stop)
	})
	q.wg.Wait()
	return nil
}
