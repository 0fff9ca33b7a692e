package web

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/rollout"
)

// pageTimeout bounds the API calls of one page.
const pageTimeout = 20 * time.Second

// devicesPageSize is how many devices one page of /devices shows.
const devicesPageSize = 50

// pageRoutes are the dashboard's pages; a new feature's page is one entry here, its handler
// and its template.
func (w *Web) pageRoutes() map[string]page {
	return map[string]page{
		"/{$}":           w.overview,
		"/devices":       w.devices,
		"/devices/{id}":  w.device,
		"/firmware":      w.firmware,
		"/rollouts":      w.rollouts,
		"/rollouts/{id}": w.rolloutPage,
		"/alerts":        w.alerts,
		"/tokens":        w.tokens,
		"/dns":           w.dns,
		"/query":         w.query,
	}
}

// actionRoutes are the dashboard's forms: each calls one API route.
func (w *Web) actionRoutes() map[string]action {
	status := func(verb string) action {
		return func(r *http.Request, s *session) (string, error) {
			id := r.PathValue("id")
			return "/devices/" + url.PathEscape(id), w.call(r, s, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/"+verb, nil, nil, nil)
		}
	}
	ro := func(verb string) action {
		return func(r *http.Request, s *session) (string, error) {
			id := r.PathValue("id")
			return "/rollouts/" + url.PathEscape(id), w.call(r, s, http.MethodPost, "/api/v1/rollouts/"+url.PathEscape(id)+"/"+verb, nil, nil, nil)
		}
	}
	return map[string]action{
		"/devices/{id}/suspend":    status("suspend"),
		"/devices/{id}/resume":     status("resume"),
		"/devices/{id}/revoke":     status("revoke"),
		"/devices/{id}/diagnostic": w.diagnostic,
		"/rollouts/{id}/pause":     ro("pause"),
		"/rollouts/{id}/resume":    ro("resume"),
		"/rollouts/{id}/abort":     ro("abort"),
		"/rollouts/{id}/rollback":  ro("rollback"),
		"/tokens/{id}/revoke": func(r *http.Request, s *session) (string, error) {
			return "/tokens", w.call(r, s, http.MethodDelete, "/api/v1/enrollment-tokens/"+url.PathEscape(r.PathValue("id")), nil, nil, nil)
		},
	}
}

// Diagnostics are the commands the device page offers (the agent's diag.* commands).
var Diagnostics = []string{"diag.health", "diag.connectivity", "diag.spool", "diag.logs"}

func (w *Web) diagnostic(r *http.Request, s *session) (string, error) {
	id := r.PathValue("id")
	name := r.PostFormValue("name")
	if !slices.Contains(Diagnostics, name) {
		return "", &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf("unknown diagnostic %q; one of %s", name, strings.Join(Diagnostics, ", "))}
	}
	err := w.call(r, s, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/commands", nil,
		apitypes.CommandRequest{Name: name, Expires: "1h"}, nil)
	return "/devices/" + url.PathEscape(id) + "#commands", err
}

// fetcher runs a page's API calls concurrently and keeps the first error.
type fetcher struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

func (f *fetcher) run(fn func() error) {
	f.wg.Go(func() {
		if err := fn(); err != nil {
			f.mu.Lock()
			if f.err == nil {
				f.err = err
			}
			f.mu.Unlock()
		}
	})
}

func (f *fetcher) wait() error { f.wg.Wait(); return f.err }

// optional is optional for the fetcher's calls, which run at once: msg is written under the
// fetcher's lock, and read after wait.
func (f *fetcher) optional(err error, msg *string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return optional(err, msg)
}

// optional keeps a section's error for the page instead of failing it: a feature the server
// does not run (503) or a role too low (403) leaves its section explaining why.
func optional(err error, msg *string) error {
	if ae, ok := err.(*apiError); ok && (ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusForbidden) {
		*msg = ae.Message
		return nil
	}
	return err
}

