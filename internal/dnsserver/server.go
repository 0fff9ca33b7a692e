// Package dnsserver is Millwright's authoritative DNS server for the gateway zone: devices dial
// <device-id>.<zone>, and the answer comes from the registry's clusters and routes (a device's
// own route, else its groups', else its tags', else the default cluster through the zone's
// wildcard).
//
// Answers come from an immutable in-memory snapshot of the registry, rebuilt when the
// registry's DNS revision moves (polled every Options.Refresh, or at once through Reload), so a
// query costs a map lookup, never SQL. The snapshot holds only routed devices; every other name
// gets the wildcard, so its size follows the routes, not the fleet. A route's expiry is judged
// at query time on the injected clock, so a debug redirect ends exactly on time, and the
// server also removes expired routes from the registry then (which moves the SOA serial).
//
// Safety: no recursion (names outside the zone get REFUSED), undecodable packets are dropped
// and counted, one question per query, UDP answers are rate limited per source prefix, the UDP
// queries in progress and the TCP connections are bounded, and zone transfers (AXFR, and IXFR
// answered with the full zone) need a valid TSIG. Every change of the zone sends a NOTIFY to
// the configured secondaries.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/netlimit"
	"github.com/millwright/millwright/internal/registry"
)

// Source is the registry as the DNS server uses it. *registry.Registry implements it.
type Source interface {
	DNSRevision(ctx context.Context) (int64, error)
	DNSData(ctx context.Context) (*registry.DNSData, error)
	ExpireRoutes(ctx context.Context) ([]string, error)
}

var _ Source = (*registry.Registry)(nil)

// ednsSize is the UDP payload size the server offers and answers within (the DNS flag day
// 2020 value, which avoids IP fragmentation).
const ednsSize = 1232

// Server is the authoritative DNS server. Create it with New, then Start and Stop it.
type Server struct {
	opts   Options
	keys   []tsigKey
	src    Source
	clk    clock.Clock
	log    *slog.Logger
	m      *metrics
	rate   *rateLimiter
	udpSem chan struct{}

	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex // one reload at a time
	onMoved  atomic.Pointer[func([]string, bool)]

	udp, tcp *dns.Server
	addr     atomic.Pointer[net.UDPAddr]
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New makes a server; it serves nothing until Start.
func New(opts Options, src Source, clk clock.Clock, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	opts, keys, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if clk == nil {
		clk = clock.Real()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, keys: keys, src: src, clk: clk, log: logger, m: newMetrics(reg),
		rate: newRateLimiter(opts.RateLimit, opts.RateBurst, opts.RateSources), udpSem: make(chan struct{}, opts.MaxUDPInFlight)}
	return s, nil
}

// OnMoved sets the function told, at each reload, the devices whose answer changed (a route
// set, cleared or expired, a cluster drained, a group or tag changed), so that their
// connections can be moved; unrouted is true when the wildcard's answer changed, and so every
// device without a route of its own (HasRoute) moved too. It is called from Reload, before
// Reload returns.
func (s *Server) OnMoved(fn func(devices []string, unrouted bool)) { s.onMoved.Store(&fn) }

// Answer is what the server answers for device now: its addresses of both families, nil
// when the name has no answer.
func (s *Server) Answer(device string) []netip.Addr {
	sn := s.snap.Load()
	if sn == nil {
		return nil
	}
	addrs, _ := sn.lookup(device, s.clk.Now())
	return addrs
}

// HasRoute reports whether a route of its own, its groups' or its tags' answers for device now.
func (s *Server) HasRoute(device string) bool {
	sn := s.snap.Load()
	return sn != nil && sn.hasRoute(device, s.clk.Now())
}

// Zone is the zone served, in canonical form ("gw.example.org.").
func (s *Server) Zone() string { return s.opts.Zone }

// Addr is the UDP (and TCP) address the server listens on, once started; nil when it
// serves nothing (no Options.Listen).
func (s *Server) Addr() *net.UDPAddr { return s.addr.Load() }

// Serial is the SOA serial of the snapshot being served.
func (s *Server) Serial() uint32 {
	if sn := s.snap.Load(); sn != nil {
		return sn.serial
	}
	return 0
}

// Start loads the zone, binds UDP and TCP on Options.Listen (the same port for both; port 0
// picks a free one) and serves until Stop.
func (s *Server) Start(ctx context.Context) error {
	if err := s.Reload(ctx); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Go(func() { s.maintain(lctx) })
	if s.opts.Listen == "" {
		return nil
	}
	pc, ln, err := listenBoth(s.opts.Listen)
	if err != nil {
		_ = s.Stop()
		return fmt.Errorf("dns listen %s: %w", s.opts.Listen, err)
	}
	s.addr.Store(pc.LocalAddr().(*net.UDPAddr))
	secrets := map[string]string{}
	for _, k := range s.keys {
		secrets[k.name] = k.secret
	}
	lim := netlimit.New(netlimit.Options{PerSource: s.opts.MaxTCPPerSource, Total: s.opts.MaxTCPConnections,
		OnRefuse: func(l netlimit.Limit) { s.m.tcpRefused.WithLabelValues(string(l)).Inc() }})
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept } // the handler judges
	s.udp = &dns.Server{PacketConn: pc, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept, UDPSize: 4096,
		DecorateReader: func(r dns.Reader) dns.Reader { return &udpReader{Reader: r, s: s} }}
	idle := s.opts.TCPIdleTimeout
	s.tcp = &dns.Server{Listener: netlimit.NewListener(ln, lim), Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept,
		ReadTimeout: idle, WriteTimeout: idle, IdleTimeout: func() time.Duration { return idle }, MaxTCPQueries: s.opts.TCPQueries,
		MsgInvalidFunc: func([]byte, error) { s.m.dropped.WithLabelValues("malformed").Inc() }}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started, failed := make(chan struct{}), make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() {
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
				s.log.Error("dns server stopped", "err", err)
			}
		})
		select {
		case <-started:
		case err := <-failed:
			_ = s.Stop()
			return fmt.Errorf("dns serve %s: %w", s.opts.Listen, err)
		}
	}
	s.log.Info("dns server listening", "addr", s.Addr().String(), "zone", s.opts.Zone, "serial", s.Serial())
	return nil
}

