// Package alerting evaluates Prometheus rule files — recording and alerting rules, with `for`,
// `keep_firing_for`, labels, annotations and templates — with Prometheus' own rules engine on
// the server's embedded TSDB, and sends the alerts to Alertmanagers (through Prometheus'
// notifier) and to plain webhooks in Alertmanager's webhook JSON.
//
// A rule set is built in (default.rules.yml, on the series of docs/monitoring.md) and loaded
// unless turned off. Reload reads the files again; files that do not load are refused with
// their file and line, and the running rules stay. The API's /api/v1/rules and /api/v1/alerts
// read RuleGroups and AlertingRules.
package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/logx"
)

// Store is what the rules read and write: the server's telemetry store (internal/tsdb).
type Store interface {
	Queryable() storage.Queryable
	Engine() *promql.Engine
	Appender(ctx context.Context) (storage.Appender, error)
}

// Config holds what a Manager works with besides its options.
type Config struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Clock paces the webhooks' retries and repeats; nil for the real clock.
	Clock clock.Clock
	// Manual turns the engine's own ticker off: rules are evaluated only by EvalAt, at the
	// times a test chooses.
	Manual bool
}

// Manager evaluates the rule files and sends the alerts.
type Manager struct {
	opts   Options
	cfg    Config
	log    *slog.Logger
	loader loader
	rules  *rules.Manager
	// iterate evaluates a group on the engine's ticker: rules.DefaultEvalIterationFunc, or
	// nothing in manual mode.
	iterate rules.GroupEvalIterationFunc

	notifier  *notifier.Manager // nil without Alertmanagers
	amTargets chan map[string][]*targetgroup.Group
	hooks     *webhooks // nil without webhooks

	mu      sync.Mutex // serializes Start, Reload and Stop
	files   []string
	started bool
	stopped bool
	wg      sync.WaitGroup

	reloads       *prometheus.CounterVec
	reloadSuccess prometheus.Gauge
}

// New checks opts and reads the rule files; rules that do not load are refused (ErrRules),
// with each file and line. Start runs the evaluation.
func New(opts Options, store Store, cfg Config) (*Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	m := &Manager{opts: opts, cfg: cfg, log: cfg.Logger}
	m.loader = loader{parser: parser.NewParser(parser.Options{}), maxBytes: opts.MaxRuleFileBytes, limit: opts.MaxSeriesPerRule, logger: m.log}
	files, err := expandFiles(opts.DefaultRules, opts.RuleFiles)
	if err != nil {
		return nil, err
	}
	if err := m.loader.check(files, opts.MaxRules); err != nil {
		return nil, err
	}
	m.files = files

	var externalURL *url.URL
	if opts.ExternalURL != "" {
		externalURL, _ = url.Parse(opts.ExternalURL) // Validate parsed it
	} else {
		externalURL = &url.URL{}
	}
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_rules_reloads_total",
		Help: "Reloads of the rule files, by result (success, failure).",
	}, []string{"result"})
	m.reloadSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "millwright_rules_last_reload_successful",
		Help: "1 when the last reload of the rule files succeeded, 0 when it was refused (the rules before it still run).",
	})
	m.reloadSuccess.Set(1)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(m.reloads, m.reloadSuccess)
	}

	var senders []sender
	if len(opts.Alertmanagers) > 0 {
		if m.notifier, m.amTargets, err = newNotifier(opts, logx.Library(m.log), cfg.Registerer); err != nil {
			return nil, err
		}
		senders = append(senders, m.notifier)
	}
	if len(opts.Webhooks) > 0 {
		m.hooks = newWebhooks(opts, cfg.Clock, m.log, cfg.Registerer)
		senders = append(senders, m.hooks)
	}
	iterate := rules.DefaultEvalIterationFunc
	if cfg.Manual {
		iterate = func(context.Context, *rules.Group, time.Time) {}
	}
	m.rules = rules.NewManager(&rules.ManagerOptions{
		ExternalURL:     externalURL,
		QueryFunc:       rules.EngineQueryFunc(store.Engine(), store.Queryable()),
		NotifyFunc:      rules.SendAlerts(fanout(senders), opts.ExternalURL),
		Context:         context.Background(),
		AppendableV2:    appendable{store},
		Queryable:       store.Queryable(),
		Logger:          logx.Library(m.log),
		Registerer:      cfg.Registerer,
		OutageTolerance: time.Hour,
		ForGracePeriod:  10 * time.Minute,
		ResendDelay:     opts.ResendDelay,
		GroupLoader:     m.loader,
	})
	m.iterate = iterate
	return m, nil
}

