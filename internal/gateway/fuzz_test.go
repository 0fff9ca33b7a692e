package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// decodingIngester stores nothing: it runs the real batch decoder on what a connection hands
// over and answers with its verdict, so that a fuzzed connection exercises everything up to
// the pipeline's queue.
type decodingIngester struct{}

func (decodingIngester) Ingest(_ context.Context, _ string, payload []byte) IngestResult {
	if _, _, err := protocol.Decode(payload, time.Now(), protocol.DefaultLimits()); err != nil {
		return IngestResult{Reason: protocol.ReasonMalformed, Detail: err.Error()}
	}
	return IngestResult{}
}

// wire encodes packets for a seed or a test.
func wire(tb testing.TB, pks ...packets.Packet) []byte {
	tb.Helper()
	var out []byte
	for _, pk := range pks {
		b, err := encode(&pk)
		require.NoError(tb, err)
		out = append(out, b...)
	}
	return out
}

// sessionSeeds are whole conversations a device may open with, in both protocol versions.
func sessionSeeds(tb testing.TB) map[string][]byte {
	batch, err := protocol.Encode(protocol.Pack{{Name: "t", Value: new(float64)}}, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
	require.NoError(tb, err)
	seeds := map[string][]byte{}
	for _, v := range []byte{4, 5} {
		connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "dev-1", Keepalive: 30, Clean: true}}
		if v == 5 {
			connect.Properties.User = []packets.UserProperty{{Key: protocol.PropFirmwareVersion, Val: "2.1.0"}}
			connect.Properties.SessionExpiryInterval, connect.Properties.SessionExpiryIntervalFlag = 60, true
		}
		pub := func(topic string, qos byte, id uint16, payload []byte) packets.Packet {
			return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: v,
				TopicName: topic, PacketID: id, Payload: payload}
		}
		aliased := pub(protocol.BatchTopic("dev-1"), 1, 2, batch)
		aliased.Properties.TopicAlias, aliased.Properties.TopicAliasFlag = 1, true
		aliasOnly := pub("", 1, 3, batch)
		aliasOnly.Properties.TopicAlias, aliasOnly.Properties.TopicAliasFlag = 1, true
		seeds[string('0'+rune(v))+"-batches"] = wire(tb, connect,
			pub(protocol.BatchTopic("dev-1"), 1, 1, batch), aliased, aliasOnly,
			pub(protocol.BatchTopic("dev-1"), 2, 4, batch),
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, ProtocolVersion: v, PacketID: 4},
			pub(protocol.BatchTopic("dev-1"), 0, 0, []byte("not a batch")),
			pub(protocol.BatchTopic("dev-2"), 1, 5, batch),
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}, ProtocolVersion: v},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: v})
		seeds[string('0'+rune(v))+"-subscriptions"] = wire(tb, connect,
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: v, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#", Qos: 1}, {Filter: "#"}, {Filter: "mw/v1/dev-1/a#"}}},
			pub("mw/v1/dev-1/cmd/reboot", 1, 2, []byte("now")),
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: v, PacketID: 1},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, ProtocolVersion: v, PacketID: 3,
				Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#"}, {Filter: "mw/v1/dev-1/none"}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: v})
	}
	return seeds
}

// FuzzSession feeds a connection on the development listener (the client ID names the
// device) arbitrary bytes from the device, and requires that the gateway answers or closes
// the connection without failing, and ends the connection's session when the device has gone.
func FuzzSession(f *testing.F) {
	for _, seed := range sessionSeeds(f) {
		f.Add(seed)
	}
	m, err := NewMQTT(MQTTOptions{Listen: "127.0.0.1:0", MaxPacketSize: 64 << 10, HandshakeTimeout: time.Second},
		&tls.Config{}, decodingIngester{}, nil, nil, nil, prometheus.NewRegistry())
	require.NoError(f, err)
	f.Cleanup(func() { _ = m.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		c := newConn(m, server, false)
		m.mu.Lock()
		m.conns[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		done := make(chan struct{})
		go func() { c.serve(); close(done) }()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_ = client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = client.Write(in)
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end after the device closed it")
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		require.Empty(t, m.conns)
		for id, s := range m.sessions {
			require.Nil(t, s.conn, "session %s still has a connection", id)
		}
		m.sessions = map[string]*session{} // expiring sessions from inputs that asked for one
	})
}

// TestSessionCorpus keeps the committed corpus in step with the seeds: run with
// MW_WRITE_CORPUS=1 to write it again.
func TestSessionCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSession")
	for name, seed := range sessionSeeds(t) {
		path := filepath.Join(dir, "seed-"+name)
		want := []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(seed)) + ")\n")
		if os.Getenv("MW_WRITE_CORPUS") != "" {
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(path, want, 0o644))
			continue
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err, "run with MW_WRITE_CORPUS=1 to write the corpus")
		require.Equal(t, string(want), string(got), path)
	}
}
