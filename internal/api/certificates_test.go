package api_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
)

// certAPI is the API on a real SQLite registry, with the device CA ca; the token "op" is an
// operator, "view" a viewer.
type certAPI struct {
	url string
	reg *registry.Registry
	ca  *pki.CA
}

// testTokens authenticates the tests' two tokens: "op" an operator, "view" a viewer.
func testTokens(_ context.Context, tok string) (api.Principal, error) {
	switch tok {
	case "op":
		return api.Principal{Name: "operator:ci", Role: registry.RoleOperator}, nil
	case "view":
		return api.Principal{Name: "operator:eyes", Role: registry.RoleViewer}, nil
	}
	return api.Principal{}, registry.ErrTokenInvalid
}

func startCertAPI(t *testing.T, roots func(*pki.CA) *x509.CertPool) *certAPI {
	t.Helper()
	reg, err := registry.Open(context.Background(), "", t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Close()) })
	ca, err := pki.NewCA(pki.DevelopmentCAName, time.Now())
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler(api.Config{
		Authenticate: testTokens,
		Registry:     reg,
		DeviceRoots:  roots(ca),
	}))
	t.Cleanup(srv.Close)
	return &certAPI{url: srv.URL, reg: reg, ca: ca}
}

// post sends body (JSON-encoded unless it is a string) and returns the status and envelope.
func (c *certAPI) post(t *testing.T, token string, body any) (int, apitypes.Response[json.RawMessage]) {
	t.Helper()
	b, ok := body.(string)
	if !ok {
		enc, err := json.Marshal(body)
		require.NoError(t, err)
		b = string(enc)
	}
	req, err := http.NewRequest(http.MethodPost, c.url+"/api/v1/certificates", strings.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var env apitypes.Response[json.RawMessage]
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	return resp.StatusCode, env
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// deviceCert issues a certificate for id from ca, valid from notBefore for validity.
func deviceCert(t *testing.T, ca *pki.CA, id string, notBefore time.Time, validity time.Duration) *x509.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	c, _, err := ca.DeviceCert(id, key.Public(), notBefore, validity)
	require.NoError(t, err)
	return c
}

// TestRegisterCertificates: POST /api/v1/certificates records device certificates of the
// server's CA, creating their devices, once each, with an audit entry naming the caller and its
// address; it refuses certificates the gateway would never admit, bad bodies, and viewers.
func TestRegisterCertificates(t *testing.T) {
	c := startCertAPI(t, (*pki.CA).Pool)
	now := time.Now()
	a, b := deviceCert(t, c.ca, "dev-a", now, time.Hour), deviceCert(t, c.ca, "dev-b", now, time.Hour)

	code, env := c.post(t, "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(a.Raw), certPEM(b.Raw)}})
	require.Equal(t, http.StatusOK, code, env.Error)
	var out apitypes.CertificatesRegistered
	require.NoError(t, json.Unmarshal(env.Data, &out))
	require.Equal(t, 2, out.Registered)
	for _, id := range []string{"dev-a", "dev-b"} {
		d, err := c.reg.Device(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, registry.StatusActive, d.Status)
	}
	audit, err := c.reg.ListAudit(context.Background(), 100, 0)
	require.NoError(t, err)
	targets := map[string]bool{}
	for _, e := range audit {
		if e.Action == registry.ActionCertificateAdd {
			targets[e.Target] = true
			require.Equal(t, "operator:ci", e.Actor)
			host, _, err := net.SplitHostPort(e.Remote)
			require.NoError(t, err, "the audit entry records where the request came from: %+v", e)
			require.Equal(t, "127.0.0.1", host)
		}
	}
	require.Equal(t, map[string]bool{"dev-a": true, "dev-b": true}, targets)

	// The same certificates again, and one new: only the new one is recorded.
	a2 := deviceCert(t, c.ca, "dev-a", now, time.Hour)
	code, env = c.post(t, "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(a.Raw), certPEM(b.Raw), certPEM(a2.Raw)}})
	require.Equal(t, http.StatusOK, code, env.Error)
	require.NoError(t, json.Unmarshal(env.Data, &out))
	require.Equal(t, 1, out.Registered)

	other, err := pki.NewCA("Other CA", now)
	require.NoError(t, err)
	server, err := pki.GenerateKey()
	require.NoError(t, err)
	_, serverPEM, err := c.ca.ServerCert([]string{"dev-s"}, nil, server.Public(), now, time.Hour)
	require.NoError(t, err)
	require.NoError(t, c.reg.SetStatus(context.Background(), "dev-b", registry.StatusRevoked, "operator:ci", ""))
	tooMany := make([]string, apitypes.MaxCertificatesPerRequest+1)
	for i := range tooMany {
		tooMany[i] = certPEM(a.Raw)
	}
	cases := []struct {
		name, token string
		body        any
		code        int
		errType     apitypes.ErrorType
		want        string
	}{
		{"another CA's certificate", "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(deviceCert(t, other, "dev-x", now, time.Hour).Raw)}},
			http.StatusBadRequest, apitypes.ErrorBadData, `certificate 1 ("dev-x", serial`},
		{"an expired certificate", "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(deviceCert(t, c.ca, "dev-x", now.Add(-48*time.Hour), time.Hour).Raw)}},
			http.StatusBadRequest, apitypes.ErrorBadData, "expired"},
		{"a server certificate", "op", apitypes.CertificatesRequest{Certificates: []string{string(serverPEM)}},
			http.StatusBadRequest, apitypes.ErrorBadData, "for client authentication"},
		{"not PEM", "op", apitypes.CertificatesRequest{Certificates: []string{"MIIB"}},
			http.StatusBadRequest, apitypes.ErrorBadData, "certificate 1: not a PEM CERTIFICATE block"},
		{"two blocks in one entry", "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(a.Raw) + certPEM(a2.Raw)}},
			http.StatusBadRequest, apitypes.ErrorBadData, "one certificate per entry"},
		{"none", "op", apitypes.CertificatesRequest{}, http.StatusBadRequest, apitypes.ErrorBadData, `"certificates" must hold 1 to 1000 certificates, not 0`},
		{"too many", "op", apitypes.CertificatesRequest{Certificates: tooMany}, http.StatusBadRequest, apitypes.ErrorBadData, "not 1001"},
		{"an unknown field", "op", `{"certificates": [], "device_id": "dev-x"}`, http.StatusBadRequest, apitypes.ErrorBadData, `unknown field "device_id"`},
		{"a revoked device", "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(deviceCert(t, c.ca, "dev-b", now, time.Hour).Raw)}},
			http.StatusBadRequest, apitypes.ErrorBadData, "device dev-b is revoked"},
		{"a viewer", "view", apitypes.CertificatesRequest{Certificates: []string{certPEM(a.Raw)}}, http.StatusForbidden, apitypes.ErrorForbidden, "needs operator"},
		{"no token", "", apitypes.CertificatesRequest{Certificates: []string{certPEM(a.Raw)}}, http.StatusUnauthorized, apitypes.ErrorUnauthorized, "bearer token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, env := c.post(t, tc.token, tc.body)
			require.Equal(t, tc.code, code, env.Error)
			require.Equal(t, apitypes.StatusError, env.Status)
			require.Equal(t, tc.errType, env.ErrorType)
			require.Contains(t, env.Error, tc.want)
		})
	}
	_, err = c.reg.Device(context.Background(), "dev-x")
	require.ErrorIs(t, err, registry.ErrNotFound, "nothing refused was recorded")
}

// TestRegisterCertificatesWithoutRoots: a server that gives the API no device CA records no
// certificate at all.
func TestRegisterCertificatesWithoutRoots(t *testing.T) {
	c := startCertAPI(t, func(*pki.CA) *x509.CertPool { return nil })
	code, env := c.post(t, "op", apitypes.CertificatesRequest{Certificates: []string{certPEM(deviceCert(t, c.ca, "dev-a", time.Now(), time.Hour).Raw)}})
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, apitypes.ErrorUnavailable, env.ErrorType)
	n, err := c.reg.CountDevices(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestDeviceRoutesSpeakAPITypes: the device, operator and audit routes answer in the types
// of apitypes, field for field as the registry holds them.
func TestDeviceRoutesSpeakAPITypes(t *testing.T) {
	c := startCertAPI(t, (*pki.CA).Pool)
	ctx := context.Background()
	cert := deviceCert(t, c.ca, "dev-a", time.Now(), time.Hour)
	require.NoError(t, c.reg.AddCertificate(ctx, "dev-a", cert, true))
	require.NoError(t, c.reg.SetTags(ctx, "dev-a", map[string]string{"line": "3"}, nil, "operator:ci", ""))
	require.NoError(t, c.reg.SetGroups(ctx, "dev-a", []string{"hall-2"}, nil, "operator:ci", ""))
	want, err := c.reg.Device(ctx, "dev-a")
	require.NoError(t, err)

	get := func(path string, out any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, c.url+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer view")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var env apitypes.Response[json.RawMessage]
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
		require.Equal(t, http.StatusOK, resp.StatusCode, env.Error)
		dec := json.NewDecoder(bytes.NewReader(env.Data))
		dec.DisallowUnknownFields() // every field the server sends is in the type
		require.NoError(t, dec.Decode(out))
	}
	var d apitypes.Device
	get("/api/v1/devices/dev-a", &d)
	require.Equal(t, apitypes.Device{
		ID: want.ID, Status: apitypes.DeviceActive, Tags: map[string]string{"line": "3"}, Groups: []string{"hall-2"},
		CreatedAt: want.CreatedAt, EnrolledAt: want.EnrolledAt,
	}, d)
	var list apitypes.DeviceList
	get("/api/v1/devices", &list)
	require.Equal(t, apitypes.DeviceList{Devices: []apitypes.Device{d}}, list)
}
