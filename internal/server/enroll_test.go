package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol/est"
)

// apiCall sends a JSON request with a token and decodes the envelope's data into out.
func (s *testServer) apiCall(t testing.TB, token, method, path string, body, out any) (int, promResponse) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url(path), rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// A client of its own, whose connection is closed after the call: a test making hundreds
	// of calls must not hold hundreds of idle connections against the per-source bound.
	c := s.apiClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var pr promResponse
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/gzip" {
		return resp.StatusCode, pr // a backup archive (POST /api/v1/backup), not an envelope
	}
	require.NoError(t, json.Unmarshal(raw, &pr), "%s %s: %s", method, path, raw)
	if out != nil && pr.Status == "success" {
		require.NoError(t, json.Unmarshal(pr.Data, out))
	}
	return resp.StatusCode, pr
}

func (s *testServer) tokens(t *testing.T, spec map[string]any) []string {
	t.Helper()
	var out struct {
		Tokens []string `json:"tokens"`
	}
	code, pr := s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/enrollment-tokens", spec, &out)
	require.Equal(t, http.StatusOK, code, pr.Error)
	return out.Tokens
}

// estEnroll makes a key and CSR and posts them to simpleenroll with token and model.
func (s *testServer) estEnroll(t *testing.T, token, model string) (*http.Response, string, tls.Certificate) {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	csrDER, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, s.url(est.PathEnroll), bytes.NewReader(est.EncodeBase64(csrDER)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", est.ContentCSR)
	req.Header.Set("Authorization", "Bearer "+token)
	if model != "" {
		req.Header.Set(est.HeaderModel, model)
	}
	resp, err := s.apiClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		return resp, string(body), tls.Certificate{}
	}
	der, err := est.DecodeBase64(body)
	require.NoError(t, err)
	certs, err := est.DecodeCertsOnly(der)
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(pki.EncodeCert(certs[0].Raw), keyPEM)
	require.NoError(t, err)
	pair.Leaf = certs[0]
	return resp, string(body), pair
}

func TestEnrollmentTokens(t *testing.T) {
	s := startServer(t, nil)
	tok := s.tokens(t, map[string]any{"count": 1, "tags": map[string]string{"site": "plant-7"}})[0]
	require.True(t, strings.HasPrefix(tok, "mwe_"))

	resp, body, pair := s.estEnroll(t, tok, "rpi4")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	id := pair.Leaf.Subject.CommonName
	dev, err := s.Registry().Device(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, dev.Status)
	require.Equal(t, "plant-7", dev.Tags["site"])
	require.Equal(t, "rpi4", dev.HardwareModel)

	// The enrolled certificate connects over MQTT/TLS.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), id)
	require.NoError(t, err)
	_ = c.Disconnect(&paho.Disconnect{})

	// A second use of the same token is refused.
	resp, body, _ = s.estEnroll(t, tok, "rpi4")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, body, "already used")

	// An expired token.
	short := s.tokens(t, map[string]any{"count": 1, "expires": "1ms"})[0]
	time.Sleep(20 * time.Millisecond)
	resp, body, _ = s.estEnroll(t, short, "")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, body, "expired")

	// A model restriction that does not match, then one that does.
	bound := s.tokens(t, map[string]any{"count": 1, "model": "gw-200"})[0]
	resp, body, _ = s.estEnroll(t, bound, "rpi4")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, body, "model")
	resp, body, _ = s.estEnroll(t, bound, "gw-200")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)

	// An unknown token and no token.
	resp, _, _ = s.estEnroll(t, "mwe_nonsense", "")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, _, _ = s.estEnroll(t, "", "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// A token bound to a device ID enrolls that ID, whatever the request asks for.
	named := s.tokens(t, map[string]any{"count": 1, "device_id": "press-12"})[0]
	resp, body, pair = s.estEnroll(t, named, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "press-12", pair.Leaf.Subject.CommonName)
}

