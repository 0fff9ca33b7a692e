package server

import (
	"time"

	"github.com/millwright/millwright/internal/optcheck"
)

// Validate refuses options an operator cannot have meant, in the server's own fields and in
// each part's (Options.Validate of the MQTT gateway, enrollment, the store, the pipeline,
// the API, alerting, the anomaly finder, and HTTPOptions.Validate). The error is an *optcheck.Error keyed by the option's
// YAML key path ("tsdb.retention"). New calls it; a command line calls it first to name the
// flag or configuration key at fault.
func (o Options) Validate() error {
	if o.DataDir == "" {
		return optcheck.Invalid("data", o.DataDir, "name a directory")
	}
	if (o.CACert == "") != (o.CAKey == "") {
		if o.CACert == "" {
			return optcheck.Invalid("ca_cert", o.CACert, "an operator-supplied CA needs both a certificate and its key")
		}
		return optcheck.Invalid("ca_key", o.CAKey, "an operator-supplied CA needs both a certificate and its key")
	}
	return optcheck.First(
		optcheck.Positive("shutdown_timeout", o.ShutdownTimeout),
		optcheck.Positive("rollout_interval", o.RolloutInterval),
		notNegative("event_retention", o.EventRetention),
		notNegative("audit_retention", o.AuditRetention),
		optcheck.Positive("event_segment_bytes", o.EventSegmentBytes),
		optcheck.Within("mqtt", o.MQTT.Validate()),
		optcheck.Within("enroll", o.Enroll.Validate()),
		optcheck.Within("tsdb", o.TSDB.Validate()),
		optcheck.Within("ingest", o.Ingest.Validate()),
		optcheck.Within("http", o.HTTP.Validate()),
		optcheck.Within("api", o.API.Validate()),
		optcheck.Within("anomaly", o.Anomaly.Validate()),
		optcheck.Within("monitor", o.Monitor.Validate()),
		optcheck.Within("firmware", o.Firmware.Validate()),
		optcheck.Within("alerting", o.Alerting.Validate()),
		optcheck.Within("dns", o.DNS.Validate()),
		optcheck.Within("web", o.Web.Validate()),
	)
}

// Validate refuses HTTPS deadlines that are zero or negative, and a connection bound of zero
// (a negative bound is none). The error is an *optcheck.Error keyed by the option's YAML key.
func (o HTTPOptions) Validate() error {
	for _, c := range []struct {
		key string
		v   int
	}{{"max_connections", o.MaxConnections}, {"max_connections_per_source", o.MaxConnectionsPerSource}} {
		if c.v == 0 {
			return optcheck.Invalid(c.key, c.v, "give a bound, or a negative value for none")
		}
	}
	return optcheck.First(
		optcheck.Positive("header_timeout", o.HeaderTimeout),
		optcheck.Positive("body_timeout", o.BodyTimeout),
		optcheck.Positive("upload_timeout", o.UploadTimeout),
		optcheck.Positive("write_timeout", o.WriteTimeout),
		optcheck.Positive("idle_timeout", o.IdleTimeout),
	)
}

// notNegative refuses a negative duration; zero means the option's default.
func notNegative(key string, d time.Duration) error {
	if d < 0 {
		return optcheck.Invalid(key, d, "must not be negative")
	}
	return nil
}
