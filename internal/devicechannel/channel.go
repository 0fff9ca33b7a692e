// Package devicechannel is the server side of the device channel (docs/protocol.md, "The
// device channel"; docs/design.md, "Device channel"): it delivers what the registry's mailbox
// holds for a device — commands and its desired configuration — over the device's MQTT session
// or its HTTPS mailbox, records each step (delivered, acknowledged, answered, expired) in the
// registry, and takes the device's replies, configuration reports and state.
//
// The mailbox in the registry is the source of truth; the MQTT session only carries a message.
// A message is sent when the device subscribes to its topic (at every connection, whatever is
// still open; while connected, as soon as it is queued), and again at later connections until
// the device answers. Devices recognise a message they have seen by its ID.
package devicechannel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// Transport sends a message to a connected device: the MQTT gateway.
type Transport interface {
	Deliver(device, topic string, payload []byte, onAck func()) (matched, sent bool, err error)
}

// Options tune the Service. Zero fields take their defaults.
type Options struct {
	// Clock drives expiry and the waits of Wait. Default: the real clock.
	Clock clock.Clock
	// ExpireInterval is how often open messages past their expiry are marked expired.
	// Default 30 s. (A device never receives an expired message in between: the mailbox
	// query leaves them out.)
	ExpireInterval time.Duration
	// Workers is the number of goroutines delivering mailboxes. Default 4.
	Workers int
	// Queue bounds the deliveries waiting for a worker. Default 65,536; beyond it a delivery
	// is dropped and counted in millwright_channel_deliveries_dropped_total, and the message
	// waits in the mailbox for the device's next connection.
	Queue int
	// ProgressBatch bounds the delivery steps written in one transaction. Default 1,024.
	ProgressBatch int
	// Timeout bounds each registry call. Default 10 s.
	Timeout time.Duration
	// MessageRate and MessageBurst bound the channel messages (replies, reports, state) one
	// device may send: a token bucket of MessageBurst tokens refilled at MessageRate per
	// second. Each message costs the registry a write, so a device with a stolen key must not
	// be able to send them as fast as its link allows. Default 5 per second, burst 50; a
	// message beyond it is refused (MQTT 5: PUBACK 0x97 quota exceeded; HTTPS: 429) and
	// counted with reason rate_limited.
	MessageRate  float64
	MessageBurst int
}

