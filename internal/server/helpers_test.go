package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
)

// testServer is a server running in-process on free loopback ports.
type testServer struct {
	*server.Server
	dir string
}

func startServer(t *testing.T, mutate func(*server.Options)) *testServer {
	t.Helper()
	srv := servertest.Start(t, mutate)
	return &testServer{Server: srv, dir: srv.DataDir()}
}

// device registers device id with a new certificate from the server's CA, as enrollment would.
func (s *testServer) device(t *testing.T, id string) tls.Certificate {
	t.Helper()
	pair := deviceCert(t, s.CA(), id)
	require.NoError(t, s.Registry().AddCertificate(context.Background(), id, pair.Leaf, true))
	return pair
}

// deviceCert issues a certificate for id from ca, without registering the device.
func deviceCert(t testing.TB, ca *pki.CA, id string) tls.Certificate {
	t.Helper()
	pair, err := ca.DeviceKeyPair(id, time.Now(), 24*time.Hour)
	require.NoError(t, err)
	pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	return pair
}

func clientTLS(ca *x509.CertPool, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca, Certificates: certs, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// mqttConnect dials the gateway over TLS and connects an MQTT 5 client.
func mqttConnect(ctx context.Context, addr string, cfg *tls.Config, clientID string) (*paho.Client, *paho.Connack, error) {
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: clientID})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true})
	if err != nil {
		_ = conn.Close()
		return nil, ack, err
	}
	return c, ack, nil
}

func mustConnect(t *testing.T, s *testServer, id string) *paho.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), s.device(t, id)), id)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// apiClient calls the HTTPS API.
func (s *testServer) apiClient(certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(s.CA().Pool(), certs...)}}
}

func (s *testServer) url(path string) string {
	return "https://" + s.HTTPAddr().String() + path
}

type promResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

type promQueryData struct {
	ResultType string       `json:"resultType"`
	Result     []promSample `json:"result"`
}

// get calls an API path with the admin token and decodes the Prometheus-style envelope.
func (s *testServer) get(t *testing.T, path string, params url.Values) (int, promResponse) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url(path)+"?"+params.Encode(), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.AdminToken())
	resp, err := s.apiClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var pr promResponse
	require.NoError(t, json.Unmarshal(body, &pr), "body: %s", body)
	return resp.StatusCode, pr
}

// query runs an instant PromQL query and returns its vector or matrix result.
func (s *testServer) query(t *testing.T, q string, at time.Time) promQueryData {
	t.Helper()
	code, pr := s.get(t, "/api/v1/query", url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}})
	require.Equal(t, http.StatusOK, code, "query %s: %s", q, pr.Error)
	var d promQueryData
	require.NoError(t, json.Unmarshal(pr.Data, &d))
	return d
}

// scalar runs a query expected to return one sample and returns its value.
func (s *testServer) scalar(t *testing.T, q string, at time.Time) float64 {
	t.Helper()
	d := s.query(t, q, at)
	require.Len(t, d.Result, 1, "query %s", q)
	v, err := strconv.ParseFloat(d.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	return v
}

// metric reads one value of the server's own /metrics, summing series whose labels contain
// every given label pair (e.g. `reason="malformed"`).
func (s *testServer) metric(t *testing.T, name string, labelPairs ...string) float64 {
	t.Helper()
	resp, err := s.apiClient().Get(s.url("/metrics"))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, lp := range labelPairs {
			ok = ok && strings.Contains(line, lp)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		require.NoError(t, err, "line %q", line)
		sum += v
	}
	return sum
}

func ptr[T any](v T) *T { return &v }

func fmtMs(ms int64) string { return fmt.Sprintf("%d.%03d", ms/1000, ms%1000) }
