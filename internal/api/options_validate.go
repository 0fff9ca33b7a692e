package api

import "github.com/millwright/millwright/internal/optcheck"

// Validate refuses a query bound that is zero or negative. The error is an *optcheck.Error
// keyed by the option's YAML key.
func (o Options) Validate() error {
	return optcheck.Positive("query_max_concurrency", o.QueryMaxConcurrency)
}
