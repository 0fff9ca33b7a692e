package alerting

import (
	"time"
)

// Options configure rule evaluation and notification. The YAML keys are those of the server
// configuration file's alerting section (docs/operations.md).
type Options struct {
	// RuleFiles are Prometheus rule files (recording and alerting rules), read at start and at
	// every Reload. A glob pattern names every file it matches. Default none.
	RuleFiles []string `yaml:"rule_files"`
	// DefaultRules loads the rule set built into the server (default.rules.yml in this package,
	// docs/monitoring.md "Alert rules") besides RuleFiles. Default true.
	DefaultRules bool `yaml:"default_rules"`
	// EvaluationInterval is how often each rule group is evaluated, unless the group sets its
	// own interval. Default 30 s.
	EvaluationInterval time.Duration `yaml:"evaluation_interval"`
	// Alertmanagers are the URLs of Alertmanagers the alerts go to, through Prometheus'
	// notifier (http://host:9093, a path prefix allowed). Default none.
	Alertmanagers []string `yaml:"alertmanagers"`
	// Webhooks are URLs that get Alertmanager's webhook JSON (version 4) when an alert fires
	// and when it resolves, without an Alertmanager or beside one. Default none.
	Webhooks []string `yaml:"webhooks"`
	// ExternalURL is the base of each alert's generatorURL (this server's address as an
	// operator reaches it). Default empty: the generator URL is a path.
	ExternalURL string `yaml:"external_url"`
	// MaxRuleFileBytes bounds the size of one rule file, in bytes. Default 1 MiB.
	MaxRuleFileBytes int `yaml:"max_rule_file_bytes"`
	// MaxRules bounds the rules of all files together. Default 1,000.
	MaxRules int `yaml:"max_rules"`
	// MaxSeriesPerRule is the limit of a group that sets none: a recording rule that would
	// write more series, or an alerting rule that would hold more alerts, fails its
	// evaluation (its health turns "err", as in Prometheus). Default 10,000.
	MaxSeriesPerRule int `yaml:"max_series_per_rule"`
	// QueueCapacity bounds the alerts waiting to be sent to each Alertmanager and each webhook;
	// beyond, the oldest are dropped and counted. Default 10,000.
	QueueCapacity int `yaml:"queue_capacity"`
	// NotifyTimeout bounds one POST to an Alertmanager or a webhook. Default 10 s.
	NotifyTimeout time.Duration `yaml:"notify_timeout"`
	// WebhookRetries is how many times a failed webhook POST is retried, with jittered
	// exponential backoff (1 s doubling up to 1 min), before its alerts are dropped and
	// counted. Default 5.
	WebhookRetries int `yaml:"webhook_retries"`
	// WebhookRepeatInterval is how often a webhook is told again of an alert that keeps
	// firing (an Alertmanager's repeat_interval). Default 4 h.
	WebhookRepeatInterval time.Duration `yaml:"webhook_repeat_interval"`
	// ResendDelay is how often a firing alert is sent again to the Alertmanagers, which
	// expire alerts they no longer hear of. Default 1 min (Prometheus' default).
	ResendDelay time.Duration `yaml:"resend_delay"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		DefaultRules:          true,
		EvaluationInterval:    30 * time.Second,
		MaxRuleFileBytes:      1 << 20,
		MaxRules:              1000,
		MaxSeriesPerRule:      10_000,
		QueueCapacity:         10_000,
		NotifyTimeout:         10 * time.Second,
		WebhookRetries:        5,
		WebhookRepeatInterval: 4 * time.Hour,
		ResendDelay:           time.Minute,
	}
}
