package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// LocalAPIOptions configure a LocalAPI source. The zero value of every field
// means its default; DefaultLocalAPIOptions shows them.
type LocalAPIOptions struct {
	// Listen is the TCP address to listen on, host:port. The host must be
	// a loopback address (127.0.0.0/8 or ::1) or "localhost" (which means
	// 127.0.0.1): the API has no authentication, so it must not be
	// reachable from the network. Port 0 picks a free port (see Addr).
	// Default "127.0.0.1:8747"; empty means the default.
	Listen string `yaml:"listen"`
	// MaxBody bounds a request body in bytes; a larger one is refused with
	// 413. Default 1 MiB; zero means the default.
	MaxBody int `yaml:"max_body"`
	// SinkTimeout bounds how long a request waits for the sink to store
	// its records before it is answered 503. Default 10 s; zero means the
	// default.
	SinkTimeout time.Duration `yaml:"sink_timeout"`

	// Clock is the "now" that relative SenML times count from. Default the
	// real clock; nil means the default.
	Clock clock.Clock `yaml:"-"`
	// Logger receives server errors and sink failures. Default: discard;
	// nil means the default.
	Logger *slog.Logger `yaml:"-"`
}

// Defaults of LocalAPIOptions.
const (
	defaultLocalListen      = "127.0.0.1:8747"
	defaultLocalMaxBody     = 1 << 20
	defaultLocalSinkTimeout = 10 * time.Second
	// localShutdownGrace is how long Run waits, when its context ends, for
	// requests in progress to finish.
	localShutdownGrace = 5 * time.Second
)

// DefaultLocalAPIOptions returns the defaults.
func DefaultLocalAPIOptions() LocalAPIOptions {
	return LocalAPIOptions{Listen: defaultLocalListen, MaxBody: defaultLocalMaxBody, SinkTimeout: defaultLocalSinkTimeout}
}

func (o LocalAPIOptions) withDefaults() LocalAPIOptions {
	if o.Listen == "" {
		o.Listen = defaultLocalListen
	}
	if o.MaxBody == 0 {
		o.MaxBody = defaultLocalMaxBody
	}
	if o.SinkTimeout == 0 {
		o.SinkTimeout = defaultLocalSinkTimeout
	}
	return o
}

// Validate reports options that cannot work, in particular a Listen address
// that is not on loopback; the error wraps ErrInvalidOptions.
func (o LocalAPIOptions) Validate() error {
	o = o.withDefaults()
	if _, err := loopbackAddr(o.Listen); err != nil {
		return err
	}
	if o.MaxBody < 0 {
		return fmt.Errorf("%w: local_api: max_body %d is negative", ErrInvalidOptions, o.MaxBody)
	}
	if o.SinkTimeout < 0 {
		return fmt.Errorf("%w: local_api: sink_timeout %v is negative", ErrInvalidOptions, o.SinkTimeout)
	}
	return nil
}

// loopbackAddr checks that listen is host:port on loopback and returns it
// with "localhost" replaced by 127.0.0.1, so that a resolver cannot move
// the listener off loopback.
func loopbackAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%w: local_api: listen %q: %v", ErrInvalidOptions, listen, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return "", fmt.Errorf("%w: local_api: listen %q: port %q is not a number from 0 to 65535", ErrInvalidOptions, listen, port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		what := "all interfaces"
		if host != "" {
			what = "a non-loopback address"
		}
		return "", fmt.Errorf("%w: local_api: listen %q is on %s; the local API has no authentication and listens on loopback only (127.0.0.1, ::1 or localhost)", ErrInvalidOptions, listen, what)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// LocalAPIStats are counters since the LocalAPI was made.
type LocalAPIStats struct {
	// Requests counts requests to /v1/measurements.
	Requests uint64
	// Records counts records the sink accepted.
	Records uint64
	// Rejected counts requests refused as bad input (4xx).
	Rejected uint64
	// SinkErrors counts requests answered 503 because the sink failed.
	SinkErrors uint64
}

// LocalAPI lets other programs on the device submit measurements over HTTP
// on the loopback interface:
//
//	POST /v1/measurements[?class=event]
//	Content-Type: application/senml+json
//
//	[{"bn":"line1_","n":"temp","u":"Cel","v":21.5},{"n":"count","v":7,"t":-5}]
//
// The body is a SenML pack, decoded and resolved by protocol.Decode with the
// clock's time as "now" (relative times count back from the request's
// arrival). JSON is the documented form; CBOR and zstd-compressed packs are
// accepted too, as Decode tells them apart. Answers, all with a JSON body:
//
//   - 202 {"accepted": n}: the n measurements are stored by the sink (in
//     the agent: in the spool).
//   - 400 {"error": "..."}: the pack is malformed or invalid (the error
//     starts with the protocol reason, "invalid: record 0: …"), or class
//     is not raw or event; 413 for a body over MaxBody; 415 for a
//     Content-Type other than JSON, CBOR or none.
//   - 403: the request carries an Origin header. Browsers send one on
//     cross-site requests, so a web page open on the device cannot inject
//     measurements; programs do not send it.
//   - 503 {"error": "..."}: the sink failed or timed out; retry later.
//
// ?class=event stores the measurements as events (ClassEvent), which
// outlive raw samples when the spool is full; class=raw or none as raw
// samples.
type LocalAPI struct {
	opts LocalAPIOptions
	addr string // checked listen address
	clk  clock.Clock
	log  *slog.Logger

	mu sync.Mutex
	ln net.Listener

	requests, records, rejected, sinkErrors atomic.Uint64
}

