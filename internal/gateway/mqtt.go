// Package gateway holds the device-facing listeners: the embedded MQTT broker (MQTT 5 and
// 3.1.1 over TLS with client certificates) and the HTTPS batch endpoint. Both authenticate the
// device from its certificate, confine it to its own topic root, and hand telemetry batches to
// the ingest pipeline, acknowledging only what the pipeline made durable.
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
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/protocol"
)

// Listener IDs.
const (
	listenerTLS      = "tls"
	listenerInsecure = "insecure"
)

// Ingester stores a batch from a device and says how it went.
type Ingester interface {
	Ingest(ctx context.Context, device string, payload []byte) ingest.Result
}

var _ Ingester = (*ingest.Pipeline)(nil)

// MQTTOptions configure the broker.
type MQTTOptions struct {
	// Listen is the TLS listener address. Default ":8883".
	Listen string `yaml:"listen"`
	// InsecureListen, when set, adds a plain-TCP listener where the client ID alone names the
	// device. For development only; empty (the default) means none.
	InsecureListen string `yaml:"insecure_listen"`
	// MaxWritesPending is the per-client queue of outgoing publishes (commands, configuration,
	// OTA offers; acknowledgements do not queue). Default 64: 512 bytes per client, where the
	// broker's own default of 8,192 costs 64 KiB per idle client. A publish to a device whose
	// queue is full is dropped and counted by the broker.
	MaxWritesPending int32 `yaml:"max_writes_pending"`
	// ReadBufferSize is the per-client read buffer in bytes above the TLS record layer, which
	// buffers a whole record itself. Default 64: enough for the fixed header and remaining
	// length the broker reads byte by byte; the rest of a packet is read in one call, straight
	// into the packet's own buffer when it is larger than this one.
	ReadBufferSize int `yaml:"read_buffer_size"`
	// MaxSessionExpiry bounds, in seconds, how long the broker keeps a disconnected client's
	// session. Default 3,600.
	MaxSessionExpiry uint32 `yaml:"max_session_expiry"`
	// MaxPacketSize bounds an MQTT packet in bytes. Default 1 MiB.
	MaxPacketSize uint32 `yaml:"max_packet_size"`
	// HandshakeTimeout bounds, from accept, the wait for a handshake slot and the TLS
	// handshake on the MQTT listener; a client that has not completed one by then is
	// disconnected. Default 30 s: in a reconnect storm devices queue for a slot, and one
	// dropped after queueing retries later on a doubled backoff window.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// MaxConcurrentHandshakes bounds the TLS handshakes in progress at once; the others wait
	// in order within HandshakeTimeout. Default 8 per CPU.
	MaxConcurrentHandshakes int `yaml:"max_concurrent_handshakes"`
}

// DefaultMQTTOptions returns the defaults.
func DefaultMQTTOptions() MQTTOptions {
	return MQTTOptions{Listen: ":8883", MaxWritesPending: 64, ReadBufferSize: 64, MaxSessionExpiry: 3600, MaxPacketSize: 1 << 20,
		HandshakeTimeout: 30 * time.Second, MaxConcurrentHandshakes: 8 * runtime.GOMAXPROCS(0)}
}

// MQTT is the embedded broker.
type MQTT struct {
	srv      *mqtt.Server
	tlsLn    net.Listener
	plainLn  net.Listener
	log      *slog.Logger
	hook     *deviceHook
	serveErr chan error
}

