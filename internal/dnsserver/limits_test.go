package dnsserver

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
)

func TestDefaults(t *testing.T) {
	o, keys, err := Options{Zone: testZone, Listen: ":0"}.withDefaults()
	require.NoError(t, err)
	require.Empty(t, keys)
	d := DefaultOptions()
	require.Equal(t, 30*time.Second, o.TTL)
	require.Equal(t, d.RateLimit, o.RateLimit)
	require.Equal(t, 100.0, o.RateLimit)
	require.Equal(t, 200, o.RateBurst)
	require.Equal(t, 2, o.Slip)
	require.Equal(t, 1024, o.MaxUDPInFlight)
	require.Equal(t, 256, o.MaxTCPConnections)
	require.Equal(t, 16, o.MaxTCPPerSource)
	require.Equal(t, 10*time.Second, o.TCPIdleTimeout)
	require.Equal(t, 100, o.TCPQueries)
	require.Equal(t, []string{"ns1." + testZone + "."}, o.Nameservers)
	require.Equal(t, 100.0, o.MoveRate)
	require.NoError(t, DefaultOptions().Validate())
	for _, c := range []struct {
		change func(o *Options)
		key    string
	}{
		{func(o *Options) { o.TTL = 0 }, "ttl"},
		{func(o *Options) { o.RateLimit = 0 }, "rate_limit"},
		{func(o *Options) { o.Slip = 0 }, "slip"},
		{func(o *Options) { o.MaxTCPConnections = -1 }, "max_tcp_connections"},
		{func(o *Options) { o.TCPIdleTimeout = 0 }, "tcp_idle_timeout"},
		{func(o *Options) { o.MoveRate = -3 }, "move_rate"},
		{func(o *Options) { o.TSIGKeys = []string{"k:hmac-sha256:c2hvcnQ="} }, "tsig_keys"},
		{func(o *Options) { o.Secondaries = []string{"192.0.2.53"} }, "secondaries"},
	} {
		o := DefaultOptions()
		c.change(&o)
		err := o.Validate()
		require.Error(t, err)
		require.Contains(t, err.Error(), c.key)
		require.NotContains(t, err.Error(), "c2hvcnQ=", "secrets stay out of errors")
	}

	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Listen: ":0"}, "a zone is required"},
		{Options{Zone: testZone, Listen: ":0", TTL: time.Millisecond}, "TTL 1ms"},
		{Options{Zone: testZone, Listen: ":0", TTL: 2 * time.Hour}, "TTL 2h0m0s"},
		{Options{Zone: testZone, Listen: ":0", RateBurst: -1}, "rate burst -1"},
		{Options{Zone: testZone, Listen: ":0", TSIGKeys: []string{"k:md5:AAAA"}}, `algorithm "md5"`},
		{Options{Zone: testZone, Listen: ":0", TSIGKeys: []string{"k:hmac-sha256:AAAA"}}, "at least 16 bytes"},
		{Options{Zone: testZone, Listen: ":0", TSIGKeys: []string{"k-secret"}}, "name:algorithm:base64secret"},
	} {
		_, _, err := c.o.withDefaults()
		require.ErrorIs(t, err, ErrOptions)
		require.ErrorContains(t, err, c.want)
	}
}

// TestMalformedDropped: undecodable packets and responses get no answer and are counted.
func TestMalformedDropped(t *testing.T) {
	r := newRig(t, nil)
	c, err := net.Dial("udp", r.srv.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("dev-1."+testZone+".", dns.TypeA)
	good, err := q.Pack()
	require.NoError(t, err)
	resp := q.Copy()
	resp.Response = true
	respBytes, err := resp.Pack()
	require.NoError(t, err)
	for _, p := range [][]byte{good[:5], good[:len(good)-3], append(good[:12:12], 0xff, 0xff, 0xff), respBytes} {
		_, err := c.Write(p)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(r.srv.m.dropped.WithLabelValues("malformed")) == 3 &&
			testutil.ToFloat64(r.srv.m.dropped.WithLabelValues("response")) == 1
	}, 5*time.Second, 5*time.Millisecond)
	// The next good query is the first thing answered.
	_, err = c.Write(good)
	require.NoError(t, err)
	buf := make([]byte, 4096)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := c.Read(buf)
	require.NoError(t, err)
	var m dns.Msg
	require.NoError(t, m.Unpack(buf[:n]))
	require.Equal(t, q.Id, m.Id)
	require.Len(t, m.Answer, 1)
}

