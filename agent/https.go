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
	base   string // https://host:port
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
		base:   "https://" + addr,
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

// maxMailbox bounds the mailbox document the agent reads.
const maxMailbox = 1 << 20

// publishChannel POSTs a device channel message.
func (u *httpsUplink) publishChannel(ctx context.Context, m channelMsg) error {
	url := u.base + m.path()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(m.body))
	if err != nil {
		return fmt.Errorf("POST %s: %w", m.path(), err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := u.client.Do(req)
	if err != nil {
		u.client.CloseIdleConnections()
		return fmt.Errorf("POST %s: %w", m.path(), err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s %s", m.path(), resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// fetchMailbox GETs the device's mailbox and returns its body.
func (u *httpsUplink) fetchMailbox(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.base+protocol.MailboxPath, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", protocol.MailboxPath, err)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		u.client.CloseIdleConnections()
		return nil, fmt.Errorf("GET %s: %w", protocol.MailboxPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMailbox+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", protocol.MailboxPath, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s %s", protocol.MailboxPath, resp.Status, bytes.TrimSpace(body[:min(len(body), 512)]))
	}
	if len(body) > maxMailbox {
		return nil, fmt.Errorf("GET %s: the mailbox exceeds %d bytes", protocol.MailboxPath, maxMailbox)
	}
	return body, nil
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
