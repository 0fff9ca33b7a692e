package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// httpsUplink POSTs batches with mutual TLS. It holds no connection of its
// own between sends beyond the HTTP client's idle pool.
type httpsUplink struct {
	url    string
	client *http.Client
	clk    clock.Clock
	cfg    UplinkConfig
	m      *counters
}

var _ uplink = (*httpsUplink)(nil)

func newHTTPSUplink(cfg UplinkConfig, device string, tc *tls.Config, dialer Dialer, clk clock.Clock, m *counters) *httpsUplink {
	addr := endpoint(cfg, device, cfg.HTTPSPort)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			m.connectAttempt()
			ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
			defer cancel()
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				m.connectFailure(causeDial)
			}
			return c, err
		},
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   cfg.ConnectTimeout,
		ResponseHeaderTimeout: cfg.AckTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1,
		IdleConnTimeout:       90 * time.Second,
	}
	return &httpsUplink{
		url:    "https://" + addr + protocol.BatchPath,
		client: &http.Client{Transport: tr, Timeout: cfg.ConnectTimeout + cfg.AckTimeout},
		clk:    clk,
		cfg:    cfg,
		m:      m,
	}
}

func (u *httpsUplink) run(ctx context.Context) {
	<-ctx.Done()
	u.client.CloseIdleConnections()
}

func (u *httpsUplink) ready() bool { return true }

func (u *httpsUplink) send(ctx context.Context, payload []byte) sendResult {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.url, bytes.NewReader(payload))
	if err != nil {
		return sendResult{err: fmt.Errorf("POST batch: %w", err)}
	}
	req.Header.Set("Content-Type", protocol.Encoding{Format: protocol.FormatCBOR}.ContentType())
	req.Header.Set("Content-Encoding", "zstd")
	start := u.clk.Now()
	resp, err := u.client.Do(req)
	rtt := u.clk.Now().Sub(start)
	if err != nil {
		// A moved server or a broken pooled connection: start afresh.
		u.client.CloseIdleConnections()
		return sendResult{err: fmt.Errorf("POST batch: %w", err), rtt: rtt}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	res := sendResult{reason: protocol.ReasonFromHTTPStatus(resp.StatusCode), rtt: rtt}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), u.clk.Now())
		u.client.CloseIdleConnections()
	}
	return res
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): seconds or
// an HTTP date. Anything else gives 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
