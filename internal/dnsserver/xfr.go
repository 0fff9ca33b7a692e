package dnsserver

import (
	"slices"
	"time"

	"github.com/miekg/dns"
)

// xfrChunk bounds the bytes of records in one message of a transfer (a TCP DNS message holds
// at most 65,535 bytes; the TSIG and header need the rest).
const xfrChunk = 60_000

// transfer answers AXFR, and IXFR with the whole zone (RFC 1995 §4 allows it), over TCP to a
// client that signed its request with one of the server's TSIG keys; anything else is refused.
func (s *Server) transfer(w dns.ResponseWriter, req *dns.Msg, sn *snapshot, now time.Time, udp bool) {
	tsig := req.IsTsig()
	if udp || tsig == nil || len(s.keys) == 0 || !dns.IsSubDomain(s.opts.Zone, req.Question[0].Name) ||
		dns.CanonicalName(req.Question[0].Name) != s.opts.Zone {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
		if tsig != nil {
			m.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
		}
		s.m.transfers.WithLabelValues("refused").Inc()
		s.m.queries.WithLabelValues(dns.RcodeToString[m.Rcode]).Inc()
		_ = w.WriteMsg(m)
		return
	}
	soa := soaRecord(sn, &s.opts)
	if req.Question[0].Qtype == dns.TypeIXFR && len(req.Ns) == 1 {
		if have, ok := req.Ns[0].(*dns.SOA); ok && have.Serial == sn.serial {
			m := new(dns.Msg)
			m.SetReply(req)
			m.Authoritative = true
			m.Answer = []dns.RR{soa}
			m.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
			s.m.transfers.WithLabelValues("uptodate").Inc()
			s.m.queries.WithLabelValues("NOERROR").Inc()
			_ = w.WriteMsg(m)
			return
		}
	}
	rrs := zoneRecords(sn, &s.opts, now)
	ch := make(chan *dns.Envelope)
	tr := new(dns.Transfer)
	done := make(chan error, 1)
	go func() { done <- tr.Out(w, req, ch) }()
	var (
		chunk []dns.RR
		size  int
	)
	send := func() bool {
		select {
		case ch <- &dns.Envelope{RR: chunk}:
			chunk, size = nil, 0
			return true
		case err := <-done:
			done <- err
			return false
		}
	}
	ok := true
	for _, rr := range rrs {
		if n := dns.Len(rr); size+n > xfrChunk && len(chunk) > 0 {
			if ok = send(); !ok {
				break
			}
		}
		chunk = append(chunk, rr)
		size += dns.Len(rr)
	}
	if ok && len(chunk) > 0 {
		ok = send()
	}
	close(ch)
	err := <-done
	if err != nil || !ok {
		s.m.transfers.WithLabelValues("failed").Inc()
		s.log.Warn("dns zone transfer failed", "remote", w.RemoteAddr().String(), "err", err)
		return
	}
	s.m.transfers.WithLabelValues("ok").Inc()
	s.m.queries.WithLabelValues("NOERROR").Inc()
	s.log.Info("dns zone transferred", "remote", w.RemoteAddr().String(), "serial", sn.serial, "records", len(rrs))
}

// zoneRecords is the zone as the snapshot answers at now: SOA, NS, glue, the wildcard, a
// record set per routed device whose answer is not the wildcard's, and the SOA again.
func zoneRecords(sn *snapshot, opts *Options, now time.Time) []dns.RR {
	ttl := uint32(opts.TTL / time.Second)
	soa := soaRecord(sn, opts)
	out := []dns.RR{soa}
	out = append(out, nsRecords(opts)...)
	out = append(out, glue(opts, ttl)...)
	out = append(out, addrRecords("*."+opts.Zone, sn.wildcard, ttl)...)
	devices := make([]string, 0, len(sn.devices))
	for d := range sn.devices {
		devices = append(devices, d)
	}
	slices.Sort(devices)
	for _, d := range devices {
		if !sn.hasRoute(d, now) {
			continue // every route of it expired: the wildcard answers
		}
		addrs, _ := sn.lookup(d, now)
		out = append(out, addrRecords(d+"."+opts.Zone, addrs, ttl)...)
	}
	return append(out, soa)
}

// notifyAll tells every secondary that the zone changed (RFC 1996), each in its own goroutine.
func (s *Server) notifyAll(serial uint32) {
	for _, sec := range s.opts.Secondaries {
		go s.notify(sec, serial)
	}
}

func (s *Server) notify(addr string, serial uint32) {
	m := new(dns.Msg)
	m.SetNotify(s.opts.Zone)
	m.Answer = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: s.opts.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET},
		Ns: s.opts.Nameservers[0], Mbox: s.opts.Hostmaster, Serial: serial}}
	c := &dns.Client{Net: "udp", Timeout: s.opts.NotifyTimeout}
	if len(s.keys) > 0 {
		k := s.keys[0]
		c.TsigSecret = map[string]string{k.name: k.secret}
		m.SetTsig(k.name, k.algorithm, 300, time.Now().Unix())
	}
	var err error
	for range s.opts.NotifyAttempts {
		var in *dns.Msg
		in, _, err = c.Exchange(m, addr)
		if err == nil && in.Rcode == dns.RcodeSuccess {
			s.m.notifies.WithLabelValues("ok").Inc()
			s.log.Debug("dns notify answered", "secondary", addr, "serial", serial)
			return
		}
		if err == nil {
			err = &rcodeError{in.Rcode}
		}
		if in != nil || err != nil {
			m.Id = dns.Id()
			if len(s.keys) > 0 {
				k := s.keys[0]
				m.Extra = nil
				m.SetTsig(k.name, k.algorithm, 300, time.Now().Unix())
			}
		}
	}
	s.m.notifies.WithLabelValues("failed").Inc()
	s.log.Warn("dns notify failed", "secondary", addr, "serial", serial, "err", err)
}

type rcodeError struct{ rcode int }

func (e *rcodeError) Error() string { return "answered " + dns.RcodeToString[e.rcode] }
