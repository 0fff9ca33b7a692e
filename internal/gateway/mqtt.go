// Package gateway holds the device-facing listeners: MQTT 5 and 3.1.1 over TLS with client
// certificates, and the HTTPS batch endpoint. Both authenticate the device from its
// certificate, confine it to its own topic root, and hand telemetry batches to an Ingester,
// acknowledging only what it made durable.
//
// The MQTT side serves device sessions itself, one goroutine per connection, over
// mochi-mqtt's packet codec; docs/design.md ("Device sessions") says why it is not a
// general-purpose broker.
//
// The gateway is transport and sessions only. What it needs of the rest of the server it asks
// through small interfaces in its own types (policy.go): whether a device may connect
// (Authorizer), to store a batch (Ingester), to take what a device reports at connect
// (ConnectReporter). The registry-backed answers are in package devicepolicy; the gateway
// links neither the registry's SQL drivers nor the TSDB.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/clock"
)

// MQTTOptions configure the MQTT listeners and device sessions.
type MQTTOptions struct {
	// Listen is the TLS listener address. Default ":8883".
	Listen string `yaml:"listen"`
	// InsecureListen, when set, adds a plain-TCP listener where the client ID alone names the
	// device. For development only; empty (the default) means none.
	InsecureListen string `yaml:"insecure_listen"`
	// MaxInflight bounds the QoS 1 messages sent to one device and not yet acknowledged
	// (commands, configuration, OTA offers), kept while the device is offline for as long as
	// its session lasts. Default 64; a message beyond it is dropped and counted in
	// millwright_mqtt_messages_dropped_total. A device's own Receive Maximum, when lower, is
	// the bound on its connection.
	MaxInflight int `yaml:"max_inflight"`
	// MaxSessionExpiry bounds, in seconds, how long a disconnected device's session (its
	// subscriptions and unacknowledged messages) is kept. Default 3,600.
	MaxSessionExpiry uint32 `yaml:"max_session_expiry"`
	// MaxPacketSize bounds an MQTT packet in bytes. Default 1 MiB. A packet's buffer grows as
	// its bytes arrive, so a declared length costs nothing until it is sent.
	MaxPacketSize uint32 `yaml:"max_packet_size"`
	// MaxConnectSize bounds the CONNECT packet, in bytes, and with it what a connection not
	// yet accepted may make the server hold. Default 64 KiB (a device's CONNECT is a few
	// hundred bytes: its client ID and a few user properties); never above MaxPacketSize. A
	// larger CONNECT closes the connection, counted in millwright_mqtt_limit_refusals_total
	// {limit="connect_too_large"}.
	MaxConnectSize uint32 `yaml:"max_connect_size"`

	// A connection passes three stages before it is a device session, each under a deadline
	// of its own: the ClientHello, the TLS handshake and the CONNECT packet. A connection that
	// misses one is closed and counted in millwright_mqtt_limit_refusals_total.

	// HelloTimeout bounds, from accept, the wait for the client's TLS ClientHello. Default
	// 10 s. A socket that sends nothing holds no handshake slot, only its descriptor, and only
	// this long.
	HelloTimeout time.Duration `yaml:"hello_timeout"`
	// HandshakeTimeout bounds, from the ClientHello's arrival, the wait for a handshake slot
	// and the TLS handshake. Default 20 s: in a reconnect storm devices queue for a slot, and
	// one dropped after queueing retries later on a doubled backoff window.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// ConnectTimeout bounds the wait for the CONNECT packet: on the TLS listener from the end
	// of the handshake, on the development listener from accept. Default 10 s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxConcurrentHandshakes bounds the TLS handshakes in progress at once; a handshake takes
	// a slot once its ClientHello has arrived, and the others wait in order within
	// HandshakeTimeout. Default 8 per CPU.
	MaxConcurrentHandshakes int `yaml:"max_concurrent_handshakes"`
	// MaxHandshakesPerSource bounds the TLS handshakes one source address (an IPv4 address, an
	// IPv6 /64) may have in progress or waiting for a slot; its others wait in order within
	// HandshakeTimeout, so that one address cannot take every slot. Zero (the default) means
	// half of MaxConcurrentHandshakes: 4 per CPU by default. Devices behind one NAT share an
	// address: raise it when a whole site reconnects at once.
	MaxHandshakesPerSource int `yaml:"max_handshakes_per_source"`

	// ReceiveMaximum is the Receive Maximum announced to MQTT 5 devices (§3.2.2.3.3): the QoS 2
	// publishes a device may have unreleased (no PUBREL yet) on one connection; QoS 1
	// publishes are acknowledged before the next packet is read. A device over it is
	// disconnected, MQTT 5 with DISCONNECT 0x93 "receive maximum exceeded"; the bound holds for
	// MQTT 3.1.1 devices too. Default 64; at most 65,535.
	ReceiveMaximum uint16 `yaml:"receive_maximum"`
	// MaxKeepAlive bounds a device's keep-alive, in seconds. A device asking for 0 (none) or
	// more is held to MaxKeepAlive: an MQTT 5 device is told in the CONNACK's Server Keep
	// Alive, an MQTT 3.1.1 device (which cannot be told) is disconnected once silent for 1.5×
	// MaxKeepAlive. Default 1,200 (20 minutes). Each is counted in
	// millwright_mqtt_keepalive_clamped_total.
	MaxKeepAlive uint16 `yaml:"max_keepalive"`

	// WriteTimeout bounds one write to a device; a device that does not read for that long is
	// disconnected. Default 30 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// DisconnectTimeout bounds the write of the DISCONNECT that tells an MQTT 5 device why its
	// connection ends (a protocol error, a takeover, a revocation, shutdown) before the
	// connection is closed anyway. Default 1 s: shutdown tells every device in turn.
	DisconnectTimeout time.Duration `yaml:"disconnect_timeout"`
	// AuthorizeTimeout bounds the Authorizer's answer for one connection (on the TLS listener
	// after the handshake, on the development listener at CONNECT). A device without an
	// answer in time gets CONNACK 0x88 "server unavailable" (MQTT 3.1.1: return code 3) and
	// comes back later. Default 5 s.
	AuthorizeTimeout time.Duration `yaml:"authorize_timeout"`

	// Clock times session expiry and stamps the connect time given to the ConnectReporter.
	// Nil means the real clock.
	Clock clock.Clock `yaml:"-"`
}

