package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/protocol"
)

// MQTTJSEnv names the node_modules directory that holds MQTT.js (the npm package mqtt at the
// version of testdata/mqttjs/package-lock.json). scripts/test installs it with npm ci outside
// the repository and sets it; without it the test fails.
const MQTTJSEnv = "MILLWRIGHT_MQTTJS"

// debianPython is Debian's interpreter, which has python3-paho-mqtt; a python3 earlier on
// PATH (pyenv) does not.
const debianPython = "/usr/bin/python3"

// opTimeout bounds every step of a case: a connect, a publish, a message to arrive.
const opTimeout = 15 * time.Second

// clientKind is one MQTT client library or tool.
type clientKind struct {
	name string
	// versions are the MQTT protocol levels the client speaks (4 is 3.1.1); a level it does
	// not speak is a gap with the reason in noVersion.
	versions  []byte
	noVersion map[byte]string
	// keepAlive is the keep-alive of the keep-alive case, in seconds: short, with a margin
	// for a loaded machine (the client pings after one period, the server waits 1.5); or
	// the shortest the client accepts.
	keepAlive uint16
	// hides lists what the client does not show its application, by check: the check is
	// then made another way, or logged as a gap (docs/protocol.md, "Client interoperability").
	hides map[string]string
	// resubscribes: the client cannot connect without subscribing (mosquitto_sub), so a
	// resumed session is subscribed to again.
	resubscribes bool
	newClient    func(endpoint) client
}

// Checks a client may not show.
const (
	showsSessionPresent   = "session present"
	showsDisconnectReason = "disconnect reason"
)

func clientKinds(t *testing.T) []clientKind {
	mqttjs := os.Getenv(MQTTJSEnv)
	return []clientKind{
		{
			name: "mosquitto", versions: []byte{4, 5}, keepAlive: 5, resubscribes: true,
			hides: map[string]string{
				showsSessionPresent: "mosquitto_sub does not print the CONNACK's Session Present flag; the queued message it receives shows the session was resumed",
			},
			newClient: newMosquitto,
		},
		{
			name: "paho-golang", versions: []byte{5}, keepAlive: 3,
			noVersion: map[byte]string{4: "paho.golang speaks MQTT 5 only"},
			newClient: newPahoGolang,
		},
		{
			name: "paho-v3", versions: []byte{4}, keepAlive: 3,
			noVersion: map[byte]string{5: "Eclipse Paho Go v3 (paho.mqtt.golang) speaks MQTT 3.1 and 3.1.1 only"},
			newClient: newPahoV3,
		},
		{
			name: "paho-python", versions: []byte{4, 5}, keepAlive: 3,
			newClient: func(ep endpoint) client {
				return newDriver(ep, "paho-python", []string{debianPython, "testdata/paho_client.py"}, nil)
			},
		},
		{
			name: "mqttjs", versions: []byte{4, 5}, keepAlive: 3,
			newClient: func(ep endpoint) client {
				return newDriver(ep, "mqttjs", []string{"node", "testdata/mqttjs/client.js"}, []string{"NODE_PATH=" + mqttjs})
			},
		},
	}
}

