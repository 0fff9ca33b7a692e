package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

var cborZstd = protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true}

func encode(t *testing.T, p protocol.Pack, enc protocol.Encoding) []byte {
	t.Helper()
	b, err := protocol.Encode(p, enc)
	require.NoError(t, err)
	return b
}

func publish(ctx context.Context, c *paho.Client, device string, payload []byte) (*paho.PublishResponse, error) {
	return c.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic(device), QoS: 1, Payload: payload})
}

// TestEndToEndMQTT publishes 1,000 zstd-CBOR batches of 100 measurements from a real MQTT 5
// client over TLS and reads exactly 100,000 samples with the right values back through PromQL.
func TestEndToEndMQTT(t *testing.T) {
	s := startServer(t, nil)
	const device, batches, perBatch, names = "e2e-1", 1000, 100, 10
	c := mustConnect(t, s, device)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	base := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	var wantSum float64
	for b := range batches {
		pack := make(protocol.Pack, 0, perBatch)
		for i := range perBatch {
			v := float64(b*perBatch + i)
			wantSum += v
			r := protocol.Record{
				Name:  fmt.Sprintf("sensor_%d", i%names),
				Value: ptr(v),
				Time:  float64(b*(perBatch/names)+i/names) / 1000, // 1 ms apart within a series
			}
			if i == 0 {
				r.BaseTime = float64(base.UnixMilli()) / 1000
				r.Seq = ptr(uint64(b + 1))
			}
			pack = append(pack, r)
		}
		resp, err := publish(ctx, c, device, encode(t, pack, cborZstd))
		require.NoError(t, err, "batch %d", b)
		require.Less(t, resp.ReasonCode, byte(0x80))
	}

	at := base.Add(time.Minute)
	var count, sum float64
	for n := range names {
		sel := fmt.Sprintf(`sensor_%d{device=%q}[1h]`, n, device)
		count += s.scalar(t, "count_over_time("+sel+")", at)
		sum += s.scalar(t, "sum_over_time("+sel+")", at)
	}
	require.Equal(t, float64(batches*perBatch), count)
	require.Equal(t, wantSum, sum)
	require.Equal(t, float64(names), s.scalar(t, fmt.Sprintf(`count(count by (__name__) ({__name__=~"sensor_.*",device=%q}))`, device), at))
	// The last value of sensor_3 is the one from the last batch.
	last := s.scalar(t, fmt.Sprintf(`last_over_time(sensor_3{device=%q}[1h])`, device), at)
	require.Equal(t, float64((batches-1)*perBatch+3+90), last)
	// No gaps or repeats in the sequence numbers; the last one is recorded.
	// Batch-sequence samples are 1 ms apart at least, so a fast burst runs a little ahead of the
	// clock (see docs/design.md).
	require.Equal(t, float64(batches), s.scalar(t, fmt.Sprintf(`millwright_device_batch_seq{device=%q}`, device), time.Now().Add(5*time.Second)))
	require.Zero(t, s.metric(t, "millwright_ingest_seq_gaps_total"))
	require.Zero(t, s.metric(t, "millwright_ingest_seq_repeats_total"))
	require.Equal(t, float64(batches), s.metric(t, "millwright_ingest_batches_total", `result="stored"`))
}

