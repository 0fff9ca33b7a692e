package server_test

import (
	"context"
	"crypto"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// TestMosquittoPlaysDevice: the Mosquitto command-line clients, speaking MQTT 3.1.1 over TLS
// with a device certificate, implement the device channel from docs/protocol.md alone:
// receive a command, answer it, report the firmware version; the registry shows both.
func TestMosquittoPlaysDevice(t *testing.T) {
	for _, bin := range []string{"mosquitto_sub", "mosquitto_pub"} {
		_, err := exec.LookPath(bin)
		require.NoError(t, err, "%s is installed by scripts/test (Debian package mosquitto-clients)", bin)
	}
	s := startServer(t, nil)
	const id = "mq-1"
	pair := s.device(t, id)
	dir := t.TempDir()
	keyPEM, err := pki.EncodeKey(pair.PrivateKey.(crypto.Signer))
	require.NoError(t, err)
	files := map[string][]byte{
		"ca.pem":   s.CA().PEM,
		"cert.pem": pki.EncodeCert(pair.Certificate[0]),
		"key.pem":  keyPEM,
	}
	for name, b := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	_, port, err := net.SplitHostPort(s.MQTTAddr().String())
	require.NoError(t, err)
	common := []string{"-V", "mqttv311", "-h", "localhost", "-p", port, "-i", id, "-q", "1",
		"--cafile", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "cert.pem"), "--key", filepath.Join(dir, "key.pem")}

	var cmd apitypes.Command
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "POST", "/api/v1/devices/"+id+"/commands",
		apitypes.CommandRequest{Name: "diag.connectivity"}, &cmd))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_sub", append(common, "-t", protocol.CommandFilter(id), "-C", "1", "-v", "-W", "20")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	topic, payload, ok := strings.Cut(strings.TrimSpace(string(out)), " ")
	require.True(t, ok, "%s", out)
	require.Equal(t, protocol.CommandTopic(id, cmd.ID), topic)
	c, err := protocol.DecodeCommand([]byte(payload))
	require.NoError(t, err)
	require.Equal(t, "diag.connectivity", c.Name)

	pub := func(topic, msg string) {
		out, err := exec.CommandContext(ctx, "mosquitto_pub", append(common, "-t", topic, "-m", msg)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	pub(protocol.ReplyTopic(id, c.ID), `{"state":"succeeded","result":{"dns_ms":3,"tls_ms":18}}`)
	pub(protocol.StateTopic(id), `{"firmware_version":"3.0.1","hardware_model":"esp32-gw"}`)

	m, err := s.Registry().Message(context.Background(), c.ID)
	require.NoError(t, err)
	require.Equal(t, registry.MessageSucceeded, m.State)
	require.JSONEq(t, `{"dns_ms":3,"tls_ms":18}`, string(m.Result))
	require.Eventually(t, func() bool {
		dev, err := s.Registry().Device(context.Background(), id)
		return err == nil && dev.FirmwareVersion == "3.0.1" && dev.HardwareModel == "esp32-gw"
	}, 10*time.Second, 10*time.Millisecond)
}
