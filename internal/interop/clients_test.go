package interop

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// connectOpts is what a case asks of a connection.
type connectOpts struct {
	Clean     bool   // Clean Start (MQTT 5) or Clean Session (3.1.1)
	KeepAlive uint16 // seconds
	Expiry    uint32 // MQTT 5 Session Expiry Interval in seconds; 3.1.1 keeps a session when !Clean
	Subscribe string // a filter to subscribe to at QoS 1 once connected, or ""
}

// connack is what the client reports of the server's CONNACK.
type connack struct {
	Code           int  // reason code (MQTT 5) or return code (3.1.1)
	SessionPresent bool // only when the client shows it (see client.Shows)
	// Deferred is true when the client connects only with its first publish
	// (mosquitto_pub): the CONNACK is then checked by the publish.
	Deferred bool
}

type message struct {
	Topic, Payload string
	QoS            byte
}

// client is one MQTT client instance of a kind, holding at most one connection. Every method
// returns once the server has answered, or with an error.
type client interface {
	// Connect connects and, with opts.Subscribe, subscribes; it returns the CONNACK.
	Connect(ctx context.Context, opts connectOpts) (connack, error)
	// Publish publishes and returns once the exchange its QoS needs is complete.
	Publish(ctx context.Context, topic, payload string, qos byte) error
	// Messages delivers the messages the server sends.
	Messages() <-chan message
	// Lost is closed when the connection ended without Disconnect; LostCode is then the reason
	// code of the server's DISCONNECT, or -1 when the client was not told one.
	Lost() <-chan struct{}
	LostCode() int
	// Disconnect sends DISCONNECT and closes the connection.
	Disconnect(ctx context.Context) error
	// Trace is the client's own log of packets, for a failing test.
	Trace() string
}

// lostSignal records the first loss of a connection.
type lostSignal struct {
	once sync.Once
	ch   chan struct{}
	code int
}

func newLostSignal() *lostSignal { return &lostSignal{ch: make(chan struct{}), code: -1} }

func (l *lostSignal) set(code int) {
	l.once.Do(func() {
		l.code = code
		close(l.ch)
	})
}

// traceLog is a client's packet log.
type traceLog struct {
	mu    sync.Mutex
	start time.Time
	b     strings.Builder
}

func (tl *traceLog) add(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.start.IsZero() {
		tl.start = time.Now()
	}
	fmt.Fprintf(&tl.b, "%7.3fs ", time.Since(tl.start).Seconds())
	fmt.Fprintf(&tl.b, format, args...)
	tl.b.WriteByte('\n')
}

func (tl *traceLog) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.b.String()
}

// endpoint is where and as whom a client connects.
type endpoint struct {
	host, port        string
	device            string
	version           byte // 4 (MQTT 3.1.1) or 5
	tls               *tls.Config
	caPath            string
	certPath, keyPath string
	tap               *tap // the connections' relay
	t                 *testing.T
}

func (e endpoint) addr() string { return e.host + ":" + e.port }

// ---- Eclipse Paho Go, github.com/eclipse/paho.golang (MQTT 5) ----

type pahoGolang struct {
	ep    endpoint
	c     *paho.Client
	msgs  chan message
	lost  *lostSignal
	trace traceLog
}

func newPahoGolang(ep endpoint) client {
	return &pahoGolang{ep: ep, msgs: make(chan message, 16), lost: newLostSignal()}
}