// Breakdown is the liveness counts by one dimension.
type Breakdown struct {
	By     string
	Counts []apitypes.LivenessCount
}

// Dimensions are the device facts the fleet is broken down by.
var Dimensions = []string{"firmware", "model", "operator"}

func (w *Web) overview(r *http.Request, s *session) (string, any, error) {
	r, cancel := withTimeout(r, pageTimeout)
	defer cancel()
	data := struct {
		Range       string
		Ranges      any
		Total       apitypes.LivenessCount
		At          time.Time
		Breakdowns  []Breakdown
		Charts      []Chart
		Unmonitored string
	}{Ranges: Ranges}
	data.Range, _ = rangeOf(r)
	data.Breakdowns = make([]Breakdown, len(Dimensions))
	specs := []struct{ title, expr, unit string }{
		{"Devices online and silent", `label_replace(millwright:fleet_online:sum, "state", "online", "", "") or label_replace(millwright:fleet_silent:sum, "state", "silent", "", "")`, ""},
		{"Drops per device-hour by firmware", `millwright:group_drops:increase1h{dimension="firmware"} / millwright:group_devices:count{dimension="firmware"}`, ""},
		{"Drops per device-hour by model", `millwright:group_drops:increase1h{dimension="model"} / millwright:group_devices:count{dimension="model"}`, ""},
		{"Drops per device-hour by operator", `millwright:group_drops:increase1h{dimension="operator"} / millwright:group_devices:count{dimension="operator"}`, ""},
		{"Connection drops per second", `millwright:fleet_drops:rate5m`, "/s"},
		{"Traffic received and sent", `label_replace(millwright:fleet_received_bytes:rate5m, "direction", "received", "", "") or label_replace(millwright:fleet_sent_bytes:rate5m, "direction", "sent", "", "")`, "B/s"},
		{"Ingest latency (measurement to durable)", `millwright:fleet_ingest_delay_seconds:mean5m`, "s"},
	}
	data.Charts = make([]Chart, len(specs))
	var f fetcher
	f.run(func() error {
		var c apitypes.LivenessCounts
		if err := w.call(r, s, http.MethodGet, "/api/v1/liveness/counts", nil, nil, &c); err != nil {
			return f.optional(err, &data.Unmonitored)
		}
		data.At = c.At
		if len(c.Counts) > 0 {
			data.Total = c.Counts[0]
		}
		return nil
	})
	for i, by := range Dimensions {
		f.run(func() error {
			var c apitypes.LivenessCounts
			err := w.call(r, s, http.MethodGet, "/api/v1/liveness/counts", url.Values{"by": {by}}, nil, &c)
			data.Breakdowns[i] = Breakdown{By: by, Counts: c.Counts}
			return f.optional(err, &data.Unmonitored)
		})
	}
	for i, sp := range specs {
		f.run(func() error {
			data.Charts[i] = w.chart(r, s, sp.title, sp.expr, sp.unit)
			return nil
		})
	}
	return "overview.html", data, f.wait()
}

// DeviceRow is one line of the devices list.
type DeviceRow struct {
	apitypes.Device
	State     string
	Connected bool
	LastHeard time.Time
}