// listenBoth binds UDP and TCP on one port.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = err
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break // a fixed port: retrying would not help
		}
	}
	return nil, nil, lastErr
}

// Stop stops serving and waits for the server's goroutines.
func (s *Server) Stop() error {
	var errs []error
	if s.cancel != nil {
		s.cancel()
	}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			if err := srv.Shutdown(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Reload reads the registry and serves its state from now on; when the serial moved, the
// secondaries are notified.
func (s *Server) Reload(ctx context.Context) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	d, err := s.src.DNSData(ctx)
	if err != nil {
		return fmt.Errorf("reload dns zone: %w", err)
	}
	sn := buildSnapshot(d, s.clk.Now())
	old := s.snap.Swap(sn)
	s.m.serial.Set(float64(sn.serial))
	s.m.routed.Set(float64(len(sn.devices)))
	if old != nil && old.serial != sn.serial {
		s.log.Info("dns zone reloaded", "serial", sn.serial, "routed_devices", len(sn.devices))
		s.notifyAll(sn.serial)
	}
	if fn := s.onMoved.Load(); fn != nil && old != nil {
		if devices, unrouted := moved(old, sn, sn.at); len(devices) > 0 || unrouted {
			(*fn)(devices, unrouted)
		}
	}
	return nil
}

// maintain reloads on a revision change and expires routes when their time comes.
func (s *Server) maintain(ctx context.Context) {
	for {
		wait := s.opts.Refresh
		sn := s.snap.Load()
		if !sn.expiry.IsZero() {
			wait = min(wait, max(sn.expiry.Sub(s.clk.Now()), 0))
		}
		t := s.clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		sn = s.snap.Load()
		// A stale route (one the registry still had when the snapshot was made, past its
		// expiry) is retried at most every Refresh, never in a tight loop.
		expired := sn.stale || !sn.expiry.IsZero() && !s.clk.Now().Before(sn.expiry)
		if expired {
			// The answers changed at the expiry already; removing the routes moves the
			// serial, and the reload below tells OnMoved.
			if devices, err := s.src.ExpireRoutes(ctx); err != nil {
				s.log.Error("expire dns routes", "err", err)
			} else if len(devices) > 0 {
				s.log.Info("dns routes expired", "devices", len(devices))
			}
		}
		rev, err := s.src.DNSRevision(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("read dns revision", "err", err)
			}
			continue
		}
		if uint32(rev) != sn.serial || expired {
			if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("reload dns zone", "err", err)
			}
		}
	}
}

// udpReader drops what cannot be answered before a goroutine is spent on it, applies the
// per-source rate limit, and bounds the UDP queries in progress (the handler releases).
type udpReader struct {
	dns.Reader
	s *Server
}