func (p *pahoGolang) Connect(ctx context.Context, o connectOpts) (connack, error) {
	conn, err := (&tls.Dialer{Config: p.ep.tls}).DialContext(ctx, "tcp", p.ep.addr())
	if err != nil {
		return connack{}, err
	}
	p.c = paho.NewClient(paho.ClientConfig{
		ClientID: p.ep.device,
		Conn:     pahopackets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p.trace.add("received PUBLISH %q qos %d id %d", pr.Packet.Topic, pr.Packet.QoS, pr.Packet.PacketID)
			p.msgs <- message{Topic: pr.Packet.Topic, Payload: string(pr.Packet.Payload), QoS: pr.Packet.QoS}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			p.trace.add("received DISCONNECT 0x%02x", d.ReasonCode)
			p.lost.set(int(d.ReasonCode))
		},
		OnClientError: func(err error) {
			p.trace.add("client error: %v", err)
			p.lost.set(-1)
		},
	})
	cp := &paho.Connect{ClientID: p.ep.device, KeepAlive: o.KeepAlive, CleanStart: o.Clean}
	if o.Expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.Expiry}
	}
	p.trace.add("sending CONNECT clean %v keepalive %d expiry %d", o.Clean, o.KeepAlive, o.Expiry)
	ack, err := p.c.Connect(ctx, cp)
	if ack != nil {
		p.trace.add("received CONNACK 0x%02x session present %v", ack.ReasonCode, ack.SessionPresent)
	}
	if err != nil {
		_ = conn.Close()
		if ack != nil {
			return connack{Code: int(ack.ReasonCode)}, err
		}
		return connack{}, err
	}
	res := connack{Code: int(ack.ReasonCode), SessionPresent: ack.SessionPresent}
	if o.Subscribe != "" {
		sa, err := p.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: o.Subscribe, QoS: 1}}})
		if err != nil {
			return res, fmt.Errorf("subscribe: %w", err)
		}
		p.trace.add("received SUBACK %v", sa.Reasons)
		if len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
			return res, fmt.Errorf("SUBACK %v, want QoS 1 granted", sa.Reasons)
		}
	}
	return res, nil
}

func (p *pahoGolang) Publish(ctx context.Context, topic, payload string, qos byte) error {
	p.trace.add("sending PUBLISH qos %d", qos)
	resp, err := p.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if err != nil {
		return err
	}
	if resp != nil {
		p.trace.add("publish answered 0x%02x", resp.ReasonCode)
	}
	return nil
}

func (p *pahoGolang) Messages() <-chan message { return p.msgs }
func (p *pahoGolang) Lost() <-chan struct{}    { return p.lost.ch }
func (p *pahoGolang) LostCode() int            { return p.lost.code }
func (p *pahoGolang) Trace() string            { return p.trace.String() }

func (p *pahoGolang) Disconnect(ctx context.Context) error {
	p.lost.once.Do(func() {}) // from here on an ended connection is not a loss
	p.trace.add("sending DISCONNECT")
	return p.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// ---- Eclipse Paho Go v3, github.com/eclipse/paho.mqtt.golang (MQTT 3.1.1) ----

type pahoV3 struct {
	ep    endpoint
	c     pahov3.Client
	msgs  chan message
	lost  *lostSignal
	trace traceLog
}

func newPahoV3(ep endpoint) client {
	return &pahoV3{ep: ep, msgs: make(chan message, 16), lost: newLostSignal()}
}

func waitToken(ctx context.Context, tok pahov3.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pahoV3) Connect(ctx context.Context, o connectOpts) (connack, error) {
	opts := pahov3.NewClientOptions().
		AddBroker("tls://" + p.ep.addr()).
		SetClientID(p.ep.device).
		SetTLSConfig(p.ep.tls).
		SetProtocolVersion(4).
		SetCleanSession(o.Clean).
		SetKeepAlive(time.Duration(o.KeepAlive) * time.Second).
		SetAutoReconnect(false). // a session taken over stays taken
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ pahov3.Client, err error) {
			p.trace.add("connection lost: %v", err)
			p.lost.set(-1)
		}).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			p.trace.add("received PUBLISH %q qos %d id %d dup %v", m.Topic(), m.Qos(), m.MessageID(), m.Duplicate())
			p.msgs <- message{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos()}
		})
	p.c = pahov3.NewClient(opts)
	p.trace.add("sending CONNECT clean %v keepalive %d", o.Clean, o.KeepAlive)
	tok := p.c.Connect()
	if err := waitToken(ctx, tok); err != nil {
		return connack{Code: int(tok.(*pahov3.ConnectToken).ReturnCode())}, err
	}
	ct := tok.(*pahov3.ConnectToken)
	p.trace.add("received CONNACK %d session present %v", ct.ReturnCode(), ct.SessionPresent())
	res := connack{Code: int(ct.ReturnCode()), SessionPresent: ct.SessionPresent()}
	if o.Subscribe != "" {
		st := p.c.Subscribe(o.Subscribe, 1, nil)
		if err := waitToken(ctx, st); err != nil {
			return res, fmt.Errorf("subscribe: %w", err)
		}
		granted := st.(*pahov3.SubscribeToken).Result()
		p.trace.add("received SUBACK %v", granted)
		if granted[o.Subscribe] != 1 {
			return res, fmt.Errorf("SUBACK %v, want QoS 1 granted", granted)
		}
	}
	return res, nil
}

