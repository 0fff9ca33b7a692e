package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

// channelDevice is an MQTT 5 device that subscribes to its channel and hands what it
// receives to the test.
type channelDevice struct {
	id     string
	client *paho.Client
	got    chan *paho.Publish
}

func connectChannelDevice(t *testing.T, s *server.Server, id string, cert tls.Certificate) *channelDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: clientTLS(s.CA().Pool(), cert)}).DialContext(ctx, "tcp", s.MQTTAddr().String())
	require.NoError(t, err)
	d := &channelDevice{id: id, got: make(chan *paho.Publish, 64)}
	d.client = paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			d.got <- pr.Packet
			return true, nil
		}}})
	_, err = d.client.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	_, err = d.client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: protocol.CommandFilter(id), QoS: 1}, {Topic: protocol.ConfigTopic(id), QoS: 1}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.client.Disconnect(&paho.Disconnect{}) })
	return d
}

func (d *channelDevice) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-d.got:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no message reached the device within 10 s")
		return nil
	}
}

func (d *channelDevice) publish(t *testing.T, topic string, v any) *paho.PublishResponse {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := d.client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: b})
	if err == nil {
		return resp
	}
	require.NotNil(t, resp, "publish: %v", err)
	return resp
}

// apiDo calls the API with the admin token and decodes the envelope's data into out.
func apiDo(t *testing.T, s *server.Server, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+s.HTTPAddr().String()+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.AdminToken())
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(s.CA().Pool())}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env apitypes.Response[json.RawMessage]
	require.NoError(t, json.Unmarshal(raw, &env), "%s", raw)
	if out != nil && env.Status == apitypes.StatusSuccess {
		require.NoError(t, json.Unmarshal(env.Data, out))
	}
	if resp.StatusCode >= 300 && out != nil {
		if e, ok := out.(*apitypes.Response[json.RawMessage]); ok {
			*e = env
		}
	}
	return resp.StatusCode
}

func TestCommandRoundTripMQTT5(t *testing.T) {
	s := startServer(t, nil)
	d := connectChannelDevice(t, s.Server, "pump-1", s.device(t, "pump-1"))

	var cmd apitypes.Command
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "POST", "/api/v1/devices/pump-1/commands",
		apitypes.CommandRequest{Name: "diag.connectivity", Args: map[string]string{"probe": "dns"}}, &cmd))
	require.Equal(t, "queued", cmd.State)

	p := d.next(t)
	require.Equal(t, protocol.CommandTopic("pump-1", cmd.ID), p.Topic)
	c, err := protocol.DecodeCommand(p.Payload)
	require.NoError(t, err)
	require.Equal(t, cmd.ID, c.ID)
	require.Equal(t, "diag.connectivity", c.Name)
	require.Equal(t, map[string]string{"probe": "dns"}, c.Args)

	// The PUBACK is recorded as acknowledged.
	require.Eventually(t, func() bool {
		m, err := s.Registry().Message(context.Background(), cmd.ID)
		return err == nil && m.State == registry.MessageAcknowledged
	}, 10*time.Second, 10*time.Millisecond)

	// A reply to another device's topic is refused by the ACL; a reply to an unknown ID and a
	// malformed reply get 0x99.
	resp := d.publish(t, protocol.ReplyTopic("pump-1", "m-0-nope"), protocol.Reply{State: "succeeded"})
	require.Equal(t, protocol.MQTTPayloadFormatInvalid, resp.ReasonCode)
	resp = d.publish(t, protocol.ReplyTopic("pump-1", cmd.ID), map[string]string{"state": "maybe"})
	require.Equal(t, protocol.MQTTPayloadFormatInvalid, resp.ReasonCode)
	resp = d.publish(t, protocol.ReplyTopic("pump-2", cmd.ID), protocol.Reply{State: "succeeded"})
	require.Equal(t, protocol.MQTTNotAuthorized, resp.ReasonCode)

	// With --wait, the API answers once the reply arrives.
	waited := make(chan apitypes.Command, 1)
	go func() {
		var w apitypes.Command
		apiDo(t, s.Server, "GET", "/api/v1/commands/"+cmd.ID+"?wait=30s", nil, &w)
		waited <- w
	}()
	resp = d.publish(t, protocol.ReplyTopic("pump-1", cmd.ID), protocol.Reply{State: "succeeded", Result: json.RawMessage(`{"rtt_ms":12}`)})
	require.Equal(t, protocol.MQTTSuccess, resp.ReasonCode)
	select {
	case w := <-waited:
		require.Equal(t, "succeeded", w.State)
		require.JSONEq(t, `{"rtt_ms":12}`, string(w.Result))
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting request did not return")
	}

	var list apitypes.CommandList
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "GET", "/api/v1/devices/pump-1/commands", nil, &list))
	require.Len(t, list.Commands, 1)

	// Commands to a revoked device are refused.
	var e apitypes.Response[json.RawMessage]
	require.NoError(t, s.Registry().SetStatus(context.Background(), "pump-1", registry.StatusRevoked, "test", ""))
	require.Equal(t, http.StatusConflict, apiDo(t, s.Server, "POST", "/api/v1/devices/pump-1/commands", apitypes.CommandRequest{Name: "diag.spool"}, &e))
}

