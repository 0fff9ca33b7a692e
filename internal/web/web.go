// Package web is Millwright's dashboard: server-rendered pages on the HTTPS listener, served
// from templates and a style sheet embedded in the binary, with charts drawn on the server as
// SVG. It needs no JavaScript. Every page is a client of the API: it calls the API's handler
// in-process with the token its operator logged in with, so the API's roles, limits and
// audit apply to the dashboard exactly as to the CLI (docs/dashboard.md).
//
// An operator logs in at /login with an operator token (or the admin token). The server keeps
// the session — the token, a CSRF token, its expiry — in memory; the browser holds only a
// random session ID in an HttpOnly, Secure, SameSite=Strict cookie. Every form carries the
// session's CSRF token and every POST without it is refused; cross-origin POSTs are refused
// besides (net/http's CrossOriginProtection).
package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/optcheck"
)

//go:embed templates static
var assets embed.FS

// Cookie and form field names.
const (
	SessionCookie = "mw_session"
	loginCookie   = "mw_login"
	// CSRFField is the hidden field every form carries.
	CSRFField = "csrf"
	// TokenField is the login form's field for the operator token.
	TokenField = "token"
)

// Options bound the dashboard's sessions.
type Options struct {
	// SessionTTL is how long a session lasts from its login, however busy. Default 12 h.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// SessionIdle ends a session unused this long. Default 1 h.
	SessionIdle time.Duration `yaml:"session_idle"`
	// MaxSessions bounds the sessions kept at once; a login beyond it ends the session used
	// least recently. Default 10,000.
	MaxSessions int `yaml:"max_sessions"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{SessionTTL: 12 * time.Hour, SessionIdle: time.Hour, MaxSessions: 10000}
}

// Validate refuses session bounds of zero or less. The error is an *optcheck.Error keyed by
// the option's YAML key.
func (o Options) Validate() error {
	return optcheck.First(
		optcheck.Positive("session_ttl", o.SessionTTL),
		optcheck.Positive("session_idle", o.SessionIdle),
		optcheck.Positive("max_sessions", o.MaxSessions),
	)
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.SessionTTL <= 0 {
		o.SessionTTL = d.SessionTTL
	}
	if o.SessionIdle <= 0 {
		o.SessionIdle = d.SessionIdle
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = d.MaxSessions
	}
	return o
}

// Config wires the dashboard.
type Config struct {
	// API is the API's handler (api.Handler); the pages call it in-process.
	API     http.Handler
	Options Options
	// Now tells the time: session expiry and the charts' ranges.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Web serves the dashboard.
type Web struct {
	api      http.Handler
	opts     Options
	now      func() time.Time
	log      *slog.Logger
	pages    map[string]*template.Template
	mux      *http.ServeMux
	mu       sync.Mutex
	sessions map[string]*session // by the SHA-256 of the cookie's value
	logins   *prometheus.CounterVec
}

// session is one logged-in browser.
type session struct {
	token    string // the operator's token, sent to the API
	name     string
	role     apitypes.Role
	csrf     string
	created  time.Time
	lastUsed time.Time
}

// can reports whether the session's role reaches min.
func (s *session) can(min apitypes.Role) bool { return rank(s.role) >= rank(min) }

func rank(r apitypes.Role) int {
	switch r {
	case "viewer":
		return 1
	case "operator":
		return 2
	case "admin":
		return 3
	}
	return 0
}

// New builds the dashboard.
func New(c Config) (*Web, error) {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Web{api: c.API, opts: c.Options.withDefaults(), now: c.Now, log: c.Logger, sessions: map[string]*session{}}
	if err := w.parse(); err != nil {
		return nil, err
	}
	f := promauto.With(c.Registerer)
	w.logins = f.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_web_logins_total",
		Help: "Dashboard logins by result: accepted, or refused (a bad token, or a form without its CSRF token).",
	}, []string{"result"})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "millwright_web_sessions", Help: "Dashboard sessions kept (--web-max-sessions bounds them)."},
		func() float64 { w.mu.Lock(); defer w.mu.Unlock(); return float64(len(w.sessions)) })
	w.routes()
	return w, nil
}

// ServeHTTP serves the dashboard's pages, with the headers every page gets.
func (w *Web) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	h := rw.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	w.mux.ServeHTTP(rw, r)
}

// page is a handler of a page that needs a session; it renders its template or fails.
type page func(r *http.Request, s *session) (tmpl string, data any, err error)

// action is a handler of a form POST that needs a session (its CSRF token already checked);
// it answers with where to go next.
type action func(r *http.Request, s *session) (redirect string, err error)

func (w *Web) routes() {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(24*time.Hour, http.FileServerFS(static))))
	mux.HandleFunc("GET /login", w.loginForm)
	mux.HandleFunc("POST /login", w.login)
	mux.Handle("POST /logout", w.act(func(r *http.Request, s *session) (string, error) {
		w.endSession(r)
		return "/login", nil
	}))
	for path, p := range w.pageRoutes() {
		mux.Handle("GET "+path, w.show(p))
	}
	for path, a := range w.actionRoutes() {
		mux.Handle("POST "+path, w.act(a))
	}
	mux.Handle("POST /tokens", w.actPage(w.createTokens))
	cop := http.NewCrossOriginProtection()
	w.mux = http.NewServeMux()
	w.mux.Handle("/", cop.Handler(mux))
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(d.Seconds())))
		h.ServeHTTP(rw, r)
	})
}

// show serves a page to a session, and sends a browser without one to the login form.
func (w *Web) show(p page) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s := w.sessionOf(r)
		if s == nil {
			http.Redirect(rw, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.serve(rw, r, s, p)
	})
}

// serve renders what p answers, or the error page.
func (w *Web) serve(rw http.ResponseWriter, r *http.Request, s *session, p page) {
	tmpl, data, err := p(r, s)
	if err != nil {
		w.fail(rw, r, s, err)
		return
	}
	w.render(rw, r, http.StatusOK, tmpl, s, data)
}

// checkForm admits a form POST: a session and its CSRF token are required. It answers a
// refused one itself and returns nil.
func (w *Web) checkForm(rw http.ResponseWriter, r *http.Request) *session {
	r.Body = http.MaxBytesReader(rw, r.Body, 64<<10)
	s := w.sessionOf(r)
	if s == nil {
		http.Error(rw, "no session: log in at /login", http.StatusUnauthorized)
		return nil
	}
	if !sameToken(r.PostFormValue(CSRFField), s.csrf) {
		http.Error(rw, "the form's CSRF token is missing or wrong: reload the page and try again", http.StatusForbidden)
		return nil
	}
	return s
}

// act serves a form POST and redirects to where the action says.
func (w *Web) act(a action) http.Handler {
	return w.form(func(rw http.ResponseWriter, r *http.Request, s *session) {
		to, err := a(r, s)
		if err != nil {
			w.fail(rw, r, s, err)
			return
		}
		http.Redirect(rw, r, to, http.StatusSeeOther)
	})
}

// actPage serves a form POST that answers with a page rather than a redirect: what it shows
// is shown once (new enrollment tokens).
func (w *Web) actPage(p page) http.Handler {
	return w.form(func(rw http.ResponseWriter, r *http.Request, s *session) { w.serve(rw, r, s, p) })
}

// form serves a form POST admitted by checkForm.
func (w *Web) form(h func(http.ResponseWriter, *http.Request, *session)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if s := w.checkForm(rw, r); s != nil {
			h(rw, r, s)
		}
	})
}

func sameToken(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// apiError is an error answer of the API.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return e.Message }

// fail renders the error page; an API 401 (the token was revoked) ends the session.
func (w *Web) fail(rw http.ResponseWriter, r *http.Request, s *session, err error) {
	status := http.StatusInternalServerError
	var ae *apiError
	if errors.As(err, &ae) {
		status = ae.Status
		if status == http.StatusUnauthorized {
			w.endSession(r)
			http.Redirect(rw, r, "/login", http.StatusSeeOther)
			return
		}
	}
	if status >= 500 {
		w.log.Error("dashboard page failed", "path", r.URL.Path, "error", err)
	}
	w.render(rw, r, status, "error.html", s, map[string]any{"Status": status, "StatusText": http.StatusText(status), "Message": err.Error()})
}

// call sends a request to the API in-process, as the session's operator, and decodes the
// answer's data into out (when not nil).
func (w *Web) call(r *http.Request, s *session, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	target := path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(r.Context(), method, target, rd)
	if err != nil {
		return err
	}
	req.RemoteAddr = r.RemoteAddr
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	w.api.ServeHTTP(rec, req)
	var resp apitypes.Response[json.RawMessage]
	if err := json.Unmarshal(rec.body.Bytes(), &resp); err != nil {
		return fmt.Errorf("API %s %s answered %d, not JSON: %w", method, path, rec.status, err)
	}
	if resp.Status != apitypes.StatusSuccess {
		return &apiError{Status: rec.status, Message: resp.Error}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(resp.Data, out)
}

// recorder is the response writer of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}

// randomToken is 32 random bytes, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// sessionOf is the request's live session, or nil; using it keeps it from idling out.
func (w *Web) sessionOf(r *http.Request) *session {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	key := sessionKey(c.Value)
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sessions[key]
	if s == nil {
		return nil
	}
	if now.Sub(s.created) >= w.opts.SessionTTL || now.Sub(s.lastUsed) >= w.opts.SessionIdle {
		delete(w.sessions, key)
		return nil
	}
	s.lastUsed = now
	return s
}

// startSession keeps a new session, making room by ending the least recently used one.
func (w *Web) startSession(rw http.ResponseWriter, s *session) {
	id := randomToken()
	w.mu.Lock()
	now := w.now()
	for key, old := range w.sessions { // expired ones first
		if now.Sub(old.created) >= w.opts.SessionTTL || now.Sub(old.lastUsed) >= w.opts.SessionIdle {
			delete(w.sessions, key)
		}
	}
	for len(w.sessions) >= w.opts.MaxSessions {
		var oldest string
		for key, old := range w.sessions {
			if oldest == "" || old.lastUsed.Before(w.sessions[oldest].lastUsed) {
				oldest = key
			}
		}
		delete(w.sessions, oldest)
	}
	w.sessions[sessionKey(id)] = s
	w.mu.Unlock()
	http.SetCookie(rw, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(w.opts.SessionTTL.Seconds())})
}

func (w *Web) endSession(r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		w.mu.Lock()
		delete(w.sessions, sessionKey(c.Value))
		w.mu.Unlock()
	}
}

// loginForm shows the login form, with a login CSRF token in a cookie and in the form.
func (w *Web) loginForm(rw http.ResponseWriter, r *http.Request) {
	w.renderLogin(rw, r, http.StatusOK, "")
}

func (w *Web) renderLogin(rw http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	http.SetCookie(rw, &http.Cookie{Name: loginCookie, Value: tok, Path: "/login", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	w.render(rw, r, status, "login.html", nil, map[string]any{"CSRF": tok, "Error": msg, "Next": safeNext(r.FormValue("next"))})
}

// safeNext keeps a post-login destination on this site.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.IsAbs() || u.Host != "" || len(next) < 1 || next[0] != '/' || len(next) > 1 && next[1] == '/' || len(next) > 1 && next[1] == '\\' {
		return "/"
	}
	return next
}

// login checks the form's CSRF token and the operator token (by asking the API who it is),
// then starts a session.
func (w *Web) login(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, 16<<10)
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue(CSRFField), c.Value) {
		w.logins.WithLabelValues("refused").Inc()
		http.Error(rw, "the login form's CSRF token is missing or wrong: reload /login and try again", http.StatusForbidden)
		return
	}
	token := r.PostFormValue(TokenField)
	probe := &session{token: token}
	var who apitypes.Whoami
	if token == "" {
		err = errors.New("no token")
	} else {
		err = w.call(r, probe, http.MethodGet, "/api/v1/whoami", nil, nil, &who)
	}
	if err != nil {
		w.logins.WithLabelValues("refused").Inc()
		w.log.Info("dashboard login refused", "remote", r.RemoteAddr, "error", err)
		w.renderLogin(rw, r, http.StatusUnauthorized, "That token was not accepted: give an operator token (millwright operators create NAME) or the admin token.")
		return
	}
	w.logins.WithLabelValues("accepted").Inc()
	now := w.now()
	w.startSession(rw, &session{token: token, name: who.Name, role: who.Role, csrf: randomToken(), created: now, lastUsed: now})
	http.SetCookie(rw, &http.Cookie{Name: loginCookie, Path: "/login", MaxAge: -1, Secure: true, HttpOnly: true})
	http.Redirect(rw, r, safeNext(r.FormValue("next")), http.StatusSeeOther)
}

// view is what every template gets: the page's data, and who is looking.
type view struct {
	Session *session
	Path    string
	Data    any
}

// Name, Role, CSRF and Can serve the templates.
func (v view) Name() string { return v.Session.name }
func (v view) Role() string { return string(v.Session.role) }
func (v view) CSRF() string { return v.Session.csrf }
func (v view) Can(role string) bool {
	return v.Session != nil && v.Session.can(apitypes.Role(role))
}

func (w *Web) render(rw http.ResponseWriter, r *http.Request, status int, name string, s *session, data any) {
	t := w.pages[name]
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", view{Session: s, Path: r.URL.Path, Data: data}); err != nil {
		w.log.Error("dashboard template failed", "page", name, "error", err)
		http.Error(rw, "the page could not be drawn: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(status)
	_, _ = rw.Write(buf.Bytes())
}

// parse reads every page template with the layout.
func (w *Web) parse() error {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	w.pages = map[string]*template.Template{}
	for _, n := range names {
		base := n[len("templates/"):]
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("dashboard template %s: %w", base, err)
		}
		w.pages[base] = t
	}
	return nil
}

// withTimeout bounds the API calls of one page.
func withTimeout(r *http.Request, d time.Duration) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return r.WithContext(ctx), cancel
}