// TestMosquittoPub sends a SenML JSON batch with Debian's mosquitto_pub over TLS with a device
// certificate, in MQTT 3.1.1 and 5 at QoS 1 and 2, and reads the values back.
func TestMosquittoPub(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_pub")
	require.NoError(t, err, "mosquitto_pub is needed (Debian package mosquitto-clients; .ci/run installs it)")
	s := startServer(t, nil)
	certDir := t.TempDir()
	caPath := filepath.Join(s.dir, pki.CAFile)
	_, port, err := net.SplitHostPort(s.MQTTAddr().String())
	require.NoError(t, err)

	for i, tc := range []struct{ version, qos string }{{"mqttv311", "1"}, {"mqttv5", "1"}, {"mqttv311", "2"}, {"mqttv5", "2"}} {
		device := fmt.Sprintf("mosq-%d", i)
		certPath, keyPath, err := pki.WriteDeviceCert(s.CA(), device, certDir, time.Now(), time.Hour)
		require.NoError(t, err)
		certPEM, err := os.ReadFile(certPath)
		require.NoError(t, err)
		cert, err := pki.ParseCertPEM(certPEM)
		require.NoError(t, err)
		require.NoError(t, s.Registry().AddCertificate(context.Background(), device, cert, true))
		payload := `[{"bn":"","n":"temperature","u":"Cel","v":21.5},{"n":"door_open","vb":true},{"n":"status","vs":"running"}]`
		out, err := exec.Command(bin, "-h", "localhost", "-p", port, "-V", tc.version, "-q", tc.qos,
			"--cafile", caPath, "--cert", certPath, "--key", keyPath,
			"-i", device, "-t", protocol.BatchTopic(device), "-m", payload).CombinedOutput()
		require.NoError(t, err, "mosquitto_pub %s QoS %s: %s", tc.version, tc.qos, out)

		now := time.Now()
		require.Equal(t, 21.5, s.scalar(t, fmt.Sprintf(`temperature{device=%q,unit="Cel"}`, device), now))
		require.Equal(t, 1.0, s.scalar(t, fmt.Sprintf(`door_open{device=%q}`, device), now))
		code, pr := s.get(t, "/api/v1/events", url.Values{"device": {device}})
		require.Equal(t, http.StatusOK, code)
		var events []struct {
			Device string `json:"device"`
			Name   string `json:"name"`
			String string `json:"vs"`
		}
		require.NoError(t, json.Unmarshal(pr.Data, &events))
		require.Len(t, events, 1)
		require.Equal(t, "status", events[0].Name)
		require.Equal(t, "running", events[0].String)
	}
}

// TestConnectionRefusals checks every way a connection must be refused.
func TestConnectionRefusals(t *testing.T) {
	s := startServer(t, nil)
	require.Nil(t, s.InsecureMQTTAddr(), "no plain listener without the development flag")
	addr := s.MQTTAddr().String()
	pool := s.CA().Pool()
	good := s.device(t, "dev-a")
	otherCA, err := pki.NewCA("another CA", time.Now())
	require.NoError(t, err)
	foreign := deviceCert(t, otherCA, "dev-a")

	cases := []struct {
		name     string
		cfg      *tls.Config
		clientID string
	}{
		{"no client certificate", clientTLS(pool), "dev-a"},
		{"certificate from another CA", clientTLS(pool, foreign), "dev-a"},
		{"client ID differs from certificate", clientTLS(pool, good), "dev-b"},
		{"invalid client ID", clientTLS(pool, good), "Dev_A"},
		{"TLS 1.1", func() *tls.Config {
			c := clientTLS(pool, good)
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			return c
		}(), "dev-a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, ack, err := mqttConnect(ctx, addr, tc.cfg, tc.clientID)
			if c != nil {
				_ = c.Disconnect(&paho.Disconnect{})
			}
			require.Error(t, err)
			if ack != nil {
				require.GreaterOrEqual(t, ack.ReasonCode, byte(0x80))
			}
		})
	}

	t.Run("plain TCP", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		defer conn.Close()
		c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-a"})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-a", KeepAlive: 30, CleanStart: true})
		require.Error(t, err)
	})

	t.Run("accepted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := mqttConnect(ctx, addr, clientTLS(pool, good), "dev-a")
		require.NoError(t, err)
		_ = c.Disconnect(&paho.Disconnect{})
	})
	require.GreaterOrEqual(t, s.metric(t, "millwright_mqtt_connects_total", `result="refused"`), 2.0)
}

// TestTopicConfinement checks a device can neither publish nor subscribe under another
// device's topic root.
func TestTopicConfinement(t *testing.T) {
	s := startServer(t, nil)
	c := mustConnect(t, s, "dev-a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payload := encode(t, protocol.Pack{{Name: "x", Value: ptr(1.0)}}, cborZstd)

	resp, err := publish(ctx, c, "dev-b", payload)
	require.Error(t, err)
	require.Equal(t, byte(0x87), resp.ReasonCode)

	for _, topic := range []string{"mw/v1/dev-b/#", "mw/v1/+/batch", "#"} {
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
		require.Error(t, err, topic)
		require.Equal(t, []byte{0x87}, sa.Reasons, topic)
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "mw/v1/dev-a/cmd/#", QoS: 1}}})
	require.NoError(t, err)
	require.Equal(t, []byte{0x01}, sa.Reasons)

	// The connection still works and nothing reached dev-b.
	_, err = publish(ctx, c, "dev-a", payload)
	require.NoError(t, err)
	require.Empty(t, s.query(t, `x{device="dev-b"}`, time.Now()).Result)
	require.Equal(t, 1.0, s.scalar(t, `x{device="dev-a"}`, time.Now()))
}

