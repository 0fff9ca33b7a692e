package alerting

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
)

// sender takes the alerts the rules engine sends: Prometheus' notifier, the webhooks.
type sender interface {
	Send(alerts ...*notifier.Alert)
}

// fanout sends to every sender.
type fanout []sender

var _ rules.Sender = fanout(nil)

func (f fanout) Send(alerts ...*notifier.Alert) {
	for _, s := range f {
		s.Send(alerts...)
	}
}

// newNotifier makes Prometheus' notifier for the Alertmanager URLs: one Alertmanager
// configuration per URL (its scheme and path prefix), its target fed once on the returned
// channel in place of service discovery.
func newNotifier(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*notifier.Manager, chan map[string][]*targetgroup.Group, error) {
	n := notifier.NewManager(&notifier.Options{
		QueueCapacity: opts.QueueCapacity,
		Registerer:    reg,
	}, model.UTF8Validation, logger.With("component", "notifier"))
	cfg := &config.Config{}
	targets := map[string][]*targetgroup.Group{}
	for i, s := range opts.Alertmanagers {
		u, err := url.Parse(s)
		if err != nil {
			return nil, nil, fmt.Errorf("alertmanager %q: %w", s, err)
		}
		am := config.DefaultAlertmanagerConfig
		am.Scheme = u.Scheme
		am.PathPrefix = u.Path
		am.Timeout = model.Duration(opts.NotifyTimeout)
		if u.User != nil {
			pw, _ := u.User.Password()
			am.HTTPClientConfig.BasicAuth = &commoncfg.BasicAuth{Username: u.User.Username(), Password: commoncfg.Secret(pw)}
		}
		cfg.AlertingConfig.AlertmanagerConfigs = append(cfg.AlertingConfig.AlertmanagerConfigs, &am)
		targets["config-"+strconv.Itoa(i)] = []*targetgroup.Group{{
			Source:  "alertmanager-" + strconv.Itoa(i),
			Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(u.Host)}},
		}}
	}
	if err := n.ApplyConfig(cfg); err != nil {
		return nil, nil, fmt.Errorf("configure the alertmanager notifier: %w", err)
	}
	ch := make(chan map[string][]*targetgroup.Group, 1)
	ch <- targets
	return n, ch, nil
}

// appendable adapts the store's appender to the rules engine's AppenderV2: recording rules
// and the ALERTS series are written through the store, which refuses them while it reopens.
type appendable struct{ s Store }

func (a appendable) AppenderV2(ctx context.Context) storage.AppenderV2 {
	app, err := a.s.Appender(ctx)
	if err != nil {
		return failingAppender{err}
	}
	return appenderV2{app}
}

type appenderV2 struct{ app storage.Appender }

func (a appenderV2) Append(ref storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	if h != nil || fh != nil {
		return a.app.AppendHistogram(ref, ls, t, h, fh)
	}
	return a.app.Append(ref, ls, t, v)
}

func (a appenderV2) Commit() error   { return a.app.Commit() }
func (a appenderV2) Rollback() error { return a.app.Rollback() }

type failingAppender struct{ err error }

func (a failingAppender) Append(storage.SeriesRef, labels.Labels, int64, int64, float64, *histogram.Histogram, *histogram.FloatHistogram, storage.AppendV2Options) (storage.SeriesRef, error) {
	return 0, a.err
}
func (a failingAppender) Commit() error   { return a.err }
func (a failingAppender) Rollback() error { return nil }
