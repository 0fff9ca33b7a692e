// Package api is Millwright's HTTP API for operators and tools: the Prometheus-compatible query
// endpoints (so Grafana adds Millwright as a Prometheus data source), the event list for
// non-numeric telemetry, devices, enrollment tokens, operators and the audit log, and the
// server's own metrics. Every /api route needs a Bearer token — the bootstrap admin token or an
// operator token — whose role reaches the route's (viewer < operator < admin).
package api

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/buildinfo"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/httplimit"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// buildInfo is the answer of /api/v1/status/buildinfo: the fields `millwright version`
// prints (package buildinfo), named as Prometheus names them, and the application.
type buildInfo struct {
	buildinfo.Info
	Application string `json:"application"`
}

// Principal is who made a request.
type Principal struct {
	// Name appears in the audit log: "admin" for the bootstrap admin token, "operator:<name>".
	Name string
	Role registry.Role
}

// Authenticator turns a Bearer token into a principal, or fails.
type Authenticator func(ctx context.Context, token string) (Principal, error)

// Config wires the API to its parts.
type Config struct {
	// Authenticate checks Bearer tokens.
	Authenticate Authenticator
	Queryable    storage.Queryable
	Engine       *promql.Engine
	Events       *eventlog.Log
	// Registry serves the device, enrollment-token, operator and audit routes.
	Registry Registry
	// DeviceChanged is called after a device's status changed (suspend, resume, revoke), so the
	// gateway can close its sessions and the CRL can be rebuilt.
	DeviceChanged func(id string, status registry.Status)
	// DeviceDeleted is called after a device was deleted from the registry (and when it is
	// deleted again, to finish an erasure cut short): it closes its session and erases its
	// series and events, and says how many events it erased.
	DeviceDeleted func(ctx context.Context, id string) (int, error)
	// Channel is the device channel, for the configuration and command routes; nil answers
	// them 503. Registry must then also be a ChannelRegistry.
	Channel Channel
	// DeviceRoots are the CAs device certificates chain to: the pool the device listeners
	// verify clients with. POST /api/v1/certificates records only certificates that verify
	// against it for client authentication; nil refuses every certificate there.
	DeviceRoots *x509.CertPool
	// Rules are the rule groups and alerts of /api/v1/rules and /api/v1/alerts; nil answers
	// them with none.
	Rules Rules
	// Anomalies is the anomaly finder, for the anomaly and trend routes; nil answers them 503.
	Anomalies Anomalies
	// Metrics serves /metrics; nil leaves the route out.
	Metrics http.Handler
	Logger  *slog.Logger
	// Now tells the time for queries without a time parameter.
	Now func() time.Time
	// Options bound the API's work: the PromQL queries evaluated at once.
	Options Options
	// QueryTimeout is how long one PromQL query may take, its wait for a query slot
	// included: the engine's own timeout, which the engine applies once the query runs. Zero
	// means the wait is bounded by the request alone.
	QueryTimeout time.Duration
	// WriteTimeout is how long an answer may take to write once it is ready, on the read
	// routes (queries, series, labels), whose handling may outlast the server's write
	// deadline: they get QueryTimeout and WriteTimeout from when their request was read. Zero
	// leaves the server's deadlines alone.
	WriteTimeout time.Duration
	// Registerer takes the API's metrics; nil for none.
	Registerer prometheus.Registerer
	// Artifacts is the firmware archive's artifact store, for the firmware routes (with
	// Registry, which must then also be a FirmwareRegistry); nil answers them 503.
	Artifacts Artifacts
	// FirmwareUploadTimeout is how long a firmware upload's body may take to arrive, counted
	// once the operator is authorized. Zero leaves the server's deadlines alone.
	FirmwareUploadTimeout time.Duration
	// FirmwareDownloadTimeout is how long sending an image to an operator may take, counted
	// once the operator is authorized. Zero leaves the server's deadlines alone.
	FirmwareDownloadTimeout time.Duration
	// Rollouts is the rollout engine, for the rollout routes; nil answers them 503. The
	// update history route needs Registry to be an UpdateRegistry.
	Rollouts Rollouts
	// Monitor is the fleet monitor, for the liveness routes; nil answers them 503, as it does
	// the connection history unless Registry is also a SessionRegistry.
	Monitor Monitor
	// Routing is told of DNS routing changes (the cluster and route routes need Registry to
	// be a RoutingRegistry, or answer 503); nil: no one is told.
	Routing Routing
	// Backup writes the backup archive of POST /api/v1/backup (admin); nil answers 503.
	Backup BackupFunc
	// BackupTimeout bounds sending a backup, counted once the admin is authorized. Zero means
	// DefaultBackupTimeout (an hour).
	BackupTimeout time.Duration
}

