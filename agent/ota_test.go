package agent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/protocol/firmware"
)

// Firmware updates end to end: a real server (firmware archive, mailbox, device HTTPS
// download with Range), real agents, real files; an installer of the test's own.

const otaModel = "gw-200"

// otaKit is a signing key the test agents trust, and a server to upload releases to.
type otaKit struct {
	s        *testServer
	pub      ed25519.PublicKey
	priv     ed25519.PrivateKey
	keysFile string
}

func newOTAKit(t *testing.T, s *testServer) *otaKit {
	t.Helper()
	pub, priv, err := firmware.GenerateKey()
	require.NoError(t, err)
	pemb, err := firmware.EncodePublicKeyPEM(pub)
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "trusted.pem")
	require.NoError(t, os.WriteFile(f, append([]byte("# the fleet's release key\n"), pemb...), 0o600))
	return &otaKit{s: s, pub: pub, priv: priv, keysFile: f}
}

// manifest is a release of image for otaModel, valid for a day.
func manifest(version string, image []byte) firmware.Manifest {
	sum := sha256.Sum256(image)
	now := time.Now()
	return firmware.Manifest{Version: version, Model: otaModel, Artifact: firmware.Artifact{Name: "fw-" + version + ".img",
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(image))}, Created: now.Add(-time.Minute), Expires: now.Add(24 * time.Hour)}
}

// sign signs m with key (the kit's when nil) and returns the envelope's JSON.
func (k *otaKit) sign(t *testing.T, m firmware.Manifest, key ed25519.PrivateKey) string {
	t.Helper()
	if key == nil {
		key = k.priv
	}
	sm, err := firmware.Sign(m, key)
	require.NoError(t, err)
	b, err := sm.Encode()
	require.NoError(t, err)
	return string(b)
}

// upload uploads a signed release through the operator API.
// release signs and uploads a release of version with a random image of size bytes.
func (k *otaKit) release(t *testing.T, version string, size int) ([]byte, firmware.Manifest, string) {
	t.Helper()
	image := randomImage(t, size)
	m := manifest(version, image)
	signed := k.sign(t, m, nil)
	k.upload(t, signed, image)
	return image, m, signed
}

func (k *otaKit) upload(t *testing.T, signed string, image []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	require.NoError(t, mw.WriteField(apitypes.FirmwareManifestField, signed))
	part, err := mw.CreateFormFile(apitypes.FirmwareArtifactField, "fw.img")
	require.NoError(t, err)
	_, err = part.Write(image)
	require.NoError(t, err)
	require.NoError(t, mw.Close())
	req, err := http.NewRequest(http.MethodPost, "https://"+k.s.httpAddr+"/api/v1/firmware", &body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+k.s.token)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: k.s.ca.Pool(), ServerName: "localhost"}}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Less(t, resp.StatusCode, 300, "upload: %s", b)
}

// testInstaller installs by keeping the image and writing the new version into the
// device's version file, as a real installer would; Rollback writes the old one back.
type testInstaller struct {
	versionFile string

	mu        sync.Mutex
	images    map[string][]byte // version → image installed
	commits   []string
	rollbacks []string
}

func newTestInstaller(versionFile string) *testInstaller {
	return &testInstaller{versionFile: versionFile, images: map[string][]byte{}}
}

func (i *testInstaller) Install(_ context.Context, file string, m firmware.Manifest) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.images[m.Version] = b
	i.mu.Unlock()
	return os.WriteFile(i.versionFile, []byte(m.Version+"\n"), 0o600)
}

func (i *testInstaller) Commit(_ context.Context, u agent.PendingUpdate) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.commits = append(i.commits, u.Version)
	return nil
}

func (i *testInstaller) Rollback(_ context.Context, u agent.PendingUpdate) error {
	i.mu.Lock()
	i.rollbacks = append(i.rollbacks, u.Version)
	i.mu.Unlock()
	return os.WriteFile(i.versionFile, []byte(u.From+"\n"), 0o600)
}

func (i *testInstaller) snapshot() (images map[string][]byte, commits, rollbacks []string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	images = map[string][]byte{}
	for k, v := range i.images {
		images[k] = v
	}
	return images, append([]string(nil), i.commits...), append([]string(nil), i.rollbacks...)
}

// reports collects the update reports an agent delivered.
type reports struct {
	mu  sync.Mutex
	all []protocol.UpdateReport
}

func (r *reports) hook(u protocol.UpdateReport) {
	r.mu.Lock()
	r.all = append(r.all, u)
	r.mu.Unlock()
}

func (r *reports) phases() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, u := range r.all {
		out = append(out, u.Phase)
	}
	return out
}

// forCommand is the reports of one command, in order.
func (r *reports) forCommand(id string) []protocol.UpdateReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []protocol.UpdateReport
	for _, u := range r.all {
		if u.Command == id {
			out = append(out, u)
		}
	}
	return out
}

func (r *reports) last() protocol.UpdateReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.all) == 0 {
		return protocol.UpdateReport{}
	}
	return r.all[len(r.all)-1]
}