func (w *Web) devices(r *http.Request, s *session) (string, any, error) {
	r, cancel := withTimeout(r, pageTimeout)
	defer cancel()
	q := r.URL.Query()
	filter := url.Values{}
	for _, k := range []string{"q", "state", "status", "firmware", "model", "operator", "tag", "group"} {
		if v := strings.TrimSpace(q.Get(k)); v != "" {
			filter.Set(k, v)
		}
	}
	data := struct {
		Filter      url.Values
		Rows        []DeviceRow
		Next        string
		Options     map[string][]string
		States      []string
		Statuses    []string
		Unmonitored string
	}{Filter: filter, Options: map[string][]string{}, States: []string{"online", "silent", "offline"},
		Statuses: []string{"pending", "active", "suspended", "revoked"}}
	var f fetcher
	var mu sync.Mutex
	for _, by := range Dimensions {
		f.run(func() error {
			var c apitypes.LivenessCounts
			if err := w.call(r, s, http.MethodGet, "/api/v1/liveness/counts", url.Values{"by": {by}}, nil, &c); err != nil {
				return f.optional(err, &data.Unmonitored)
			}
			vals := make([]string, 0, len(c.Counts))
			for _, v := range c.Counts {
				vals = append(vals, v.Value)
			}
			mu.Lock()
			data.Options[by] = vals
			mu.Unlock()
			return nil
		})
	}
	f.run(func() error {
		rows, next, err := w.deviceRows(r, s, filter, q.Get("after"))
		data.Rows, data.Next = rows, next
		return err
	})
	return "devices.html", data, f.wait()
}

