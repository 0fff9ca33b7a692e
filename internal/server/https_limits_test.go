package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/protocol/est"
)

// slowBody is a request whose body trickles in, one byte every trickle.
type slowBody struct {
	path, auth string
	body       []byte // sent whole, slowly; nil for 100,000 bytes of which the server reads some
	status     int    // the answer expected
	atOnce     bool   // refused for its credentials: answered without waiting for the body
}

type slowResult struct {
	status int
	body   []byte
	closed time.Duration // from the end of the headers to the connection's close; 0 if kept open
	err    error
}

// sendSlowBody sends the headers of req, then one byte of its body every trickle until the
// body is sent or the server answers, and waits for the connection to close if the answer
// says it will, until giveUp after the headers.
func sendSlowBody(addr string, cfg *tls.Config, req slowBody, trickle, giveUp time.Duration) slowResult {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return slowResult{err: err}
	}
	defer conn.Close()
	body := req.body
	if body == nil {
		body = bytes.Repeat([]byte{'x'}, 100_000)
	}
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n",
		req.path, len(body))
	if req.auth != "" {
		head += "Authorization: " + req.auth + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		return slowResult{err: err}
	}
	sent := time.Now()
	_ = conn.SetReadDeadline(sent.Add(giveUp))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(trickle)
		defer t.Stop()
		for _, b := range body {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := conn.Write([]byte{b}); err != nil {
					return
				}
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return slowResult{closed: time.Since(sent), err: fmt.Errorf("read answer: %w", err)}
	}
	res := slowResult{status: resp.StatusCode}
	res.body, err = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || !resp.Close {
		res.err = err
		return res
	}
	_, err = conn.Read(make([]byte, 1))
	res.closed = time.Since(sent)
	switch {
	case err == nil:
		res.err = errors.New("the server sent more after its answer")
	case errors.Is(err, os.ErrDeadlineExceeded):
		res.err = fmt.Errorf("still open %s after the headers", giveUp)
	}
	return res
}

// TestSlowBodiesAreClosed holds 350 (7 × 50) unauthenticated requests whose bodies trickle in a byte at
// a time. Those refused for their credentials are answered before their body is read, and
// the connection closes at once; one the server would read (a route that does not exist, its
// body read to keep the connection) is closed when the body timeout ends. Meanwhile an
// authenticated PromQL query and an MQTT device connect are answered.
func TestSlowBodiesAreClosed(t *testing.T) {
	const (
		bodyTimeout = 3 * time.Second
		slack       = 2 * time.Second
		perKind     = 50
	)
	s := startServer(t, func(o *server.Options) {
		o.HTTP.BodyTimeout = bodyTimeout
		o.HTTP.HeaderTimeout = bodyTimeout
		o.HTTP.MaxConnectionsPerSource = 1000 // the bound under test here is time
	})
	pair := s.device(t, "dev-slow")
	kinds := []slowBody{
		{path: protocol.BatchPath, status: http.StatusUnauthorized, atOnce: true},
		{path: est.PathEnroll, auth: "Bearer mwe_" + strings.Repeat("A", 43), status: http.StatusForbidden, atOnce: true},
		{path: est.PathEnroll, status: http.StatusUnauthorized, atOnce: true},
		{path: est.PathReenroll, status: http.StatusUnauthorized, atOnce: true},
		{path: "/api/v1/query", auth: "Bearer not-a-token", status: http.StatusUnauthorized, atOnce: true},
		{path: "/no/such/route", status: http.StatusNotFound},
		// Dormant re-enrollment proves itself in its body, which it reads within the body
		// timeout; then it answers that what arrived is no request.
		{path: est.PathDormantReenroll, status: http.StatusBadRequest},
	}
	cfg := clientTLS(s.CA().Pool())
	cfg.NextProtos = []string{"http/1.1"}
	results := make([][]slowResult, len(kinds))
	var wg sync.WaitGroup
	for k, kind := range kinds {
		results[k] = make([]slowResult, perKind)
		for i := range perKind {
			wg.Go(func() {
				results[k][i] = sendSlowBody(s.HTTPAddr().String(), cfg, kind, 100*time.Millisecond, bodyTimeout+2*slack)
			})
		}
	}
	sent := time.Now()

	// Meanwhile: the API answers a query, and a device connects over MQTT.
	require.Eventually(t, func() bool { return s.metric(t, "millwright_http_connections") >= perKind },
		bodyTimeout, 10*time.Millisecond, "the slow requests are not all open")
	start := time.Now()
	s.query(t, `vector(1)`, time.Now())
	apiTook := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start = time.Now()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), "dev-slow")
	require.NoError(t, err)
	mqttTook := time.Since(start)
	_ = c.Disconnect(&paho.Disconnect{})
	held := s.metric(t, "millwright_http_connections")
	t.Logf("while %.0f HTTPS connections were open: query answered in %s, MQTT connect in %s", held, apiTook, mqttTook)
	require.Less(t, time.Since(sent), bodyTimeout, "the checks ran after the slow requests could have been closed")

	wg.Wait()
	for k, kind := range kinds {
		var slowest time.Duration
		for _, r := range results[k] {
			require.NoError(t, r.err, "%s", kind.path)
			require.Equal(t, kind.status, r.status, "%s", kind.path)
			require.NotZero(t, r.closed, "%s: the server keeps the connection", kind.path)
			slowest = max(slowest, r.closed)
		}
		t.Logf("%s (%d): the slowest of %d closed %s after its headers", kind.path, kind.status, perKind, slowest)
		if kind.atOnce {
			require.Less(t, slowest, bodyTimeout, "%s: refused for its credentials, yet held", kind.path)
		} else {
			require.Less(t, slowest, bodyTimeout+slack, "%s: held past the body timeout", kind.path)
		}
	}
}