func (p *pahoV3) Publish(ctx context.Context, topic, payload string, qos byte) error {
	p.trace.add("sending PUBLISH qos %d", qos)
	return waitToken(ctx, p.c.Publish(topic, qos, false, payload))
}

func (p *pahoV3) Messages() <-chan message { return p.msgs }
func (p *pahoV3) Lost() <-chan struct{}    { return p.lost.ch }
func (p *pahoV3) LostCode() int            { return p.lost.code }
func (p *pahoV3) Trace() string            { return p.trace.String() }

func (p *pahoV3) Disconnect(context.Context) error {
	p.lost.once.Do(func() {})
	p.trace.add("sending DISCONNECT")
	p.c.Disconnect(250)
	return nil
}

// ---- a client in another process, driven over JSON lines (Paho Python, MQTT.js) ----

// driverEvent is one line a driver prints.
type driverEvent struct {
	Ev             string `json:"ev"`
	Code           *int   `json:"code"`
	SessionPresent bool   `json:"session_present"`
	Codes          []int  `json:"codes"`
	Topic          string `json:"topic"`
	Payload        string `json:"payload"`
	QoS            byte   `json:"qos"`
	Text           string `json:"text"`
	Detail         string `json:"detail"`
}

type driver struct {
	ep      endpoint
	name    string
	argv    []string
	env     []string
	cmd     *exec.Cmd
	stdin   interface{ Write([]byte) (int, error) }
	replies chan driverEvent
	msgs    chan message
	lost    *lostSignal
	closing bool
	trace   traceLog
	exited  chan struct{}
}

// newDriver runs argv (the driver program and its flags) for one client instance; it ends
// with the test.
func newDriver(ep endpoint, name string, argv []string, env []string) client {
	d := &driver{ep: ep, name: name, argv: argv, env: env, replies: make(chan driverEvent, 16),
		msgs: make(chan message, 16), lost: newLostSignal(), exited: make(chan struct{})}
	args := append(append([]string(nil), argv[1:]...), "--host", ep.host, "--port", ep.port,
		"--ca", ep.caPath, "--cert", ep.certPath, "--key", ep.keyPath, "--id", ep.device,
		"--version", strconv.Itoa(int(ep.version)))
	d.cmd = exec.Command(argv[0], args...)
	d.cmd.Env = append(d.cmd.Environ(), env...)
	stdin, err := d.cmd.StdinPipe()
	if err != nil {
		ep.t.Fatalf("%s: %v", name, err)
	}
	d.stdin = stdin
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		ep.t.Fatalf("%s: %v", name, err)
	}
	d.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			d.trace.add("stderr: %s", l)
		}
		return len(b), nil
	})
	if err := d.cmd.Start(); err != nil {
		ep.t.Fatalf("start %s: %v", name, err)
	}
	go d.read(bufio.NewScanner(stdout))
	ep.t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (d *driver) read(sc *bufio.Scanner) {
	defer func() {
		_ = d.cmd.Wait()
		d.lost.set(-1)
		close(d.exited)
	}()
	for sc.Scan() {
		var ev driverEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			d.trace.add("stdout: %s", sc.Text())
			continue
		}
		switch ev.Ev {
		case "log":
			d.trace.add("%s", ev.Text)
		case "message":
			d.trace.add("event: message %q qos %d", ev.Topic, ev.QoS)
			d.msgs <- message{Topic: ev.Topic, Payload: ev.Payload, QoS: ev.QoS}
		case "lost":
			code := -1
			if ev.Code != nil {
				code = *ev.Code
			}
			d.trace.add("event: lost code %d %s", code, ev.Detail)
			d.lost.set(code)
		default:
			d.trace.add("event: %s", sc.Text())
			d.replies <- ev
		}
	}
}