// otaConfig is an agent configuration for k's server that trusts k's key and runs the
// version in its version file (written with version).
func (k *otaKit) otaConfig(t *testing.T, version string) agent.Config {
	t.Helper()
	cfg := k.s.agentConfig(t)
	_, port, err := net.SplitHostPort(k.s.httpAddr)
	require.NoError(t, err)
	cfg.Uplink.HTTPSPort, _ = strconv.Atoi(port)
	vf := filepath.Join(t.TempDir(), "fw_version")
	require.NoError(t, os.WriteFile(vf, []byte(version+"\n"), 0o600))
	cfg.Identity = agent.IdentityConfig{HardwareModel: otaModel, FirmwareVersion: "0.0.1", FirmwareVersionFile: vf}
	cfg.OTA.TrustedKeysFile = k.keysFile
	return cfg
}

// startAgent makes and runs an agent; the channel gets Run's error.
func startAgent(t *testing.T, cfg agent.Config, opts agent.Options, rep *reports) (<-chan error, context.CancelFunc) {
	t.Helper()
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	if rep != nil {
		agent.SetUpdateHook(a, rep.hook)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		err := a.Run(ctx)
		close(finished)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s")
		}
	})
	return done, cancel
}

func waitRestart(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		require.ErrorIs(t, err, agent.ErrRestartRequested)
	case <-time.After(60 * time.Second):
		t.Fatal("the agent did not stop to restart within 60s")
	}
}

func randomImage(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func (s *testServer) firmwareVersion(t *testing.T, id string) string {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	d, err := srv.Registry().Device(context.Background(), id)
	if err != nil || d == nil {
		return ""
	}
	return d.FirmwareVersion
}

// TestFirmwareUpdate: a signed release uploaded to the server, offered with firmware.update
// through the mailbox API; the agent downloads it over HTTPS, verifies it, installs it,
// answers, restarts, comes back in the new version, commits it and reports it confirmed.
func TestFirmwareUpdate(t *testing.T) {
	t.Run("mqtt", func(t *testing.T) { testFirmwareUpdate(t, agent.TransportMQTT) })
	t.Run("https", func(t *testing.T) { testFirmwareUpdate(t, agent.TransportHTTPS) })
}

func testFirmwareUpdate(t *testing.T, transport agent.Transport) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	image, m, signed := k.release(t, "1.1.0", 300<<10)

	id := "ota-good-" + transport.String()
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	if transport == agent.TransportHTTPS {
		cfg.Uplink.Transport = transport
		cfg.Uplink.DevAddress = s.httpAddr
		cfg.Uplink.MailboxInterval = 200 * time.Millisecond
	}
	inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
	opts.Installer = inst
	var rep1 reports
	done, _ := startAgent(t, cfg, opts, &rep1)
	require.Eventually(t, func() bool { return s.firmwareVersion(t, id) == "1.0.0" }, 30*time.Second, 50*time.Millisecond)

	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{
		protocol.ArgManifest: signed, protocol.ArgArtifactPath: protocol.FirmwarePathPrefix + m.Artifact.SHA256, protocol.ArgRollout: "r-1"})
	require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
	require.JSONEq(t, `{"version":"1.1.0","restart":true}`, string(c.Result))
	waitRestart(t, done)
	images, _, _ := inst.snapshot()
	require.Equal(t, image, images["1.1.0"], "the installer got the image")
	require.Equal(t, []string{protocol.UpdateOffered, protocol.UpdateDownloading, protocol.UpdateVerified, protocol.UpdateInstalling, protocol.UpdateRebooting}, rep1.phases())
	require.Equal(t, "r-1", rep1.last().Rollout)
	require.Equal(t, c.ID, rep1.last().Command)
	pending := filepath.Join(cfg.Spool.Dir, "ota", agent.PendingUpdateFile)
	require.FileExists(t, pending)
	parts, _ := filepath.Glob(filepath.Join(cfg.Spool.Dir, "ota", "*.img"))
	require.Empty(t, parts, "the image is removed once installed")

	// The program starts the agent again: it runs 1.1.0 now.
	var rep2 reports
	startAgent(t, cfg, opts, &rep2)
	require.Eventually(t, func() bool { return rep2.last().Phase == protocol.UpdateSucceeded }, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "1.1.0", rep2.last().Version)
	require.Equal(t, c.ID, rep2.last().Command)
	_, commits, rollbacks := inst.snapshot()
	require.Equal(t, []string{"1.1.0"}, commits)
	require.Empty(t, rollbacks)
	require.NoFileExists(t, pending)
	require.Eventually(t, func() bool { return s.firmwareVersion(t, id) == "1.1.0" }, 30*time.Second, 50*time.Millisecond)

	// The same command delivered again is answered from the record, not run again.
	again := s.commandState(t, c.ID, 0)
	require.Equal(t, protocol.ReplySucceeded, again.State)
}