// TestEnrollWithOpenSSLAndCurl enrolls through standard tools: openssl makes the key and CSR,
// curl posts it to the EST endpoint, openssl reads the PKCS #7 answer, and the certificate
// connects over MQTT/TLS.
func TestEnrollWithOpenSSLAndCurl(t *testing.T) {
	for _, tool := range []string{"openssl", "curl"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "%s is needed", tool)
	}
	s := startServer(t, nil)
	tok := s.tokens(t, map[string]any{"count": 1})[0]
	dir := t.TempDir()
	run := func(name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s %v: %s", name, args, out)
		return out
	}
	run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "device.key", "-subj", "/CN=whatever-the-device-wants", "-outform", "DER", "-out", "device.csr")
	csr, err := os.ReadFile(filepath.Join(dir, "device.csr"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "device.csr.b64"), est.EncodeBase64(csr), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.pem"), s.CA().PEM, 0o600))
	run("curl", "--fail-with-body", "-sS", "--cacert", "ca.pem", "-u", "device:"+tok,
		"-H", "Content-Type: application/pkcs10", "--data-binary", "@device.csr.b64",
		"-o", "device.p7.b64", s.url(est.PathEnroll))
	run("openssl", "base64", "-d", "-in", "device.p7.b64", "-out", "device.p7")
	run("openssl", "pkcs7", "-inform", "DER", "-in", "device.p7", "-print_certs", "-out", "device.crt")

	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key"))
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	id := leaf.Subject.CommonName
	require.NotEqual(t, "whatever-the-device-wants", id, "the server assigns the device ID")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), id)
	require.NoError(t, err)
	_ = c.Disconnect(&paho.Disconnect{})

	// cacerts answers the CA, as EST clients fetch it.
	out := run("curl", "--fail-with-body", "-sS", "--cacert", "ca.pem", "-o", "cacerts.b64", s.url(est.PathCACerts))
	_ = out
	run("openssl", "base64", "-d", "-in", "cacerts.b64", "-out", "cacerts.p7")
	require.Contains(t, string(run("openssl", "pkcs7", "-inform", "DER", "-in", "cacerts.p7", "-print_certs")), "Millwright development CA")
}

// TestReenrollKeepsOldCertificate rotates a device's certificate: both work until the old one
// is revoked or expires.
func TestReenrollKeepsOldCertificate(t *testing.T) {
	s := startServer(t, nil)
	_, _, old := s.estEnroll(t, s.tokens(t, map[string]any{"count": 1})[0], "")
	id := old.Leaf.Subject.CommonName

	key, err := pki.GenerateKey()
	require.NoError(t, err)
	csrDER, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	resp, err := s.apiClient(old).Post(s.url(est.PathReenroll), est.ContentCSR, bytes.NewReader(est.EncodeBase64(csrDER)))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	der, err := est.DecodeBase64(body)
	require.NoError(t, err)
	certs, err := est.DecodeCertsOnly(der)
	require.NoError(t, err)
	require.Equal(t, id, certs[0].Subject.CommonName)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	fresh, err := tls.X509KeyPair(pki.EncodeCert(certs[0].Raw), keyPEM)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pair := range []tls.Certificate{old, fresh} {
		c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), id)
		require.NoError(t, err)
		_ = c.Disconnect(&paho.Disconnect{})
	}
	// Without a client certificate, re-enrollment is refused.
	resp, err = s.apiClient().Post(s.url(est.PathReenroll), est.ContentCSR, bytes.NewReader(est.EncodeBase64(csrDER)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestRevokeClosesSession revokes a connected device: its session closes within a second, its
// reconnect is refused, and the CRL lists its certificate.
func TestRevokeClosesSession(t *testing.T) {
	s := startServer(t, nil)
	pair := s.device(t, "dev-rev")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), "dev-rev")
	require.NoError(t, err)

	code, pr := s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/devices/dev-rev/revoke", nil, nil)
	require.Equal(t, http.StatusOK, code, pr.Error)
	revokedAt := time.Now()
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("the revoked device's session is still open after 1 s")
	}
	t.Logf("session closed %s after the revoke call returned", time.Since(revokedAt))

	_, _, err = mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), "dev-rev")
	require.Error(t, err, "reconnect refused")

	resp, err := s.apiClient().Get(s.url("/ca/crl"))
	require.NoError(t, err)
	der, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	crl, err := x509.ParseRevocationList(der)
	require.NoError(t, err)
	require.NoError(t, crl.CheckSignatureFrom(s.CA().Cert))
	var serials []string
	for _, e := range crl.RevokedCertificateEntries {
		serials = append(serials, e.SerialNumber.Text(16))
	}
	require.Contains(t, serials, pair.Leaf.SerialNumber.Text(16))
}

