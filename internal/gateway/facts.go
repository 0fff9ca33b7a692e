package gateway

import (
	"context"
	"log/slog"
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

// FactReporter stores reported facts and the last-seen time.
type FactReporter interface {
	ReportFacts(ctx context.Context, id, model, operator, firmware string, seen time.Time) error
}

func connectFacts(pk packets.Packet) Facts {
	f := Facts{Seen: time.Now()}
	for _, p := range pk.Properties.User {
		switch p.Key {
		case PropHardwareModel:
			f.HardwareModel = p.Val
		case PropNetworkOperator:
			f.NetworkOperator = p.Val
		case PropFirmwareVersion:
			f.FirmwareVersion = p.Val
		}
	}
	return f
}

// factQueue writes facts in the background so that a connect never waits on the registry; when
// the queue is full (a reconnect storm) the report is dropped and counted — the device reports
// again at its next connect.
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
	for r := range q.ch {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := q.rep.ReportFacts(ctx, r.device, r.f.HardwareModel, r.f.NetworkOperator, r.f.FirmwareVersion, r.f.Seen)
		cancel()
		if err != nil {
			q.log.Warn("store device report", "device", r.device, "error", err)
		}
	}
}

func (q *factQueue) close() {
	q.once.Do(func() { close(q.ch) })
	q.wg.Wait()
}