// route is one API route and the least role that may call it.
type route struct {
	method, path string
	role         registry.Role
	handle       func(*http.Request) (any, *apiError)
}

// readsTSDB reports whether a route reads the telemetry store, and so may run for as long as
// a query may.
func (rt route) readsTSDB() bool {
	return strings.HasPrefix(rt.path, "/api/v1/query") || rt.path == "/api/v1/series" ||
		rt.path == "/api/v1/labels" || rt.path == "/api/v1/label/{name}/values" || rt.path == "/api/v1/trends" || rt.path == "/api/v1/metadata"
}

// waitsForCommand reports whether a route may wait up to MaxCommandWait for a command's
// outcome before it answers.
func (rt route) waitsForCommand() bool {
	return rt.method == http.MethodPost && rt.path == "/api/v1/devices/{id}/commands" || rt.path == "/api/v1/commands/{id}"
}

// rank orders roles: a role may do what every lower role may.
func rank(r registry.Role) int {
	switch r {
	case registry.RoleViewer:
		return 1
	case registry.RoleOperator:
		return 2
	case registry.RoleAdmin:
		return 3
	}
	return 0
}

func routes(c Config) []route {
	p := &promAPI{queryable: c.Queryable, engine: c.Engine, parser: parser.NewParser(parser.Options{}), now: c.Now,
		timeout: c.QueryTimeout, slots: newQuerySlots(c.Options.withDefaults().QueryMaxConcurrency, c.Registerer)}
	d := &registryAPI{reg: c.Registry, changed: c.DeviceChanged, deleted: c.DeviceDeleted, roots: c.DeviceRoots, now: c.Now, channel: c.Channel}
	an := &anomalyAPI{finder: c.Anomalies, slots: p.slots}
	cr, _ := c.Registry.(ChannelRegistry)
	ch := &channelAPI{reg: cr, ch: c.Channel}
	fr, _ := c.Registry.(FirmwareRegistry)
	fa := &firmwareAPI{reg: fr, artifacts: c.Artifacts}
	sr, _ := c.Registry.(SessionRegistry)
	mon := &monitorAPI{mon: c.Monitor, sessions: sr}
	ur, _ := c.Registry.(UpdateRegistry)
	ra := &rolloutAPI{eng: c.Rollouts, history: ur}
	fbr, _ := c.Registry.(FeedbackRegistry)
	fb := &feedbackAPI{fr: fbr, mon: c.Monitor, now: c.Now}
	ru := &rulesAPI{rules: c.Rules, parser: parser.NewParser(parser.Options{})}
	rr, _ := c.Registry.(RoutingRegistry)
	dn := &dnsAPI{reg: rr, routing: c.Routing, now: c.Now}
	v, o, a := registry.RoleViewer, registry.RoleOperator, registry.RoleAdmin
	return []route{
		{"GET", "/api/v1/query", v, p.query},
		{"POST", "/api/v1/query", v, p.query},
		{"GET", "/api/v1/query_range", v, p.queryRange},
		{"POST", "/api/v1/query_range", v, p.queryRange},
		{"GET", "/api/v1/series", v, p.series},
		{"POST", "/api/v1/series", v, p.series},
		{"GET", "/api/v1/labels", v, p.labelNames},
		{"POST", "/api/v1/labels", v, p.labelNames},
		{"GET", "/api/v1/label/{name}/values", v, func(r *http.Request) (any, *apiError) { return p.labelValues(r, r.PathValue("name")) }},
		{"GET", "/api/v1/metadata", v, p.metadata},
		{"GET", "/api/v1/status/buildinfo", v, func(*http.Request) (any, *apiError) {
			return buildInfo{Info: buildinfo.Get(), Application: "millwright"}, nil
		}},
		{"GET", "/api/v1/whoami", v, func(r *http.Request) (any, *apiError) {
			p := PrincipalFrom(r.Context())
			return apitypes.Whoami{Name: p.Name, Role: apitypes.Role(p.Role)}, nil
		}},
		{"GET", "/api/v1/rules", v, ru.list},
		{"GET", "/api/v1/alerts", v, ru.alerts},
		{"GET", "/api/v1/events", v, func(r *http.Request) (any, *apiError) { return listEvents(c.Events, r) }},
		{"GET", "/api/v1/devices", v, d.list},
		{"GET", "/api/v1/devices/{id}", v, d.show},
		{"GET", "/api/v1/devices/{id}/certificates", v, d.certificates},
		{"POST", "/api/v1/devices/{id}/suspend", o, d.setStatus(registry.StatusSuspended)},
		{"POST", "/api/v1/devices/{id}/resume", o, d.setStatus(registry.StatusActive)},
		{"POST", "/api/v1/devices/{id}/revoke", o, d.setStatus(registry.StatusRevoked)},
		{"DELETE", "/api/v1/devices/{id}", a, d.deleteDevice},
		{"POST", "/api/v1/devices/{id}/tags", o, d.tags},
		{"POST", "/api/v1/devices/{id}/groups", o, d.groups},
		{"POST", "/api/v1/enrollment-tokens", o, d.createTokens},
		{"GET", "/api/v1/enrollment-tokens", o, d.listTokens},
		{"DELETE", "/api/v1/enrollment-tokens/{id}", o, d.revokeToken},
		{"POST", "/api/v1/certificates", o, d.addCertificates},
		{"GET", "/api/v1/operators", a, d.listOperators},
		{"POST", "/api/v1/operators", a, d.createOperator},
		{"DELETE", "/api/v1/operators/{id}", a, d.revokeOperator},
		{"GET", "/api/v1/audit", a, d.audit},
		{"GET", "/api/v1/config/schema", v, ch.schema},
		{"GET", "/api/v1/config/layers", v, ch.needs(ch.layers)},
		{"GET", "/api/v1/config/status", v, ch.needs(ch.status)},
		{"POST", "/api/v1/config/layers", o, ch.needs(ch.setLayer)},
		{"GET", "/api/v1/devices/{id}/config", v, ch.needs(ch.deviceConfig)},
		{"POST", "/api/v1/devices/{id}/commands", o, ch.needs(ch.sendCommand)},
		{"GET", "/api/v1/devices/{id}/commands", v, ch.needs(ch.listCommands)},
		{"GET", "/api/v1/commands/{id}", v, ch.needs(ch.showCommand)},
		{"GET", "/api/v1/anomalies", v, an.needs(an.latest)},
		{"GET", "/api/v1/trends", v, an.needs(an.trends)},
		{"GET", "/api/v1/devices/{id}/sessions", v, mon.needs(mon.deviceSessions)},
		{"POST", "/api/v1/firmware", o, fa.needs(fa.upload)},
		{"GET", "/api/v1/firmware", v, fa.needs(fa.list)},
		{"GET", "/api/v1/firmware/release", v, fa.needs(fa.show)},
		{"DELETE", "/api/v1/firmware/release", a, fa.needs(fa.remove)},
		{"GET", "/api/v1/firmware/artifact", v, fa.needs(fa.artifact)},
		{"POST", "/api/v1/rollouts", o, ra.needs(ra.create)},
		{"GET", "/api/v1/rollouts", v, ra.needs(ra.list)},
		{"GET", "/api/v1/rollouts/{id}", v, ra.needs(ra.show)},
		{"GET", "/api/v1/rollouts/{id}/devices", v, ra.needs(ra.devices)},
		{"POST", "/api/v1/rollouts/{id}/pause", o, ra.action(Rollouts.Pause)},
		{"POST", "/api/v1/rollouts/{id}/resume", o, ra.action(Rollouts.Resume)},
		{"POST", "/api/v1/rollouts/{id}/abort", o, ra.action(Rollouts.Abort)},
		{"POST", "/api/v1/rollouts/{id}/rollback", o, ra.action(Rollouts.Rollback)},
		{"GET", "/api/v1/devices/{id}/updates", v, ra.updates},
		{"POST", "/api/v1/devices/{id}/feedback", o, fb.needs(fb.record)},
		{"GET", "/api/v1/feedback", v, fb.needs(fb.list)},
		{"GET", "/api/v1/feedback/summary", v, fb.needs(fb.summary)},
		{"GET", "/api/v1/liveness", v, mon.needs(mon.liveness)},
		{"GET", "/api/v1/liveness/counts", v, mon.needs(mon.livenessCounts)},
		{"GET", "/api/v1/clusters", v, dn.needs(dn.listClusters)},
		{"POST", "/api/v1/clusters", o, dn.needs(dn.addCluster)},
		{"DELETE", "/api/v1/clusters/{name}", o, dn.needs(dn.removeCluster)},
		{"POST", "/api/v1/clusters/{name}/drain", o, dn.needs(dn.drain)},
		{"GET", "/api/v1/routes", v, dn.needs(dn.listRoutes)},
		{"PUT", "/api/v1/routes", o, dn.needs(dn.setRoute)},
		{"DELETE", "/api/v1/routes", o, dn.needs(dn.clearRoute)},
		{"POST", "/api/v1/backup", a, backup(c.Backup, c.BackupTimeout, c.Logger)},
	}
}