func (o Options) withDefaults() Options {
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.ExpireInterval <= 0 {
		o.ExpireInterval = 30 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Queue <= 0 {
		o.Queue = 65536
	}
	if o.ProgressBatch <= 0 {
		o.ProgressBatch = 1024
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MessageRate <= 0 {
		o.MessageRate = 5
	}
	if o.MessageBurst <= 0 {
		o.MessageBurst = 50
	}
	return o
}

// FactSink takes what a device reports about itself in a state message: the gateway's
// ConnectReporter (devicepolicy.FactRecorder), which writes it to the registry in batches.
type FactSink interface {
	Connected(device string, f gateway.Facts)
}

// job is one delivery: a device's open messages of the kinds set (at a subscription), or one
// message (just queued).
type job struct {
	device           string
	commands, config bool
	msg              *registry.Message
}

// Service is the device channel. Create it with New, give it the transport with
// SetTransport, Start it, and Close it after the transport.
type Service struct {
	reg   *registry.Registry
	facts FactSink
	opts  Options
	log   *slog.Logger
	met   *metrics

	mu        sync.Mutex
	transport Transport
	waiters   map[string][]chan struct{}
	buckets   map[string]*bucket // per device, for MessageRate
	// swept holds the IDs of messages that a subscription's delivery sent, in two
	// generations: a message queued just before that delivery read the mailbox is then not
	// sent a second time by its own queued job.
	swept, sweptOld map[string]struct{}

	jobs     chan job
	progress chan registry.Progress
	reports  chan reportReq
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	pwg      sync.WaitGroup
	started  bool
	closed   bool
}

type metrics struct {
	received  *prometheus.CounterVec
	refused   *prometheus.CounterVec
	sent      *prometheus.CounterVec
	dropped   prometheus.Counter
	expired   prometheus.Counter
	delivery  prometheus.Histogram
	lostSteps prometheus.Counter
}

// Refusal reasons of millwright_channel_messages_refused_total.
const (
	refusedMalformed   = "malformed"
	refusedTooLarge    = "too_large"
	refusedUnknown     = "unknown_command"
	refusedUnavailable = "unavailable"
	refusedRate        = "rate_limited"
)

// bucket is one device's token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

// allow takes a token from the device's bucket, and reports whether there was one.
func (s *Service) allow(device string) bool {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[device]
	if b == nil {
		b = &bucket{tokens: float64(s.opts.MessageBurst), at: now}
		s.buckets[device] = b
	}
	b.tokens = min(float64(s.opts.MessageBurst), b.tokens+now.Sub(b.at).Seconds()*s.opts.MessageRate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		received: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_channel_messages_received_total",
			Help: "Device channel messages taken from devices, by kind (reply, config_reported, state).",
		}, []string{"kind"}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_channel_messages_refused_total",
			Help: "Device channel messages from devices refused, by reason (malformed, too_large, unknown_command, unavailable, rate_limited).",
		}, []string{"reason"}),
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_channel_messages_sent_total",
			Help: "Mailbox messages written to a device's MQTT connection or fetched over HTTPS, by kind (command, config); a message sent again counts again.",
		}, []string{"kind"}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_channel_deliveries_dropped_total",
			Help: "Deliveries dropped because the delivery queue was full; the messages wait in the mailbox for the device's next connection.",
		}),
		expired: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_channel_messages_expired_total",
			Help: "Mailbox messages whose expiry passed before the device answered.",
		}),
		delivery: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "millwright_channel_mailbox_seconds",
			Help:    "Time to read a device's open messages from the registry and send them, per subscription.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		lostSteps: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_channel_progress_write_failures_total",
			Help: "Batches of delivery steps (delivered, acknowledged) the registry failed to record; the messages stay open and are sent again.",
		}),
	}
	for _, r := range []string{refusedMalformed, refusedTooLarge, refusedUnknown, refusedUnavailable, refusedRate} {
		m.refused.WithLabelValues(r)
	}
	for _, k := range []string{"reply", "config_reported", "state"} {
		m.received.WithLabelValues(k)
	}
	return m
}

// New makes the Service over the registry. facts may be nil (state messages are then only
// checked).
func New(reg *registry.Registry, facts FactSink, opts Options, logger *slog.Logger, mreg prometheus.Registerer) *Service {
	opts = opts.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{reg: reg, facts: facts, opts: opts, log: logger.With("component", "devicechannel"), met: newMetrics(mreg),
		waiters: map[string][]chan struct{}{}, buckets: map[string]*bucket{}, swept: map[string]struct{}{}, jobs: make(chan job, opts.Queue), progress: make(chan registry.Progress, opts.Queue),
		reports: make(chan reportReq, 4096)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// SetTransport sets the MQTT side; call it before Start.
func (s *Service) SetTransport(t Transport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transport = t
}

// Start starts the delivery workers, the progress writer and the expiry loop.
func (s *Service) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	for range s.opts.Workers {
		s.wg.Go(s.worker)
	}
	s.pwg.Go(s.writeProgress)
	s.wg.Go(s.expireLoop)
	s.wg.Go(s.writeReports)
}

// Close stops the Service: deliveries still queued are dropped (their messages wait in the
// mailbox), delivery steps already taken are written. Close the transport first.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	s.cancel()
	if started {
		s.wg.Wait()
		close(s.progress)
		s.pwg.Wait()
	}
	return nil
}

// Subscribed implements gateway.Channel: a subscription that covers the device's command
// topics or its configuration topic queues the delivery of what is open for it.
func (s *Service) Subscribed(device, filter string) {
	j := job{device: device,
		commands: gateway.MatchTopic(filter, protocol.CommandTopic(device, "m")),
		config:   gateway.MatchTopic(filter, protocol.ConfigTopic(device))}
	if j.commands || j.config {
		s.enqueue(j)
	}
}