// checkTools fails the test when a client the matrix needs is not installed: each is a
// documented part of the suite, installed by scripts/test.
func checkTools(t *testing.T) {
	for _, bin := range []string{"mosquitto_pub", "mosquitto_sub"} {
		_, err := exec.LookPath(bin)
		require.NoError(t, err, "%s is needed (Debian package mosquitto-clients; scripts/test installs it)", bin)
	}
	out, err := exec.Command(debianPython, "-c", "import paho.mqtt; print(paho.mqtt.__version__)").CombinedOutput()
	require.NoError(t, err, "Eclipse Paho Python is needed (Debian package python3-paho-mqtt; scripts/test installs it): %s", out)
	t.Logf("Eclipse Paho Python %s", strings.TrimSpace(string(out)))

	dir := os.Getenv(MQTTJSEnv)
	require.NotEmpty(t, dir, "MQTT.js is needed: %s must name the node_modules directory scripts/test installs it in", MQTTJSEnv)
	_, err = exec.LookPath("node")
	require.NoError(t, err, "node is needed for MQTT.js (Debian package nodejs; scripts/test installs it)")
	var lock struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	b, err := os.ReadFile("testdata/mqttjs/package-lock.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &lock))
	want := lock.Packages["node_modules/mqtt"].Version
	var installed struct{ Version string }
	b, err = os.ReadFile(filepath.Join(dir, "mqtt", "package.json"))
	require.NoError(t, err, "MQTT.js is not installed in %s=%s (scripts/test installs it)", MQTTJSEnv, dir)
	require.NoError(t, json.Unmarshal(b, &installed))
	require.Equal(t, want, installed.Version, "MQTT.js in %s is not the version of testdata/mqttjs/package-lock.json", dir)
	t.Logf("MQTT.js %s", installed.Version)
}

// rig is the server every cell of the matrix talks to.
type rig struct {
	srv    *server.Server
	dir    string // device certificates
	caPath string
	api    *http.Client
}

func newRig(t *testing.T) *rig {
	srv := servertest.Start(t, nil)
	r := &rig{srv: srv, dir: t.TempDir(), caPath: filepath.Join(srv.DataDir(), pki.CAFile)}
	r.api = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	return r
}

// endpoint registers a device with a certificate of its own, written to files for the
// clients that read files, and returns where and as whom its clients connect: through tp.
func (r *rig) endpoint(t *testing.T, device string, version byte, tp *tap) endpoint {
	t.Helper()
	pair, err := r.srv.CA().DeviceKeyPair(device, time.Now(), 24*time.Hour)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	require.NoError(t, r.srv.Registry().AddCertificate(context.Background(), device, leaf, true))
	key, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	require.NoError(t, err)
	ep := endpoint{
		t: t, host: "127.0.0.1", port: tp.port(), tap: tp, device: device, version: version,
		caPath:   r.caPath,
		certPath: filepath.Join(r.dir, device+".crt"),
		keyPath:  filepath.Join(r.dir, device+".key"),
		tls: &tls.Config{RootCAs: r.srv.CA().Pool(), Certificates: []tls.Certificate{pair},
			ServerName: "localhost", MinVersion: tls.VersionTLS12},
	}
	require.NoError(t, os.WriteFile(ep.certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(ep.keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600))
	return ep
}

// query runs an instant PromQL query through the HTTPS API and returns its only sample.
func (r *rig) query(t *testing.T, q string) (float64, bool) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+r.srv.HTTPAddr().String()+"/api/v1/query?"+url.Values{"query": {q}}.Encode(), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+r.srv.AdminToken())
	resp, err := r.api.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, "query %s: %s", q, body.Error)
	if len(body.Data.Result) != 1 {
		return 0, false
	}
	v, err := strconv.ParseFloat(body.Data.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	return v, true
}

// metric sums a counter of the server's /metrics over all its series; it must be there.
func (r *rig) metric(t *testing.T, name string) float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+r.srv.HTTPAddr().String()+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+r.srv.AdminToken())
	resp, err := r.api.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET /metrics")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var sum float64
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, err := strconv.ParseFloat(f[1], 64)
			require.NoError(t, err)
			sum += v
			found = true
		}
	}
	require.True(t, found, "no metric %s", name)
	return sum
}

// cell is one client kind at one MQTT version on one case, with a device of its own.
type cell struct {
	*rig
	kind    clientKind
	version byte
	device  string
	tap     *tap
	ep      endpoint
}

// client makes a new instance of the cell's client.
func (c *cell) client() client { return c.kind.newClient(c.ep) }

func (c *cell) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// connect connects cl and fails the test on an error or a refusal.
func (c *cell) connect(t *testing.T, cl client, o connectOpts) connack {
	t.Helper()
	ack, err := cl.Connect(c.ctx(t), o)
	require.NoError(t, err, "connect")
	if !ack.Deferred {
		require.Zero(t, ack.Code, "CONNACK code")
	}
	return ack
}

