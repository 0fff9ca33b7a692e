package dnsserver

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/millwright/millwright/internal/optcheck"
)

// Options configure a Server. Zero values of the numeric limits mean their defaults (see
// DefaultOptions), never "no limit".
type Options struct {
	// Zone is the gateway zone the server is authoritative for, e.g. "gw.example.org" (the
	// server's --zone).
	Zone string `yaml:"-"`
	// Listen is the UDP and TCP address, e.g. ":53" or "127.0.0.1:5353" (the server's
	// --dns-listen). Empty: nothing is served, but the snapshot is still kept and OnMoved
	// still told of moves, so a node without DNS moves its connected devices too.
	Listen string `yaml:"-"`
	// TTL of the device answers (A/AAAA). Default 30s: a moved device's old answer leaves
	// caches within it. 1s to 1h.
	TTL time.Duration `yaml:"ttl"`
	// Nameservers are the zone's NS names. Default "ns1.<zone>".
	Nameservers []string `yaml:"nameservers"`
	// NameserverAddresses answer A/AAAA queries for the Nameservers inside the zone (glue).
	// Empty: an in-zone nameserver name is answered like any other name (the wildcard).
	NameserverAddresses []netip.Addr `yaml:"nameserver_addresses"`
	// Hostmaster is the SOA RNAME. Default "hostmaster.<zone>".
	Hostmaster string `yaml:"hostmaster"`

	// RateLimit is the responses per second one source (an IPv4 /24 or IPv6 /56) gets over
	// UDP; more are dropped, except that every Slip-th gets an empty truncated answer so a
	// real resolver behind the source retries over TCP. Default 100/s, burst RateBurst
	// (default 200). TCP answers are not limited: the handshake proves the source.
	RateLimit float64 `yaml:"rate_limit"`
	RateBurst int     `yaml:"rate_burst"`
	// Slip: one in Slip rate-limited queries gets a truncated answer. Default 2; 1 answers
	// every one truncated.
	Slip int `yaml:"slip"`
	// RateSources bounds the sources the rate limiter tracks at once. Default 100,000; when
	// full, it forgets them all and starts again.
	RateSources int `yaml:"rate_sources"`
	// MaxUDPInFlight bounds the UDP queries being answered at once; the next waits in the
	// socket's buffer. Default 1,024.
	MaxUDPInFlight int `yaml:"max_udp_in_flight"`
	// MaxTCPConnections bounds the TCP connections open at once (default 256) and
	// MaxTCPPerSource those of one source address (default 16); one over is closed at accept.
	MaxTCPConnections int `yaml:"max_tcp_connections"`
	MaxTCPPerSource   int `yaml:"max_tcp_per_source"`
	// TCPIdleTimeout closes a TCP connection without a query for this long (default 10s);
	// TCPQueries bounds the queries on one connection (default 100).
	TCPIdleTimeout time.Duration `yaml:"tcp_idle_timeout"`
	TCPQueries     int           `yaml:"tcp_queries"`

	// TSIGKeys authenticate zone transfers (and sign the answers to signed queries). Without
	// one, AXFR and IXFR are refused. Format of each: "name:algorithm:base64secret", the
	// algorithm one of hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1.
	TSIGKeys []string `yaml:"tsig_keys"`
	// Secondaries are the addresses (host:port) sent a NOTIFY at every change of the zone,
	// signed with the first TSIG key when there is one.
	Secondaries []string `yaml:"secondaries"`
	// NotifyTimeout is how long one NOTIFY waits for its answer (default 2s); it is sent up
	// to NotifyAttempts times (default 5) before giving up until the next change.
	NotifyTimeout  time.Duration `yaml:"notify_timeout"`
	NotifyAttempts int           `yaml:"notify_attempts"`

	// Refresh is how often the server checks the registry's revision and reloads its
	// snapshot when it moved (default 1s). Reload() does it at once.
	Refresh time.Duration `yaml:"refresh"`
	// MoveRate is how many connected devices a second are told to reconnect after a change
	// moved them (default 100); a drain gives its own rate.
	MoveRate float64 `yaml:"move_rate"`
}

