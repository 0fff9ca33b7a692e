package gateway_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/devicepolicy"
	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/tsdb"
)

// rig is what a gateway test needs around the MQTT side: a development CA, a
// server certificate for localhost, a metrics registry and a real ingest
// pipeline over a TSDB and an event log in temporary directories (closed
// when the test ends), with the server's adapter that makes it the gateway's
// Ingester.
type rig struct {
	dir       string // the CA's directory
	now       time.Time
	ca        *pki.CA
	serverTLS *tls.Config
	reg       *prometheus.Registry
	pipeline  *ingest.Pipeline
	ing       gateway.Ingester // the pipeline
}

func newRig(tb testing.TB, opts ingest.Options) *rig {
	tb.Helper()
	dir := tb.TempDir()
	r := &rig{dir: dir, now: time.Now(), reg: prometheus.NewRegistry()}
	var err error
	r.ca, _, err = pki.LoadOrCreateCA(dir, r.now)
	require.NoError(tb, err)
	names, ips := pki.ServerNames("", nil)
	serverCert, err := pki.EnsureServerCert(dir, r.ca, names, ips, r.now)
	require.NoError(tb, err)
	r.serverTLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: r.ca.Pool()}
	store, err := tsdb.Open(tb.TempDir(), tsdb.DefaultOptions(), nil, r.reg)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = store.Close() })
	events, err := eventlog.Open(tb.TempDir())
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = events.Close() })
	r.pipeline = ingest.New(store, events, clock.Real(), opts, nil, r.reg)
	r.ing = devicepolicy.Ingester(r.pipeline)
	return r
}