func TestConfigReachesDeviceAndReport(t *testing.T) {
	s := startServer(t, nil)
	cert := s.device(t, "pump-1")
	require.NoError(t, s.Registry().SetGroups(context.Background(), "pump-1", []string{"line-a"}, nil, "test", ""))
	d := connectChannelDevice(t, s.Server, "pump-1", cert)

	var e apitypes.Response[json.RawMessage]
	// A document that breaks the schema is refused with the failing path.
	code := apiDo(t, s.Server, "POST", "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "group", Selector: "line-a",
		Document: json.RawMessage(`{"schedule":{"interval":"soon"}}`)}, &e)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, e.Error, "/schedule/interval")
	code = apiDo(t, s.Server, "POST", "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "group", Selector: "line-a",
		Document: json.RawMessage(`{"tls":{"cert_file":"/tmp/x"}}`)}, &e)
	require.Equal(t, http.StatusBadRequest, code)

	var set apitypes.ConfigLayerSet
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "POST", "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "group", Selector: "line-a",
		Document: json.RawMessage(`{"schedule":{"interval":"30s"},"log":{"level":"debug"}}`)}, &set))
	require.Equal(t, 1, set.DevicesChanged)

	p := d.next(t)
	require.Equal(t, protocol.ConfigTopic("pump-1"), p.Topic)
	dc, err := protocol.DecodeDesiredConfig(p.Payload)
	require.NoError(t, err)
	require.EqualValues(t, 1, dc.Version)
	require.JSONEq(t, `{"schedule":{"interval":"30s"},"log":{"level":"debug"}}`, string(dc.Config))

	var show apitypes.DeviceConfig
	apiDo(t, s.Server, "GET", "/api/v1/devices/pump-1/config", nil, &show)
	require.Equal(t, []string{"log.level", "schedule.interval"}, show.Difference)

	resp := d.publish(t, protocol.ConfigReportedTopic("pump-1"), protocol.ReportedConfig{Version: 1,
		Applied: json.RawMessage(`{"schedule":{"interval":"30s"}}`), Refused: map[string]string{"log.level": "debug logging is disabled on this device"}})
	require.Equal(t, protocol.MQTTSuccess, resp.ReasonCode)
	apiDo(t, s.Server, "GET", "/api/v1/devices/pump-1/config", nil, &show)
	require.EqualValues(t, 1, show.AppliedVersion)
	require.Equal(t, []string{"log.level"}, show.Difference)
	require.Equal(t, map[string]string{"log.level": "debug logging is disabled on this device"}, show.Refused)
	require.Equal(t, []string{"group line-a"}, show.Layers)

	// A state message reports facts, as CONNECT properties do for MQTT 5.
	resp = d.publish(t, protocol.StateTopic("pump-1"), protocol.State{FirmwareVersion: "2.1.0", NetworkOperator: "Telia"})
	require.Equal(t, protocol.MQTTSuccess, resp.ReasonCode)
	require.Eventually(t, func() bool {
		dev, err := s.Registry().Device(context.Background(), "pump-1")
		return err == nil && dev.FirmwareVersion == "2.1.0" && dev.NetworkOperator == "Telia"
	}, 10*time.Second, 10*time.Millisecond)
	big := bytes.Repeat([]byte("x"), protocol.MaxChannelMessage+1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := d.client.Publish(ctx, &paho.Publish{Topic: protocol.StateTopic("pump-1"), QoS: 1, Payload: big})
	require.NotNil(t, r, "%v", err)
	require.Equal(t, protocol.MQTTPayloadFormatInvalid, r.ReasonCode)

	// A group change while connected sends the new document at once.
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "POST", "/api/v1/devices/pump-1/groups", apitypes.GroupsRequest{Remove: []string{"line-a"}}, nil))
	p = d.next(t)
	dc, err = protocol.DecodeDesiredConfig(p.Payload)
	require.NoError(t, err)
	require.EqualValues(t, 2, dc.Version)
	require.JSONEq(t, `{}`, string(dc.Config))
}

// TestMailboxSurvivesRestart: a command and a configuration queued while the device is away
// reach it after a server restart, at its next connection.
func TestMailboxSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() (*server.Server, func()) {
		opts := server.DefaultOptions()
		opts.DataDir = dir
		opts.MQTT.Listen = "127.0.0.1:0"
		opts.HTTPListen = "127.0.0.1:0"
		srv, err := server.New(opts, clock.Real(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- srv.Run(context.Background()) }()
		return srv, func() { require.NoError(t, srv.Close()); require.NoError(t, <-done) }
	}
	s1, stop1 := start()
	pair := deviceCert(t, s1.CA(), "pump-1")
	require.NoError(t, s1.Registry().AddCertificate(context.Background(), "pump-1", pair.Leaf, true))
	var cmd apitypes.Command
	require.Equal(t, http.StatusOK, apiDo(t, s1, "POST", "/api/v1/devices/pump-1/commands", apitypes.CommandRequest{Name: "diag.spool", Expires: "720h"}, &cmd))
	require.Equal(t, http.StatusOK, apiDo(t, s1, "POST", "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "device", Selector: "pump-1",
		Document: json.RawMessage(`{"health":{"interval":"5m"}}`)}, nil))
	stop1()

	s2, stop2 := start()
	defer stop2()
	d := connectChannelDevice(t, s2, "pump-1", pair)
	topics := map[string]bool{}
	for range 2 {
		topics[d.next(t).Topic] = true
	}
	require.Equal(t, map[string]bool{protocol.CommandTopic("pump-1", cmd.ID): true, protocol.ConfigTopic("pump-1"): true}, topics)
}