// DefaultMQTTOptions returns the defaults.
func DefaultMQTTOptions() MQTTOptions {
	return MQTTOptions{Listen: ":8883", MaxInflight: 64, MaxSessionExpiry: 3600, MaxPacketSize: 1 << 20,
		MaxConnectSize: 64 << 10, HelloTimeout: 10 * time.Second, HandshakeTimeout: 20 * time.Second,
		ConnectTimeout: 10 * time.Second, MaxConcurrentHandshakes: 8 * runtime.GOMAXPROCS(0),
		ReceiveMaximum: 64, MaxKeepAlive: 1200,
		WriteTimeout: 30 * time.Second, DisconnectTimeout: time.Second, AuthorizeTimeout: 5 * time.Second}
}

// withDefaults fills the zero fields of o from DefaultMQTTOptions.
func (o MQTTOptions) withDefaults() MQTTOptions {
	d := DefaultMQTTOptions()
	if o.Listen == "" {
		o.Listen = d.Listen
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = d.MaxInflight
	}
	if o.MaxSessionExpiry == 0 {
		o.MaxSessionExpiry = d.MaxSessionExpiry
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = d.MaxPacketSize
	}
	if o.MaxConnectSize == 0 {
		o.MaxConnectSize = d.MaxConnectSize
	}
	o.MaxConnectSize = min(o.MaxConnectSize, o.MaxPacketSize)
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = d.HelloTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = d.HandshakeTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = d.ConnectTimeout
	}
	if o.MaxConcurrentHandshakes <= 0 {
		o.MaxConcurrentHandshakes = d.MaxConcurrentHandshakes
	}
	if o.MaxHandshakesPerSource <= 0 {
		o.MaxHandshakesPerSource = max(o.MaxConcurrentHandshakes/2, 1)
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = d.ReceiveMaximum
	}
	if o.MaxKeepAlive == 0 {
		o.MaxKeepAlive = d.MaxKeepAlive
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	if o.DisconnectTimeout <= 0 {
		o.DisconnectTimeout = d.DisconnectTimeout
	}
	if o.AuthorizeTimeout <= 0 {
		o.AuthorizeTimeout = d.AuthorizeTimeout
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	return o
}

// MQTT serves devices over MQTT: it accepts connections, authenticates each device, keeps its
// session and hands its batches to the Ingester.
type MQTT struct {
	opts     MQTTOptions
	tlsLn    *handshakeListener
	plainLn  net.Listener
	ing      Ingester
	authz    Authorizer
	facts    ConnectReporter
	channel  Channel  // set by SetChannel before Start; nil: device channel topics loop back
	observer Observer // set by SetObserver before Start; nil: none
	log      *slog.Logger
	met      *mqttMetrics

	ctx    context.Context // ends at Close: ingest waits end with it
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loops and connections

	// mu guards the set of sessions and of connections, not what is in a session (each has
	// its own lock, session.mu, taken after mu when both are): one device's acknowledgements,
	// subscriptions and messages do not wait for another's. A connect, a disconnect and a
	// session's expiry take mu to find or change a device's session.
	mu       sync.Mutex
	sessions map[string]*session // by device ID: live ones and expiring ones
	conns    map[*conn]struct{}  // every connection being served, before and after CONNECT
	closed   bool

	connected atomic.Int64
}

// mqttMetrics are the MQTT side's own metrics.
type mqttMetrics struct {
	connects       *prometheus.CounterVec
	acl            prometheus.Counter
	protocolErrors prometheus.Counter
	dropped        prometheus.Counter
	handshakes     prometheus.Counter
	resumed        prometheus.Counter
	// limits counts what a limit cut short, by limit; each label value below is one limit.
	limits          *prometheus.CounterVec
	keepalive       prometheus.Counter
	insecureRefused prometheus.Counter
}

// The limit label values of millwright_mqtt_limit_refusals_total.
const (
	limitHelloTimeout     = "client_hello_timeout"  // MQTTOptions.HelloTimeout
	limitHandshakeTimeout = "handshake_timeout"     // MQTTOptions.HandshakeTimeout
	limitHandshakeSource  = "handshakes_per_source" // MQTTOptions.MaxHandshakesPerSource
	limitConnectTimeout   = "connect_timeout"       // MQTTOptions.ConnectTimeout
	limitConnectSize      = "connect_too_large"     // MQTTOptions.MaxConnectSize
	limitReceiveMaximum   = "receive_maximum"       // MQTTOptions.ReceiveMaximum
)

func newMQTTMetrics(reg prometheus.Registerer) *mqttMetrics {
	f := promauto.With(reg)
	m := &mqttMetrics{
		connects: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_mqtt_connects_total",
			Help: "MQTT connection attempts that reached authentication, by result.",
		}, []string{"result"}),
		acl: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_acl_denied_total",
			Help: "Publishes and subscriptions refused because they left the device's topic root.",
		}),
		protocolErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_protocol_errors_total",
			Help: "MQTT connections closed for a malformed packet or a protocol violation.",
		}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_messages_dropped_total",
			Help: "Messages to devices dropped because the device had too many unacknowledged.",
		}),
		handshakes: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_tls_handshake_failures_total",
			Help: "TLS handshakes on the MQTT listener that failed or timed out.",
		}),
		resumed: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_tls_resumed_total",
			Help: "TLS handshakes on the MQTT listener that resumed an earlier session instead of exchanging certificates.",
		}),
		limits: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_mqtt_limit_refusals_total",
			Help: "MQTT connections closed by a limit: a stage's deadline (client_hello_timeout, handshake_timeout, connect_timeout), the handshakes one source address may have (handshakes_per_source), the CONNECT's size (connect_too_large) or the receive maximum (receive_maximum).",
		}, []string{"limit"}),
		keepalive: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_keepalive_clamped_total",
			Help: "MQTT connections whose keep-alive (none, or above the maximum) was held to the server's maximum.",
		}),
		insecureRefused: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_insecure_refused_total",
			Help: "Connections on the development listener refused because the device's session belongs to the TLS listener.",
		}),
	}
	for _, l := range []string{limitHelloTimeout, limitHandshakeTimeout, limitHandshakeSource, limitConnectTimeout, limitConnectSize, limitReceiveMaximum} {
		m.limits.WithLabelValues(l)
	}
	return m
}