// TestSuspendResume refuses a suspended device and admits it again after resume.
func TestSuspendResume(t *testing.T) {
	s := startServer(t, nil)
	pair := s.device(t, "dev-sus")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connect := func() error {
		c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), "dev-sus")
		if err == nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return err
	}
	require.NoError(t, connect())
	code, _ := s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/devices/dev-sus/suspend", nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.Error(t, connect())
	code, _ = s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/devices/dev-sus/resume", nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, connect())

	// An unregistered device with a valid certificate is refused.
	ghost := deviceCert(t, s.CA(), "ghost")
	_, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), ghost), "ghost")
	require.Error(t, err)
}

// TestAuthorizationMatrix calls every API route with no token, a bad token, and a token of
// each role, and checks the answer is 401, 401, and 403 or not-403 by the route's role.
func TestAuthorizationMatrix(t *testing.T) {
	s := startServer(t, nil)
	s.device(t, "dev-m")
	tokens := map[registry.Role]string{registry.RoleAdmin: s.AdminToken()}
	for _, role := range []registry.Role{registry.RoleOperator, registry.RoleViewer} {
		var out struct {
			Token string `json:"token"`
		}
		code, pr := s.apiCall(t, s.AdminToken(), http.MethodPost, "/api/v1/operators", map[string]any{"name": "op-" + string(role), "role": role}, &out)
		require.Equal(t, http.StatusOK, code, pr.Error)
		tokens[role] = out.Token
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Role string `json:"x-millwright-role"`
		} `json:"paths"`
	}
	resp, err := s.apiClient().Get(s.url("/api/openapi.json"))
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	resp.Body.Close()
	rank := map[string]int{"viewer": 1, "operator": 2, "admin": 3}
	n := 0
	for path, methods := range doc.Paths {
		for method, op := range methods {
			method = strings.ToUpper(method)
			concrete := strings.NewReplacer("{id}", "dev-m", "{name}", "device").Replace(path)
			if strings.HasPrefix(path, "/api/v1/operators/") {
				concrete = "/api/v1/operators/op-unknown"
			}
			for _, tok := range []string{"", "mwo_bad"} {
				code, _ := s.apiCall(t, tok, method, concrete, nil, nil)
				require.Equal(t, http.StatusUnauthorized, code, "%s %s with token %q", method, path, tok)
			}
			for role, tok := range tokens {
				code, pr := s.apiCall(t, tok, method, concrete, nil, nil)
				if rank[string(role)] < rank[op.Role] {
					require.Equal(t, http.StatusForbidden, code, "%s %s as %s", method, path, role)
				} else {
					require.NotEqual(t, http.StatusForbidden, code, "%s %s as %s: %s", method, path, role, pr.Error)
					require.NotEqual(t, http.StatusUnauthorized, code, "%s %s as %s", method, path, role)
				}
				n++
			}
		}
	}
	require.Greater(t, n, 60)
	t.Logf("%d route × role checks", n)

	// A mutation is in the audit log with who did it and from where.
	s.device(t, "dev-o")
	code, pr := s.apiCall(t, tokens[registry.RoleOperator], http.MethodPost, "/api/v1/devices/dev-o/tags", map[string]any{"set": map[string]string{"line": "3"}}, nil)
	require.Equal(t, http.StatusOK, code, pr.Error)
	var audit []registry.AuditEntry
	code, _ = s.apiCall(t, s.AdminToken(), http.MethodGet, "/api/v1/audit?limit=1000", nil, &audit)
	require.Equal(t, http.StatusOK, code)
	actors := map[string]bool{}
	for _, e := range audit {
		actors[e.Actor] = true
		require.NotEmpty(t, e.Action)
		if strings.HasPrefix(e.Actor, "operator:") || e.Actor == "admin" {
			require.NotEmpty(t, e.Remote, "API mutations record where they came from: %+v", e)
		}
	}
	require.True(t, actors["admin"])
	require.True(t, actors["operator:op-operator"], fmt.Sprint(actors))
}

