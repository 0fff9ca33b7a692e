package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

// countingConn counts what an MQTT client writes and reads above TLS: whole MQTT packets.
type countingConn struct {
	net.Conn
	written, read atomic.Int64
	mu            sync.Mutex
	stream        []byte // everything written
	readStream    []byte // everything read
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	c.mu.Lock()
	c.stream = append(c.stream, b[:n]...)
	c.mu.Unlock()
	return n, err
}

// packetTypes lists the MQTT packet types in what the client wrote (or, with read, read).
func (c *countingConn) packetTypes(t *testing.T, read bool) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	stream := c.stream
	if read {
		stream = c.readStream
	}
	var types []byte
	for b := stream; len(b) > 0; {
		types = append(types, b[0]>>4)
		n, shift, i := 0, 0, 1
		for ; b[i]&0x80 != 0; i++ {
			n |= int(b[i]&0x7f) << shift
			shift += 7
		}
		n |= int(b[i]&0x7f) << shift
		require.LessOrEqual(t, 1+i+n, len(b), "truncated packet")
		b = b[1+i+n:]
	}
	return types
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	c.mu.Lock()
	c.readStream = append(c.readStream, b[:n]...)
	c.mu.Unlock()
	return n, err
}

func fastMonitor(o *server.Options) { o.Monitor.Interval = time.Second }

// value is the one sample of q now, or -1 when q has none (yet).
func (s *testServer) value(t *testing.T, q string) float64 {
	t.Helper()
	d := s.query(t, q, time.Now())
	if len(d.Result) != 1 {
		return -1
	}
	v, err := strconv.ParseFloat(d.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	return v
}

// TestMonitorCountsBytesExactly: what the server counts received from and sent to a device is,
// to the byte, what a real MQTT client over TLS wrote and read (whole MQTT packets, CONNECT
// to DISCONNECT), and over HTTPS the request and response bodies.
func TestMonitorCountsBytesExactly(t *testing.T) {
	s := startServer(t, fastMonitor)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const device = "bytes-1"
	raw, err := (&tls.Dialer{Config: clientTLS(s.CA().Pool(), s.device(t, device))}).DialContext(ctx, "tcp", s.MQTTAddr().String())
	require.NoError(t, err)
	cc := &countingConn{Conn: raw}
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(cc), ClientID: device})
	_, err = c.Connect(ctx, &paho.Connect{ClientID: device, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{User: paho.UserProperties{{Key: protocol.PropFirmwareVersion, Value: "3.2.1"},
			{Key: protocol.PropSendInterval, Value: "6h"}}}})
	require.NoError(t, err)
	for i := range 20 {
		_, err := publish(ctx, c, device, []byte(fmt.Sprintf(`[{"n":"temp","v":%d}]`, i)))
		require.NoError(t, err)
	}
	require.NoError(t, c.Disconnect(&paho.Disconnect{ReasonCode: 0}))
	// The server has read the DISCONNECT once it records the session.
	var sessions apitypes.SessionList
	require.Eventually(t, func() bool {
		code, pr := s.get(t, "/api/v1/devices/"+device+"/sessions", nil)
		require.Equal(t, http.StatusOK, code, pr.Error)
		require.NoError(t, json.Unmarshal(pr.Data, &sessions))
		return len(sessions.Sessions) == 1
	}, 20*time.Second, 50*time.Millisecond)
	got := sessions.Sessions[0]
	require.Equal(t, "clean", got.Cause)
	require.Equal(t, cc.written.Load(), got.ReceivedBytes, "bytes received: every packet the client wrote")
	require.Equal(t, cc.read.Load(), got.SentBytes, "bytes sent: every packet the client read")
	types := cc.packetTypes(t, false)
	require.Equal(t, int64(len(types)), got.ReceivedMessages, "every packet the client wrote: %v", types)
	types = cc.packetTypes(t, true)
	require.Equal(t, int64(len(types)), got.SentMessages, "every packet the client read: %v", types)
	require.Equal(t, "TLS 1.3", got.TLSVersion)
	require.Equal(t, 5, got.MQTTVersion)

	require.Eventually(t, func() bool {
		return s.value(t, `millwright_device_received_bytes_total{device="bytes-1"}`) == float64(cc.written.Load()) &&
			s.value(t, `millwright_device_disconnects_total{device="bytes-1",cause="clean"}`) == 1
	}, 20*time.Second, 50*time.Millisecond)
	require.Equal(t, float64(cc.read.Load()), s.value(t, `millwright_device_sent_bytes_total{device="bytes-1"}`))
	require.Equal(t, 20.0, s.value(t, `millwright_device_batches_total{device="bytes-1",result="accepted"}`))
	require.Equal(t, 1.0, s.value(t, `millwright_device_info{device="bytes-1",firmware="3.2.1"}`))
	require.Equal(t, 6*3600.0, s.value(t, `millwright_device_expected_interval_seconds{device="bytes-1"}`), "the interval it reported at connect")

	// HTTPS: request bodies in, response bodies out.
	const hdev = "https-1"
	client := s.apiClient(s.device(t, hdev))
	var in, out int64
	for i := range 3 {
		body := []byte(fmt.Sprintf(`[{"n":"temp","v":%d}]`, i))
		resp, err := client.Post(s.url(protocol.BatchPath), "application/senml+json", bytes.NewReader(body))
		require.NoError(t, err)
		answer, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", answer)
		in += int64(len(body))
		out += int64(len(answer))
	}
	require.Eventually(t, func() bool {
		return s.value(t, `millwright_device_received_bytes_total{device="https-1"}`) == float64(in)
	}, 20*time.Second, 50*time.Millisecond)
	require.Equal(t, float64(out), s.value(t, `millwright_device_sent_bytes_total{device="https-1"}`))
	require.Equal(t, 3.0, s.value(t, `millwright_device_received_messages_total{device="https-1"}`))
}

