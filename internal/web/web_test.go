package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/internal/web"
)

const adminToken = "mwa_test-admin-token-0123456789"

// rig is a dashboard over a real API and a real SQLite registry, served over TLS.
type rig struct {
	t     *testing.T
	srv   *httptest.Server
	reg   *registry.Registry
	clock *clock.Fake
}

func newRig(t *testing.T, opts web.Options) *rig {
	t.Helper()
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC))
	reg, err := registry.Open(ctx, "", t.TempDir(), clk)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Close() })
	store, err := tsdb.Open(t.TempDir(), tsdb.DefaultOptions(), nil, prometheus.NewRegistry())
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	apiH := api.Handler(api.Config{Authenticate: api.TokenAuthenticator(adminToken, reg), Registry: reg, Now: clk.Now,
		Queryable: store.Queryable(), Engine: store.Engine()})
	w, err := web.New(web.Config{API: apiH, Options: opts, Now: clk.Now, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(w)
	t.Cleanup(srv.Close)
	return &rig{t: t, srv: srv, reg: reg, clock: clk}
}

// browser is a client with its own cookie jar that does not follow redirects.
func (r *rig) browser() *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(r.t, err)
	c := r.srv.Client()
	return &http.Client{Transport: c.Transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (r *rig) get(c *http.Client, path string) (int, string, http.Header) {
	r.t.Helper()
	resp, err := c.Get(r.srv.URL + path)
	require.NoError(r.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	return resp.StatusCode, string(b), resp.Header
}

func (r *rig) post(c *http.Client, path string, form url.Values) (int, string, http.Header) {
	r.t.Helper()
	resp, err := c.PostForm(r.srv.URL+path, form)
	require.NoError(r.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	return resp.StatusCode, string(b), resp.Header
}

// login logs c in with token and returns the session's CSRF token.
func (r *rig) login(c *http.Client, token string) string {
	r.t.Helper()
	status, body, _ := r.get(c, "/login")
	require.Equal(r.t, http.StatusOK, status)
	m := csrfRe.FindStringSubmatch(body)
	require.NotNil(r.t, m, "the login form carries a CSRF token")
	status, _, h := r.post(c, "/login", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/devices"}})
	require.Equal(r.t, http.StatusSeeOther, status)
	require.Equal(r.t, "/devices", h.Get("Location"))
	status, body, _ = r.get(c, "/devices")
	require.Equal(r.t, http.StatusOK, status)
	m = csrfRe.FindStringSubmatch(body)
	require.NotNil(r.t, m, "the logout form carries the session's CSRF token")
	return m[1]
}

func (r *rig) operator(name string, role registry.Role) string {
	_, tok, err := r.reg.CreateOperator(context.Background(), name, role, "test", "")
	require.NoError(r.t, err)
	return tok
}

// pages are every page of the dashboard, as a browser asks for them.
var pages = []string{"/", "/devices", "/devices/dev-1", "/firmware", "/rollouts", "/rollouts/r1", "/alerts", "/tokens", "/dns", "/query?expr=up"}

// forms are every form of the dashboard.
var forms = []string{"/logout", "/devices/dev-1/suspend", "/devices/dev-1/resume", "/devices/dev-1/revoke", "/devices/dev-1/diagnostic",
	"/rollouts/r1/pause", "/rollouts/r1/resume", "/rollouts/r1/abort", "/rollouts/r1/rollback", "/tokens", "/tokens/t1/revoke"}

func TestEveryPageNeedsASession(t *testing.T) {
	r := newRig(t, web.Options{})
	c := r.browser()
	for _, p := range pages {
		status, _, h := r.get(c, p)
		require.Equal(t, http.StatusSeeOther, status, p)
		require.Equal(t, "/login?next="+url.QueryEscape(p), h.Get("Location"), p)
	}
	for _, f := range forms {
		status, _, _ := r.post(c, f, url.Values{"csrf": {"anything"}})
		require.Equal(t, http.StatusUnauthorized, status, f)
	}
	status, _, _ := r.get(c, "/static/style.css")
	require.Equal(t, http.StatusOK, status, "the style sheet needs no session")
}

func TestEveryFormNeedsItsCSRFToken(t *testing.T) {
	r := newRig(t, web.Options{})
	_, err := r.reg.CreateDevice(context.Background(), "dev-1", nil, nil, "test", "")
	require.NoError(t, err)
	c := r.browser()
	csrf := r.login(c, adminToken)
	for _, f := range forms {
		for _, form := range []url.Values{{}, {"csrf": {"wrong-" + csrf}}} {
			status, body, _ := r.post(c, f, form)
			require.Equal(t, http.StatusForbidden, status, f)
			require.Contains(t, body, "CSRF", f)
		}
	}
	dev, err := r.reg.Device(context.Background(), "dev-1")
	require.NoError(t, err)
	require.Equal(t, registry.StatusPending, dev.Status, "no refused form changed anything")

	// The login form too: without its token, or with one that is not its cookie's.
	fresh := r.browser()
	status, _, _ := r.post(fresh, "/login", url.Values{"token": {adminToken}})
	require.Equal(t, http.StatusForbidden, status)
	r.get(fresh, "/login")
	status, _, _ = r.post(fresh, "/login", url.Values{"token": {adminToken}, "csrf": {"forged"}})
	require.Equal(t, http.StatusForbidden, status)
	status, _, _ = r.get(fresh, "/")
	require.Equal(t, http.StatusSeeOther, status, "no session was made")
}

func TestCrossOriginPostRefused(t *testing.T) {
	r := newRig(t, web.Options{})
	c := r.browser()
	csrf := r.login(c, adminToken)
	req, err := http.NewRequest(http.MethodPost, r.srv.URL+"/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	status, _, _ := r.get(c, "/")
	require.Equal(t, http.StatusOK, status, "still logged in")
}

func TestLoginRefusesBadTokensAndSetsASafeCookie(t *testing.T) {
	r := newRig(t, web.Options{})
	c := r.browser()
	_, body, _ := r.get(c, "/login")
	csrf := csrfRe.FindStringSubmatch(body)[1]
	status, body, _ := r.post(c, "/login", url.Values{"csrf": {csrf}, "token": {"mwo_not-a-token"}})
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, body, "not accepted")
	_, body, _ = r.get(c, "/login")
	csrf = csrfRe.FindStringSubmatch(body)[1]
	status, _, _ = r.post(c, "/login", url.Values{"csrf": {csrf}, "token": {adminToken}, "pad": {strings.Repeat("x", 16<<10)}})
	require.Equal(t, http.StatusForbidden, status, "a login form over 16 KiB is not read")
	status, _, _ = r.get(c, "/")
	require.Equal(t, http.StatusSeeOther, status, "and makes no session")

	_, body, _ = r.get(c, "/login")
	csrf = csrfRe.FindStringSubmatch(body)[1]
	resp, err := c.PostForm(r.srv.URL+"/login", url.Values{"csrf": {csrf}, "token": {adminToken}, "next": {"//evil.example/x"}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "/", resp.Header.Get("Location"), "no redirect off the site")
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == web.SessionCookie {
			session = ck
		}
	}
	require.NotNil(t, session)
	require.True(t, session.HttpOnly)
	require.True(t, session.Secure)
	require.Equal(t, http.SameSiteStrictMode, session.SameSite)
	require.NotContains(t, session.Value, adminToken, "the cookie holds a session ID, never the token")
}

func TestSessionsExpire(t *testing.T) {
	r := newRig(t, web.Options{SessionTTL: 2 * time.Hour, SessionIdle: 30 * time.Minute})
	c := r.browser()
	r.login(c, adminToken)
	for range 4 { // kept alive by use, until its TTL
		r.clock.Advance(25 * time.Minute)
		status, _, _ := r.get(c, "/")
		require.Equal(t, http.StatusOK, status)
	}
	r.clock.Advance(21 * time.Minute) // 2 h 1 min after login, 21 min after its last use
	status, _, _ := r.get(c, "/")
	require.Equal(t, http.StatusSeeOther, status, "past its TTL")

	r.login(c, adminToken)
	r.clock.Advance(30 * time.Minute)
	status, _, _ = r.get(c, "/")
	require.Equal(t, http.StatusSeeOther, status, "idle too long")
}

func TestMaxSessionsEndsTheLeastRecentlyUsed(t *testing.T) {
	r := newRig(t, web.Options{MaxSessions: 2})
	a, b, c := r.browser(), r.browser(), r.browser()
	r.login(a, adminToken)
	r.clock.Advance(time.Second)
	r.login(b, adminToken)
	r.clock.Advance(time.Second)
	r.get(a, "/") // a is used after b
	r.clock.Advance(time.Second)
	r.login(c, adminToken)
	for cl, want := range map[*http.Client]int{a: http.StatusOK, b: http.StatusSeeOther, c: http.StatusOK} {
		status, _, _ := r.get(cl, "/")
		require.Equal(t, want, status)
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	r := newRig(t, web.Options{})
	c := r.browser()
	csrf := r.login(c, adminToken)
	status, _, h := r.post(c, "/logout", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusSeeOther, status)
	require.Equal(t, "/login", h.Get("Location"))
	status, _, _ = r.get(c, "/")
	require.Equal(t, http.StatusSeeOther, status)
}

func TestRolesAndDeviceActions(t *testing.T) {
	r := newRig(t, web.Options{})
	ctx := context.Background()
	_, err := r.reg.CreateDevice(ctx, "dev-1", map[string]string{"site": "north"}, []string{"line-3"}, "test", "")
	require.NoError(t, err)
	require.NoError(t, r.reg.SetStatus(ctx, "dev-1", registry.StatusActive, "test", ""))

	viewer := r.browser()
	vcsrf := r.login(viewer, r.operator("grafana", registry.RoleViewer))
	status, body, _ := r.get(viewer, "/devices/dev-1")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "site=north")
	require.Contains(t, body, "line-3")
	require.NotContains(t, body, `id="suspend"`, "a viewer sees no button that would fail")
	status, body, _ = r.post(viewer, "/devices/dev-1/suspend", url.Values{"csrf": {vcsrf}})
	require.Equal(t, http.StatusForbidden, status, "the API refuses the viewer")
	require.Contains(t, body, "role viewer may not")

	op := r.browser()
	csrf := r.login(op, r.operator("alice", registry.RoleOperator))
	_, body, _ = r.get(op, "/devices/dev-1")
	require.Contains(t, body, `id="suspend"`)
	status, _, h := r.post(op, "/devices/dev-1/suspend", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusSeeOther, status)
	require.Equal(t, "/devices/dev-1", h.Get("Location"))
	dev, err := r.reg.Device(ctx, "dev-1")
	require.NoError(t, err)
	require.Equal(t, registry.StatusSuspended, dev.Status)
	_, body, _ = r.get(op, "/devices/dev-1")
	require.Contains(t, body, `id="resume"`)
	status, _, _ = r.post(op, "/devices/dev-1/resume", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusSeeOther, status)
	dev, err = r.reg.Device(ctx, "dev-1")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, dev.Status)

	entries, err := r.reg.ListAudit(ctx, 10, 0)
	require.NoError(t, err)
	require.Equal(t, "operator:alice", entries[0].Actor, "the dashboard's actions are audited as their operator")
}

func TestRevokedOperatorIsLoggedOut(t *testing.T) {
	r := newRig(t, web.Options{})
	ctx := context.Background()
	op, tok, err := r.reg.CreateOperator(ctx, "bob", registry.RoleOperator, "test", "")
	require.NoError(t, err)
	c := r.browser()
	r.login(c, tok)
	require.NoError(t, r.reg.RevokeOperator(ctx, op.ID, "test", ""))
	status, _, h := r.get(c, "/devices")
	require.Equal(t, http.StatusSeeOther, status)
	require.Equal(t, "/login", h.Get("Location"))
	status, _, _ = r.get(c, "/")
	require.Equal(t, http.StatusSeeOther, status, "the session is gone")
}

func TestDevicesListFiltersAndPages(t *testing.T) {
	r := newRig(t, web.Options{})
	ctx := context.Background()
	for _, id := range []string{"pump-01", "pump-02", "pump-03", "valve-01"} {
		_, err := r.reg.CreateDevice(ctx, id, map[string]string{"kind": strings.Split(id, "-")[0]}, nil, "test", "")
		require.NoError(t, err)
	}
	c := r.browser()
	r.login(c, adminToken)
	_, body, _ := r.get(c, "/devices?q=pump")
	require.Contains(t, body, "pump-03")
	require.NotContains(t, body, "valve-01")
	_, body, _ = r.get(c, "/devices?tag=kind%3Dvalve")
	require.Contains(t, body, "valve-01")
	require.NotContains(t, body, "pump-01")
	_, body, _ = r.get(c, "/devices?q=nothing")
	require.Contains(t, body, "No device matches.")
}

func TestTokensShownOnce(t *testing.T) {
	r := newRig(t, web.Options{})
	c := r.browser()
	csrf := r.login(c, adminToken)
	status, body, _ := r.post(c, "/tokens", url.Values{"csrf": {csrf}, "count": {"2"}, "expires": {"1h"}})
	require.Equal(t, http.StatusOK, status)
	toks := regexp.MustCompile(`mwe_[A-Za-z0-9_-]+`).FindAllString(body, -1)
	require.Len(t, toks, 2, body)
	_, body, _ = r.get(c, "/tokens")
	require.NotContains(t, body, toks[0], "the list shows IDs, never the secrets")
	require.Equal(t, 2, strings.Count(body, "/revoke"))
	status, _, _ = r.post(c, "/tokens", url.Values{"csrf": {csrf}, "count": {"0"}})
	require.Equal(t, http.StatusBadRequest, status)
}

func TestPagesSendSecurityHeaders(t *testing.T) {
	r := newRig(t, web.Options{})
	c := r.browser()
	_, _, h := r.get(c, "/login")
	require.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'")
	require.Contains(t, h.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
	require.Equal(t, "no-store", h.Get("Cache-Control"))
}
