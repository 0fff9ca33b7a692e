package sim_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/internal/sim"
	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/protocol/firmware"
)

// TestSimulatedDeviceTakesUpdate: a simulated device that trusts the release key takes a
// signed update offered through the mailbox API, downloads it from the server, restarts its
// agent and comes back reporting the new version.
func TestSimulatedDeviceTakesUpdate(t *testing.T) {
	srv := servertest.Start(t, nil)
	_, port, _ := net.SplitHostPort(srv.MQTTAddr().String())
	pub, priv, err := firmware.GenerateKey()
	require.NoError(t, err)
	pemb, err := firmware.EncodePublicKeyPEM(pub)
	require.NoError(t, err)
	trust := filepath.Join(t.TempDir(), "trusted.pem")
	require.NoError(t, os.WriteFile(trust, pemb, 0o600))

	image := bytes.Repeat([]byte("simulated firmware image "), 4000)
	sum := sha256.Sum256(image)
	m := firmware.Manifest{Version: "3.1.0", Model: "sim-hw", Artifact: firmware.Artifact{Name: "fw.img", SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(image))}, Created: time.Now().Add(-time.Minute), Expires: time.Now().Add(time.Hour)}
	sm, err := firmware.Sign(m, priv)
	require.NoError(t, err)
	signed, err := sm.Encode()
	require.NoError(t, err)

	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool(), ServerName: "localhost"}}}
	api := "https://" + srv.HTTPAddr().String()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	require.NoError(t, mw.WriteField(apitypes.FirmwareManifestField, string(signed)))
	part, err := mw.CreateFormFile(apitypes.FirmwareArtifactField, "fw.img")
	require.NoError(t, err)
	_, _ = part.Write(image)
	require.NoError(t, mw.Close())
	req, err := http.NewRequest(http.MethodPost, api+"/api/v1/firmware", &body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Less(t, resp.StatusCode, 300)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	logs := &lockedBuffer{}
	go func() {
		_, err := sim.Run(ctx, sim.Config{Server: "localhost:" + port, DataDir: srv.DataDir(), Registrar: registryRegistrar{srv},
			ESTServer: api, FirmwareKey: trust, Overrides: sim.Overrides{HardwareModel: "sim-hw", FirmwareVersion: "3.0.0"},
			Devices: 1, IDPrefix: "simota", SpoolDir: t.TempDir(), Seed: 1, DrainTimeout: time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		done <- err
	}()
	version := func() string {
		d, err := srv.Registry().Device(context.Background(), "simota-1")
		if err != nil || d == nil {
			return ""
		}
		return d.FirmwareVersion
	}
	require.Eventually(t, func() bool { return version() == "3.0.0" }, 30*time.Second, 20*time.Millisecond)

	b, _ := json.Marshal(apitypes.CommandRequest{Name: protocol.CmdFirmwareUpdate, Args: map[string]string{protocol.ArgManifest: string(signed)}, Wait: "30s"})
	req, err = http.NewRequest(http.MethodPost, api+"/api/v1/devices/simota-1/commands", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	resp, err = client.Do(req)
	require.NoError(t, err)
	var env apitypes.Response[apitypes.Command]
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	resp.Body.Close()
	require.Equal(t, "succeeded", env.Data.State, "%+v", env.Data)
	require.Eventually(t, func() bool { return version() == "3.1.0" }, 30*time.Second, 20*time.Millisecond, "logs: %s", logs)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the simulation did not end")
	}
}