// TestOperatorSuppliedIntermediateCA runs the server on an intermediate CA whose root key is not
// given to it: a device that trusts only the root enrolls and connects.
func TestOperatorSuppliedIntermediateCA(t *testing.T) {
	now := time.Now()
	root, err := pki.NewCA("Offline root", now)
	require.NoError(t, err)
	inter, err := root.NewIntermediate("Plant 7 issuing CA", now, 5*365*24*time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "issuing.pem"), filepath.Join(dir, "issuing.key")
	require.NoError(t, os.WriteFile(certPath, inter.PEM, 0o644))
	keyPEM, err := pki.EncodeKey(inter.Key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyPath, keyPEM, 0o600))

	s := startServer(t, func(o *server.Options) { o.CACert, o.CAKey = certPath, keyPath })
	require.True(t, s.CA().Intermediate())
	_, err = os.Stat(filepath.Join(s.dir, pki.CAKeyFile))
	require.ErrorIs(t, err, os.ErrNotExist, "no CA key is written to the data directory")

	_, body, pair := s.estEnroll(t, s.tokens(t, map[string]any{"count": 1})[0], "")
	require.NotEmpty(t, pair.Certificate, body)
	rootOnly := x509.NewCertPool()
	rootOnly.AddCert(root.Cert)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(rootOnly, pair), pair.Leaf.Subject.CommonName)
	require.NoError(t, err, "a device trusting only the root verifies the server")
	_ = c.Disconnect(&paho.Disconnect{})
}

// TestConnectReportsFacts stores what a device reports in its CONNECT user properties and
// when it was last seen.
func TestConnectReportsFacts(t *testing.T) {
	s := startServer(t, nil)
	pair := s.device(t, "dev-facts")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: clientTLS(s.CA().Pool(), pair)}).DialContext(ctx, "tcp", s.MQTTAddr().String())
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-facts"})
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-facts", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{User: paho.UserProperties{
			{Key: "hw_model", Value: "gw-200"}, {Key: "net_operator", Value: "Telia"}, {Key: "fw_version", Value: "2.1.0"}}}})
	require.NoError(t, err)
	defer c.Disconnect(&paho.Disconnect{})
	require.Eventually(t, func() bool {
		d, err := s.Registry().Device(ctx, "dev-facts")
		require.NoError(t, err)
		return d.HardwareModel == "gw-200" && d.NetworkOperator == "Telia" && d.FirmwareVersion == "2.1.0" && !d.LastSeenAt.IsZero()
	}, 5*time.Second, 10*time.Millisecond)

	// The CLI shows it, filtered by firmware.
	var list struct {
		Devices []registry.Device `json:"devices"`
	}
	code, _ := s.apiCall(t, s.AdminToken(), http.MethodGet, "/api/v1/devices?firmware=2.1.0", nil, &list)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, list.Devices, 1)
	require.Equal(t, "dev-facts", list.Devices[0].ID)
}