// NewMQTT binds the listeners and prepares the broker; Start serves it. tlsConfig must carry the
// server certificate; NewMQTT sets client-certificate verification against clientCAs and the
// TLS 1.2 minimum.
//
// authz, when not nil, is asked at every connect whether the device may connect; facts, when
// not nil, receives what the device reports about itself in its CONNECT user properties.
func NewMQTT(opts MQTTOptions, tlsConfig *tls.Config, ing Ingester, authz Authorizer, facts FactReporter, logger *slog.Logger, reg prometheus.Registerer) (*MQTT, error) {
	d := DefaultMQTTOptions()
	if opts.Listen == "" {
		opts.Listen = d.Listen
	}
	if opts.MaxWritesPending <= 0 {
		opts.MaxWritesPending = d.MaxWritesPending
	}
	if opts.ReadBufferSize <= 0 {
		opts.ReadBufferSize = d.ReadBufferSize
	}
	if opts.MaxSessionExpiry == 0 {
		opts.MaxSessionExpiry = d.MaxSessionExpiry
	}
	if opts.MaxPacketSize == 0 {
		opts.MaxPacketSize = d.MaxPacketSize
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = d.HandshakeTimeout
	}
	if opts.MaxConcurrentHandshakes <= 0 {
		opts.MaxConcurrentHandshakes = d.MaxConcurrentHandshakes
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = opts.MaxWritesPending
	caps.MaximumSessionExpiryInterval = opts.MaxSessionExpiry
	caps.MaximumPacketSize = opts.MaxPacketSize
	caps.TopicAliasMaximum = topicAliasMaximum
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// Per-client buffers: the read buffer lives as long as the connection; the write
		// buffer only while packets queue.
		ClientNetReadBufferSize:  opts.ReadBufferSize,
		ClientNetWriteBufferSize: 2048,
		// The broker logs a line per connection and per dropped client at warning level;
		// Millwright counts those in metrics instead and keeps the broker's errors only.
		Logger: slog.New(brokerLogHandler{Handler: logger.Handler()}).With("component", "mqtt"),
	})
	m := &MQTT{srv: srv, log: logger, serveErr: make(chan error, 1)}
	if err := srv.AddHook(&aliasHook{srv: srv, max: topicAliasMaximum}, nil); err != nil {
		return nil, fmt.Errorf("add MQTT hook: %w", err)
	}
	m.hook = newDeviceHook(ing, authz, logger, reg)
	if facts != nil {
		m.hook.facts = newFactQueue(facts, logger, reg)
	}
	if err := srv.AddHook(m.hook, nil); err != nil {
		return nil, fmt.Errorf("add MQTT hook: %w", err)
	}
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_mqtt_connected_clients",
		Help: "MQTT clients connected now.",
	}, func() float64 { return float64(atomic.LoadInt64(&srv.Info.ClientsConnected)) })

	cfg := tlsConfig.Clone()
	cfg.MinVersion = tls.VersionTLS12
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen MQTT/TLS on %s: %w", opts.Listen, err)
	}
	failed := promauto.With(reg).NewCounter(prometheus.CounterOpts{
		Name: "millwright_mqtt_tls_handshake_failures_total",
		Help: "TLS handshakes on the MQTT listener that failed or timed out.",
	})
	hl := newHandshakeListener(ln, cfg, opts.HandshakeTimeout, opts.MaxConcurrentHandshakes, logger.With("component", "mqtt"), failed)
	m.tlsLn = hl
	if err := srv.AddListener(listeners.NewNet(listenerTLS, hl)); err != nil {
		return nil, errors.Join(fmt.Errorf("add MQTT listener: %w", err), hl.Close())
	}
	if opts.InsecureListen != "" {
		pl, err := net.Listen("tcp", opts.InsecureListen)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen insecure MQTT on %s: %w", opts.InsecureListen, err), ln.Close())
		}
		m.plainLn = pl
		if err := srv.AddListener(listeners.NewNet(listenerInsecure, pl)); err != nil {
			return nil, errors.Join(fmt.Errorf("add MQTT listener: %w", err), ln.Close(), pl.Close())
		}
		logger.Warn("plain MQTT listener enabled: devices are identified by client ID alone, for development only", "address", pl.Addr().String())
	}
	return m, nil
}

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
	if err := m.srv.Serve(); err != nil {
		return fmt.Errorf("serve MQTT: %w", err)
	}
	return nil
}

// Close stops the listeners and disconnects every client.
func (m *MQTT) Close() error {
	err := m.srv.Close()
	if m.hook.facts != nil {
		m.hook.facts.close()
	}
	return err
}

// DisconnectDevice closes a device's live session, if any, with reason 0x87 "not authorized".
func (m *MQTT) DisconnectDevice(id string) bool {
	cl, ok := m.srv.Clients.Get(id)
	if !ok || cl.Closed() {
		return false
	}
	_ = m.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	cl.Stop(errors.New("device disconnected by the server"))
	return true
}

// brokerLogHandler passes on the broker's errors only, and not the one it logs for every
// publish the device hook refuses (with the whole packet): those refusals are counted in
// metrics and answered with a reason code.
type brokerLogHandler struct{ slog.Handler }

func (h brokerLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError && h.Handler.Enabled(ctx, l)
}

func (h brokerLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet error" {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h brokerLogHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return brokerLogHandler{h.Handler.WithAttrs(a)}
}

