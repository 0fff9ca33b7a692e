package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
)

// TestRegisteredDeviceAdmittedAtOnce: a device refused because it was not registered yet is
// admitted at its next attempt once its certificate is registered through the API — the
// gateway's cached refusal is dropped, not kept for its lifetime.
func TestRegisteredDeviceAdmittedAtOnce(t *testing.T) {
	s := startServer(t, nil)
	const id = "late-1"
	pair := deviceCert(t, s.CA(), id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, ack, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), id)
	require.Error(t, err)
	require.NotNil(t, ack)
	require.Equal(t, byte(0x87), ack.ReasonCode, "not registered yet")

	body, err := json.Marshal(apitypes.CertificatesRequest{Certificates: []string{
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Leaf.Raw})),
	}})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, s.url("/api/v1/certificates"), bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.AdminToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.apiClient().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), id)
	require.NoError(t, err, "admitted at the next attempt")
	_ = c.Disconnect(&paho.Disconnect{})
}