// DefaultOptions returns the defaults, with Zone and Listen empty.
func DefaultOptions() Options {
	return Options{
		TTL:               30 * time.Second,
		RateLimit:         100,
		RateBurst:         200,
		Slip:              2,
		RateSources:       100_000,
		MaxUDPInFlight:    1024,
		MaxTCPConnections: 256,
		MaxTCPPerSource:   16,
		TCPIdleTimeout:    10 * time.Second,
		TCPQueries:        100,
		NotifyTimeout:     2 * time.Second,
		NotifyAttempts:    5,
		Refresh:           time.Second,
		MoveRate:          100,
	}
}

// tsigKey is a parsed Options.TSIGKeys entry.
type tsigKey struct {
	name, algorithm, secret string
}

var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// ErrOptions is wrapped by every error of Options.validate.
var ErrOptions = errors.New("invalid DNS server options")

// ParseTSIGKey parses "name:algorithm:base64secret".
func ParseTSIGKey(s string) (name, algorithm, secret string, err error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: TSIG key %q: want name:algorithm:base64secret", ErrOptions, redactKey(s))
	}
	alg, ok := tsigAlgorithms[strings.ToLower(parts[1])]
	if !ok {
		return "", "", "", fmt.Errorf("%w: TSIG key %s: algorithm %q: want hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1", ErrOptions, parts[0], parts[1])
	}
	if _, ok := dns.IsDomainName(parts[0]); !ok || parts[0] == "" {
		return "", "", "", fmt.Errorf("%w: TSIG key name %q is not a domain name", ErrOptions, parts[0])
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) < 16 {
		return "", "", "", fmt.Errorf("%w: TSIG key %s: the secret must be base64 of at least 16 bytes", ErrOptions, parts[0])
	}
	return dns.CanonicalName(parts[0]), alg, parts[2], nil
}

func redactKey(s string) string {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return s[:i+1] + "…"
	}
	return "…"
}

// withDefaults fills zero values and checks the rest.
func (o Options) withDefaults() (Options, []tsigKey, error) {
	d := DefaultOptions()
	if o.Zone == "" {
		return o, nil, fmt.Errorf("%w: a zone is required", ErrOptions)
	}
	if _, ok := dns.IsDomainName(o.Zone); !ok {
		return o, nil, fmt.Errorf("%w: zone %q is not a domain name", ErrOptions, o.Zone)
	}
	o.Zone = dns.CanonicalName(o.Zone)
	if o.TTL == 0 {
		o.TTL = d.TTL
	}
	if o.TTL < time.Second || o.TTL > time.Hour {
		return o, nil, fmt.Errorf("%w: TTL %s: want 1s to 1h", ErrOptions, o.TTL)
	}
	if len(o.Nameservers) == 0 {
		o.Nameservers = []string{"ns1." + o.Zone}
	}
	for i, ns := range o.Nameservers {
		if _, ok := dns.IsDomainName(ns); !ok {
			return o, nil, fmt.Errorf("%w: nameserver %q is not a domain name", ErrOptions, ns)
		}
		o.Nameservers[i] = dns.CanonicalName(ns)
	}
	if o.Hostmaster == "" {
		o.Hostmaster = "hostmaster." + o.Zone
	}
	o.Hostmaster = dns.CanonicalName(o.Hostmaster)
	for _, p := range []struct {
		v    *int
		def  int
		name string
	}{{&o.RateBurst, d.RateBurst, "rate burst"}, {&o.Slip, d.Slip, "slip"}, {&o.RateSources, d.RateSources, "rate sources"},
		{&o.MaxUDPInFlight, d.MaxUDPInFlight, "UDP in flight"}, {&o.MaxTCPConnections, d.MaxTCPConnections, "TCP connections"},
		{&o.MaxTCPPerSource, d.MaxTCPPerSource, "TCP connections per source"}, {&o.TCPQueries, d.TCPQueries, "TCP queries"},
		{&o.NotifyAttempts, d.NotifyAttempts, "notify attempts"}} {
		if *p.v == 0 {
			*p.v = p.def
		}
		if *p.v < 0 {
			return o, nil, fmt.Errorf("%w: %s %d is negative", ErrOptions, p.name, *p.v)
		}
	}
	if o.RateLimit == 0 {
		o.RateLimit = d.RateLimit
	}
	if o.MoveRate == 0 {
		o.MoveRate = d.MoveRate
	}
	if o.MoveRate < 0 {
		return o, nil, fmt.Errorf("%w: move rate %v is negative", ErrOptions, o.MoveRate)
	}
	if o.RateLimit < 0 {
		return o, nil, fmt.Errorf("%w: rate limit %v is negative", ErrOptions, o.RateLimit)
	}
	for _, p := range []struct {
		v    *time.Duration
		def  time.Duration
		name string
	}{{&o.TCPIdleTimeout, d.TCPIdleTimeout, "TCP idle timeout"}, {&o.NotifyTimeout, d.NotifyTimeout, "notify timeout"}, {&o.Refresh, d.Refresh, "refresh"}} {
		if *p.v == 0 {
			*p.v = p.def
		}
		if *p.v < 0 {
			return o, nil, fmt.Errorf("%w: %s %s is negative", ErrOptions, p.name, *p.v)
		}
	}
	var keys []tsigKey
	for _, k := range o.TSIGKeys {
		name, alg, secret, err := ParseTSIGKey(k)
		if err != nil {
			return o, nil, err
		}
		keys = append(keys, tsigKey{name, alg, secret})
	}
	return o, keys, nil
}

