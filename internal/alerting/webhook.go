package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"

	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/clock"
)

// WebhookMessage is the JSON a webhook receives: Alertmanager's webhook payload, version 4
// (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config), for the alerts
// of one alert name, as from an Alertmanager route that groups by alertname.
type WebhookMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   uint64            `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookMessage.
type WebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// WebhookReceiver is the receiver name in the messages Millwright sends itself.
const WebhookReceiver = "millwright"

// maxAlertsPerMessage splits a large group into several messages.
const maxAlertsPerMessage = 256

// webhooks sends alerts to plain webhooks. It tells a webhook of an alert when it starts
// firing, again every WebhookRepeatInterval while it fires, and once when it resolves — not
// at every evaluation, as the rules engine sends to Alertmanagers (which deduplicate).
type webhooks struct {
	opts   Options
	clk    clock.Clock
	log    *slog.Logger
	client *http.Client
	loops  []*hookLoop

	mu   sync.Mutex
	told map[uint64]told // by label hash

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	messages *prometheus.CounterVec
	retries  *prometheus.CounterVec
	dropped  *prometheus.CounterVec
	queued   *prometheus.GaugeVec
}

// told is what a webhook was last told of an alert.
type told struct {
	resolved bool
	at       time.Time
}

type hookLoop struct {
	w     *webhooks
	url   string
	label string // the webhook's index in Options.Webhooks: URLs may hold secrets

	mu     sync.Mutex
	queue  []*notifier.Alert
	closed bool // more is closed: the loop sends what it holds and ends
	more   chan struct{}
}

func newWebhooks(opts Options, clk clock.Clock, logger *slog.Logger, reg prometheus.Registerer) *webhooks {
	w := &webhooks{
		opts:   opts,
		clk:    clk,
		log:    logger.With("component", "webhooks"),
		client: &http.Client{Timeout: opts.NotifyTimeout},
		told:   map[uint64]told{},
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_alert_webhook_messages_total",
			Help: "Webhook messages, by webhook (its index in the configuration) and result: sent, or failed after every retry.",
		}, []string{"webhook", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_alert_webhook_retries_total",
			Help: "Webhook POSTs retried after a failure, by webhook.",
		}, []string{"webhook"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_alert_webhook_dropped_alerts_total",
			Help: "Alerts a webhook was not told of, by webhook and reason: queue_full, failed (every retry failed), shutdown.",
		}, []string{"webhook", "reason"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "millwright_alert_webhook_queue_length",
			Help: "Alerts waiting to be sent, by webhook.",
		}, []string{"webhook"}),
	}
	if reg != nil {
		reg.MustRegister(w.messages, w.retries, w.dropped, w.queued)
	}
	for i, u := range opts.Webhooks {
		l := &hookLoop{w: w, url: u, label: strconv.Itoa(i), more: make(chan struct{}, 1)}
		w.loops = append(w.loops, l)
		w.queued.WithLabelValues(l.label).Set(0)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

func (w *webhooks) start() {
	for _, l := range w.loops {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); l.run(w.ctx) }()
	}
}

// stop asks the loops to send what they hold and waits for them until ctx ends; then it
// cancels the POSTs in progress.
func (w *webhooks) stop(ctx context.Context) error {
	for _, l := range w.loops {
		l.mu.Lock()
		l.closed = true
		close(l.more)
		l.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		w.cancel()
		return nil
	case <-ctx.Done():
		w.cancel()
		<-done
		return fmt.Errorf("webhooks: %w", ctx.Err())
	}
}

// Send queues the alerts a webhook has to be told of.
func (w *webhooks) Send(alerts ...*notifier.Alert) {
	now := w.clk.Now()
	var due []*notifier.Alert
	w.mu.Lock()
	for _, a := range alerts {
		h := a.Labels.Hash()
		t, known := w.told[h]
		if a.ResolvedAt(now) {
			if known && !t.resolved {
				due = append(due, a)
				w.told[h] = told{resolved: true, at: now}
			}
			continue
		}
		if !known || t.resolved || now.Sub(t.at) >= w.opts.WebhookRepeatInterval {
			due = append(due, a)
			w.told[h] = told{at: now}
		}
	}
	// Forget alerts long resolved, and firing ones not heard of for two repeat intervals
	// (their rule went away).
	for h, t := range w.told {
		if now.Sub(t.at) > 2*w.opts.WebhookRepeatInterval || t.resolved && now.Sub(t.at) > time.Hour {
			delete(w.told, h)
		}
	}
	w.mu.Unlock()
	if len(due) == 0 {
		return
	}
	for _, l := range w.loops {
		l.add(due)
	}
}

func (l *hookLoop) add(alerts []*notifier.Alert) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.w.dropped.WithLabelValues(l.label, "shutdown").Add(float64(len(alerts)))
		return
	}
	l.queue = append(l.queue, alerts...)
	if over := len(l.queue) - l.w.opts.QueueCapacity; over > 0 {
		l.queue = slices.Delete(l.queue, 0, over)
		l.w.dropped.WithLabelValues(l.label, "queue_full").Add(float64(over))
	}
	l.w.queued.WithLabelValues(l.label).Set(float64(len(l.queue)))
	select {
	case l.more <- struct{}{}:
	default:
	}
}

func (l *hookLoop) take() []*notifier.Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queue
	l.queue = nil
	l.w.queued.WithLabelValues(l.label).Set(0)
	return q
}

func (l *hookLoop) run(ctx context.Context) {
	for {
		_, open := <-l.more
		if batch := l.take(); len(batch) > 0 {
			for _, m := range buildMessages(batch, l.w.clk.Now(), l.w.opts.ExternalURL) {
				l.deliver(ctx, m)
			}
		}
		if !open {
			return
		}
	}
}

// deliver POSTs m, retrying with backoff.
func (l *hookLoop) deliver(ctx context.Context, m WebhookMessage) {
	body, err := json.Marshal(m)
	if err != nil { // cannot happen: maps of strings and times
		l.w.log.Error("encode webhook message", "err", err)
		return
	}
	b := backoff.New(backoff.Policy{Base: time.Second, Cap: time.Minute}, nil)
	for attempt := 0; ; attempt++ {
		err = l.post(ctx, body)
		if err == nil {
			l.w.messages.WithLabelValues(l.label, "sent").Inc()
			return
		}
		if attempt >= l.w.opts.WebhookRetries || ctx.Err() != nil {
			break
		}
		l.w.retries.WithLabelValues(l.label).Inc()
		if !clock.Sleep(ctx, l.w.clk, b.Next()) {
			break
		}
	}
	reason := "failed"
	if ctx.Err() != nil {
		reason = "shutdown"
	}
	l.w.messages.WithLabelValues(l.label, "failed").Inc()
	l.w.dropped.WithLabelValues(l.label, reason).Add(float64(len(m.Alerts)))
	l.w.log.Warn("webhook failed; its alerts are dropped", "webhook", l.label, "alerts", len(m.Alerts), "err", err)
}

func (l *hookLoop) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "millwright")
	resp, err := l.w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return errors.New("webhook answered " + resp.Status)
	}
	return nil
}

// buildMessages groups alerts by alertname, in the order they came, into Alertmanager webhook
// messages.
func buildMessages(alerts []*notifier.Alert, now time.Time, externalURL string) []WebhookMessage {
	var names []string
	byName := map[string][]*notifier.Alert{}
	for _, a := range alerts {
		n := a.Labels.Get(labels.AlertName)
		if _, ok := byName[n]; !ok {
			names = append(names, n)
		}
		byName[n] = append(byName[n], a)
	}
	var msgs []WebhookMessage
	for _, n := range names {
		group := byName[n]
		for len(group) > 0 {
			k := min(len(group), maxAlertsPerMessage)
			msgs = append(msgs, buildMessage(n, group[:k], now, externalURL))
			group = group[k:]
		}
	}
	return msgs
}

func buildMessage(name string, alerts []*notifier.Alert, now time.Time, externalURL string) WebhookMessage {
	groupLabels := model.LabelSet{model.AlertNameLabel: model.LabelValue(name)}
	m := WebhookMessage{
		Version:     "4",
		GroupKey:    "{}:" + groupLabels.String(),
		Status:      "resolved",
		Receiver:    WebhookReceiver,
		GroupLabels: map[string]string{model.AlertNameLabel: name},
		ExternalURL: externalURL,
	}
	for i, a := range alerts {
		wa := WebhookAlert{
			Status:       "firing",
			Labels:       a.Labels.Map(),
			Annotations:  a.Annotations.Map(),
			StartsAt:     a.StartsAt.Truncate(time.Millisecond),
			EndsAt:       a.EndsAt.Truncate(time.Millisecond),
			GeneratorURL: a.GeneratorURL,
			Fingerprint:  labelSet(a.Labels).Fingerprint().String(),
		}
		if a.ResolvedAt(now) {
			wa.Status = "resolved"
		} else {
			// Alertmanager shows no end for an alert that fires.
			m.Status, wa.EndsAt = "firing", time.Time{}
		}
		if i == 0 {
			m.CommonLabels, m.CommonAnnotations = a.Labels.Map(), a.Annotations.Map()
		} else {
			keepCommon(m.CommonLabels, wa.Labels)
			keepCommon(m.CommonAnnotations, wa.Annotations)
		}
		m.Alerts = append(m.Alerts, wa)
	}
	return m
}

func keepCommon(common, m map[string]string) {
	for k, v := range common {
		if m[k] != v {
			delete(common, k)
		}
	}
}

func labelSet(ls labels.Labels) model.LabelSet {
	s := make(model.LabelSet, ls.Len())
	ls.Range(func(l labels.Label) { s[model.LabelName(l.Name)] = model.LabelValue(l.Value) })
	return s
}