// TestFirmwareInstallScript: the default installer runs ota.install_command with the image
// and its version in the environment; a failing one is answered install with its output;
// ota.commit_command runs after the restart.
func TestFirmwareInstallScript(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	image, m, signed := k.release(t, "1.2.0", 100<<10)

	const id = "ota-script"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	dir := t.TempDir()
	vf := cfg.Identity.FirmwareVersionFile
	cfg.OTA.InstallCommand = []string{"/bin/sh", "-c", `
		if [ -e "$0/fail" ]; then echo "no spare slot" >&2; exit 3; fi
		cp "$MW_FIRMWARE_FILE" "$0/slot-b" && echo "$MW_FIRMWARE_SHA256" > "$0/slot-b.sha256" && echo "$MW_FIRMWARE_VERSION" > "$1"`, dir, vf}
	cfg.OTA.CommitCommand = []string{"/bin/sh", "-c", `echo "$MW_FIRMWARE_PREVIOUS_VERSION -> $MW_FIRMWARE_VERSION" > "$0/committed"`, dir}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fail"), nil, 0o600))
	done, _ := startAgent(t, cfg, opts, nil)

	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
	require.Equal(t, protocol.ReplyFailed, c.State)
	require.Equal(t, protocol.FailInstall, c.Reason)
	require.Contains(t, c.Detail, "no spare slot")
	require.Contains(t, c.Detail, "exit status 3")

	require.NoError(t, os.Remove(filepath.Join(dir, "fail")))
	c = s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
	require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
	waitRestart(t, done)
	got, err := os.ReadFile(filepath.Join(dir, "slot-b"))
	require.NoError(t, err)
	require.Equal(t, image, got)
	sum, err := os.ReadFile(filepath.Join(dir, "slot-b.sha256"))
	require.NoError(t, err)
	require.Equal(t, m.Artifact.SHA256+"\n", string(sum))

	var rep reports
	startAgent(t, cfg, opts, &rep)
	require.Eventually(t, func() bool { return rep.last().Phase == protocol.UpdateSucceeded }, 30*time.Second, 20*time.Millisecond)
	committed, err := os.ReadFile(filepath.Join(dir, "committed"))
	require.NoError(t, err)
	require.Equal(t, "1.0.0 -> 1.2.0\n", string(committed))
}

// TestFirmwareUpdateRefused: every manifest the device must refuse is answered failed,
// reason verify, with the refusal's words, and nothing is installed.
func TestFirmwareUpdateRefused(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	good := randomImage(t, 64<<10)
	gm := manifest("1.1.0", good)
	k.upload(t, k.sign(t, gm, nil), good)

	const id = "ota-refuse"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
	opts.Installer = inst
	var rep reports
	startAgent(t, cfg, opts, &rep)

	_, other, err := firmware.GenerateKey()
	require.NoError(t, err)
	tampered := randomImage(t, len(good)) // the manifest pins these bytes; the server serves good
	cases := []struct {
		name     string
		manifest string
		path     string
		want     error
	}{
		{"tampered artifact", k.sign(t, manifest("1.1.0", tampered), nil), protocol.FirmwarePathPrefix + gm.Artifact.SHA256, firmware.ErrArtifactMismatch},
		{"artifact longer than pinned", k.sign(t, manifest("1.1.0", tampered[:len(tampered)/2]), nil), protocol.FirmwarePathPrefix + gm.Artifact.SHA256, firmware.ErrArtifactMismatch},
		{"unknown key", k.sign(t, gm, other), "", firmware.ErrUnknownKey},
		{"wrong model", k.sign(t, func() firmware.Manifest { m := gm; m.Model = "gw-300"; return m }(), nil), "", firmware.ErrWrongModel},
		{"downgrade", k.sign(t, manifest("0.9.0", good), nil), "", firmware.ErrDowngrade},
		{"expired", k.sign(t, func() firmware.Manifest {
			m := gm
			m.Created, m.Expires = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
			return m
		}(), nil), "", firmware.ErrExpired},
		{"same version", k.sign(t, manifest("1.0.0", good), nil), "", firmware.ErrSameVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := map[string]string{protocol.ArgManifest: tc.manifest}
			if tc.path != "" {
				args[protocol.ArgArtifactPath] = tc.path
			}
			c := s.command(t, id, protocol.CmdFirmwareUpdate, args)
			require.Equal(t, protocol.ReplyFailed, c.State)
			require.Equal(t, protocol.FailVerify, c.Reason)
			require.Contains(t, c.Detail, tc.want.Error())
			// Reported too: offered, then failed(verify), once the reply is sent.
			require.Eventually(t, func() bool { l := rep.last(); return l.Command == c.ID && l.Phase == protocol.UpdateFailed }, 10*time.Second, 10*time.Millisecond)
			got := rep.forCommand(c.ID)
			require.Equal(t, protocol.UpdateOffered, got[0].Phase)
			last := got[len(got)-1]
			require.Equal(t, protocol.FailVerify, last.Reason)
			require.Contains(t, last.Detail, tc.want.Error())
		})
	}
	images, _, _ := inst.snapshot()
	require.Empty(t, images, "nothing installed")
	left, _ := filepath.Glob(filepath.Join(cfg.Spool.Dir, "ota", "*"))
	require.Empty(t, left, "the tampered download is removed")
}