// NewMQTT binds the listeners; Start serves them. tlsConfig must carry the server
// certificate; NewMQTT sets client-certificate verification against clientCAs and the TLS 1.2
// minimum.
//
// ing stores the batches. authz, when not nil, is asked at every connect whether the device
// may connect; facts, when not nil, receives what the device reports about itself in its
// CONNECT user properties, and is closed by Close (not by NewMQTT when it fails).
func NewMQTT(opts MQTTOptions, tlsConfig *tls.Config, ing Ingester, authz Authorizer, facts ConnectReporter, logger *slog.Logger, reg prometheus.Registerer) (*MQTT, error) {
	opts = opts.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "mqtt")
	m := &MQTT{opts: opts, ing: ing, authz: authz, facts: facts, log: logger, met: newMQTTMetrics(reg),
		sessions: map[string]*session{}, conns: map[*conn]struct{}{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_mqtt_connected_clients",
		Help: "MQTT clients connected now.",
	}, func() float64 { return float64(m.connected.Load()) })
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_mqtt_sessions",
		Help: "MQTT sessions held: those of connected devices, and those of disconnected devices kept until they expire.",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.sessions))
	})

	cfg := tlsConfig.Clone()
	cfg.MinVersion = tls.VersionTLS12
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen MQTT/TLS on %s: %w", opts.Listen, err)
	}
	if opts.InsecureListen != "" {
		pl, err := net.Listen("tcp", opts.InsecureListen)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen insecure MQTT on %s: %w", opts.InsecureListen, err), ln.Close())
		}
		m.plainLn = pl
	}
	m.tlsLn = newHandshakeListener(ln, cfg, handshakeOptions{
		hello: opts.HelloTimeout, handshake: opts.HandshakeTimeout,
		concurrent: opts.MaxConcurrentHandshakes, perSource: opts.MaxHandshakesPerSource,
		failed: m.met.handshakes, resumed: m.met.resumed,
		helloLate:     m.met.limits.WithLabelValues(limitHelloTimeout),
		hsLate:        m.met.limits.WithLabelValues(limitHandshakeTimeout),
		sourceLimited: m.met.limits.WithLabelValues(limitHandshakeSource),
	}, logger)
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_mqtt_tls_handshakes_in_progress",
		Help: "TLS handshakes on the MQTT listener holding a handshake slot now.",
	}, func() float64 { return float64(len(m.tlsLn.slots)) })
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_mqtt_tls_handshakes_queued",
		Help: "TLS handshakes on the MQTT listener whose ClientHello arrived, waiting now for a handshake slot or behind others from their source address.",
	}, func() float64 { return float64(m.tlsLn.queued.Load()) })
	return m, nil
}