// Queued sends messages just put in the mailbox to their devices, where connected; the others
// get them at their next connection.
func (s *Service) Queued(msgs []registry.Message) {
	for i := range msgs {
		s.enqueue(job{device: msgs[i].Device, msg: &msgs[i]})
	}
}

func (s *Service) enqueue(j job) {
	select {
	case s.jobs <- j:
	default:
		s.met.dropped.Inc()
	}
}

func (s *Service) worker() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.jobs:
			s.deliver(j)
		}
	}
}

func (s *Service) transportOrNil() Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transport
}

// deliver sends one job's messages over MQTT.
func (s *Service) deliver(j job) {
	t := s.transportOrNil()
	if t == nil {
		return
	}
	start := time.Now()
	var msgs []registry.Message
	if j.msg != nil {
		msgs = []registry.Message{*j.msg}
	} else {
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.Timeout)
		defer cancel()
		if j.config {
			// The device's groups or tags may have changed since its document was computed,
			// or it is new: compute it now (a read when nothing changed).
			if _, err := s.reg.RefreshConfig(ctx, []string{j.device}); err != nil {
				s.log.Warn("refresh desired configuration", "device", j.device, "error", err)
			}
		}
		kind := ""
		switch {
		case j.commands && !j.config:
			kind = registry.KindCommand
		case j.config && !j.commands:
			kind = registry.KindConfig
		}
		var err error
		if msgs, err = s.reg.OpenMessages(ctx, j.device, kind); err != nil {
			s.log.Warn("read mailbox", "device", j.device, "error", err)
			return
		}
	}
	for _, m := range msgs {
		if !s.sweep(m.ID, j.msg == nil) {
			continue
		}
		topic := protocol.ConfigTopic(m.Device)
		if m.Kind == registry.KindCommand {
			topic = protocol.CommandTopic(m.Device, m.ID)
		}
		id := m.ID
		matched, sent, err := t.Deliver(m.Device, topic, m.Payload, func() { s.step(id, registry.MessageAcknowledged) })
		if err != nil {
			s.log.Info("deliver message", "device", m.Device, "message", m.ID, "error", err)
			continue
		}
		if matched && sent {
			s.met.sent.WithLabelValues(m.Kind).Inc()
			s.step(id, registry.MessageDelivered)
		}
	}
	if j.msg == nil {
		s.met.delivery.Observe(time.Since(start).Seconds())
	}
}

// sweptGeneration bounds one generation of Service.swept.
const sweptGeneration = 4096

// sweep records that a subscription's delivery (bySubscription) sends message id, or reports
// whether a newly queued message's own delivery should still send it: not when a
// subscription's delivery already did.
func (s *Service) sweep(id string, bySubscription bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !bySubscription {
		_, a := s.swept[id]
		_, b := s.sweptOld[id]
		return !a && !b
	}
	if len(s.swept) >= sweptGeneration {
		s.sweptOld, s.swept = s.swept, make(map[string]struct{}, sweptGeneration)
	}
	s.swept[id] = struct{}{}
	return true
}

// step queues a delivery step for the progress writer; with the queue full it is dropped
// (the message stays open and is sent again).
func (s *Service) step(id string, st registry.MessageState) {
	defer func() { _ = recover() }() // a PUBACK racing Close: the channel is closed
	select {
	case s.progress <- registry.Progress{ID: id, State: st}:
	default:
		s.met.lostSteps.Inc()
	}
}