// cuttingDialer cuts the first connection to target once it has read cutAfter bytes, and
// counts every byte read from target.
type cuttingDialer struct {
	target   string
	cutAfter int64
	read     atomic.Int64
	conns    atomic.Int32
}

func (d *cuttingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || addr != d.target {
		return c, err
	}
	n := d.conns.Add(1)
	return &countConn{Conn: c, d: d, cut: n == 1}, nil
}

type countConn struct {
	net.Conn
	d    *cuttingDialer
	cut  bool
	seen int64
}

func (c *countConn) Read(p []byte) (int, error) {
	if c.cut && c.seen >= c.d.cutAfter {
		_ = c.Conn.Close()
		return 0, errors.New("cut by the test")
	}
	n, err := c.Conn.Read(p)
	c.seen += int64(n)
	c.d.read.Add(int64(n))
	return n, err
}

// TestFirmwareDownloadResumes: a download cut halfway resumes with Range where it stopped.
func TestFirmwareDownloadResumes(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	const size = 4 << 20
	image, _, signed := k.release(t, "2.0.0", size)

	const id = "ota-resume"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
	opts.Installer = inst
	d := &cuttingDialer{target: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Uplink.HTTPSPort)), cutAfter: size / 2}
	opts.Dialer = d
	done, _ := startAgent(t, cfg, opts, nil)

	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
	require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
	waitRestart(t, done)
	images, _, _ := inst.snapshot()
	require.Equal(t, image, images["2.0.0"])
	require.GreaterOrEqual(t, d.conns.Load(), int32(2), "the download was cut and resumed")
	// From zero again it would read at least 1.5 × size; TLS adds a few percent.
	require.Less(t, d.read.Load(), int64(size*5/4), "bytes read from the server")
}

// stallingDialer lets the first connection to target read stallAfter bytes, then holds it
// (reads block until it is closed) and closes stalled.
type stallingDialer struct {
	target     string
	stallAfter int64
	stalled    chan struct{}
	read       atomic.Int64
	conns      atomic.Int32
}

func (d *stallingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || addr != d.target {
		return c, err
	}
	n := d.conns.Add(1)
	return &stallConn{Conn: c, d: d, stall: n == 1 && d.stallAfter > 0, closed: make(chan struct{})}, nil
}

type stallConn struct {
	net.Conn
	d         *stallingDialer
	stall     bool
	seen      int64
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.stall && c.seen >= c.d.stallAfter {
		select {
		case <-c.d.stalled:
		default:
			close(c.d.stalled)
		}
		<-c.closed
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	c.seen += int64(n)
	c.d.read.Add(int64(n))
	return n, err
}

func (c *stallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestFirmwareDownloadResumesAfterRestart: the agent stops in the middle of a download; the
// offer delivered again is answered failed, reason download; the next offer resumes the
// download from the kept .part with Range.
func TestFirmwareDownloadResumesAfterRestart(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	const size = 4 << 20
	image, m, signed := k.release(t, "2.1.0", size)

	const id = "ota-resume-restart"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
	opts.Installer = inst
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Uplink.HTTPSPort))
	d1 := &stallingDialer{target: target, stallAfter: size / 2, stalled: make(chan struct{})}
	o1 := opts
	o1.Dialer = d1
	done, stop := startAgent(t, cfg, o1, nil)
	var first apitypes.Command
	code, e := s.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands", apitypes.CommandRequest{Name: protocol.CmdFirmwareUpdate,
		Args: map[string]string{protocol.ArgManifest: signed}}, &first)
	require.Equal(t, http.StatusOK, code, e)
	select {
	case <-d1.stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the download did not start")
	}
	stop()
	require.NoError(t, <-done, "stopped, not restarting")
	fi, err := os.Stat(filepath.Join(cfg.Spool.Dir, "ota", m.Artifact.SHA256+".part"))
	require.NoError(t, err, "the partial download is kept")
	require.Greater(t, fi.Size(), int64(size/4))

	d2 := &stallingDialer{target: target, stalled: make(chan struct{})}
	o2 := opts
	o2.Dialer = d2
	done2, _ := startAgent(t, cfg, o2, nil)
	c := s.commandState(t, first.ID, 30*time.Second)
	require.Equal(t, protocol.ReplyFailed, c.State)
	require.Equal(t, protocol.FailDownload, c.Reason, c.Detail)

	c = s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
	require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
	waitRestart(t, done2)
	images, _, _ := inst.snapshot()
	require.Equal(t, image, images["2.1.0"])
	require.Less(t, d2.read.Load(), size-fi.Size()+size/8, "the second agent read only the rest")
}