func (h brokerLogHandler) WithGroup(name string) slog.Handler {
	return brokerLogHandler{h.Handler.WithGroup(name)}
}

// deviceHook authenticates devices, confines them to their topic root and ingests batches.
type deviceHook struct {
	mqtt.HookBase
	ing      Ingester
	authz    Authorizer
	facts    *factQueue
	log      *slog.Logger
	connects *prometheus.CounterVec
	acl      prometheus.Counter
}

func newDeviceHook(ing Ingester, authz Authorizer, logger *slog.Logger, reg prometheus.Registerer) *deviceHook {
	f := promauto.With(reg)
	return &deviceHook{
		ing:   ing,
		authz: authz,
		log:   logger,
		connects: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_mqtt_connects_total",
			Help: "MQTT connection attempts that reached authentication, by result.",
		}, []string{"result"}),
		acl: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_mqtt_acl_denied_total",
			Help: "Publishes and subscriptions refused because they left the device's topic root.",
		}),
	}
}

func (h *deviceHook) ID() string { return "millwright-device" }

func (h *deviceHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish:
		return true
	}
	return false
}

// OnConnectAuthenticate accepts a client on the TLS listener when its verified certificate's
// common name is a valid device ID equal to the client ID.
func (h *deviceHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	device, cert, err := deviceIdentity(cl)
	if err == nil && h.authz != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = h.authz.Authorize(ctx, device, cert)
		cancel()
	}
	if err != nil {
		h.connects.WithLabelValues("refused").Inc()
		h.log.Info("MQTT connection refused", "client", cl.ID, "remote", cl.Net.Remote, "error", err)
		return false
	}
	h.connects.WithLabelValues("accepted").Inc()
	if h.facts != nil {
		h.facts.report(device, connectFacts(pk))
	}
	h.log.Debug("device connected", "device", device, "remote", cl.Net.Remote, "mqtt", cl.Properties.ProtocolVersion)
	return true
}

func deviceIdentity(cl *mqtt.Client) (string, *x509.Certificate, error) {
	if err := protocol.ValidateDeviceID(cl.ID); err != nil {
		return "", nil, fmt.Errorf("client ID: %w", err)
	}
	if cl.Net.Listener == listenerInsecure {
		return cl.ID, nil, nil
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", nil, errors.New("not a TLS connection")
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return "", nil, errors.New("no client certificate")
	}
	cert := st.PeerCertificates[0]
	if cert.Subject.CommonName != cl.ID {
		return "", nil, fmt.Errorf("client ID %q differs from the certificate's device ID %q", cl.ID, cert.Subject.CommonName)
	}
	return cl.ID, cert, nil
}

// OnACLCheck lets a device publish and subscribe only under its own root mw/v1/<device>/.
func (h *deviceHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	device, _, ok := protocol.ParseTopic(topic)
	if ok && device == cl.ID {
		return true
	}
	h.acl.Inc()
	h.log.Info("MQTT topic refused", "device", cl.ID, "topic", topic, "write", write)
	return false
}

// OnPublish ingests telemetry batches. The broker writes the PUBACK when this returns, so it
// returns only once the batch is durable (or refused). MQTT 5 clients get the refusal as the
// PUBACK reason code; MQTT 3.1.1 has no reason codes, so a batch to retry later closes the
// connection (the client re-sends after reconnecting) and a batch to drop is acknowledged and
// counted.
func (h *deviceHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName != protocol.BatchTopic(cl.ID) {
		return pk, nil
	}
	res := h.ing.Ingest(context.Background(), cl.ID, pk.Payload)
	if res.Reason == protocol.ReasonNone {
		return pk, packets.CodeSuccessIgnore // stored; not forwarded to subscribers
	}
	if res.Reason != protocol.ReasonTooOld && res.Reason != protocol.ReasonTooNew {
		h.log.Debug("batch refused", "device", cl.ID, "reason", res.Reason.String(), "detail", res.Detail)
	}
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.ErrRejectPacket // nothing to acknowledge; counted by the pipeline
	case cl.Properties.ProtocolVersion == 5:
		return pk, packets.Code{Code: res.Reason.MQTTCode(), Reason: res.Reason.String() + ": " + res.Detail}
	}
	if res.Reason.Retry() {
		cl.Stop(fmt.Errorf("batch refused for retry: %s", res.Reason))
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}