// writeProgress writes delivery steps in batches: whatever arrived while the previous batch
// was being written goes in one transaction.
func (s *Service) writeProgress() {
	for p := range s.progress {
		batch := []registry.Progress{p}
	drain:
		for len(batch) < s.opts.ProgressBatch {
			select {
			case p, ok := <-s.progress:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		if err := s.reg.RecordProgress(ctx, batch); err != nil {
			s.met.lostSteps.Inc()
			s.log.Warn("record delivery steps", "steps", len(batch), "error", err)
		}
		cancel()
	}
}

func (s *Service) expireLoop() {
	for {
		if !clock.Sleep(s.ctx, s.opts.Clock, s.opts.ExpireInterval) {
			return
		}
		s.ExpireNow(s.ctx)
	}
}

// ExpireNow marks open messages past their expiry as expired, and wakes their waiters.
func (s *Service) ExpireNow(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	expired, err := s.reg.ExpireMessages(ctx)
	if err != nil {
		s.log.Warn("expire messages", "error", err)
		return
	}
	s.met.expired.Add(float64(len(expired)))
	for _, m := range expired {
		s.wake(m.ID)
	}
}

// reportReq is a configuration report waiting for the group commit.
type reportReq struct {
	r    registry.ConfigReport
	done chan error
}

// report records a configuration report: through the group commit once the Service runs
// (the reports of many devices in one transaction), directly before.
func (s *Service) report(ctx context.Context, device string, rep protocol.ReportedConfig) error {
	s.mu.Lock()
	started := s.started && !s.closed
	s.mu.Unlock()
	if !started {
		return s.reg.ReportConfig(ctx, device, rep)
	}
	req := reportReq{r: registry.ConfigReport{Device: device, Report: rep}, done: make(chan error, 1)}
	select {
	case s.reports <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return errors.New("the device channel is closing")
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return errors.New("the device channel is closing")
	}
}

// writeReports is the group commit of configuration reports: whatever arrived while the
// previous transaction was written goes in the next. When a batch fails, its reports are
// written one by one, so that one bad report fails alone.
func (s *Service) writeReports() {
	for {
		var first reportReq
		select {
		case <-s.ctx.Done():
			return
		case first = <-s.reports:
		}
		batch := []reportReq{first}
	drain:
		for len(batch) < s.opts.ProgressBatch {
			select {
			case r := <-s.reports:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		rs := make([]registry.ConfigReport, len(batch))
		for i, r := range batch {
			rs[i] = r.r
		}
		err := s.reg.ReportConfigs(ctx, rs)
		if err != nil && len(batch) > 1 {
			for _, r := range batch {
				r.done <- s.reg.ReportConfig(ctx, r.r.Device, r.r.Report)
			}
		} else {
			for _, r := range batch {
				r.done <- err
			}
		}
		cancel()
	}
}

// Message implements gateway.Channel: it stores a device's reply, configuration report or
// state.
func (s *Service) Message(ctx context.Context, device, rest string, payload []byte) error {
	refuse := func(reason string, err error) error {
		s.met.refused.WithLabelValues(reason).Inc()
		return err
	}
	if !s.allow(device) {
		return refuse(refusedRate, fmt.Errorf("%w: more than %d messages at once or %g per second", gateway.ErrChannelRateLimited, s.opts.MessageBurst, s.opts.MessageRate))
	}
	if len(payload) > protocol.MaxChannelMessage {
		return refuse(refusedTooLarge, fmt.Errorf("%w: %d bytes, at most %d", protocol.ErrChannelMessage, len(payload), protocol.MaxChannelMessage))
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	switch {
	case rest == protocol.TopicState:
		st, err := protocol.DecodeState(payload)
		if err != nil {
			return refuse(refusedMalformed, err)
		}
		s.met.received.WithLabelValues("state").Inc()
		if s.facts != nil && (st.HardwareModel != "" || st.NetworkOperator != "" || st.FirmwareVersion != "") {
			s.facts.Connected(device, gateway.Facts{HardwareModel: st.HardwareModel, NetworkOperator: st.NetworkOperator,
				FirmwareVersion: st.FirmwareVersion, Seen: s.opts.Clock.Now()})
		}
		if st.Update != nil {
			// A firmware update's progress: on the device's rollout record and in its update
			// history (the rollout engine reads it at its next step).
			if err := s.reg.RecordUpdateReport(ctx, device, *st.Update); err != nil {
				return refuse(refusedUnavailable, fmt.Errorf("%w: %v", gateway.ErrChannelUnavailable, err))
			}
		}
		return nil
	case rest == protocol.TopicConfigReported:
		rep, err := protocol.DecodeReportedConfig(payload)
		if err != nil {
			return refuse(refusedMalformed, err)
		}
		if err := s.report(ctx, device, rep); err != nil {
			return refuse(refusedUnavailable, fmt.Errorf("%w: %v", gateway.ErrChannelUnavailable, err))
		}
		s.met.received.WithLabelValues("config_reported").Inc()
		return nil
	default:
		id, ok := protocol.ReplyID(rest)
		if !ok {
			return refuse(refusedMalformed, fmt.Errorf("%w: %q is not a device channel topic", protocol.ErrChannelMessage, rest))
		}
		reply, err := protocol.DecodeReply(payload)
		if err != nil {
			return refuse(refusedMalformed, err)
		}
		_, err = s.reg.CompleteCommand(ctx, device, id, reply)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			return refuse(refusedUnknown, fmt.Errorf("%w: command %s", gateway.ErrUnknownMessage, id))
		case err != nil:
			return refuse(refusedUnavailable, fmt.Errorf("%w: %v", gateway.ErrChannelUnavailable, err))
		}
		s.met.received.WithLabelValues("reply").Inc()
		s.wake(id)
		return nil
	}
}

// Fetch implements gateway.Mailbox for HTTPS devices: the open commands and the desired
// configuration not yet reported applied, each counted delivered.
func (s *Service) Fetch(ctx context.Context, device string) (protocol.Mailbox, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if _, err := s.reg.RefreshConfig(ctx, []string{device}); err != nil {
		return protocol.Mailbox{}, fmt.Errorf("mailbox of %s: %w", device, err)
	}
	msgs, err := s.reg.OpenMessages(ctx, device, "")
	if err != nil {
		return protocol.Mailbox{}, fmt.Errorf("mailbox of %s: %w", device, err)
	}
	box := protocol.Mailbox{Commands: []protocol.Command{}}
	steps := make([]registry.Progress, 0, len(msgs))
	for _, m := range msgs {
		switch m.Kind {
		case registry.KindCommand:
			c, err := protocol.DecodeCommand(m.Payload)
			if err != nil {
				s.log.Error("stored command does not decode", "message", m.ID, "error", err)
				continue
			}
			box.Commands = append(box.Commands, c)
		case registry.KindConfig:
			d, err := protocol.DecodeDesiredConfig(m.Payload)
			if err != nil {
				s.log.Error("stored configuration does not decode", "message", m.ID, "error", err)
				continue
			}
			box.Config = &d
		}
		s.met.sent.WithLabelValues(m.Kind).Inc()
		steps = append(steps, registry.Progress{ID: m.ID, State: registry.MessageDelivered})
	}
	if err := s.reg.RecordProgress(ctx, steps); err != nil {
		s.log.Warn("record mailbox fetch", "device", device, "error", err)
	}
	return box, nil
}

// Wait waits until the message id is final, ctx ends or d passes on the Service's clock, and
// returns the message as it is then. It is woken by replies and expiry on this server, and
// reads the registry at least every second besides (another server may have taken the
// reply).
func (s *Service) Wait(ctx context.Context, id string, d time.Duration) (registry.Message, error) {
	deadline := s.opts.Clock.Now().Add(d)
	for {
		ch := make(chan struct{})
		s.mu.Lock()
		s.waiters[id] = append(s.waiters[id], ch)
		s.mu.Unlock()
		m, err := s.reg.Message(ctx, id)
		if err != nil || !m.State.Open() {
			s.unwait(id, ch)
			return m, err
		}
		left := deadline.Sub(s.opts.Clock.Now())
		if left <= 0 {
			s.unwait(id, ch)
			return m, nil
		}
		t := s.opts.Clock.NewTimer(min(left, time.Second))
		select {
		case <-ch:
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			s.unwait(id, ch)
			return m, nil
		}
		t.Stop()
		s.unwait(id, ch)
	}
}

func (s *Service) unwait(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = ws
	}
}

func (s *Service) wake(id string) {
	s.mu.Lock()
	ws := s.waiters[id]
	delete(s.waiters, id)
	s.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

// DevicesChanged recomputes the desired configuration of devices whose groups or tags changed
// and sends what changed.
func (s *Service) DevicesChanged(ctx context.Context, ids []string) error {
	msgs, err := s.reg.RefreshConfig(ctx, ids)
	s.Queued(msgs)
	if err != nil {
		return fmt.Errorf("devices %s: %w", strings.Join(ids, ","), err)
	}
	return nil
}
