package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Options bound the work the API takes on.
type Options struct {
	// QueryMaxConcurrency is how many PromQL queries (instant and range) are evaluated at
	// once. A query beyond it waits for a slot, in no particular order, and the wait counts
	// against its timeout (Config.QueryTimeout, or its own timeout parameter if shorter), as
	// in Prometheus: one still waiting when its timeout ends gets 503 with errorType
	// "timeout". Default: one per CPU the Go runtime uses (GOMAXPROCS), 2 on a two-core
	// server, since PromQL evaluates a query on one goroutine: more queries than CPUs at once
	// finish no sooner, they only hold more memory at once (up to the engine's sample limit
	// each). Zero means the default.
	QueryMaxConcurrency int `yaml:"query_max_concurrency"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{QueryMaxConcurrency: runtime.GOMAXPROCS(0)}
}

func (o Options) withDefaults() Options {
	if o.QueryMaxConcurrency <= 0 {
		o.QueryMaxConcurrency = DefaultOptions().QueryMaxConcurrency
	}
	return o
}

// querySlots bounds the PromQL queries evaluated at once.
type querySlots struct {
	slots    chan struct{}
	waiting  prometheus.Gauge
	timeouts prometheus.Counter
}

func newQuerySlots(n int, reg prometheus.Registerer) *querySlots {
	q := &querySlots{slots: make(chan struct{}, n)}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_api_queries_running",
		Help: "PromQL queries holding one of the query slots (--query-max-concurrency).",
	}, func() float64 { return float64(len(q.slots)) })
	q.waiting = f.NewGauge(prometheus.GaugeOpts{
		Name: "millwright_api_queries_waiting",
		Help: "PromQL queries waiting for a query slot.",
	})
	q.timeouts = f.NewCounter(prometheus.CounterOpts{
		Name: "millwright_api_query_queue_timeouts_total",
		Help: "PromQL queries refused (503) because their timeout ended while they waited for a query slot.",
	})
	return q
}

// acquire takes a slot, waiting until ctx ends. Every nil answer must be matched by release.
func (q *querySlots) acquire(ctx context.Context) *apiError {
	select {
	case q.slots <- struct{}{}:
		return nil
	default:
	}
	q.waiting.Inc()
	defer q.waiting.Dec()
	select {
	case q.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		q.timeouts.Inc()
		return &apiError{errTimeout, fmt.Errorf("query timed out in query queue: all %d query slots stayed busy (--query-max-concurrency)",
			cap(q.slots)), http.StatusServiceUnavailable}
	}
	return &apiError{errCanceled, fmt.Errorf("query canceled in query queue: %w", ctx.Err()), http.StatusServiceUnavailable}
}

func (q *querySlots) release() { <-q.slots }