func (d *driver) send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	_, err = d.stdin.Write(append(b, '\n'))
	return err
}

// await waits for the reply ev; a lost connection or an exited driver is an error.
func (d *driver) await(ctx context.Context, ev string) (driverEvent, error) {
	for {
		select {
		case r := <-d.replies:
			if r.Ev == ev {
				return r, nil
			}
		case <-d.lost.ch:
			if !d.closing {
				return driverEvent{}, fmt.Errorf("%s: connection lost (code %d) while waiting for %s", d.name, d.lost.code, ev)
			}
		case <-ctx.Done():
			return driverEvent{}, fmt.Errorf("%s: waiting for %s: %w", d.name, ev, ctx.Err())
		}
	}
}

func (d *driver) Connect(ctx context.Context, o connectOpts) (connack, error) {
	if err := d.send(map[string]any{"op": "connect", "clean": o.Clean, "keepalive": o.KeepAlive, "expiry": o.Expiry}); err != nil {
		return connack{}, err
	}
	r, err := d.await(ctx, "connack")
	if err != nil {
		return connack{}, err
	}
	res := connack{SessionPresent: r.SessionPresent}
	if r.Code != nil {
		res.Code = *r.Code
	}
	if res.Code != 0 {
		return res, fmt.Errorf("CONNACK code %d", res.Code)
	}
	if o.Subscribe != "" {
		if err := d.send(map[string]any{"op": "subscribe", "topic": o.Subscribe, "qos": 1}); err != nil {
			return res, err
		}
		r, err := d.await(ctx, "subscribed")
		if err != nil {
			return res, err
		}
		if len(r.Codes) != 1 || r.Codes[0] != 1 {
			return res, fmt.Errorf("SUBACK %v, want QoS 1 granted", r.Codes)
		}
	}
	return res, nil
}

func (d *driver) Publish(ctx context.Context, topic, payload string, qos byte) error {
	if err := d.send(map[string]any{"op": "publish", "topic": topic, "payload": payload, "qos": qos}); err != nil {
		return err
	}
	r, err := d.await(ctx, "published")
	if err != nil {
		return err
	}
	if r.Code != nil && *r.Code >= 0x80 {
		return fmt.Errorf("publish answered 0x%02x", *r.Code)
	}
	return nil
}

func (d *driver) Messages() <-chan message { return d.msgs }
func (d *driver) Lost() <-chan struct{}    { return d.lost.ch }
func (d *driver) LostCode() int            { return d.lost.code }
func (d *driver) Trace() string            { return d.trace.String() }

func (d *driver) Disconnect(ctx context.Context) error {
	d.closing = true
	d.lost.once.Do(func() {})
	if err := d.send(map[string]any{"op": "disconnect"}); err != nil {
		return err
	}
	_, err := d.await(ctx, "closed")
	return err
}

// ---- mosquitto_sub and mosquitto_pub (libmosquitto) ----

