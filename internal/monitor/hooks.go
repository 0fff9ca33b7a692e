package monitor

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/protocol"
)

// ResultAccepted is the result label of a batch stored whole; a batch refused in part or in
// whole is counted under its reason (too_old, malformed, busy, …).
const ResultAccepted = "accepted"

// Ingester passes batches to next and counts each one's result, and the ingest delay of its
// newest value, for its device.
func (m *Monitor) Ingester(next gateway.Ingester) gateway.Ingester {
	return ingester{m, next}
}

type ingester struct {
	m    *Monitor
	next gateway.Ingester
}

func (i ingester) Ingest(ctx context.Context, device string, payload []byte) gateway.IngestResult {
	arrived := i.m.clk.Now() // before the commit: the delay is the network's and the device's, not storage's
	res := i.next.Ingest(ctx, device, payload)
	result := ResultAccepted
	if res.Reason != protocol.ReasonNone {
		result = res.Reason.String()
	}
	newest := res.Newest
	if res.Stored == 0 {
		newest = time.Time{} // nothing stored: no delay to measure
	}
	i.m.Batch(device, result, newest, arrived)
	return res
}

// HTTPHandler wraps the HTTPS device routes (batches, the device channel): for the device a
// request's verified client certificate names, it counts the request body's bytes as read
// and the response body's bytes as written, one message each way.
func (m *Monitor) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		device := r.TLS.PeerCertificates[0].Subject.CommonName
		body := &countingReader{r: r.Body}
		r.Body = body
		cw := &countingWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		m.HTTPExchange(device, body.n, cw.n, m.clk.Now())
	})
}

type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