// clientFrom is an HTTPS client whose connections come from the source address src (one of
// 127.0.0.0/8) and close after each request.
func (s *testServer) clientFrom(src string, certs ...tls.Certificate) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       d.DialContext,
		TLSClientConfig:   clientTLS(s.CA().Pool(), certs...),
		DisableKeepAlives: true,
	}}
}

// queryFrom runs an authenticated PromQL query from src and returns its error, if any.
func (s *testServer) queryFrom(src string) error {
	req, err := http.NewRequest(http.MethodGet, s.url("/api/v1/query")+"?"+url.Values{"query": {"vector(1)"}}.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminToken())
	resp, err := s.clientFrom(src).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// metricFrom reads one metric of the server from src, summing the series that carry every
// label pair.
func (s *testServer) metricFrom(src, name string, labelPairs ...string) (float64, error) {
	resp, err := s.clientFrom(src).Get(s.url("/metrics"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		ok := true
		for _, lp := range labelPairs {
			ok = ok && strings.Contains(f[0], lp)
		}
		if ok {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("metric line %q: %w", line, err)
			}
			sum += v
		}
	}
	return sum, nil
}

// TestHTTPSConnectionCaps fills the per-source bound from one address with idle connections:
// one more connection from it is closed at accept, while another address is served; then it
// fills the total bound, and a third address is refused too. Freed places serve again.
func TestHTTPSConnectionCaps(t *testing.T) {
	const perSource, total = 8, 12
	s := startServer(t, func(o *server.Options) {
		o.HTTP.MaxConnectionsPerSource = perSource
		o.HTTP.MaxConnections = total
		o.HTTP.HeaderTimeout = time.Minute // the idle connections stay for the test
	})
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			_ = c.Close()
		}
	})
	// hold opens n idle connections from src, each admitted: its TLS handshake completes. A
	// connection the test made just before may not have been let go by the server yet, so a
	// refused handshake is tried again.
	hold := func(src string, n int) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		for range n {
			require.Eventually(t, func() bool {
				c, err := tls.DialWithDialer(d, "tcp", s.HTTPAddr().String(), clientTLS(s.CA().Pool()))
				if err == nil {
					idle = append(idle, c)
				}
				return err == nil
			}, 5*time.Second, 10*time.Millisecond)
		}
	}

	hold("127.0.0.1", perSource)
	require.Error(t, s.queryFrom("127.0.0.1"), "a connection over the per-source bound was served")
	require.NoError(t, s.queryFrom("127.0.0.2"))

	hold("127.0.0.2", total-perSource)
	require.Error(t, s.queryFrom("127.0.0.3"), "a connection over the total bound was served")

	for _, c := range idle {
		require.NoError(t, c.Close())
	}
	idle = nil
	require.Eventually(t, func() bool { return s.queryFrom("127.0.0.1") == nil }, 5*time.Second, 10*time.Millisecond)
	for _, limit := range []string{"source", "total"} {
		v, err := s.metricFrom("127.0.0.1", "millwright_http_connections_refused_total", `{limit="`+limit+`"}`)
		require.NoError(t, err)
		require.GreaterOrEqual(t, v, 1.0, limit)
	}
}