// deviceRows is one page of devices: from the liveness listing when a state is asked for
// (it knows states; the registry does not), else from the registry, with each device's state
// looked up.
func (w *Web) deviceRows(r *http.Request, s *session, filter url.Values, after string) ([]DeviceRow, string, error) {
	page := strconv.Itoa(devicesPageSize)
	if state := filter.Get("state"); state != "" {
		q := url.Values{"state": {state}, "limit": {page}, "after": {after}}
		for _, k := range []string{"firmware", "model", "operator", "group"} {
			if v := filter.Get(k); v != "" {
				q.Set(k, v)
			}
		}
		var l apitypes.LivenessList
		if err := w.call(r, s, http.MethodGet, "/api/v1/liveness", q, nil, &l); err != nil {
			return nil, "", err
		}
		rows := make([]DeviceRow, 0, len(l.Devices))
		for _, d := range l.Devices {
			if p := filter.Get("q"); p != "" && !strings.HasPrefix(d.Device, p) {
				continue
			}
			rows = append(rows, DeviceRow{Device: apitypes.Device{ID: d.Device, Status: apitypes.DeviceActive, FirmwareVersion: d.Firmware,
				HardwareModel: d.Model, NetworkOperator: d.Operator, Groups: d.Groups}, State: d.State, Connected: d.Connected, LastHeard: d.LastHeard})
		}
		return rows, l.Next, nil
	}
	q := url.Values{"limit": {page}, "after": {after}, "prefix": {filter.Get("q")}}
	for _, k := range []string{"status", "firmware", "model", "operator", "tag", "group"} {
		if v := filter.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	var l apitypes.DeviceList
	if err := w.call(r, s, http.MethodGet, "/api/v1/devices", q, nil, &l); err != nil {
		return nil, "", err
	}
	rows := make([]DeviceRow, len(l.Devices))
	lq := url.Values{"limit": {page}}
	for i, d := range l.Devices {
		rows[i] = DeviceRow{Device: d}
		lq.Add("device", d.ID)
	}
	if len(rows) > 0 {
		var live apitypes.LivenessList
		var ignored string
		if err := optional(w.call(r, s, http.MethodGet, "/api/v1/liveness", lq, nil, &live), &ignored); err != nil {
			return nil, "", err
		}
		by := map[string]apitypes.DeviceLiveness{}
		for _, d := range live.Devices {
			by[d.Device] = d
		}
		for i := range rows {
			if d, ok := by[rows[i].ID]; ok {
				rows[i].State, rows[i].Connected, rows[i].LastHeard = d.State, d.Connected, d.LastHeard
			}
		}
	}
	return rows, l.Next, nil
}

func (w *Web) device(r *http.Request, s *session) (string, any, error) {
	r, cancel := withTimeout(r, pageTimeout)
	defer cancel()
	id := r.PathValue("id")
	base := "/api/v1/devices/" + url.PathEscape(id)
	data := struct {
		Device       apitypes.Device
		Liveness     *apitypes.DeviceLiveness
		Certificates []registry.Certificate
		Sessions     []apitypes.Session
		Updates      []registry.UpdateEvent
		Commands     []apitypes.Command
		Config       *apitypes.DeviceConfig
		ConfigJSON   struct{ Desired, Reported string }
		Charts       []Chart
		Range        string
		Ranges       any
		Diagnostics  []string
		Notes        map[string]string
	}{Ranges: Ranges, Diagnostics: Diagnostics, Notes: map[string]string{}}
	data.Range, _ = rangeOf(r)
	if err := w.call(r, s, http.MethodGet, base, nil, nil, &data.Device); err != nil {
		return "", nil, err
	}
	var f fetcher
	note := func(section string, err error) error {
		var msg string
		err = optional(err, &msg)
		if msg != "" {
			f.mu.Lock()
			data.Notes[section] = msg
			f.mu.Unlock()
		}
		return err
	}
	f.run(func() error {
		var l apitypes.LivenessList
		err := w.call(r, s, http.MethodGet, "/api/v1/liveness", url.Values{"device": {id}}, nil, &l)
		if err == nil && len(l.Devices) == 1 {
			data.Liveness = &l.Devices[0]
		}
		return note("liveness", err)
	})
	f.run(func() error {
		var c api.CertificateList
		err := w.call(r, s, http.MethodGet, base+"/certificates", nil, nil, &c)
		data.Certificates = c.Certificates
		return note("certificates", err)
	})
	f.run(func() error {
		var l apitypes.SessionList
		err := w.call(r, s, http.MethodGet, base+"/sessions", url.Values{"limit": {"20"}}, nil, &l)
		data.Sessions = l.Sessions
		return note("sessions", err)
	})
	f.run(func() error {
		var h api.UpdateHistory
		err := w.call(r, s, http.MethodGet, base+"/updates", url.Values{"limit": {"20"}}, nil, &h)
		data.Updates = h.Events
		return note("updates", err)
	})
	f.run(func() error {
		var l apitypes.CommandList
		err := w.call(r, s, http.MethodGet, base+"/commands", url.Values{"limit": {"20"}}, nil, &l)
		data.Commands = l.Commands
		return note("commands", err)
	})
	f.run(func() error {
		var c apitypes.DeviceConfig
		err := w.call(r, s, http.MethodGet, base+"/config", nil, nil, &c)
		if err == nil {
			data.Config = &c
			data.ConfigJSON.Desired, data.ConfigJSON.Reported = indent(c.Desired), indent(c.Reported)
		}
		return note("config", err)
	})
	f.run(func() error {
		data.Charts = w.deviceCharts(r, s, id)
		return nil
	})
	return "device.html", data, f.wait()
}

// maxTelemetryCharts bounds the telemetry charts of a device page.
const maxTelemetryCharts = 6

// deviceCharts are a device's connectivity and traffic, and its own telemetry: a chart for
// each metric it sent in the range (the first maxTelemetryCharts by name).
func (w *Web) deviceCharts(r *http.Request, s *session, id string) []Chart {
	sel := `device="` + promEscape(id) + `"`
	charts := []Chart{
		w.chart(r, s, "Connected", `millwright_device_connected{`+sel+`}`, ""),
		w.chart(r, s, "Traffic received", `rate(millwright_device_received_bytes_total{`+sel+`}[5m])`, "B/s"),
	}
	_, d := rangeOf(r)
	end := w.now()
	var series []map[string]string
	if err := w.call(r, s, http.MethodGet, "/api/v1/series", url.Values{"match[]": {`{` + sel + `,__name__!~"millwright_.*"}`},
		"start": {fmtUnix(end.Add(-d))}, "end": {fmtUnix(end)}}, nil, &series); err != nil {
		return append(charts, Chart{Title: "Telemetry", Err: err.Error()})
	}
	var names []string
	for _, m := range series {
		if n := m["__name__"]; n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if len(names) > maxTelemetryCharts {
		names = names[:maxTelemetryCharts]
	}
	out := make([]Chart, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { out[i] = w.chart(r, s, n, n+`{`+sel+`}`, "") })
	}
	wg.Wait()
	return append(charts, out...)
}

// promEscape escapes a label value for a PromQL string in double quotes.
func promEscape(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

func indent(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func (w *Web) firmware(r *http.Request, s *session) (string, any, error) {
	var l apitypes.FirmwareList
	var note string
	err := optional(w.call(r, s, http.MethodGet, "/api/v1/firmware", nil, nil, &l), &note)
	return "firmware.html", map[string]any{"Releases": l.Releases, "Note": note}, err
}

func (w *Web) rollouts(r *http.Request, s *session) (string, any, error) {
	var l api.RolloutList
	var note string
	err := optional(w.call(r, s, http.MethodGet, "/api/v1/rollouts", nil, nil, &l), &note)
	return "rollouts.html", map[string]any{"Rollouts": l.Rollouts, "Note": note}, err
}

func (w *Web) rolloutPage(r *http.Request, s *session) (string, any, error) {
	r, cancel := withTimeout(r, pageTimeout)
	defer cancel()
	var st rollout.Status
	if err := w.call(r, s, http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(r.PathValue("id")), nil, nil, &st); err != nil {
		return "", nil, err
	}
	data := struct {
		Rollout rollout.Status
		Charts  []Chart
		Range   string
		Ranges  any
		States  []string
	}{Rollout: st, Ranges: Ranges}
	data.Range, _ = rangeOf(r)
	for k := range st.Counts {
		data.States = append(data.States, k)
	}
	slices.Sort(data.States)
	// New against old: the devices in the rollout's scope, by the firmware they run.
	perDevice := func(expr string) string {
		return `sum by (firmware) (` + expr + ` * on (device) group_left (firmware) millwright_device_info)` +
			` / on (firmware) count by (firmware) (millwright_device_info)`
	}
	specs := []struct{ title, expr, unit string }{
		{"Drops per device-hour by firmware", perDevice(`3600 * rate(millwright_device_disconnects_total{cause=~"keepalive_timeout|reset|protocol_error|takeover"}[15m])`), ""},
		{"Connected share by firmware", perDevice(`millwright_device_connected`), ""},
		{"Traffic per device by firmware", perDevice(`rate(millwright_device_received_bytes_total[15m])`), "B/s"},
	}
	data.Charts = make([]Chart, len(specs))
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Go(func() { data.Charts[i] = w.chart(r, s, sp.title, sp.expr, sp.unit) })
	}
	wg.Wait()
	return "rollout.html", data, nil
}

// Alert is an alert of /api/v1/alerts.
type Alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    *time.Time        `json:"activeAt"`
	Value       string            `json:"value"`
}

func (w *Web) alerts(r *http.Request, s *session) (string, any, error) {
	var d struct {
		Alerts []Alert `json:"alerts"`
	}
	if err := w.call(r, s, http.MethodGet, "/api/v1/alerts", nil, nil, &d); err != nil {
		return "", nil, err
	}
	slices.SortFunc(d.Alerts, func(a, b Alert) int { return strings.Compare(a.Labels["alertname"], b.Labels["alertname"]) })
	return "alerts.html", map[string]any{"Alerts": d.Alerts}, nil
}

func (w *Web) tokens(r *http.Request, s *session) (string, any, error) {
	var l apitypes.TokenList
	var note string
	err := optional(w.call(r, s, http.MethodGet, "/api/v1/enrollment-tokens", nil, nil, &l), &note)
	return "tokens.html", map[string]any{"Tokens": l.Tokens, "Note": note}, err
}

// createTokens makes enrollment tokens and shows them: the only time they are shown.
func (w *Web) createTokens(r *http.Request, s *session) (string, any, error) {
	req := apitypes.TokensRequest{Expires: strings.TrimSpace(r.PostFormValue("expires")), Model: strings.TrimSpace(r.PostFormValue("model"))}
	if c := strings.TrimSpace(r.PostFormValue("count")); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 1000 {
			return "", nil, &apiError{Status: http.StatusBadRequest, Message: "count: want 1 to 1000 (the CLI makes more at once)"}
		}
		req.Count = n
	}
	var out apitypes.TokensCreated
	if err := w.call(r, s, http.MethodPost, "/api/v1/enrollment-tokens", nil, req, &out); err != nil {
		return "", nil, err
	}
	return "tokens_created.html", out, nil
}