// TestMonitorDisconnectCauses: a takeover and a revocation are told apart from a clean
// disconnect, in the series and in the connection history.
func TestMonitorDisconnectCauses(t *testing.T) {
	s := startServer(t, fastMonitor)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const device = "cause-1"
	cert := s.device(t, device)
	first, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), cert), device)
	require.NoError(t, err)
	defer first.Disconnect(&paho.Disconnect{})
	second, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), cert), device)
	require.NoError(t, err)
	defer second.Disconnect(&paho.Disconnect{})
	require.Eventually(t, func() bool {
		return s.value(t, `millwright_device_disconnects_total{device="cause-1",cause="takeover"}`) == 1 &&
			s.value(t, `millwright_device_connected{device="cause-1"}`) == 1 &&
			s.value(t, `millwright_device_connects_total{device="cause-1"}`) == 2
	}, 20*time.Second, 50*time.Millisecond)

	req, err := http.NewRequest(http.MethodPost, s.url("/api/v1/devices/"+device+"/revoke"), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.AdminToken())
	resp, err := s.apiClient().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var sessions apitypes.SessionList
	require.Eventually(t, func() bool {
		_, pr := s.get(t, "/api/v1/devices/"+device+"/sessions", nil)
		require.NoError(t, json.Unmarshal(pr.Data, &sessions))
		return len(sessions.Sessions) == 2
	}, 20*time.Second, 50*time.Millisecond)
	require.Equal(t, "kicked", sessions.Sessions[0].Cause, "revoked: the server closed it")
	require.Equal(t, "takeover", sessions.Sessions[1].Cause)

	code, pr := s.get(t, "/api/v1/devices/"+device+"/sessions", url.Values{"limit": {"0"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, pr.Error, `invalid parameter "limit"`)
	code, _ = s.get(t, "/api/v1/devices/nobody/sessions", nil)
	require.Equal(t, http.StatusNotFound, code)
}

// TestMonitorLivenessAPI: the liveness routes answer for the active devices, and refuse an
// unknown state or dimension.
func TestMonitorLivenessAPI(t *testing.T) {
	s := startServer(t, fastMonitor)
	mustConnect(t, s, "live-1")
	mustConnect(t, s, "live-2")
	mustConnect(t, s, "live-3")
	var counts apitypes.LivenessCounts
	require.Eventually(t, func() bool {
		code, pr := s.get(t, "/api/v1/liveness/counts", url.Values{"by": {"model"}})
		require.Equal(t, http.StatusOK, code, pr.Error)
		require.NoError(t, json.Unmarshal(pr.Data, &counts))
		return len(counts.Counts) == 1 && counts.Counts[0].Online == 3
	}, 20*time.Second, 50*time.Millisecond)

	// Pages, by device ID.
	var page apitypes.LivenessList
	code, pr := s.get(t, "/api/v1/liveness", url.Values{"limit": {"2"}})
	require.Equal(t, http.StatusOK, code, pr.Error)
	require.NoError(t, json.Unmarshal(pr.Data, &page))
	require.Len(t, page.Devices, 2)
	require.Equal(t, "live-2", page.Next)
	code, pr = s.get(t, "/api/v1/liveness", url.Values{"limit": {"2"}, "after": {page.Next}})
	require.Equal(t, http.StatusOK, code, pr.Error)
	page = apitypes.LivenessList{}
	require.NoError(t, json.Unmarshal(pr.Data, &page))
	require.Len(t, page.Devices, 1)
	require.Equal(t, "live-3", page.Devices[0].Device)
	require.Empty(t, page.Next)
	for _, bad := range []string{"0", "10001", "many"} {
		code, pr = s.get(t, "/api/v1/liveness", url.Values{"limit": {bad}})
		require.Equal(t, http.StatusBadRequest, code, bad)
		require.Contains(t, pr.Error, `invalid parameter "limit": want 1 to 10000`)
	}
	// Named devices (a page of the registry's listing, as the dashboard asks); an unknown one
	// is left out, and more names than the limit are refused.
	code, pr = s.get(t, "/api/v1/liveness", url.Values{"device": {"live-3", "nobody", "live-1"}})
	require.Equal(t, http.StatusOK, code, pr.Error)
	page = apitypes.LivenessList{}
	require.NoError(t, json.Unmarshal(pr.Data, &page))
	require.Len(t, page.Devices, 2)
	require.Equal(t, "live-3", page.Devices[0].Device)
	require.Equal(t, "live-1", page.Devices[1].Device)
	code, pr = s.get(t, "/api/v1/liveness", url.Values{"device": {"live-1", "live-2", "live-3"}, "limit": {"2"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, pr.Error, `too many "device" parameters: 3, at most the limit 2`)

	code, pr = s.get(t, "/api/v1/liveness", url.Values{"state": {"online"}, "limit": {"1"}})
	require.Equal(t, http.StatusOK, code)
	var list apitypes.LivenessList
	require.NoError(t, json.Unmarshal(pr.Data, &list))
	require.Len(t, list.Devices, 1)
	require.Equal(t, "live-1", list.Devices[0].Device)
	require.True(t, list.Devices[0].Connected)
	require.Equal(t, "default", list.Devices[0].IntervalSource)

	code, pr = s.get(t, "/api/v1/liveness", url.Values{"state": {"asleep"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, pr.Error, `invalid parameter "state"`)
	code, pr = s.get(t, "/api/v1/liveness/counts", url.Values{"by": {"colour"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, pr.Error, `cannot count by "colour"`)
}