// TestSlowBatchUpload gives an authorized device its upload timeout, longer than the body
// timeout of other routes, to send a batch: a batch that trickles in within it is stored, and
// one slower is answered 408 (to be sent again) and its connection closed.
func TestSlowBatchUpload(t *testing.T) {
	const bodyTimeout, uploadTimeout = time.Second, 4 * time.Second
	s := startServer(t, func(o *server.Options) {
		o.HTTP.BodyTimeout = bodyTimeout
		o.HTTP.UploadTimeout = uploadTimeout
	})
	cfg := clientTLS(s.CA().Pool(), s.device(t, "dev-trickle"))
	cfg.NextProtos = []string{"http/1.1"}
	batch := encode(t, protocol.Pack{{Name: "level", Value: ptr(3.5)}}, protocol.Encoding{Format: protocol.FormatJSON})
	trickle := 2 * bodyTimeout / time.Duration(len(batch)) // the whole batch takes twice the body timeout

	r := sendSlowBody(s.HTTPAddr().String(), cfg, slowBody{path: protocol.BatchPath, body: batch}, trickle, uploadTimeout)
	require.NoError(t, r.err)
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	require.Equal(t, 3.5, s.scalar(t, `level{device="dev-trickle"}`, time.Now()))

	r = sendSlowBody(s.HTTPAddr().String(), cfg, slowBody{path: protocol.BatchPath}, 100*time.Millisecond, uploadTimeout+2*time.Second)
	require.NoError(t, r.err)
	require.Equal(t, http.StatusRequestTimeout, r.status, "%s", r.body)
	require.NotZero(t, r.closed, "the connection stays open after 408")
	require.InDelta(t, uploadTimeout.Seconds(), r.closed.Seconds(), 1.5)
	require.Equal(t, 1.0, s.metric(t, "millwright_http_ingest_requests_total", `code="408"`))
}

// TestHTTP2Deadlines runs the routes whose deadlines the handlers move over HTTP/2, where
// they are the stream's: a query, a batch upload, and refusals for credentials, which leave
// the connection to the requests after them.
func TestHTTP2Deadlines(t *testing.T) {
	s := startServer(t, func(o *server.Options) { o.HTTP.BodyTimeout = 2 * time.Second; o.HTTP.HTTP2 = true })
	h2 := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: clientTLS(s.CA().Pool(), certs...), ForceAttemptHTTP2: true,
		}}
	}
	dev := h2(s.device(t, "dev-h2"))
	anon := h2()
	t.Cleanup(func() { dev.CloseIdleConnections(); anon.CloseIdleConnections() })
	do := func(c *http.Client, method, path, token string, body []byte) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, s.url(path), bytes.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if method == http.MethodPost && path != protocol.BatchPath {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, 2, resp.ProtoMajor)
		return resp
	}
	batch := encode(t, protocol.Pack{{Name: "h2", Value: ptr(2.0)}}, cborZstd)
	require.Equal(t, http.StatusAccepted, do(dev, http.MethodPost, protocol.BatchPath, "", batch).StatusCode)
	require.Equal(t, http.StatusUnauthorized, do(anon, http.MethodPost, protocol.BatchPath, "", batch).StatusCode)
	require.Equal(t, http.StatusUnauthorized, do(anon, http.MethodPost, "/api/v1/query", "", []byte("query=h2")).StatusCode)
	require.Equal(t, http.StatusOK, do(anon, http.MethodPost, "/api/v1/query", s.AdminToken(), []byte("query=h2")).StatusCode)
	require.Equal(t, http.StatusOK, do(anon, http.MethodGet, "/api/v1/query?query=h2", s.AdminToken(), nil).StatusCode)
	require.Equal(t, 2.0, s.scalar(t, `h2{device="dev-h2"}`, time.Now()))
}

// TestHTTP2OffByDefault: the HTTPS listener offers HTTP/1.1 only unless HTTP/2 is turned on,
// since the Go it is built with has HTTP/2 server vulnerabilities (docs/security.md).
func TestHTTP2OffByDefault(t *testing.T) {
	s := startServer(t, nil)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: clientTLS(s.CA().Pool()), ForceAttemptHTTP2: true,
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, s.url("/api/v1/query?query=up"), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.AdminToken())
	resp, err := c.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, resp.ProtoMajor, "HTTP/2 is off unless turned on")
}