// mosquitto drives the command-line clients: a connection that subscribes is a mosquitto_sub
// process (-d prints its packets, which this reads); a connection that publishes is one
// mosquitto_pub run, which connects, publishes and disconnects.
type mosquitto struct {
	ep    endpoint
	opts  connectOpts
	sub   *exec.Cmd
	msgs  chan message
	lost  *lostSignal
	trace traceLog

	mu       sync.Mutex
	closing  bool
	connack  chan int
	suback   chan int
	exited   chan struct{}
	connects int
}

func newMosquitto(ep endpoint) client {
	return &mosquitto{ep: ep, msgs: make(chan message, 16), lost: newLostSignal(),
		connack: make(chan int, 4), suback: make(chan int, 4), exited: make(chan struct{})}
}

func (m *mosquitto) common(o connectOpts) []string {
	v := "mqttv311"
	if m.ep.version == 5 {
		v = "mqttv5"
	}
	args := []string{"-d", "-h", m.ep.host, "-p", m.ep.port, "-V", v,
		"--cafile", m.ep.caPath, "--cert", m.ep.certPath, "--key", m.ep.keyPath,
		"-i", m.ep.device, "-k", strconv.Itoa(int(o.KeepAlive))}
	if !o.Clean {
		args = append(args, "-c")
		if m.ep.version == 5 {
			args = append(args, "-x", strconv.FormatUint(uint64(o.Expiry), 10))
		}
	}
	return args
}

var (
	reConnack    = regexp.MustCompile(`received CONNACK \((\d+)\)`)
	reSubscribed = regexp.MustCompile(`^Subscribed \(mid: \d+\): (\d+)`)
	reDisconnect = regexp.MustCompile(`(?i)received DISCONNECT \((\d+)\)`)
	reMessage    = regexp.MustCompile(`^=msg (\d) (\S+) ([0-9a-f]*)$`)
)

func (m *mosquitto) Connect(ctx context.Context, o connectOpts) (connack, error) {
	m.opts = o
	if o.Subscribe == "" {
		return connack{Deferred: true}, nil
	}
	args := append(m.common(o), "-q", "1", "-t", o.Subscribe, "-F", "=msg %q %t %x")
	// mosquitto_sub buffers its standard output when it is not a terminal: stdbuf (coreutils)
	// makes it write each line as it happens.
	m.sub = exec.Command("stdbuf", append([]string{"-oL", "mosquitto_sub"}, args...)...)
	stdout, err := m.sub.StdoutPipe()
	if err != nil {
		return connack{}, err
	}
	m.sub.Stderr = m.sub.Stdout
	m.trace.add("mosquitto_sub %s", strings.Join(args, " "))
	if err := m.sub.Start(); err != nil {
		return connack{}, err
	}
	go m.read(bufio.NewScanner(stdout))
	m.ep.t.Cleanup(func() {
		_ = m.sub.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(5 * time.Second):
			_ = m.sub.Process.Kill()
			<-m.exited
		}
	})
	var res connack
	select {
	case res.Code = <-m.connack:
	case <-m.lost.ch:
		return res, errors.New("mosquitto_sub ended before its CONNACK")
	case <-ctx.Done():
		return res, fmt.Errorf("waiting for CONNACK: %w", ctx.Err())
	}
	if res.Code != 0 {
		return res, fmt.Errorf("CONNACK code %d", res.Code)
	}
	go m.watch(m.ep.tap.conn(m.ep.tap.count() - 1))
	select {
	case q := <-m.suback:
		if q != 1 {
			return res, fmt.Errorf("SUBACK granted %d, want QoS 1", q)
		}
	case <-m.lost.ch:
		return res, errors.New("mosquitto_sub ended before its SUBACK")
	case <-ctx.Done():
		return res, fmt.Errorf("waiting for SUBACK: %w", ctx.Err())
	}
	return res, nil
}