// TestFirmwareConfirmTimeout: the new version does not reach the server within
// ota.confirm_timeout (on the agent's fake clock): the agent rolls it back and restarts,
// and reports rolled_back when it next reaches the server.
func TestFirmwareConfirmTimeout(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	const id = "ota-rollback"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.1.0")
	inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
	opts.Installer = inst
	dir := filepath.Join(cfg.Spool.Dir, "ota")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	rec, err := json.Marshal(agent.PendingUpdate{Command: "cmd-1", Rollout: "r-9", Version: "1.1.0", From: "1.0.0",
		SHA256: hex.EncodeToString(make([]byte, 32)), State: agent.PendingInstalled})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, agent.PendingUpdateFile), rec, 0o600))

	// No server where this agent looks.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	offline := cfg
	offline.Uplink.DevAddress = dead
	fake := clock.NewFake(time.Now())
	oopts := opts
	oopts.Clock = fake
	done, _ := startAgent(t, offline, oopts, nil)
	require.Eventually(t, func() bool {
		fake.Advance(30 * time.Second)
		_, _, rb := inst.snapshot()
		return len(rb) == 1
	}, 30*time.Second, 5*time.Millisecond)
	waitRestart(t, done)
	require.GreaterOrEqual(t, fake.Now().Sub(time.Now()), agent.DefaultOTAConfirmTimeout-time.Minute, "not before confirm_timeout")
	_, commits, _ := inst.snapshot()
	require.Empty(t, commits)
	b, err := os.ReadFile(filepath.Join(dir, agent.PendingUpdateFile))
	require.NoError(t, err)
	p, err := agent.DecodePendingUpdate(b)
	require.NoError(t, err)
	require.Equal(t, agent.PendingRolledBack, p.State)

	// It starts again in 1.0.0 and reaches the server.
	var rep reports
	startAgent(t, cfg, opts, &rep)
	require.Eventually(t, func() bool { return rep.last().Phase == protocol.UpdateRolledBack }, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "cmd-1", rep.last().Command)
	require.Contains(t, rep.last().Detail, "confirm_timeout")
	require.NoFileExists(t, filepath.Join(dir, agent.PendingUpdateFile))
	require.Eventually(t, func() bool { return s.firmwareVersion(t, id) == "1.0.0" }, 30*time.Second, 50*time.Millisecond)
}

// TestFirmwareBootloaderRollback: the device came back in its old version (its bootloader
// fell back): the agent reports rolled_back and says so.
func TestFirmwareBootloaderRollback(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	opts := s.options(t, "ota-boot")
	cfg := k.otaConfig(t, "1.0.0")
	opts.Installer = newTestInstaller(cfg.Identity.FirmwareVersionFile)
	dir := filepath.Join(cfg.Spool.Dir, "ota")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	rec, _ := json.Marshal(agent.PendingUpdate{Command: "cmd-2", Version: "1.1.0", From: "1.0.0", State: agent.PendingInstalled})
	require.NoError(t, os.WriteFile(filepath.Join(dir, agent.PendingUpdateFile), rec, 0o600))
	var rep reports
	startAgent(t, cfg, opts, &rep)
	require.Eventually(t, func() bool { return rep.last().Phase == protocol.UpdateRolledBack }, 30*time.Second, 20*time.Millisecond)
	require.Contains(t, rep.last().Detail, "bootloader")
	require.NoFileExists(t, filepath.Join(dir, agent.PendingUpdateFile))
}

// TestFirmwarePrecheck: an artifact beyond ota.max_artifact_bytes, or more than the free
// space, is refused before the download.
func TestFirmwarePrecheck(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	const id = "ota-precheck"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	cfg.OTA.MaxArtifactBytes = 1 << 20
	cfg.OTA.MinFreeBytes = 1 << 62
	opts.Installer = newTestInstaller(cfg.Identity.FirmwareVersionFile)
	startAgent(t, cfg, opts, nil)
	m := manifest("1.1.0", randomImage(t, 1024))
	m.Artifact.Size = 2 << 20
	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: k.sign(t, m, nil)})
	require.Equal(t, protocol.ReplyFailed, c.State)
	require.Equal(t, protocol.FailPrecheck, c.Reason)
	require.Contains(t, c.Detail, "ota.max_artifact_bytes")
	c = s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: k.sign(t, manifest("1.1.0", randomImage(t, 1024)), nil)})
	require.Equal(t, protocol.ReplyFailed, c.State)
	require.Equal(t, protocol.FailPrecheck, c.Reason)
	require.Contains(t, c.Detail, "bytes free")
}

// TestFirmwareUpdateOff: without trusted keys firmware.update is refused.
func TestFirmwareUpdateOff(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	const id = "ota-off"
	cfg := k.otaConfig(t, "1.0.0")
	cfg.OTA.TrustedKeysFile = ""
	startAgent(t, cfg, s.options(t, id), nil)
	image := randomImage(t, 1024)
	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: k.sign(t, manifest("1.1.0", image), nil)})
	require.Equal(t, protocol.ReplyFailed, c.State)
	require.Equal(t, protocol.FailRefused, c.Reason)
	require.Contains(t, c.Detail, "ota.trusted_keys_file")
}