// Handler returns the API's routes.
func Handler(c Config) http.Handler {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	for _, rt := range routes(c) {
		h := handle(c.Logger, rt.handle)
		if rt.readsTSDB() {
			h = readForm(c.QueryTimeout, c.WriteTimeout, h)
		}
		if rt.waitsForCommand() {
			h = commandWait(c.WriteTimeout, h)
		}
		switch {
		case rt.method == http.MethodPost && rt.path == "/api/v1/firmware":
			h = transferDeadline(c.FirmwareUploadTimeout, c.WriteTimeout, h)
		case rt.path == "/api/v1/firmware/artifact":
			h = transferDeadline(c.FirmwareDownloadTimeout, c.WriteTimeout, h)
		}
		mux.Handle(rt.method+" "+rt.path, authorize(c.Authenticate, rt.role, h))
	}
	mux.Handle("/api/", authorize(c.Authenticate, registry.RoleViewer, handle(c.Logger, func(r *http.Request) (any, *apiError) {
		return nil, &apiError{errNotFound, errors.New("no such API route: " + r.Method + " " + r.URL.Path), http.StatusNotFound}
	})))
	mux.HandleFunc("GET /api/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	if c.Metrics != nil {
		mux.Handle("GET /metrics", c.Metrics)
	}
	return mux
}