func zstdBomb(t *testing.T, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	require.NoError(t, err)
	_, err = w.Write([]byte{0x9f}) // a CBOR indefinite array, then zeros
	require.NoError(t, err)
	zeros := make([]byte, 1<<20)
	for written := 0; written < size; written += len(zeros) {
		_, err = w.Write(zeros)
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// TestBadBatches sends each kind of bad batch; each gets its reason code and is counted, and the
// next valid batch on the same connection is stored.
func TestBadBatches(t *testing.T) {
	s := startServer(t, nil)
	c := mustConnect(t, s, "dev-bad")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limits := protocol.DefaultLimits()

	cases := []struct {
		name    string
		payload []byte
		code    byte
		reason  protocol.Reason
	}{
		{"malformed CBOR", []byte{0x81, 0xa1, 0x00}, 0x99, protocol.ReasonMalformed},
		{"malformed JSON", []byte(`[{"n":"x","v":1`), 0x99, protocol.ReasonMalformed},
		{"not SenML", []byte("hello"), 0x99, protocol.ReasonMalformed},
		{"invalid SenML: no value", []byte(`[{"n":"x"}]`), 0x99, protocol.ReasonInvalid},
		{"invalid SenML: bad name", []byte(`[{"n":"-x","v":1}]`), 0x99, protocol.ReasonInvalid},
		{"oversized payload", append([]byte("["), bytes.Repeat([]byte(" "), limits.MaxPayload+1)...), 0x99, protocol.ReasonTooLarge},
		{"zstd bomb", zstdBomb(t, 64<<20), 0x99, protocol.ReasonTooLarge},
		{"too old", []byte(fmt.Sprintf(`[{"n":"x","v":1,"t":%d}]`, time.Now().Add(-8*24*time.Hour).Unix())), 0x83, protocol.ReasonTooOld},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := publish(ctx, c, "dev-bad", tc.payload)
			require.Error(t, err)
			require.Equal(t, tc.code, resp.ReasonCode)
			require.Contains(t, resp.Properties.ReasonString, tc.reason.String())

			good := encode(t, protocol.Pack{{Name: "ok", Value: ptr(float64(i))}}, cborZstd)
			resp, err = publish(ctx, c, "dev-bad", good)
			require.NoError(t, err)
			require.Less(t, resp.ReasonCode, byte(0x80))
			require.Equal(t, float64(i), s.scalar(t, `ok{device="dev-bad"}`, time.Now()))
		})
	}
	for _, r := range []protocol.Reason{protocol.ReasonMalformed, protocol.ReasonInvalid, protocol.ReasonTooLarge} {
		require.Positive(t, s.metric(t, "millwright_ingest_rejected_batches_total", fmt.Sprintf(`reason=%q`, r.String())), r.String())
	}
	require.Equal(t, 1.0, s.metric(t, "millwright_ingest_refused_values_total", `reason="too_old"`))
}

// TestTooOldKeepsTheRest stores the fresh values of a batch that also carries values older than
// the out-of-order window, and refuses the old ones with a reason the device drops on.
func TestTooOldKeepsTheRest(t *testing.T) {
	s := startServer(t, nil)
	c := mustConnect(t, s, "dev-late")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	payload := fmt.Sprintf(`[{"n":"temp","v":1,"t":%d},{"n":"temp","v":2,"t":%d},{"n":"temp","v":3,"t":%d}]`,
		now.Add(-10*24*time.Hour).Unix(), now.Add(-6*24*time.Hour).Unix(), now.Add(-time.Minute).Unix())
	resp, err := publish(ctx, c, "dev-late", []byte(payload))
	require.Error(t, err)
	require.Equal(t, byte(0x83), resp.ReasonCode)
	require.Contains(t, resp.Properties.ReasonString, "1 values older")
	require.Equal(t, 2.0, s.scalar(t, `count_over_time(temp{device="dev-late"}[7d])`, now))
}

// TestSequenceAccounting counts gaps, late arrivals and repeats of batch sequence numbers.
func TestSequenceAccounting(t *testing.T) {
	s := startServer(t, nil)
	c := mustConnect(t, s, "dev-seq")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, seq := range []uint64{1, 2, 5, 5, 3, 6} {
		p := protocol.Pack{{Name: "v", Value: ptr(float64(i)), Seq: ptr(seq)}}
		_, err := publish(ctx, c, "dev-seq", encode(t, p, cborZstd))
		require.NoError(t, err)
	}
	now := time.Now().Add(time.Second)
	require.Equal(t, 6.0, s.scalar(t, `millwright_device_batch_seq{device="dev-seq"}`, now))
	require.Equal(t, 2.0, s.scalar(t, `millwright_device_batch_seq_gaps_total{device="dev-seq"}`, now))
	require.Equal(t, 1.0, s.scalar(t, `millwright_device_batch_seq_late_total{device="dev-seq"}`, now))
	require.Equal(t, 1.0, s.scalar(t, `millwright_device_batch_seq_repeats_total{device="dev-seq"}`, now))
}