// TestRateLimit: a source over its rate gets every Slip-th answer truncated and the rest
// dropped; the injected clock refills its bucket.
func TestRateLimit(t *testing.T) {
	r := newRig(t, func(o *Options) { o.RateLimit, o.RateBurst, o.Slip = 5, 5, 2 })
	c, err := net.Dial("udp", r.srv.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	send := func(n int) {
		for i := range n {
			q := new(dns.Msg)
			q.SetQuestion("dev-1."+testZone+".", dns.TypeA)
			q.Id = uint16(i + 1)
			b, err := q.Pack()
			require.NoError(t, err)
			_, err = c.Write(b)
			require.NoError(t, err)
		}
	}
	read := func(n int) (full, truncated int) {
		buf := make([]byte, 4096)
		for range n {
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			k, err := c.Read(buf)
			require.NoError(t, err)
			var m dns.Msg
			require.NoError(t, m.Unpack(buf[:k]))
			if m.Truncated {
				truncated++
			} else {
				full++
			}
		}
		return full, truncated
	}
	send(20)
	full, tc := read(5 + 7)
	require.Equal(t, 5, full)
	require.Equal(t, 7, tc)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(r.srv.m.rateLimited.WithLabelValues("dropped")) == 8 &&
			testutil.ToFloat64(r.srv.m.rateLimited.WithLabelValues("slipped")) == 7
	}, 5*time.Second, 5*time.Millisecond)
	r.clk.Advance(time.Second) // five more tokens
	send(5)
	full, _ = read(5)
	require.Equal(t, 5, full)
	// Another /24 has its own bucket.
	ok, _ := r.srv.rate.allow(mustAddr("10.9.9.9"), r.clk.Now())
	require.True(t, ok)
}

func TestRateLimiterForgetsWhenFull(t *testing.T) {
	l := newRateLimiter(1, 1, 2)
	now := testStart
	ok, _ := l.allow(mustAddr("192.0.2.1"), now)
	require.True(t, ok)
	ok, denied := l.allow(mustAddr("192.0.2.200"), now) // same /24
	require.False(t, ok)
	require.Equal(t, uint64(1), denied)
	ok, _ = l.allow(mustAddr("2001:db8:0:1::1"), now)
	require.True(t, ok)
	ok, _ = l.allow(mustAddr("2001:db8:0:2::1"), now) // same /56
	require.False(t, ok)
	ok, _ = l.allow(mustAddr("198.51.100.1"), now) // a third source: the table starts again
	require.True(t, ok)
	require.Len(t, l.buckets, 1)
	ok, _ = l.allow(mustAddr("192.0.2.1"), now)
	require.True(t, ok, "forgotten, so a full bucket again")
}