// TestFirmwareConfig: trusted keys need an installer; the version file wins over the literal
// and must hold a version.
func TestFirmwareConfig(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	cfg := k.otaConfig(t, "1.0.0")
	opts := s.options(t, "ota-cfg")
	_, err := agent.New(cfg, opts)
	require.ErrorIs(t, err, agent.ErrConfig)
	require.ErrorContains(t, err, "ota.install_command")
	cfg.OTA.InstallCommand = []string{"/bin/true"}
	require.NoError(t, os.WriteFile(cfg.Identity.FirmwareVersionFile, []byte("\n"), 0o600))
	_, err = agent.New(cfg, opts)
	require.ErrorContains(t, err, "identity.firmware_version_file")
	require.NoError(t, os.WriteFile(cfg.Identity.FirmwareVersionFile, []byte("1.0.0\n"), 0o600))
	bad := cfg
	bad.OTA.TrustedKeysFile = cfg.Identity.FirmwareVersionFile
	_, err = agent.New(bad, opts)
	require.ErrorContains(t, err, "ota.trusted_keys_file")
}

// FuzzDecodePendingUpdate: the record decoder never panics, and what it accepts encodes
// and decodes to the same record.
func FuzzDecodePendingUpdate(f *testing.F) {
	f.Add([]byte(`{"command":"c-1","version":"1.1.0","from":"1.0.0","sha256":"ab","state":"installed"}`))
	f.Add([]byte(`{"command":"c-1","rollout":"r","version":"2.0.0-rc.1","state":"rolled_back","detail":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := agent.DecodePendingUpdate(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(p)
		require.NoError(t, err)
		q, err := agent.DecodePendingUpdate(again)
		require.NoError(t, err)
		require.Equal(t, p, q)
	})
}

// TestFirmwareStartDelay: an offer with start_within waits a uniform random time below it, on
// the agent's clock, between the offer and the download; a value beyond a day is bad_args.
func TestFirmwareStartDelay(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	_, _, signed := k.release(t, "1.3.0", 64<<10)

	const id = "ota-delay"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	opts.Installer = newTestInstaller(cfg.Identity.FirmwareVersionFile)
	fake := clock.NewFake(time.Now())
	opts.Clock = fake
	opts.Rand = func(n int64) int64 { // the delay drawn is half of start_within; no other scatter
		if n == int64(120*time.Second) {
			return n / 2
		}
		return 0
	}
	var mu sync.Mutex
	at := map[string]time.Time{}
	rep := &reports{}
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	agent.SetUpdateHook(a, func(u protocol.UpdateReport) {
		mu.Lock()
		if _, seen := at[u.Phase]; !seen {
			at[u.Phase] = fake.Now()
		}
		mu.Unlock()
		rep.hook(u)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return s.firmwareVersion(t, id) == "1.0.0" }, 30*time.Second, 20*time.Millisecond)

	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed, protocol.ArgStartWithin: "86401"})
	require.Equal(t, protocol.ReplyFailed, c.State)
	require.Equal(t, protocol.FailBadArgs, c.Reason)
	require.Contains(t, c.Detail, "more than 86400 seconds")

	var first apitypes.Command
	code, e := s.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands", apitypes.CommandRequest{Name: protocol.CmdFirmwareUpdate,
		Args: map[string]string{protocol.ArgManifest: signed, protocol.ArgStartWithin: "120"}}, &first)
	require.Equal(t, http.StatusOK, code, e)
	require.Eventually(t, func() bool { l := rep.last(); return l.Command == first.ID && l.Phase == protocol.UpdateOffered }, 30*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		fake.Advance(time.Second)
		mu.Lock()
		defer mu.Unlock()
		_, ok := at[protocol.UpdateRebooting]
		return ok
	}, 30*time.Second, 5*time.Millisecond)
	mu.Lock()
	waited := at[protocol.UpdateDownloading].Sub(at[protocol.UpdateOffered])
	mu.Unlock()
	require.GreaterOrEqual(t, waited, 60*time.Second, "the download waited the delay drawn")
	require.Less(t, waited, 120*time.Second, "and less than start_within")
	c = s.commandState(t, first.ID, 30*time.Second)
	require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
}

// TestFirmwareDownloadsBounded: a server that serves one download at a time answers a second
// device 503 with Retry-After; that device waits what it was told (on its clock) and then
// resumes its download where a cut had left it.
func TestFirmwareDownloadsBounded(t *testing.T) {
	s := startServer(t, func(o *server.Options) { o.Firmware.MaxDownloads = 1 })
	k := newOTAKit(t, s)
	// Large enough that the socket buffers between the server and a stalled reader do not
	// hold the rest of it: the server is still sending while the reader stalls.
	const size = 24 << 20
	image, _, signed := k.release(t, "2.2.0", size)
	target := func(cfg agent.Config) string {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Uplink.HTTPSPort))
	}

	// Device B, on a fake clock, is cut halfway through its download.
	optsB := s.options(t, "ota-busy-b")
	cfgB := k.otaConfig(t, "1.0.0")
	instB := newTestInstaller(cfgB.Identity.FirmwareVersionFile)
	optsB.Installer = instB
	fake := clock.NewFake(time.Now())
	optsB.Clock = fake
	optsB.Rand = func(int64) int64 { return 0 } // no jitter: the wait is the Retry-After
	cutB := &cuttingDialer{target: target(cfgB), cutAfter: size / 2}
	optsB.Dialer = cutB
	doneB, _ := startAgent(t, cfgB, optsB, nil)
	require.Eventually(t, func() bool { return s.firmwareVersion(t, "ota-busy-b") == "1.0.0" }, 30*time.Second, 20*time.Millisecond)
	var offerB apitypes.Command
	code, e := s.api(t, http.MethodPost, "/api/v1/devices/ota-busy-b/commands", apitypes.CommandRequest{Name: protocol.CmdFirmwareUpdate,
		Args: map[string]string{protocol.ArgManifest: signed}}, &offerB)
	require.Equal(t, http.StatusOK, code, e)
	require.Eventually(t, func() bool { return cutB.read.Load() >= size/2 }, 30*time.Second, 5*time.Millisecond, "B was cut")

	// Device A takes the one download slot and holds it.
	optsA := s.options(t, "ota-busy-a")
	cfgA := k.otaConfig(t, "1.0.0")
	optsA.Installer = newTestInstaller(cfgA.Identity.FirmwareVersionFile)
	stallA := &stallingDialer{target: target(cfgA), stallAfter: 1 << 20, stalled: make(chan struct{})}
	optsA.Dialer = stallA
	doneA, stopA := startAgent(t, cfgA, optsA, nil)
	code, e = s.api(t, http.MethodPost, "/api/v1/devices/ota-busy-a/commands", apitypes.CommandRequest{Name: protocol.CmdFirmwareUpdate,
		Args: map[string]string{protocol.ArgManifest: signed}}, nil)
	require.Equal(t, http.StatusOK, code, e)
	select {
	case <-stallA.stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("A's download did not start")
	}
	require.Equal(t, 1.0, s.metric(t, "millwright_firmware_downloads"))

	// B resumes after its 1 s backoff and is refused.
	require.Eventually(t, func() bool {
		fake.Advance(time.Second)
		return s.metric(t, "millwright_firmware_downloads_refused_total") >= 1
	}, 30*time.Second, 20*time.Millisecond)
	refusedAt := fake.Now()

	// A stops; the slot is free. B waits the Retry-After on its clock, then resumes.
	stopA()
	require.NoError(t, <-doneA)
	require.Eventually(t, func() bool { return s.metric(t, "millwright_firmware_downloads") == 0 }, 30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		fake.Advance(time.Second)
		return s.commandState(t, offerB.ID, 0).State == protocol.ReplySucceeded
	}, 60*time.Second, 20*time.Millisecond)
	waitRestart(t, doneB)
	require.GreaterOrEqual(t, fake.Now().Sub(refusedAt), 29*time.Second, "B waited the Retry-After of %v", 30*time.Second)
	images, _, _ := instB.snapshot()
	require.Equal(t, image, images["2.2.0"])
	require.Less(t, cutB.read.Load(), int64(size*5/4), "B resumed where the cut had left it")
	require.Equal(t, 1.0, s.metric(t, "millwright_firmware_downloads_refused_total"))
}

// TestFirmwareDelta: a device whose ota.installed_image holds an artifact of the archive asks
// for the new one as a delta from it, reads a fraction of the artifact's bytes from the
// server, rebuilds and verifies it, and installs it. A delta that does not decode (a damaged
// one is planted in the server's cache) and an installed image the archive does not hold
// each end in the whole artifact's download, and the update succeeds all the same.
func TestFirmwareDelta(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	const size = 2 << 20
	base := randomImage(t, size)
	target := append(append(append([]byte(nil), base[:size/3]...), randomImage(t, 8<<10)...), base[size/3+2048:]...)
	target = append(target, randomImage(t, 16<<10)...)
	k.upload(t, k.sign(t, manifest("1.0.0", base), nil), base)
	m := manifest("1.1.0", target)
	signed := k.sign(t, m, nil)
	k.upload(t, signed, target)
	baseSum := sha256.Sum256(base)
	baseSHA := hex.EncodeToString(baseSum[:])

	update := func(t *testing.T, id string, installed []byte) (*cuttingDialer, *reports) {
		t.Helper()
		opts := s.options(t, id)
		cfg := k.otaConfig(t, "1.0.0")
		cfg.OTA.InstalledImage = filepath.Join(t.TempDir(), "installed.img")
		require.NoError(t, os.WriteFile(cfg.OTA.InstalledImage, installed, 0o600))
		inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
		opts.Installer = inst
		d := &cuttingDialer{target: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Uplink.HTTPSPort)), cutAfter: 1 << 40}
		opts.Dialer = d
		rep := &reports{}
		done, _ := startAgent(t, cfg, opts, rep)
		c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
		require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
		waitRestart(t, done)
		images, _, _ := inst.snapshot()
		require.Equal(t, target, images["1.1.0"], "the installer got the artifact")
		left, _ := filepath.Glob(filepath.Join(cfg.Spool.Dir, "ota", "*.part*"))
		require.Empty(t, left, "no download left behind")
		return d, rep
	}
	verifiedDetail := func(rep *reports) string {
		rep.mu.Lock()
		defer rep.mu.Unlock()
		for _, u := range rep.all {
			if u.Phase == protocol.UpdateVerified {
				return u.Detail
			}
		}
		return "no verified report"
	}

	t.Run("damaged delta", func(t *testing.T) {
		dir := filepath.Join(s.dir, "firmware", "delta", m.Artifact.SHA256)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		bad := filepath.Join(dir, baseSHA+"."+strings.Repeat("0", 64))
		require.NoError(t, os.WriteFile(bad, randomImage(t, 4096), 0o600))
		d, rep := update(t, "ota-delta-bad", base)
		require.NoError(t, os.Remove(bad))
		require.Greater(t, d.read.Load(), int64(len(target)), "the whole artifact was downloaded")
		require.Empty(t, verifiedDetail(rep), "verified from a whole download")
	})
	t.Run("base not in the archive", func(t *testing.T) {
		d, rep := update(t, "ota-delta-unknown", randomImage(t, size))
		require.Greater(t, d.read.Load(), int64(len(target)))
		require.Empty(t, verifiedDetail(rep))
	})
	t.Run("delta", func(t *testing.T) {
		d, rep := update(t, "ota-delta", base)
		require.Less(t, d.read.Load(), int64(len(target)/10), "a delta of an image with 26 KiB changed")
		require.Contains(t, verifiedDetail(rep), "rebuilt from a delta of")
		require.Contains(t, rep.forCommand(rep.last().Command)[1].Detail, "delta from the installed image "+baseSHA[:12])
		require.Equal(t, 1.0, s.metric(t, "millwright_firmware_deltas_made_total"))
		require.GreaterOrEqual(t, s.metric(t, "millwright_firmware_delta_downloads_total"), 2.0, "the damaged one and this one")
		require.Equal(t, 1.0, s.metric(t, "millwright_firmware_delta_refused_total"), "the base the archive does not hold")
	})
}

// TestFirmwarePowerCheck: a battery below ota.min_battery_percent, and a power check command
// that exits non-zero, each refuse the update as failed, reason precheck, reported so, and
// nothing is installed; with the power good the update goes through.
func TestFirmwarePowerCheck(t *testing.T) {
	s := startServer(t, nil)
	k := newOTAKit(t, s)
	image, _, signed := k.release(t, "1.4.0", 64<<10)

	const id = "ota-power"
	opts := s.options(t, id)
	cfg := k.otaConfig(t, "1.0.0")
	dir := t.TempDir()
	battery := filepath.Join(dir, "capacity")
	require.NoError(t, os.WriteFile(battery, []byte("12\n"), 0o600))
	cfg.OTA.BatteryCapacityFile = battery
	require.Equal(t, agent.DefaultOTAMinBattery, cfg.OTA.MinBatteryPercent)
	cfg.OTA.PowerCheckCommand = []string{"/bin/sh", "-c", `if [ -e "$0/on-battery" ]; then echo "on battery, not mains ($MW_FIRMWARE_VERSION waits)"; exit 1; fi`, dir}
	inst := newTestInstaller(cfg.Identity.FirmwareVersionFile)
	opts.Installer = inst
	rep := &reports{}
	done, _ := startAgent(t, cfg, opts, rep)

	refused := func(want string) {
		t.Helper()
		c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
		require.Equal(t, protocol.ReplyFailed, c.State)
		require.Equal(t, protocol.FailPrecheck, c.Reason)
		require.Contains(t, c.Detail, want)
		require.Eventually(t, func() bool { l := rep.last(); return l.Command == c.ID && l.Phase == protocol.UpdateFailed }, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, protocol.FailPrecheck, rep.last().Reason)
		require.Contains(t, rep.last().Detail, want)
	}
	refused("the battery is at 12 %, below ota.min_battery_percent 30 %")
	require.NoError(t, os.WriteFile(battery, []byte("eighty"), 0o600))
	refused(`holds "eighty", not a percentage`)
	require.NoError(t, os.WriteFile(battery, []byte("80\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "on-battery"), nil, 0o600))
	refused("on battery, not mains (1.4.0 waits)")
	images, _, _ := inst.snapshot()
	require.Empty(t, images, "nothing installed")

	require.NoError(t, os.Remove(filepath.Join(dir, "on-battery")))
	c := s.command(t, id, protocol.CmdFirmwareUpdate, map[string]string{protocol.ArgManifest: signed})
	require.Equal(t, protocol.ReplySucceeded, c.State, "%s: %s", c.Reason, c.Detail)
	waitRestart(t, done)
	images, _, _ = inst.snapshot()
	require.Equal(t, image, images["1.4.0"])
}