// TestCommandExpiresOnClock: on an injected clock, a command no device took expires, and a
// waiting request sees it.
func TestCommandExpiresOnClock(t *testing.T) {
	clk := clock.NewFake(time.Now())
	opts := server.DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen = "127.0.0.1:0"
	opts.HTTPListen = "127.0.0.1:0"
	srv, err := server.New(opts, clk, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	defer func() { require.NoError(t, srv.Close()); <-done }()
	deviceCert(t, srv.CA(), "pump-1")
	_, err = srv.Registry().CreateDevice(context.Background(), "pump-1", nil, nil, "test", "")
	require.NoError(t, err)
	m, err := srv.Registry().SendCommand(context.Background(), registry.CommandSpec{Device: "pump-1", Name: "diag.spool", TTL: time.Hour}, "test", "")
	require.NoError(t, err)

	got := make(chan registry.Message, 1)
	go func() {
		w, _ := srv.Channel().Wait(context.Background(), m.ID, 2*time.Hour)
		got <- w
	}()
	// Move the clock past the expiry in steps, so that the expiry loop's timer fires.
	require.Eventually(t, func() bool {
		clk.Advance(5 * time.Minute)
		select {
		case w := <-got:
			require.Equal(t, registry.MessageExpired, w.State)
			return true
		default:
			return false
		}
	}, 20*time.Second, 5*time.Millisecond)
}

// TestHTTPSMailbox: an HTTPS device fetches its mailbox, replies and reports, and cannot read
// another device's mailbox (its certificate names it).
func TestHTTPSMailbox(t *testing.T) {
	s := startServer(t, nil)
	cert := s.device(t, "meter-1")
	var cmd apitypes.Command
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "POST", "/api/v1/devices/meter-1/commands", apitypes.CommandRequest{Name: "diag.health"}, &cmd))
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "POST", "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "fleet",
		Document: json.RawMessage(`{"schedule":{"jitter":"5s"}}`)}, nil))

	client := s.apiClient(cert)
	resp, err := client.Get(s.url(protocol.MailboxPath))
	require.NoError(t, err)
	var box protocol.Mailbox
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&box))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, box.Commands, 1)
	require.Equal(t, cmd.ID, box.Commands[0].ID)
	require.NotNil(t, box.Config)
	require.JSONEq(t, `{"schedule":{"jitter":"5s"}}`, string(box.Config.Config))
	m, err := s.Registry().Message(context.Background(), cmd.ID)
	require.NoError(t, err)
	require.Equal(t, registry.MessageDelivered, m.State)

	post := func(path string, v any) int {
		b, _ := json.Marshal(v)
		resp, err := client.Post(s.url(path), "application/json", bytes.NewReader(b))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusNotFound, post(protocol.ReplyPathPrefix+"m-1-2", protocol.Reply{State: "succeeded"}))
	require.Equal(t, http.StatusBadRequest, post(protocol.ReplyPathPrefix+cmd.ID, map[string]any{"state": 7}))
	require.Equal(t, http.StatusNoContent, post(protocol.ReplyPathPrefix+cmd.ID, protocol.Reply{State: "failed", Reason: "unknown"}))
	require.Equal(t, http.StatusNoContent, post(protocol.ConfigReportedPath, protocol.ReportedConfig{Version: box.Config.Version, Applied: box.Config.Config}))
	require.Equal(t, http.StatusNoContent, post(protocol.StatePath, protocol.State{HardwareModel: "m-200"}))
	m, err = s.Registry().Message(context.Background(), cmd.ID)
	require.NoError(t, err)
	require.Equal(t, registry.MessageFailed, m.State)
	require.Equal(t, "unknown", m.Reason)

	// Nothing is waiting now.
	resp, err = client.Get(s.url(protocol.MailboxPath))
	require.NoError(t, err)
	box = protocol.Mailbox{}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&box))
	resp.Body.Close()
	require.Empty(t, box.Commands)
	require.Nil(t, box.Config)
	require.Eventually(t, func() bool {
		dev, err := s.Registry().Device(context.Background(), "meter-1")
		return err == nil && dev.HardwareModel == "m-200"
	}, 10*time.Second, 10*time.Millisecond)

	// Without a certificate: 401.
	resp, err = s.apiClient().Get(s.url(protocol.MailboxPath))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}