// Start loads the rules into the engine and starts evaluating them, and the senders.
func (m *Manager) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("alerting: started twice")
	}
	if err := m.update(m.files); err != nil {
		return err
	}
	m.started = true
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.rules.Run() }()
	if m.notifier != nil {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.notifier.Run(m.amTargets) }()
		m.awaitAlertmanagers()
	}
	if m.hooks != nil {
		m.hooks.start()
	}
	return nil
}

// awaitAlertmanagers waits, briefly, until the notifier has taken its Alertmanagers from the
// targets fed to it: alerts it is given before then are lost (it has no queue for them yet).
func (m *Manager) awaitAlertmanagers() {
	deadline := time.Now().Add(2 * time.Second)
	for len(m.notifier.Alertmanagers()) < len(m.opts.Alertmanagers) {
		if time.Now().After(deadline) {
			m.log.Warn("the alertmanager notifier has not taken its alertmanagers yet", "want", len(m.opts.Alertmanagers), "have", len(m.notifier.Alertmanagers()))
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (m *Manager) update(files []string) error {
	if err := m.rules.Update(m.opts.EvaluationInterval, files, labels.EmptyLabels(), m.opts.ExternalURL, m.iterate); err != nil {
		return fmt.Errorf("%w: %w", ErrRules, err)
	}
	return nil
}

// Stop stops the evaluation and the senders; alerts still queued for a webhook are dropped
// once ctx ends.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started || m.stopped {
		m.stopped = true
		return nil
	}
	m.stopped = true
	m.rules.Stop()
	if m.notifier != nil {
		m.notifier.Stop()
	}
	var err error
	if m.hooks != nil {
		err = m.hooks.stop(ctx)
	}
	m.wg.Wait()
	return err
}

// Reload reads the rule files again (the patterns are expanded again too). Files that do not
// load are refused with their file and line (ErrRules) and the rules running stay.
func (m *Manager) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.reload()
	result := "success"
	if err != nil {
		result = "failure"
		m.reloadSuccess.Set(0)
	} else {
		m.reloadSuccess.Set(1)
	}
	m.reloads.WithLabelValues(result).Inc()
	return err
}

func (m *Manager) reload() error {
	files, err := expandFiles(m.opts.DefaultRules, m.opts.RuleFiles)
	if err != nil {
		return err
	}
	if err := m.loader.check(files, m.opts.MaxRules); err != nil {
		return err
	}
	if m.started && !m.stopped {
		if err := m.update(files); err != nil {
			return err
		}
	}
	m.files = files
	return nil
}

// EvalAt evaluates every rule group once at ts, as the engine's ticker does: recording rules
// write their series, alerting rules move between pending, firing and resolved, and alerts
// due are sent.
func (m *Manager) EvalAt(ctx context.Context, ts time.Time) {
	for _, g := range m.rules.RuleGroups() {
		rules.DefaultEvalIterationFunc(ctx, g, ts)
	}
}

// RuleGroups returns the rule groups, by file and name.
func (m *Manager) RuleGroups() []*rules.Group { return m.rules.RuleGroups() }

// AlertingRules returns the alerting rules.
func (m *Manager) AlertingRules() []*rules.AlertingRule { return m.rules.AlertingRules() }

// Files returns the rule files loaded, the built-in set first.
func (m *Manager) Files() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.files...)
}
