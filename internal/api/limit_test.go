package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	ptsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
)

// gatedQueryable is a real TSDB whose queries stop in Select until the gate opens, so that a
// test knows which queries hold a query slot.
type gatedQueryable struct {
	storage.Queryable
	entered chan struct{} // one send per Select that reached the gate
	open    chan struct{} // closed: every Select goes through
}

func (g *gatedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := g.Queryable.Querier(mint, maxt)
	return gatedQuerier{q, g}, err
}

type gatedQuerier struct {
	storage.Querier
	g *gatedQueryable
}

func (q gatedQuerier) Select(ctx context.Context, sorted bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	q.g.entered <- struct{}{}
	select {
	case <-q.g.open:
	case <-ctx.Done():
		return storage.ErrSeriesSet(ctx.Err())
	}
	return q.Querier.Select(ctx, sorted, hints, ms...)
}

type queryAnswer struct {
	code int
	body struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
}

// TestQueryConcurrencyLimit holds every query slot with queries stopped inside the store and
// checks that one more query waits: it is refused with 503 when its timeout ends first, and
// runs once a slot frees otherwise.
func TestQueryConcurrencyLimit(t *testing.T) {
	for _, slots := range []int{1, 2} {
		t.Run(map[int]string{1: "one slot", 2: "two slots"}[slots], func(t *testing.T) {
			db, err := ptsdb.Open(t.TempDir(), nil, nil, ptsdb.DefaultOptions(), nil)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, db.Close()) })
			now := time.Now()
			app := db.Appender(context.Background())
			_, err = app.Append(0, labels.FromStrings("__name__", "temp", "device", "d1"), now.UnixMilli(), 21.5)
			require.NoError(t, err)
			require.NoError(t, app.Commit())

			gate := &gatedQueryable{Queryable: db, entered: make(chan struct{}, 16), open: make(chan struct{})}
			reg := prometheus.NewRegistry()
			engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
			srv := httptest.NewUnstartedServer(api.Handler(api.Config{
				Authenticate: func(context.Context, string) (api.Principal, error) {
					return api.Principal{Name: "viewer", Role: registry.RoleViewer}, nil
				},
				Queryable:    gate,
				Engine:       engine,
				Options:      api.Options{QueryMaxConcurrency: slots},
				QueryTimeout: time.Minute,
				WriteTimeout: 10 * time.Second,
				Registerer:   reg,
				Now:          func() time.Time { return now },
			}))
			// The server's own deadlines are far shorter than the held queries: the query
			// routes move them, or the held queries would be cancelled and their answers cut.
			srv.Config.ReadTimeout = 100 * time.Millisecond
			srv.Config.WriteTimeout = 100 * time.Millisecond
			srv.Start()
			t.Cleanup(srv.Close)
			openGate := sync.OnceFunc(func() { close(gate.open) })
			t.Cleanup(openGate) // a failed test lets its stopped queries finish
			query := func(params url.Values) queryAnswer {
				params.Set("query", "temp")
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/query", nil)
				require.NoError(t, err)
				req.URL.RawQuery = params.Encode()
				req.Header.Set("Authorization", "Bearer t")
				resp, err := srv.Client().Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				var a queryAnswer
				a.code = resp.StatusCode
				require.NoError(t, json.Unmarshal(b, &a.body), "%s", b)
				return a
			}

			// Fill every slot with a query stopped in the store.
			var running sync.WaitGroup
			held := make(chan queryAnswer, slots)
			for range slots {
				running.Go(func() { held <- query(url.Values{}) })
				<-gate.entered
			}
			require.Equal(t, float64(slots), gauge(t, reg, "millwright_api_queries_running"))

			// One more query waits for its whole timeout and is refused.
			start := time.Now()
			a := query(url.Values{"timeout": {"300ms"}})
			waited := time.Since(start)
			require.Equal(t, http.StatusServiceUnavailable, a.code)
			require.Equal(t, "timeout", a.body.ErrorType)
			require.Contains(t, a.body.Error, "query queue")
			require.GreaterOrEqual(t, waited, 300*time.Millisecond)
			require.Equal(t, 1.0, gauge(t, reg, "millwright_api_query_queue_timeouts_total"))
			require.Equal(t, 0.0, gauge(t, reg, "millwright_api_queries_waiting"))

			// Another waits without a timeout of its own and runs once the slots free.
			late := make(chan queryAnswer, 1)
			go func() { late <- query(url.Values{}) }()
			require.Eventually(t, func() bool { return gauge(t, reg, "millwright_api_queries_waiting") == 1 },
				10*time.Second, 5*time.Millisecond)
			select {
			case <-gate.entered:
				t.Fatal("a query beyond the limit reached the store")
			default:
			}
			openGate()
			running.Wait()
			for range slots {
				require.Equal(t, http.StatusOK, (<-held).code)
			}
			require.Equal(t, http.StatusOK, (<-late).code)
			require.Equal(t, 0.0, gauge(t, reg, "millwright_api_queries_running"))
			require.Equal(t, 1.0, gauge(t, reg, "millwright_api_query_queue_timeouts_total"))
		})
	}
}

// gauge reads one unlabelled metric of reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}