// NewLocalAPI returns a LocalAPI source. It fails, wrapping
// ErrInvalidOptions, when opts do not validate, in particular when Listen
// is not a loopback address.
func NewLocalAPI(opts LocalAPIOptions) (*LocalAPI, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	addr, _ := loopbackAddr(opts.Listen)
	return &LocalAPI{
		opts: opts,
		addr: addr,
		clk:  defaultClock(opts.Clock),
		log:  defaultLogger(opts.Logger).With("source", "local_api"),
	}, nil
}

// Name returns "local_api".
func (a *LocalAPI) Name() string { return "local_api" }

// Stats returns the counters.
func (a *LocalAPI) Stats() LocalAPIStats {
	return LocalAPIStats{
		Requests:   a.requests.Load(),
		Records:    a.records.Load(),
		Rejected:   a.rejected.Load(),
		SinkErrors: a.sinkErrors.Load(),
	}
}

// Listen binds the listening socket, so that a caller learns of an address
// in use before starting Run, and Addr is known. Run calls it if it was not
// called. Calling it again does nothing.
func (a *LocalAPI) Listen() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("listen local api: %w", err)
	}
	a.ln = ln
	return nil
}

// Addr returns the address listened on, nil before Listen.
func (a *LocalAPI) Addr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return nil
	}
	return a.ln.Addr()
}

// Run serves the API until ctx ends, then stops accepting requests, waits
// up to 5 s for those in progress (each bounded by SinkTimeout) and returns
// nil. It returns an error if
// it cannot listen or the server fails.
func (a *LocalAPI) Run(ctx context.Context, sink Sink) error {
	if err := a.Listen(); err != nil {
		return err
	}
	a.mu.Lock()
	ln := a.ln
	a.mu.Unlock()
	srv := &http.Server{
		Handler:           a.Handler(sink),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      a.opts.SinkTimeout + 30*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve local api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), localShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Requests still running after the grace period are cut off.
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve local api: %w", err)
	}
	return nil
}

// Handler returns the API's HTTP handler writing to sink, for embedding in
// another server or for tests; Run serves it.
func (a *LocalAPI) Handler(sink Sink) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/measurements", func(w http.ResponseWriter, r *http.Request) {
		a.measurements(w, r, sink)
	})
	return mux
}

// acceptedTypes are the Content-Types of a measurements request; none at
// all is accepted too.
var acceptedTypes = map[string]bool{
	"application/senml+json": true,
	"application/json":       true,
	"application/senml+cbor": true,
	"application/cbor":       true,
}

func (a *LocalAPI) measurements(w http.ResponseWriter, r *http.Request, sink Sink) {
	a.requests.Add(1)
	if r.Header.Get("Origin") != "" {
		a.refuse(w, http.StatusForbidden, "requests from web pages (with an Origin header) are not accepted")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !acceptedTypes[ct] {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !acceptedTypes[mt] {
			a.refuse(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send application/senml+json (or application/senml+cbor)", ct))
			return
		}
	}
	class := ClassRaw
	c := ""
	if r.URL.RawQuery != "" {
		c = r.URL.Query().Get("class")
	}
	switch c {
	case "", "raw":
	case "event":
		class = ClassEvent
	default:
		a.refuse(w, http.StatusBadRequest, fmt.Sprintf("class %q: want raw or event", c))
		return
	}
	body, err := readBody(w, r, a.opts.MaxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			a.refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", a.opts.MaxBody))
			return
		}
		a.refuse(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	lim := protocol.DefaultLimits()
	lim.MaxPayload = a.opts.MaxBody
	b, _, err := protocol.Decode(body, a.clk.Now(), lim)
	if err != nil {
		a.refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	recs := batchRecords(b)
	if len(recs) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), a.opts.SinkTimeout)
		err := sink.Write(ctx, recs, class)
		cancel()
		if err != nil {
			a.sinkErrors.Add(1)
			a.log.Warn("store local api measurements: "+err.Error(), "records", len(recs))
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "store measurements: " + err.Error()})
			return
		}
		a.records.Add(uint64(len(recs)))
	}
	// {"accepted":n}, written without reflection: this is every request.
	out := strconv.AppendInt(append(make([]byte, 0, 32), `{"accepted":`...), int64(len(recs)), 10)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(out, "}\n"...))
}

// readBody reads at most limit bytes of the request body.
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	if r.ContentLength > int64(limit) {
		return nil, &http.MaxBytesError{Limit: int64(limit)}
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
}

func (a *LocalAPI) refuse(w http.ResponseWriter, status int, msg string) {
	a.rejected.Add(1)
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
