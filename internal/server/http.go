package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/firmware"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/netlimit"
	"github.com/millwright/millwright/internal/web"
	"github.com/millwright/millwright/protocol"
)

// HTTPOptions bound the HTTPS listener (API, metrics, enrollment, batch POSTs): how long a
// request may take at each stage, and how many connections may be open. A request is refused
// for its credentials before any of its body is read, so the body timeouts are what a client
// with credentials gets; one without gets an answer at once and the connection closes.
// Validate refuses a deadline of zero or less and a connection bound of zero.
type HTTPOptions struct {
	// HeaderTimeout bounds the TLS handshake, and reading one request's headers. Default 10 s.
	HeaderTimeout time.Duration `yaml:"header_timeout"`
	// BodyTimeout bounds reading a whole request, its headers and body, counted from its
	// first byte, on every route but batch uploads: API calls, enrollment, metrics. Default
	// 30 s.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// UploadTimeout bounds reading a batch POST's body, counted from the moment its device was
	// authorized; a slower batch gets 408 and the device sends it again. Default 2 min: a
	// 1 MiB batch at 9 KiB/s.
	UploadTimeout time.Duration `yaml:"upload_timeout"`
	// WriteTimeout bounds handling a request and writing its answer, counted from the end of
	// its headers; a query gets the query timeout more (from the end of its body), a batch
	// upload the upload timeout more (from its authorization), a request that may wait for a
	// command's outcome 5 min more (from its authorization). Default 1 min.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection that has waited this long for its next
	// request. Default 2 min.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the HTTPS connections open at once; one more is closed as soon as
	// it is accepted. Default 4,096, a fifth of the server's 20,000 file descriptors, the rest
	// being the devices' MQTT connections and storage. A negative value means no bound.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerSource bounds the HTTPS connections one source address (an IPv4
	// address, an IPv6 /64) has open at once. Default 256; devices that post batches over
	// HTTPS from behind one NAT address need it raised to their number. A negative value
	// means no bound.
	MaxConnectionsPerSource int `yaml:"max_connections_per_source"`
	// HTTP2 offers HTTP/2 on the listener besides HTTP/1.1. Default off: the Go 1.26.8 the
	// server is built with has HTTP/2 server vulnerabilities an outsider can reach without
	// credentials (docs/security.md, "Known vulnerabilities"); turn it on once the binary is
	// built with a Go that fixes them.
	HTTP2 bool `yaml:"http2"`
}

// DefaultHTTPOptions returns the defaults.
func DefaultHTTPOptions() HTTPOptions {
	return HTTPOptions{
		HeaderTimeout:           10 * time.Second,
		BodyTimeout:             30 * time.Second,
		UploadTimeout:           2 * time.Minute,
		WriteTimeout:            time.Minute,
		IdleTimeout:             2 * time.Minute,
		MaxConnections:          4096,
		MaxConnectionsPerSource: 256,
	}
}

func (o HTTPOptions) withDefaults() HTTPOptions {
	d := DefaultHTTPOptions()
	for _, f := range []struct{ v, d *time.Duration }{
		{&o.HeaderTimeout, &d.HeaderTimeout}, {&o.BodyTimeout, &d.BodyTimeout}, {&o.UploadTimeout, &d.UploadTimeout},
		{&o.WriteTimeout, &d.WriteTimeout}, {&o.IdleTimeout, &d.IdleTimeout},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = d.MaxConnections
	}
	if o.MaxConnectionsPerSource == 0 {
		o.MaxConnectionsPerSource = d.MaxConnectionsPerSource
	}
	return o
}