// sessionPresent checks the CONNACK's Session Present flag where the client shows it.
func (c *cell) sessionPresent(t *testing.T, ack connack, want bool) {
	t.Helper()
	if why, hidden := c.kind.hides[showsSessionPresent]; hidden || ack.Deferred {
		t.Logf("gap: %s", why)
		return
	}
	require.Equal(t, want, ack.SessionPresent, "CONNACK Session Present")
}

// receive waits for the next message to cl and checks it.
func (c *cell) receive(t *testing.T, cl client, want message) {
	t.Helper()
	select {
	case m := <-cl.Messages():
		require.Equal(t, want, m)
	case <-cl.Lost():
		t.Fatalf("connection lost (code %d) while waiting for %q", cl.LostCode(), want.Payload)
	case <-time.After(opTimeout):
		t.Fatalf("no message %q within %v", want.Payload, opTimeout)
	}
}

// serverPublish sends a message to the device as the server does, and checks one of its
// subscriptions matched.
func (c *cell) serverPublish(t *testing.T, topic, payload string, qos byte) {
	t.Helper()
	matched, err := c.srv.MQTT().Publish(c.device, topic, []byte(payload), qos)
	require.NoError(t, err)
	require.True(t, matched, "no subscription of %s matches %s", c.device, topic)
}

// commandTopic is where the server sends the device a message in these cases.
func (c *cell) commandTopic() string { return protocol.DeviceRoot(c.device) + "cmd/interop" }

type interopCase struct {
	name string
	run  func(t *testing.T, c *cell)
}

var cases = []interopCase{
	{"connect", testConnect},
	{"publish-qos0", testPublish(0)},
	{"publish-qos1", testPublish(1)},
	{"publish-qos2", testPublish(2)},
	{"subscribe", testSubscribe},
	{"keep-alive", testKeepAlive},
	{"takeover", testTakeover},
	{"persistent-session", testPersistentSession},
}

// cellsAtOnce bounds the cells run at once. Most of a cell's time is waiting — for a
// keep-alive period, a client process to start, a message — so the matrix runs its cells
// side by side rather than within go test's -parallel, which is the number of CPUs.
const cellsAtOnce = 8

// TestInterop runs every client kind at every MQTT version it speaks through every case,
// each cell with a device of its own, against one server with a real TLS listener.
func TestInterop(t *testing.T) {
	checkTools(t)
	r := newRig(t)
	protocolErrors := r.metric(t, "millwright_mqtt_protocol_errors_total")
	slots := make(chan struct{}, cellsAtOnce)
	// t.Run may be called from several goroutines at once; each returns once its subtest
	// has, so the WaitGroups keep every subtest within its parent.
	t.Run("matrix", func(t *testing.T) {
		var kinds sync.WaitGroup
		for _, kind := range clientKinds(t) {
			kinds.Go(func() {
				t.Run(kind.name, func(t *testing.T) {
					// A version the client does not speak is no cell: it is a documented gap.
					for _, version := range []byte{4, 5} {
						why, gap := kind.noVersion[version]
						require.NotEqual(t, gap, slices.Contains(kind.versions, version),
							"MQTT %s: a client either speaks a version or names why not", versionName(version))
						if gap {
							t.Logf("gap, MQTT %s: %s", versionName(version), why)
						}
					}
					var versions sync.WaitGroup
					for _, version := range kind.versions {
						versions.Go(func() {
							t.Run(versionName(version), func(t *testing.T) {
								var cells sync.WaitGroup
								for _, tc := range cases {
									cells.Go(func() {
										slots <- struct{}{}
										defer func() { <-slots }()
										t.Run(tc.name, func(t *testing.T) { runCell(t, r, kind, version, tc) })
									})
								}
								cells.Wait()
							})
						})
					}
					versions.Wait()
				})
			})
		}
		kinds.Wait()
	})
	// No client, at any version, tripped the server's protocol checks.
	require.Equal(t, protocolErrors, r.metric(t, "millwright_mqtt_protocol_errors_total"), "protocol errors")
}

