package dnsserver

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
)

// FuzzAnswer feeds packets to the decoder and the answering code: no input may panic, every
// answer packs, and a name outside the zone is never answered with data. The seed corpus is
// in testdata/fuzz/FuzzAnswer.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name string
		t    uint16
	}{{"dev-1." + testZone + ".", dns.TypeA}, {testZone + ".", dns.TypeSOA}, {"example.com.", dns.TypeA},
		{"a.b." + testZone + ".", dns.TypeAAAA}, {testZone + ".", dns.TypeAXFR}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		m.SetEdns0(4096, false)
		b, err := m.Pack()
		require.NoError(f, err)
		f.Add(b)
	}
	opts, _, err := Options{Zone: testZone, Listen: ":0"}.withDefaults()
	require.NoError(f, err)
	sn := buildSnapshot(&registry.DNSData{Revision: 7,
		Clusters: []registry.Cluster{{Name: "eu-1", Default: true, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}},
		Routes: []registry.Route{{Scope: registry.RouteDevice, Selector: "dev-1", Address: netip.MustParseAddr("203.0.113.7"),
			ExpiresAt: testStart.Add(time.Minute)}}}, testStart)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req dns.Msg
		if req.Unpack(data) != nil {
			return // the server drops these
		}
		m := answer(&req, sn, &opts, testStart)
		_, err := m.Pack()
		require.NoError(t, err)
		if len(req.Question) == 1 && !dns.IsSubDomain(opts.Zone, strings.ToLower(req.Question[0].Name)) {
			require.Empty(t, m.Answer)
		}
		m.Truncate(dns.MinMsgSize)
		if b, err := m.Pack(); err == nil {
			require.LessOrEqual(t, len(b), dns.MinMsgSize)
		}
	})
}

// FuzzParseTSIGKey: a configured key never panics the parser and a parsed one is usable.
func FuzzParseTSIGKey(f *testing.F) {
	f.Add(testKey)
	f.Add("k:hmac-sha1:AAAA")
	f.Add("::")
	f.Fuzz(func(t *testing.T, s string) {
		name, alg, secret, err := ParseTSIGKey(s)
		if err != nil {
			return
		}
		m := new(dns.Msg)
		m.SetQuestion(testZone+".", dns.TypeSOA)
		m.SetTsig(name, alg, 300, 0)
		_, _, err = dns.TsigGenerate(m, secret, "", false)
		require.NoError(t, err)
	})
}