// TestTCPLimits: connections over the total are closed at accept; an idle connection is
// closed after the idle timeout; a connection gets TCPQueries answers, then is closed.
func TestTCPLimits(t *testing.T) {
	r := newRig(t, func(o *Options) {
		o.MaxTCPConnections, o.MaxTCPPerSource, o.TCPQueries, o.TCPIdleTimeout = 2, 3, 2, 300*time.Millisecond
	})
	addr := r.srv.Addr().String()
	dial := func() *dns.Conn {
		c, err := dns.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ask := func(c *dns.Conn) error {
		q := new(dns.Msg)
		q.SetQuestion("dev-1."+testZone+".", dns.TypeA)
		if err := c.WriteMsg(q); err != nil {
			return err
		}
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		m, err := c.ReadMsg()
		if err != nil {
			return err
		}
		require.Len(t, m.Answer, 1)
		return nil
	}
	a, b := dial(), dial()
	require.NoError(t, ask(a))
	require.NoError(t, ask(b))
	third := dial()
	err := ask(third)
	require.Error(t, err, "the third connection is closed at accept")
	require.Equal(t, 1.0, testutil.ToFloat64(r.srv.m.tcpRefused.WithLabelValues("total")))

	// a's second query is its last: the server closes it after answering.
	require.NoError(t, ask(a))
	require.NoError(t, a.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = a.ReadMsg()
	require.Error(t, err)

	// b, idle, is closed after 300ms.
	require.NoError(t, b.SetReadDeadline(time.Now().Add(5*time.Second)))
	start := time.Now()
	_, err = b.ReadMsg()
	require.True(t, errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset"), "%v", err)
	require.Less(t, time.Since(start), 4*time.Second)

	// Both places are free again.
	require.Eventually(t, func() bool {
		c, err := dns.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		return ask(c) == nil
	}, 5*time.Second, 20*time.Millisecond)
}

// TestUDPInFlightBound: with one query in progress allowed, the reader waits for the
// handler to finish the one before; every query is still answered, in order.
func TestUDPInFlightBound(t *testing.T) {
	r := newRig(t, func(o *Options) { o.MaxUDPInFlight = 1 })
	require.Equal(t, 1, cap(r.srv.udpSem))
	c, err := net.Dial("udp", r.srv.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	// Hold the only place: the reader cannot hand the next query on.
	r.srv.udpSem <- struct{}{}
	q := new(dns.Msg)
	q.SetQuestion("dev-1."+testZone+".", dns.TypeA)
	b, err := q.Pack()
	require.NoError(t, err)
	_, err = c.Write(b)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	buf := make([]byte, 4096)
	_, err = c.Read(buf)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "no answer while the place is held: %v", err)
	<-r.srv.udpSem
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := c.Read(buf)
	require.NoError(t, err)
	var m dns.Msg
	require.NoError(t, m.Unpack(buf[:n]))
	require.Equal(t, q.Id, m.Id)
}

// TestTransferNeedsTSIG: AXFR without a key, with an unknown key or over UDP is refused; with
// the key the whole zone comes, signed.
func TestTransferNeedsTSIG(t *testing.T) {
	r := newRig(t, nil)
	r.route(t, registry.Route{Scope: registry.RouteDevice, Selector: "dev-3", Cluster: "us-1"})
	a := r.srv.Addr()

	res := dig(t, a.IP.String(), a.Port, testZone, "AXFR")
	require.Contains(t, res.out, "Transfer failed", res.out)
	bad := dig(t, a.IP.String(), a.Port, "-y", "hmac-sha256:xfr-key:"+strings.Repeat("QUFB", 11)+"QQ==", testZone, "AXFR")
	require.NotContains(t, bad.out, "198.51.100.1", bad.out)
	name, alg, secret, err := ParseTSIGKey(testKey)
	require.NoError(t, err)
	_ = alg
	good := dig(t, a.IP.String(), a.Port, "-y", "hmac-sha256:"+strings.TrimSuffix(name, ".")+":"+secret, testZone, "AXFR")
	require.Contains(t, good.answers, "A 198.51.100.1", good.out)
	require.Contains(t, good.answers, "A 192.0.2.1", good.out)
	require.Contains(t, good.out, "*."+testZone+".", good.out)
	require.Contains(t, good.out, "dev-3."+testZone+".", good.out)
	require.Contains(t, good.out, "ADDITIONAL: 1", "the TSIG record")
	require.NotContains(t, good.out, "failure", good.out)
	require.NotContains(t, good.out, "dev-1."+testZone+".", "unrouted devices are the wildcard's")

	// Over UDP, even signed: refused.
	q := new(dns.Msg)
	q.SetAxfr(testZone + ".")
	q.SetTsig(name, dns.HmacSHA256, 300, time.Now().Unix())
	cl := &dns.Client{Net: "udp", TsigSecret: map[string]string{name: secret}}
	m, _, err := cl.ExchangeContext(context.Background(), q, a.String())
	require.NoError(t, err)
	require.Equal(t, dns.RcodeRefused, m.Rcode)
	require.Equal(t, 1.0, testutil.ToFloat64(r.srv.m.transfers.WithLabelValues("ok")))
	require.GreaterOrEqual(t, testutil.ToFloat64(r.srv.m.transfers.WithLabelValues("refused")), 2.0)

	// A signed ordinary query gets a signed answer.
	q = new(dns.Msg)
	q.SetQuestion("dev-3."+testZone+".", dns.TypeA)
	q.SetTsig(name, dns.HmacSHA256, 300, time.Now().Unix())
	m, _, err = cl.ExchangeContext(context.Background(), q, a.String())
	require.NoError(t, err)
	require.NotNil(t, m.IsTsig())
	require.Len(t, m.Answer, 1)
}