// watch stops mosquitto_sub once its connection ended without Disconnect. libmosquitto
// reconnects on its own a second after a lost connection, and mosquitto_sub has no option
// not to: after a takeover it would take the session back. It has a moment first to print
// the server's DISCONNECT (MQTT 5), which tells the reason.
func (m *mosquitto) watch(tc *tapConn) {
	select {
	case <-tc.done:
	case <-m.exited:
		return
	}
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return
	}
	select {
	case <-m.lost.ch:
	case <-time.After(200 * time.Millisecond):
	}
	_ = m.sub.Process.Kill()
	m.lost.set(-1)
}

func (m *mosquitto) read(sc *bufio.Scanner) {
	defer func() {
		_ = m.sub.Wait()
		m.lost.set(-1)
		close(m.exited)
	}()
	for sc.Scan() {
		line := sc.Text()
		if mm := reMessage.FindStringSubmatch(line); mm != nil {
			payload, _ := hex.DecodeString(mm[3])
			q, _ := strconv.Atoi(mm[1])
			m.msgs <- message{Topic: mm[2], Payload: string(payload), QoS: byte(q)}
			continue
		}
		m.trace.add("%s", line)
		switch {
		case strings.Contains(line, "sending CONNECT"):
			m.mu.Lock()
			m.connects++
			n := m.connects
			m.mu.Unlock()
			if n > 1 {
				// libmosquitto reconnects on its own after a lost connection; a second CONNECT
				// is the old connection coming back.
				m.lost.set(-1)
			}
		case reConnack.MatchString(line):
			n, _ := strconv.Atoi(reConnack.FindStringSubmatch(line)[1])
			m.connack <- n
		case reSubscribed.MatchString(line):
			n, _ := strconv.Atoi(reSubscribed.FindStringSubmatch(line)[1])
			m.suback <- n
		case reDisconnect.MatchString(line):
			n, _ := strconv.Atoi(reDisconnect.FindStringSubmatch(line)[1])
			m.mu.Lock()
			closing := m.closing
			m.mu.Unlock()
			if !closing {
				m.lost.set(n)
			}
		}
	}
}

func (m *mosquitto) Publish(ctx context.Context, topic, payload string, qos byte) error {
	if m.sub != nil {
		return errors.New("mosquitto_sub does not publish; mosquitto_pub publishes on a connection of its own")
	}
	args := append(m.common(m.opts), "-q", strconv.Itoa(int(qos)), "-t", topic, "-m", payload)
	out, err := exec.CommandContext(ctx, "mosquitto_pub", args...).CombinedOutput()
	m.trace.add("mosquitto_pub %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		return fmt.Errorf("mosquitto_pub: %w: %s", err, out)
	}
	want := map[byte]string{1: "received PUBACK", 2: "received PUBCOMP"}[qos]
	if want != "" && !strings.Contains(string(out), want) {
		return fmt.Errorf("mosquitto_pub: no %q in its trace", want)
	}
	return nil
}

func (m *mosquitto) Messages() <-chan message { return m.msgs }
func (m *mosquitto) Lost() <-chan struct{}    { return m.lost.ch }
func (m *mosquitto) LostCode() int            { return m.lost.code }
func (m *mosquitto) Trace() string            { return m.trace.String() }

// Disconnect interrupts mosquitto_sub, which then sends DISCONNECT and exits.
func (m *mosquitto) Disconnect(ctx context.Context) error {
	if m.sub == nil {
		return nil
	}
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.lost.once.Do(func() {})
	if err := m.sub.Process.Signal(syscall.SIGINT); err != nil {
		return err
	}
	select {
	case <-m.exited:
	case <-ctx.Done():
		return fmt.Errorf("mosquitto_sub did not exit: %w", ctx.Err())
	}
	if !strings.Contains(m.trace.String(), "sending DISCONNECT") {
		return errors.New("mosquitto_sub exited without sending DISCONNECT")
	}
	return nil
}