// Validate refuses limits and deadlines that are zero or negative (zero would fall back to a
// default the operator did not choose), a TTL outside 1s to 1h and malformed TSIG keys and
// names. New still fills zero fields with their defaults. The error is an *optcheck.Error
// keyed by the option's YAML key.
func (o Options) Validate() error {
	if o.TTL < time.Second || o.TTL > time.Hour {
		return optcheck.Invalid("ttl", o.TTL, "must be 1s to 1h")
	}
	for _, k := range o.TSIGKeys {
		if _, _, _, err := ParseTSIGKey(k); err != nil {
			return optcheck.Invalid("tsig_keys", redactKey(k), strings.TrimPrefix(err.Error(), ErrOptions.Error()+": "))
		}
	}
	for _, ns := range o.Nameservers {
		if _, ok := dns.IsDomainName(ns); !ok {
			return optcheck.Invalid("nameservers", ns, "not a domain name")
		}
	}
	for _, a := range o.Secondaries {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return optcheck.Invalid("secondaries", a, "want host:port")
		}
	}
	if !(o.RateLimit > 0) {
		return optcheck.Invalid("rate_limit", o.RateLimit, "must be positive")
	}
	if !(o.MoveRate > 0) {
		return optcheck.Invalid("move_rate", o.MoveRate, "must be positive")
	}
	return optcheck.First(
		optcheck.Positive("rate_burst", o.RateBurst),
		optcheck.Positive("slip", o.Slip),
		optcheck.Positive("rate_sources", o.RateSources),
		optcheck.Positive("max_udp_in_flight", o.MaxUDPInFlight),
		optcheck.Positive("max_tcp_connections", o.MaxTCPConnections),
		optcheck.Positive("max_tcp_per_source", o.MaxTCPPerSource),
		optcheck.Positive("tcp_idle_timeout", o.TCPIdleTimeout),
		optcheck.Positive("tcp_queries", o.TCPQueries),
		optcheck.Positive("notify_timeout", o.NotifyTimeout),
		optcheck.Positive("notify_attempts", o.NotifyAttempts),
		optcheck.Positive("refresh", o.Refresh),
	)
}
