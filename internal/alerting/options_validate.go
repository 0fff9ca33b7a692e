package alerting

import (
	"fmt"
	"net/url"

	"github.com/millwright/millwright/internal/optcheck"
)

// Validate refuses options an operator cannot have meant: an interval, bound or timeout that
// is zero or negative (WebhookRetries may be zero: no retry), an Alertmanager or webhook URL
// that is not absolute http(s), an external URL that does not parse. The error is an
// *optcheck.Error keyed by the option's YAML key. Rule files are read, and refused, by New
// and Reload.
func (o Options) Validate() error {
	for _, l := range []struct {
		key  string
		urls []string
	}{{"alertmanagers", o.Alertmanagers}, {"webhooks", o.Webhooks}} {
		for _, u := range l.urls {
			if err := checkURL(u); err != nil {
				return optcheck.Invalid(l.key, u, err.Error())
			}
		}
	}
	if o.ExternalURL != "" {
		if _, err := url.Parse(o.ExternalURL); err != nil {
			return optcheck.Invalid("external_url", o.ExternalURL, err.Error())
		}
	}
	if o.WebhookRetries < 0 {
		return optcheck.Invalid("webhook_retries", o.WebhookRetries, "must be zero or positive")
	}
	return optcheck.First(
		optcheck.Positive("evaluation_interval", o.EvaluationInterval),
		optcheck.Positive("max_rule_file_bytes", o.MaxRuleFileBytes),
		optcheck.Positive("max_rules", o.MaxRules),
		optcheck.Positive("max_series_per_rule", o.MaxSeriesPerRule),
		optcheck.Positive("queue_capacity", o.QueueCapacity),
		optcheck.Positive("notify_timeout", o.NotifyTimeout),
		optcheck.Positive("webhook_repeat_interval", o.WebhookRepeatInterval),
		optcheck.Positive("resend_delay", o.ResendDelay),
	)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("want an absolute http:// or https:// URL")
	}
	return nil
}