type principalKey struct{}

// PrincipalFrom returns who made the request.
func PrincipalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// authorize lets a request through only with "Authorization: Bearer <token>" of a principal
// whose role reaches min: 401 without a valid token, 403 with a role too low.
func authorize(authn Authenticator, min registry.Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var (
			p   Principal
			err = errors.New("missing bearer token")
		)
		if ok && tok != "" && authn != nil {
			p, err = authn(r.Context(), strings.TrimSpace(tok))
		}
		if err != nil {
			httplimit.Refuse(w, r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="millwright"`)
			writeJSON(w, http.StatusUnauthorized, response{Status: apitypes.StatusError, ErrorType: errUnauthorized, Error: "missing or invalid bearer token"})
			return
		}
		if rank(p.Role) < rank(min) {
			httplimit.Refuse(w, r)
			writeJSON(w, http.StatusForbidden, response{Status: apitypes.StatusError, ErrorType: errForbidden,
				Error: fmt.Sprintf("role %s may not %s %s (needs %s)", p.Role, r.Method, r.URL.Path, min)})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// OperatorAuthenticator is what TokenAuthenticator needs of the registry.
type OperatorAuthenticator interface {
	AuthenticateOperator(ctx context.Context, token string) (registry.Operator, error)
}

// TokenAuthenticator accepts the bootstrap admin token (compared in constant time) and the
// operator tokens of the registry.
func TokenAuthenticator(adminToken string, reg OperatorAuthenticator) Authenticator {
	return func(ctx context.Context, token string) (Principal, error) {
		if adminToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(adminToken)) == 1 {
			return Principal{Name: "admin", Role: registry.RoleAdmin}, nil
		}
		if reg == nil {
			return Principal{}, registry.ErrTokenInvalid
		}
		op, err := reg.AuthenticateOperator(ctx, token)
		if err != nil {
			return Principal{}, err
		}
		return Principal{Name: "operator:" + op.Name, Role: op.Role}, nil
	}
}

type apiError struct {
	typ    apitypes.ErrorType
	err    error
	status int
}

func badData(err error) *apiError { return &apiError{errBadData, err, http.StatusBadRequest} }

// response is the envelope of every answer.
type response = apitypes.Response[any]

// rawAnswer is a route's answer that is not JSON (a firmware image): it writes itself.
type rawAnswer func(w http.ResponseWriter)

func handle(log *slog.Logger, f func(*http.Request) (any, *apiError)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, aerr := f(r)
		if raw, ok := data.(rawAnswer); ok && aerr == nil {
			raw(w)
			return
		}
		if aerr != nil {
			if aerr.status >= 500 {
				log.Error("API request failed", "path", r.URL.Path, "error", aerr.err)
			}
			writeJSON(w, aerr.status, response{Status: apitypes.StatusError, ErrorType: aerr.typ, Error: aerr.err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, response{Status: apitypes.StatusSuccess, Data: data})
	})
}

// readForm reads a read route's parameters, the whole body of a form POST among them, under
// the server's read deadline, then gives the request until queryTimeout and writeTimeout from
// now to be answered. The read deadline moves as far: net/http watches an idle HTTP/1.1
// connection with a background read, and when that read meets the deadline it cancels the
// request's context, which would stop a query running past the server's read deadline. Zero
// writeTimeout leaves the deadlines alone.
func readForm(queryTimeout, writeTimeout time.Duration, next http.Handler) http.Handler {
	if writeTimeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, response{Status: apitypes.StatusError, ErrorType: errBadData, Error: err.Error()})
			return
		}
		httplimit.Deadlines(w, queryTimeout+writeTimeout, queryTimeout+writeTimeout)
		next.ServeHTTP(w, r)
	})
}

// commandWait gives a route that may wait for a command's outcome MaxCommandWait more than
// writeTimeout to be answered, counted once the request is authorized: the server's write
// deadline would otherwise cut the answer to a wait longer than it, and the client would see a
// broken connection instead of the command (and, for a command just sent, never learn its ID).
// The request's body is still read under the server's read deadline. Zero writeTimeout leaves
// the deadlines alone.
func commandWait(writeTimeout time.Duration, next http.Handler) http.Handler {
	if writeTimeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httplimit.Deadlines(w, 0, MaxCommandWait+writeTimeout)
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(response{Status: apitypes.StatusError, ErrorType: errInternal, Error: "encode response: " + err.Error()})
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