func runCell(t *testing.T, r *rig, kind clientKind, version byte, tc interopCase) {
	c := &cell{rig: r, kind: kind, version: version, tap: newTap(t, r.srv.MQTTAddr().String()),
		device: fmt.Sprintf("%s-%d-%s", kind.name, version, tc.name)}
	c.ep = r.endpoint(t, c.device, version, c.tap)
	tc.run(t, c)
}

func versionName(v byte) string {
	if v == 4 {
		return "3.1.1"
	}
	return "5"
}

// traced prints each client's own packet log when the test fails.
func traced(t *testing.T, clients ...client) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, cl := range clients {
			t.Logf("client %d packet log:\n%s", i+1, cl.Trace())
		}
	})
}

// testConnect: the client connects with Clean Start, subscribes to its own topic tree, and
// disconnects.
func testConnect(t *testing.T, c *cell) {
	cl := c.client()
	traced(t, cl)
	ack := c.connect(t, cl, connectOpts{Clean: true, KeepAlive: 30, Subscribe: protocol.DeviceFilter(c.device)})
	c.sessionPresent(t, ack, false)
	require.NoError(t, cl.Disconnect(c.ctx(t)))
	require.Equal(t, 1, c.tap.count(), "connections")
	select {
	case <-c.tap.conn(0).done:
	case <-time.After(opTimeout):
		t.Fatal("the connection did not end after DISCONNECT")
	}
}

// testPublish: the client publishes a SenML JSON batch to its batch topic at qos, and the
// values are stored: at once for QoS 1 and 2, whose acknowledgement comes only once the batch
// is durable; eventually for QoS 0.
func testPublish(qos byte) func(*testing.T, *cell) {
	return func(t *testing.T, c *cell) {
		cl := c.client()
		traced(t, cl)
		c.connect(t, cl, connectOpts{Clean: true, KeepAlive: 30})
		temp := 20 + float64(qos) + float64(c.version)/10
		batch := fmt.Sprintf(`[{"bn":"","n":"interop_temperature","u":"Cel","v":%g},{"n":"interop_door_open","vb":true}]`, temp)
		require.NoError(t, cl.Publish(c.ctx(t), protocol.BatchTopic(c.device), batch, qos))
		tempQuery := fmt.Sprintf(`interop_temperature{device=%q,unit="Cel"}`, c.device)
		doorQuery := fmt.Sprintf(`interop_door_open{device=%q}`, c.device)
		if qos == 0 {
			require.Eventually(t, func() bool { _, ok := c.query(t, tempQuery); return ok }, opTimeout, 20*time.Millisecond)
		}
		v, ok := c.query(t, tempQuery)
		require.True(t, ok, "%s is not stored", tempQuery)
		require.Equal(t, temp, v)
		v, ok = c.query(t, doorQuery)
		require.True(t, ok, "%s is not stored", doorQuery)
		require.Equal(t, 1.0, v)
		require.NoError(t, cl.Disconnect(c.ctx(t)))
	}
}

// testSubscribe: the client subscribes to its own topic tree with a wildcard, and receives
// what the server sends it at QoS 0 and 1.
func testSubscribe(t *testing.T, c *cell) {
	cl := c.client()
	traced(t, cl)
	c.connect(t, cl, connectOpts{Clean: true, KeepAlive: 30, Subscribe: protocol.DeviceFilter(c.device)})
	for _, qos := range []byte{0, 1} {
		payload := fmt.Sprintf("hello at QoS %d", qos)
		c.serverPublish(t, c.commandTopic(), payload, qos)
		c.receive(t, cl, message{Topic: c.commandTopic(), Payload: payload, QoS: qos})
	}
	require.NoError(t, cl.Disconnect(c.ctx(t)))
}