// TestHTTPSIngest posts batches over HTTPS with and without a device certificate.
func TestHTTPSIngest(t *testing.T) {
	s := startServer(t, nil)
	post := func(client *http.Client, body []byte) (*http.Response, gateway.BatchResponse) {
		resp, err := client.Post(s.url(protocol.BatchPath), "application/cbor", bytes.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var br gateway.BatchResponse
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&br))
		return resp, br
	}
	dev := s.apiClient(s.device(t, "dev-http"))
	resp, br := post(dev, encode(t, protocol.Pack{{Name: "pressure", Unit: "Pa", Value: ptr(101325.0)}}, cborZstd))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, 1, br.Stored)
	require.Equal(t, 101325.0, s.scalar(t, `pressure{device="dev-http"}`, time.Now()))

	resp, br = post(dev, []byte(`[{"n":"x"}]`))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, protocol.ReasonInvalid.String(), br.Reason)

	resp, br = post(dev, bytes.Repeat([]byte("["), protocol.DefaultLimits().MaxPayload+10))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	require.Equal(t, protocol.ReasonTooLarge.String(), br.Reason)

	resp, _ = post(s.apiClient(), encode(t, protocol.Pack{{Name: "x", Value: ptr(1.0)}}, cborZstd))
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestQueryAPI checks the Prometheus-compatible endpoints and their authentication.
func TestQueryAPI(t *testing.T) {
	s := startServer(t, nil)
	c := mustConnect(t, s, "dev-q")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	var pack protocol.Pack
	for i := range 10 {
		pack = append(pack, protocol.Record{Name: "level", Unit: "m", Value: ptr(float64(i)), Time: float64(now.Add(time.Duration(i-10)*time.Second).UnixMilli()) / 1000})
	}
	_, err := publish(ctx, c, "dev-q", encode(t, pack, protocol.Encoding{Format: protocol.FormatJSON}))
	require.NoError(t, err)

	for _, tc := range []struct {
		header string
		code   int
	}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"Basic abc", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, s.url("/api/v1/query?query=up"), nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := s.apiClient().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.code, resp.StatusCode, tc.header)
	}

	code, pr := s.get(t, "/api/v1/query_range", url.Values{"query": {`level{device="dev-q"}`},
		"start": {fmtMs(now.Add(-20 * time.Second).UnixMilli())}, "end": {fmtMs(now.UnixMilli())}, "step": {"1s"}})
	require.Equal(t, http.StatusOK, code, pr.Error)
	var d promQueryData
	require.NoError(t, json.Unmarshal(pr.Data, &d))
	require.Equal(t, "matrix", d.ResultType)
	require.Len(t, d.Result, 1)
	require.Equal(t, map[string]string{"__name__": "level", "device": "dev-q", "unit": "m"}, d.Result[0].Metric)
	require.GreaterOrEqual(t, len(d.Result[0].Values), 10)

	code, pr = s.get(t, "/api/v1/series", url.Values{"match[]": {`{device="dev-q"}`}})
	require.Equal(t, http.StatusOK, code, pr.Error)
	var series []map[string]string
	require.NoError(t, json.Unmarshal(pr.Data, &series))
	require.Contains(t, series, map[string]string{"__name__": "level", "device": "dev-q", "unit": "m"})

	code, pr = s.get(t, "/api/v1/labels", nil)
	require.Equal(t, http.StatusOK, code)
	var names []string
	require.NoError(t, json.Unmarshal(pr.Data, &names))
	require.Subset(t, names, []string{"__name__", "device", "unit"})

	code, pr = s.get(t, "/api/v1/label/device/values", nil)
	require.Equal(t, http.StatusOK, code)
	var values []string
	require.NoError(t, json.Unmarshal(pr.Data, &values))
	require.Contains(t, values, "dev-q")

	code, pr = s.get(t, "/api/v1/query", url.Values{"query": {"sum(("}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "bad_data", pr.ErrorType)
}
