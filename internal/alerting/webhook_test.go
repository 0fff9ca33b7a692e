package alerting

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

func alert(name string, start, end time.Time) *notifier.Alert {
	return &notifier.Alert{
		Labels:   labels.FromStrings(labels.AlertName, name),
		StartsAt: start, EndsAt: end,
	}
}

func testWebhooks(t *testing.T, clk clock.Clock, url string, change func(*Options)) *webhooks {
	o := DefaultOptions()
	o.Webhooks = []string{url}
	if change != nil {
		change(&o)
	}
	require.NoError(t, o.Validate())
	return newWebhooks(o, clk, slog.New(slog.DiscardHandler), nil)
}

// TestWebhookTellsChanges: a webhook hears of an alert when it fires, again after the repeat
// interval, and once when it resolves — not at each of the engine's resends.
func TestWebhookTellsChanges(t *testing.T) {
	clk := clock.NewFake(t0)
	w := testWebhooks(t, clk, "http://127.0.0.1:1/", nil)
	queued := func() int {
		n := len(w.loops[0].take())
		return n
	}
	firing := alert("A", t0, t0.Add(4*time.Minute))
	w.Send(firing)
	require.Equal(t, 1, queued())
	for range 10 { // the engine resends every minute
		clk.Advance(time.Minute)
		w.Send(alert("A", t0, clk.Now().Add(4*time.Minute)))
	}
	require.Equal(t, 0, queued())
	clk.Advance(4 * time.Hour)
	w.Send(alert("A", t0, clk.Now().Add(4*time.Minute)))
	require.Equal(t, 1, queued(), "after webhook_repeat_interval")
	resolved := alert("A", t0, clk.Now())
	clk.Advance(time.Second)
	w.Send(resolved)
	w.Send(resolved)
	require.Equal(t, 1, queued(), "the resolution, once")
	// A resolution of an alert the webhook never heard of is not sent.
	w.Send(alert("B", t0, clk.Now().Add(-time.Second)))
	require.Equal(t, 0, queued())
}

// TestWebhookQueueCapacity: beyond queue_capacity the oldest alerts are dropped and counted.
func TestWebhookQueueCapacity(t *testing.T) {
	clk := clock.NewFake(t0)
	w := testWebhooks(t, clk, "http://127.0.0.1:1/", func(o *Options) { o.QueueCapacity = 2 })
	for _, n := range []string{"A", "B", "C", "D", "E"} {
		w.Send(alert(n, t0, t0.Add(time.Hour)))
	}
	q := w.loops[0].take()
	require.Len(t, q, 2)
	require.Equal(t, "D", q[0].Labels.Get(labels.AlertName))
	require.Equal(t, 3.0, testutil.ToFloat64(w.dropped.WithLabelValues("0", "queue_full")))
}

// TestWebhookRetries: a failing webhook is retried with backoff on the injected clock,
// webhook_retries times, then its alerts are dropped and counted.
func TestWebhookRetries(t *testing.T) {
	var calls, failFirst atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) <= failFirst.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	clk := clock.NewFake(t0)
	w := testWebhooks(t, clk, srv.URL, func(o *Options) { o.WebhookRetries = 2 })
	w.start()
	t.Cleanup(func() { require.NoError(t, w.stop(context.Background())) })

	// Two failures, then success: two retries, one message sent.
	failFirst.Store(2)
	w.Send(alert("A", t0, t0.Add(time.Hour)))
	for range 2 {
		clk.BlockUntil(1) // the backoff's timer
		clk.Advance(time.Minute)
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(w.messages.WithLabelValues("0", "sent")) == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, 2.0, testutil.ToFloat64(w.retries.WithLabelValues("0")))

	// Always failing: three attempts, then the message is dropped.
	calls.Store(0)
	failFirst.Store(100)
	w.Send(alert("B", t0, t0.Add(time.Hour)))
	for range 2 {
		clk.BlockUntil(1)
		clk.Advance(time.Minute)
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(w.messages.WithLabelValues("0", "failed")) == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, int64(3), calls.Load())
	require.Equal(t, 1.0, testutil.ToFloat64(w.dropped.WithLabelValues("0", "failed")))
}

// TestWebhookTimeout: a webhook that does not answer within notify_timeout fails.
func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	w := testWebhooks(t, clock.NewFake(t0), srv.URL, func(o *Options) { o.NotifyTimeout, o.WebhookRetries = 50*time.Millisecond, 0 })
	w.start()
	t.Cleanup(func() { require.NoError(t, w.stop(context.Background())) })
	w.Send(alert("A", t0, t0.Add(time.Hour)))
	require.Eventually(t, func() bool { return testutil.ToFloat64(w.messages.WithLabelValues("0", "failed")) == 1 }, 10*time.Second, time.Millisecond)
}

// TestWebhookAfterStop: alerts sent after the webhooks stopped are dropped and counted.
func TestWebhookAfterStop(t *testing.T) {
	w := testWebhooks(t, clock.NewFake(t0), "http://127.0.0.1:1/", nil)
	w.start()
	require.NoError(t, w.stop(context.Background()))
	w.Send(alert("A", t0, t0.Add(time.Hour)))
	require.Equal(t, 1.0, testutil.ToFloat64(w.dropped.WithLabelValues("0", "shutdown")))
}