// testKeepAlive: with a short keep-alive (kind.keepAlive), an idle connection lasts
// two and a half keep-alive periods — the server ends one silent for 1.5 — because the client
// pings and the server answers; then a message still reaches it on the same connection.
func testKeepAlive(t *testing.T, c *cell) {
	cl := c.client()
	traced(t, cl)
	k := time.Duration(c.kind.keepAlive) * time.Second
	c.connect(t, cl, connectOpts{Clean: true, KeepAlive: c.kind.keepAlive, Subscribe: protocol.DeviceFilter(c.device)})
	tc := c.tap.conn(0)
	up, down := tc.up.Load(), tc.down.Load()
	idle := time.NewTimer(k * 5 / 2)
	defer idle.Stop()
	select {
	case <-idle.C:
	case <-tc.done:
		t.Fatalf("the %s ended the connection while the client kept alive every %v", tc.endedBy, k)
	case <-cl.Lost():
		t.Fatalf("connection lost (code %d) while the client kept alive every %v", cl.LostCode(), k)
	}
	require.GreaterOrEqual(t, tc.up.Load()-up, int64(2), "the client's pings in %v", k*5/2)
	require.GreaterOrEqual(t, tc.down.Load()-down, int64(2), "the server's answers in %v", k*5/2)
	c.serverPublish(t, c.commandTopic(), "still there", 1)
	c.receive(t, cl, message{Topic: c.commandTopic(), Payload: "still there", QoS: 1})
	require.Equal(t, 1, c.tap.count(), "connections: the client reconnected")
	require.NoError(t, cl.Disconnect(c.ctx(t)))
}

// testTakeover: a second connection with the same client ID takes the session over; the
// first is told (MQTT 5: DISCONNECT 0x8E "session taken over"; 3.1.1 has no DISCONNECT from
// the server, so its connection is closed) and does not come back; the second gets the
// device's messages.
func testTakeover(t *testing.T, c *cell) {
	first, second := c.client(), c.client()
	traced(t, first, second)
	o := connectOpts{Clean: true, KeepAlive: 30, Subscribe: protocol.DeviceFilter(c.device)}
	c.connect(t, first, o)
	c.connect(t, second, o)
	select {
	case <-first.Lost():
	case <-time.After(opTimeout):
		t.Fatal("the first connection was not told of the takeover")
	}
	if c.version == 5 {
		if why, hidden := c.kind.hides[showsDisconnectReason]; hidden {
			t.Logf("gap: %s", why)
		} else {
			require.Equal(t, 0x8E, first.LostCode(), "the first connection's DISCONNECT reason")
		}
	}
	select {
	case <-c.tap.conn(0).done:
	case <-time.After(opTimeout):
		t.Fatal("the first connection stayed open")
	}
	c.serverPublish(t, c.commandTopic(), "to the new connection", 1)
	c.receive(t, second, message{Topic: c.commandTopic(), Payload: "to the new connection", QoS: 1})
	require.Equal(t, 2, c.tap.count(), "connections: the first came back")
	require.False(t, c.tap.conn(1).ended(), "the second connection ended")
	require.NoError(t, second.Disconnect(c.ctx(t)))
}

// testPersistentSession: the client connects without Clean Start (MQTT 5 with a session
// expiry), subscribes and disconnects; a QoS 1 message sent while it is away is kept; a new
// client instance reconnects without Clean Start, finds Session Present set and receives it.
func testPersistentSession(t *testing.T, c *cell) {
	const expiry = 300
	first := c.client()
	traced(t, first)
	ack := c.connect(t, first, connectOpts{Clean: false, KeepAlive: 30, Expiry: expiry, Subscribe: protocol.DeviceFilter(c.device)})
	c.sessionPresent(t, ack, false)
	require.NoError(t, first.Disconnect(c.ctx(t)))
	select {
	case <-c.tap.conn(0).done:
	case <-time.After(opTimeout):
		t.Fatal("the connection did not end after DISCONNECT")
	}

	c.serverPublish(t, c.commandTopic(), "queued while away", 1)

	second := c.client()
	traced(t, second)
	o := connectOpts{Clean: false, KeepAlive: 30, Expiry: expiry}
	if c.kind.resubscribes {
		o.Subscribe = protocol.DeviceFilter(c.device)
	}
	ack = c.connect(t, second, o)
	c.sessionPresent(t, ack, true)
	c.receive(t, second, message{Topic: c.commandTopic(), Payload: "queued while away", QoS: 1})
	require.NoError(t, second.Disconnect(c.ctx(t)))
}