// listenHTTP binds the HTTPS listener, bounded in connections, and builds the server of its
// routes with their deadlines.
func (s *Server) listenHTTP(tlsCfg *tls.Config) error {
	o := s.opts.HTTP.withDefaults()
	httpCfg := tlsCfg.Clone()
	httpCfg.ClientAuth = tls.VerifyClientCertIfGiven
	httpCfg.NextProtos = []string{"http/1.1"}
	if o.HTTP2 {
		httpCfg.NextProtos = []string{"h2", "http/1.1"}
	}
	ln, err := net.Listen("tcp", s.opts.HTTPListen)
	if err != nil {
		return fmt.Errorf("listen HTTPS on %s: %w", s.opts.HTTPListen, err)
	}
	f := promauto.With(s.reg)
	refused := f.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_http_connections_refused_total",
		Help: "HTTPS connections closed as soon as accepted, by the bound they met: source (--http-max-connections-per-source) or total (--http-max-connections).",
	}, []string{"limit"})
	for _, l := range []netlimit.Limit{netlimit.LimitSource, netlimit.LimitTotal} {
		refused.WithLabelValues(string(l))
	}
	lim := netlimit.New(netlimit.Options{
		PerSource: o.MaxConnectionsPerSource,
		Total:     o.MaxConnections,
		OnRefuse:  func(l netlimit.Limit) { refused.WithLabelValues(string(l)).Inc() },
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_http_connections",
		Help: "HTTPS connections open.",
	}, func() float64 { return float64(lim.InProgress()) })
	s.httpLn = tls.NewListener(netlimit.NewListener(ln, lim), httpCfg)

	mux := http.NewServeMux()
	mux.Handle("/device/v1/", s.monitor.HTTPHandler(gateway.HTTPChannel(s.channel, s.authz, s.reg)))
	downloads := firmware.NewDownloads(s.opts.Firmware.MaxDownloads)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_firmware_downloads",
		Help: "Firmware artifact downloads being served to devices (bounded by --firmware-max-downloads).",
	}, func() float64 { return float64(downloads.InProgress()) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "millwright_firmware_downloads_refused_total",
		Help: "Firmware artifact downloads refused with 503 and Retry-After because --firmware-max-downloads were in progress.",
	}, func() float64 { return float64(downloads.Refused()) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "millwright_firmware_downloads_total",
		Help: "Firmware artifact downloads (GET requests, resumptions included) admitted.",
	}, func() float64 { return float64(downloads.Served()) })
	for _, c := range []struct {
		name, help string
		v          func(made, served, none uint64) uint64
	}{
		{"millwright_firmware_deltas_made_total", "Firmware deltas made (each pair once; kept on disk).", func(m, _, _ uint64) uint64 { return m }},
		{"millwright_firmware_delta_downloads_total", "Device downloads answered with a delta (resumptions included).", func(_, s, _ uint64) uint64 { return s }},
		{"millwright_firmware_delta_refused_total", "Device requests for a delta answered 404: no delta for the pair, the device downloads the whole image.", func(_, _, n uint64) uint64 { return n }},
	} {
		f.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help}, func() float64 { return float64(c.v(s.firmware.DeltaStats())) })
	}
	mux.Handle(protocol.FirmwarePathPrefix, s.monitor.HTTPHandler(gateway.HTTPFirmware(s.authz, s.opts.Firmware.DownloadTimeout, downloads.Serve(s.firmware.ServeDevice))))
	mux.Handle(protocol.BatchPath, s.monitor.HTTPHandler(gateway.HTTPIngest(s.ingester(), s.authz, gateway.HTTPIngestOptions{
		MaxPayload:   s.pipelineMaxPayload(),
		BodyTimeout:  o.UploadTimeout,
		WriteTimeout: o.WriteTimeout,
	}, s.reg)))
	s.enroll.Register(mux)
	s.healthHandlers(mux)
	var rules api.Rules
	if s.alerting != nil {
		rules = s.alerting
	}
	apiHandler := api.Handler(api.Config{
		Authenticate:  api.TokenAuthenticator(s.token, s.registry),
		Queryable:     s.store.Queryable(),
		Engine:        s.store.Engine(),
		Events:        s.events,
		Registry:      s.registry,
		DeviceChanged: s.deviceChanged,
		DeviceDeleted: s.deviceDeleted,
		Channel:       s.channel,
		Anomalies:     s.anomaly,
		DeviceRoots:   tlsCfg.ClientCAs,
		Rules:         rules,
		Metrics:       promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}),
		Logger:        s.log.With("component", "api"),
		Now:           s.clk.Now,
		Options:       s.opts.API,
		QueryTimeout:  s.store.Options().QueryTimeout,
		WriteTimeout:  o.WriteTimeout,
		Registerer:    s.reg,
		Monitor:       s.monitor,
		Artifacts:     s.firmware,
		Rollouts:      s.rollouts,
		Routing:       s.mover,
		Backup:        s.backupFor,

		FirmwareUploadTimeout:   s.opts.Firmware.UploadTimeout,
		FirmwareDownloadTimeout: s.opts.Firmware.DownloadTimeout,
	})
	mux.Handle("/api/", apiHandler)
	mux.Handle("GET /metrics", apiHandler)
	dash, err := web.New(web.Config{API: apiHandler, Options: s.opts.Web, Now: s.clk.Now,
		Logger: s.log.With("component", "web"), Registerer: s.reg})
	if err != nil {
		return errors.Join(err, s.httpLn.Close())
	}
	mux.Handle("/", dash)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: o.HeaderTimeout,
		ReadTimeout:       o.BodyTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelDebug),
	}
	return nil
}