func (r *udpReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	s := r.s
	for {
		m, sess, err := r.Reader.ReadUDP(conn, timeout)
		if err != nil {
			return m, sess, err
		}
		var req dns.Msg
		if err := req.Unpack(m); err != nil {
			s.m.dropped.WithLabelValues("malformed").Inc()
			continue
		}
		if req.Response {
			s.m.dropped.WithLabelValues("response").Inc()
			continue
		}
		src := netip.Addr{}
		if ua, ok := sess.RemoteAddr().(*net.UDPAddr); ok {
			src = ua.AddrPort().Addr()
		}
		if ok, denied := s.rate.allow(src, s.clk.Now()); !ok {
			if s.opts.Slip > 0 && denied%uint64(s.opts.Slip) == 0 {
				s.m.rateLimited.WithLabelValues("slipped").Inc()
				tc := new(dns.Msg)
				tc.SetReply(&req)
				tc.Truncated, tc.Authoritative = true, true
				tc.Answer, tc.Ns, tc.Extra = nil, nil, nil
				if b, err := tc.Pack(); err == nil {
					_, _ = dns.WriteToSessionUDP(conn, b, sess)
				}
			} else {
				s.m.rateLimited.WithLabelValues("dropped").Inc()
			}
			continue
		}
		s.udpSem <- struct{}{}
		return m, sess, nil
	}
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		defer func() { <-s.udpSem }()
		s.serve(w, req, true)
		return
	}
	s.serve(w, req, false)
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg, udp bool) {
	sn := s.snap.Load()
	now := s.clk.Now()
	tsig := req.IsTsig()
	if tsig != nil && w.TsigStatus() != nil {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotAuth)
		s.m.queries.WithLabelValues(dns.RcodeToString[m.Rcode]).Inc()
		_ = w.WriteMsg(m)
		return
	}
	if len(req.Question) == 1 && req.Opcode == dns.OpcodeQuery &&
		(req.Question[0].Qtype == dns.TypeAXFR || req.Question[0].Qtype == dns.TypeIXFR) {
		s.transfer(w, req, sn, now, udp)
		return
	}
	m := answer(req, sn, &s.opts, now)
	if tsig != nil {
		m.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
	}
	if udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = min(max(int(o.UDPSize()), dns.MinMsgSize), ednsSize)
		}
		m.Truncate(size)
	}
	s.m.queries.WithLabelValues(dns.RcodeToString[m.Rcode]).Inc()
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns write", "err", err)
	}
}

// answer builds the response to req from sn at now. It does a bounded amount of work: one
// question, one map lookup, at most the addresses of one cluster.
func answer(req *dns.Msg, sn *snapshot, opts *Options, now time.Time) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable, m.Compress = true, false, true
	if o := req.IsEdns0(); o != nil {
		m.SetEdns0(ednsSize, false)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	zone := opts.Zone
	if (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) || !dns.IsSubDomain(zone, name) {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return m
	}
	ttl := uint32(opts.TTL / time.Second)
	soa := soaRecord(sn, opts)
	if name == zone {
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = append(m.Answer, soa)
		case dns.TypeNS:
			m.Answer = append(m.Answer, nsRecords(opts)...)
			m.Extra = append(m.Extra, glue(opts, ttl)...)
		case dns.TypeANY:
			m.Answer = append(m.Answer, soa)
			m.Answer = append(m.Answer, nsRecords(opts)...)
		default:
			m.Ns = append(m.Ns, soa)
		}
		return m
	}
	var (
		addrs []netip.Addr
		found bool
	)
	rel := strings.TrimSuffix(name, "."+zone)
	if isNameserver(opts, name) && len(opts.NameserverAddresses) > 0 {
		addrs, found = opts.NameserverAddresses, true
	} else if last := rel[strings.LastIndexByte(rel, '.')+1:]; last == rel {
		addrs, found = sn.lookup(rel, now)
	} else if _, routed := sn.devices[last]; routed {
		// Below a device's own name: that name exists, so the wildcard does not apply.
		found = false
	} else {
		addrs, found = sn.wildcard, sn.wildcard != nil
	}
	if !found {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
		return m
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	for _, a := range addrs {
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, soa) // NODATA
	}
	return m
}

func isNameserver(opts *Options, name string) bool {
	for _, ns := range opts.Nameservers {
		if ns == name {
			return true
		}
	}
	return false
}

func soaRecord(sn *snapshot, opts *Options) *dns.SOA {
	ttl := uint32(opts.TTL / time.Second)
	return &dns.SOA{Hdr: dns.RR_Header{Name: opts.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: opts.Nameservers[0], Mbox: opts.Hostmaster, Serial: sn.serial,
		Refresh: 300, Retry: 60, Expire: 7 * 24 * 3600, Minttl: ttl}
}

func nsRecords(opts *Options) []dns.RR {
	var out []dns.RR
	for _, ns := range opts.Nameservers {
		out = append(out, &dns.NS{Hdr: dns.RR_Header{Name: opts.Zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 3600}, Ns: ns})
	}
	return out
}

// glue: the addresses of the nameservers inside the zone.
func glue(opts *Options, ttl uint32) []dns.RR {
	var out []dns.RR
	for _, ns := range opts.Nameservers {
		if !dns.IsSubDomain(opts.Zone, ns) {
			continue
		}
		out = append(out, addrRecords(ns, opts.NameserverAddresses, ttl)...)
	}
	return out
}

func addrRecords(name string, addrs []netip.Addr, ttl uint32) []dns.RR {
	var out []dns.RR
	for _, a := range addrs {
		if a.Is4() {
			out = append(out, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: a.AsSlice()})
		} else {
			out = append(out, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: a.AsSlice()})
		}
	}
	return out
}
