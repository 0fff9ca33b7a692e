// Package api is Millwright's HTTP API for operators and tools: the Prometheus-compatible query
// endpoints (so Grafana adds Millwright as a Prometheus data source), the event list for
// non-numeric telemetry, and the server's own metrics. Every /api route needs the admin token as
// a Bearer credential.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/protocol"
)

// Version is reported by /api/v1/status/buildinfo.
var Version = "0.1.0-dev"

// Config wires the API to its parts.
type Config struct {
	// AdminToken is the Bearer token that opens every /api route.
	AdminToken string
	Queryable  storage.Queryable
	Engine     *promql.Engine
	Events     *eventlog.Log
	// Metrics serves /metrics; nil leaves the route out.
	Metrics http.Handler
	Logger  *slog.Logger
	// Now tells the time for queries without a time parameter.
	Now func() time.Time
}

// Handler returns the API's routes.
func Handler(c Config) http.Handler {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	p := &promAPI{queryable: c.Queryable, engine: c.Engine, parser: parser.NewParser(parser.Options{}), now: c.Now}
	mux := http.NewServeMux()
	h := func(f func(*http.Request) (any, *apiError)) http.Handler {
		return requireToken(c.AdminToken, handle(c.Logger, f))
	}
	mux.Handle("GET /api/v1/query", h(p.query))
	mux.Handle("POST /api/v1/query", h(p.query))
	mux.Handle("GET /api/v1/query_range", h(p.queryRange))
	mux.Handle("POST /api/v1/query_range", h(p.queryRange))
	mux.Handle("GET /api/v1/series", h(p.series))
	mux.Handle("POST /api/v1/series", h(p.series))
	mux.Handle("GET /api/v1/labels", h(p.labelNames))
	mux.Handle("POST /api/v1/labels", h(p.labelNames))
	mux.Handle("GET /api/v1/label/{name}/values", h(func(r *http.Request) (any, *apiError) {
		return p.labelValues(r, r.PathValue("name"))
	}))
	mux.Handle("GET /api/v1/metadata", h(func(*http.Request) (any, *apiError) { return map[string]any{}, nil }))
	mux.Handle("GET /api/v1/status/buildinfo", h(func(*http.Request) (any, *apiError) {
		return map[string]string{"version": Version, "application": "millwright"}, nil
	}))
	mux.Handle("GET /api/v1/events", h(func(r *http.Request) (any, *apiError) { return listEvents(c.Events, r) }))
	mux.Handle("/api/", h(func(r *http.Request) (any, *apiError) {
		return nil, &apiError{errNotFound, errors.New("no such API route: " + r.Method + " " + r.URL.Path), http.StatusNotFound}
	}))
	if c.Metrics != nil {
		mux.Handle("GET /metrics", c.Metrics)
	}
	return mux
}

// requireToken lets a request through only with "Authorization: Bearer <token>".
func requireToken(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="millwright"`)
			writeJSON(w, http.StatusUnauthorized, response{Status: "error", ErrorType: "unauthorized", Error: "missing or invalid bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

type apiError struct {
	typ    string
	err    error
	status int
}

func badData(err error) *apiError { return &apiError{errBadData, err, http.StatusBadRequest} }

type response struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

func handle(log *slog.Logger, f func(*http.Request) (any, *apiError)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, aerr := f(r)
		if aerr != nil {
			if aerr.status >= 500 {
				log.Error("API request failed", "path", r.URL.Path, "error", aerr.err)
			}
			writeJSON(w, aerr.status, response{Status: "error", ErrorType: aerr.typ, Error: aerr.err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, response{Status: "success", Data: data})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(response{Status: "error", ErrorType: errInternal, Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func listEvents(l *eventlog.Log, r *http.Request) (any, *apiError) {
	q := eventlog.Query{Device: r.FormValue("device"), Name: r.FormValue("name")}
	if q.Device != "" {
		if err := protocol.ValidateDeviceID(q.Device); err != nil {
			return nil, badData(err)
		}
	}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"start", &q.Start}, {"end", &q.End}} {
		if s := r.FormValue(p.name); s != "" {
			t, err := parseTime(s)
			if err != nil {
				return nil, badData(err)
			}
			*p.dst = t.UnixMilli()
		}
	}
	if s := r.FormValue("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 100_000 {
			return nil, badData(errors.New(`invalid parameter "limit": want 1 to 100000`))
		}
		q.Limit = n
	}
	events, err := l.List(q)
	if err != nil {
		return nil, &apiError{errInternal, err, http.StatusInternalServerError}
	}
	if events == nil {
		events = []eventlog.Event{}
	}
	return events, nil
}