func (w *Web) dns(r *http.Request, s *session) (string, any, error) {
	var cl api.ClusterList
	var rl api.RouteList
	var note string
	var f fetcher
	f.run(func() error {
		return f.optional(w.call(r, s, http.MethodGet, "/api/v1/clusters", nil, nil, &cl), &note)
	})
	f.run(func() error { return f.optional(w.call(r, s, http.MethodGet, "/api/v1/routes", nil, nil, &rl), &note) })
	err := f.wait()
	return "dns.html", map[string]any{"Clusters": cl.Clusters, "Routes": rl.Routes, "Note": note}, err
}

// query charts any PromQL expression: where every chart's "PromQL" link leads.
func (w *Web) query(r *http.Request, s *session) (string, any, error) {
	expr := strings.TrimSpace(r.FormValue("expr"))
	data := map[string]any{"Expr": expr, "Ranges": Ranges}
	data["Range"], _ = rangeOf(r)
	if expr != "" {
		data["Chart"] = w.chart(r, s, expr, expr, "")
	}
	return "query.html", data, nil
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
	},
	"pct": func(part, whole int) string {
		if whole == 0 {
			return "–"
		}
		return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64) + " %"
	},
	"sum":   func(c apitypes.LivenessCount) int { return c.Online + c.Silent + c.Offline },
	"bytes": func(n int64) string { return human(float64(n), "B") },
	"setq": func(v url.Values, k, val string) string {
		c := url.Values{}
		for kk, vv := range v {
			c[kk] = vv
		}
		if val == "" {
			c.Del(k)
		} else {
			c.Set(k, val)
		}
		return c.Encode()
	},
	"join": strings.Join,
	"esc":  url.PathEscape,
	"tags": func(m map[string]string) string {
		parts := make([]string, 0, len(m))
		for k, v := range m {
			parts = append(parts, k+"="+v)
		}
		slices.Sort(parts)
		return strings.Join(parts, ", ")
	},
	"dur":        func(sec float64) string { return (time.Duration(sec) * time.Second).String() },
	"navItems":   func() []NavItem { return Nav },
	"dimensions": func() []string { return Dimensions },
	"rangeArgs": func(name string, ranges any, keep map[string]string) map[string]any {
		return map[string]any{"Range": name, "Ranges": ranges, "Keep": keep}
	},
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	// rolloutActions are the buttons a rollout in a state has.
	"rolloutActions": func(state string) []string {
		switch registry.RolloutState(state) {
		case registry.RolloutRunning:
			return []string{"pause", "abort", "rollback"}
		case registry.RolloutPaused, registry.RolloutHalted:
			return []string{"resume", "abort", "rollback"}
		case registry.RolloutCompleted, registry.RolloutAborted:
			return []string{"rollback"}
		}
		return nil
	},
	// gates are the verdicts to show: the halt's evidence when halted, else the last step's.
	"gates": func(st rollout.Status) []rollout.Result {
		if len(st.HaltEvidence) > 0 {
			return st.HaltEvidence
		}
		return st.Gates
	},
}

// NavItem is a page of the main navigation.
type NavItem struct{ Path, Name string }

// Nav is the main navigation, in order.
var Nav = []NavItem{{"/", "Fleet"}, {"/devices", "Devices"}, {"/firmware", "Firmware"}, {"/rollouts", "Rollouts"},
	{"/alerts", "Alerts"}, {"/tokens", "Tokens"}, {"/dns", "DNS"}, {"/query", "PromQL"}}