// SetChannel routes the device channel's topics to ch: a device's replies, reports and state go
// to ch.Message instead of to its own subscriptions, and ch.Subscribed learns of its
// subscriptions. Call it before Start.
func (m *MQTT) SetChannel(ch Channel) { m.channel = ch }

// Addr is the TLS listener's address.
func (m *MQTT) Addr() net.Addr { return m.tlsLn.Addr() }

// InsecureAddr is the plain listener's address, or nil.
func (m *MQTT) InsecureAddr() net.Addr {
	if m.plainLn == nil {
		return nil
	}
	return m.plainLn.Addr()
}

// Start serves the listeners in the background.
func (m *MQTT) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("serve MQTT: closed")
	}
	m.wg.Go(func() { m.serve(m.tlsLn, true) })
	if m.plainLn != nil {
		m.log.Warn("plain MQTT listener enabled: devices are identified by client ID alone, for development only", "address", m.plainLn.Addr().String())
		m.wg.Go(func() { m.serve(m.plainLn, false) })
	}
	return nil
}

// serve accepts connections from ln until it is closed. The TLS listener waits out the
// accept errors that pass itself; the plain one does it here.
func (m *MQTT) serve(ln net.Listener, secure bool) {
	a := retryingAcceptor{ln: ln, log: m.log}
	for {
		nc, err := a.accept(m.ctx.Done())
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Error("MQTT listener stopped", "address", ln.Addr().String(), "error", err)
			}
			return
		}
		c := newConn(m, nc, secure)
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = nc.Close()
			return
		}
		m.conns[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go c.serve()
	}
}

// Close stops the listeners, disconnects every device (MQTT 5 devices with reason 0x8B
// "server shutting down") and waits for their connections to end.
func (m *MQTT) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	conns := make([]*conn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	err := m.tlsLn.Close()
	if m.plainLn != nil {
		err = errors.Join(err, ignoreNetClosed(m.plainLn.Close()))
	}
	for _, c := range conns {
		c.kickFor(packets.ErrServerShuttingDown)
	}
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	for _, s := range m.sessions {
		s.mu.Lock()
		s.end()
		s.mu.Unlock()
	}
	m.sessions = map[string]*session{}
	m.mu.Unlock()
	if m.facts != nil {
		err = errors.Join(err, m.facts.Close())
	}
	return err
}

func ignoreNetClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// DisconnectDevice closes a device's live connection, if any, with reason 0x87 "not
// authorized", and ends its session.
func (m *MQTT) DisconnectDevice(id string) bool {
	c := m.endSession(id)
	if c == nil {
		return false
	}
	c.kickFor(packets.ErrNotAuthorized)
	return true
}

// endSession ends a device's session and returns its live connection, nil when it has none: the
// caller closes it, with the reason it has.
func (m *MQTT) endSession(id string) *conn {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return nil
	}
	delete(m.sessions, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn
	s.conn = nil
	s.end()
	return c
}

// certificateIdentity is the device a TLS connection's verified client certificate names.
func certificateIdentity(c *conn) (string, *x509.Certificate, error) {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return "", nil, errors.New("not a TLS connection")
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return "", nil, errors.New("no client certificate")
	}
	cert := st.PeerCertificates[0]
	return cert.Subject.CommonName, cert, nil
}
