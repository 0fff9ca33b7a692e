package dnsserver

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	queries     *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	tcpRefused  *prometheus.CounterVec
	transfers   *prometheus.CounterVec
	notifies    *prometheus.CounterVec
	serial      prometheus.Gauge
	routed      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_queries_total",
			Help: "DNS queries answered, by response code."}, []string{"rcode"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_dropped_total",
			Help: "DNS packets dropped unanswered: malformed (could not be decoded) or response (a response sent to the server)."}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_rate_limited_total",
			Help: "UDP DNS queries over their source's rate limit: dropped, or slipped (answered empty and truncated)."}, []string{"action"}),
		tcpRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_tcp_refused_total",
			Help: "DNS TCP connections closed at accept, by the bound that refused them (source or total)."}, []string{"limit"}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_transfers_total",
			Help: "Zone transfers asked for, by result: ok, refused (no valid TSIG, or over UDP), uptodate (IXFR of the current serial) or failed."}, []string{"result"}),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millwright_dns_notifies_total",
			Help: "NOTIFY messages to secondaries, by result: ok or failed (after every attempt)."}, []string{"result"}),
		serial: prometheus.NewGauge(prometheus.GaugeOpts{Name: "millwright_dns_zone_serial",
			Help: "SOA serial of the zone being served."}),
		routed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "millwright_dns_routed_devices",
			Help: "Devices that a route (their own, a group's or a tag's) sends away from the default."}),
	}
	if reg != nil {
		reg.MustRegister(m.queries, m.dropped, m.rateLimited, m.tcpRefused, m.transfers, m.notifies, m.serial, m.routed)
	}
	return m
}
