package tsdb

import "github.com/millwright/millwright/internal/optcheck"

// Validate refuses options an operator cannot have meant: a retention, out-of-order window,
// query timeout or query sample bound that is zero or negative, an unknown fsync policy. The
// error is an *optcheck.Error keyed by the option's YAML key.
func (o Options) Validate() error {
	if o.Sync != "" {
		if _, err := ParseSyncPolicy(string(o.Sync)); err != nil {
			return optcheck.Invalid("fsync", string(o.Sync), err.Error())
		}
	}
	return optcheck.First(
		optcheck.Positive("retention", o.Retention),
		optcheck.Positive("out_of_order_window", o.OutOfOrderWindow),
		optcheck.Positive("query_timeout", o.QueryTimeout),
		optcheck.Positive("query_max_samples", o.QueryMaxSamples),
	)
}
