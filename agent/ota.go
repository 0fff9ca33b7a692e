package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/protocol/firmware"
)

// Signed over-the-air firmware updates, the device's side (docs/agent.md, "Firmware
// updates"; docs/protocol.md, "Firmware updates").

// Limits of firmware updates.
const (
	// otaInstallTimeout bounds the installer (install, commit or rollback).
	otaInstallTimeout = 15 * time.Minute
	// otaRetryWait is the longest wait between two attempts of a download cut halfway, and
	// between two attempts to reach the server after an update.
	otaRetryWait = 30 * time.Second
	// maxPendingUpdate bounds the pending-update record the agent reads.
	maxPendingUpdate = 16 << 10
	// maxDownloadRetryAfter bounds the wait a server busy with other downloads asks for
	// (Retry-After); the agent adds up to half of it at random.
	maxDownloadRetryAfter = 10 * time.Minute
)

// errServerBusy: the server serves as many downloads as it will at once; retry after.
type errServerBusy struct {
	after time.Duration
	err   error
}

func (e *errServerBusy) Error() string { return e.err.Error() }

// PendingUpdateFile is the file in ota.dir that records an installed update until the new
// version is confirmed or rolled back, and its outcome until the server has it.
const PendingUpdateFile = "pending_update.json"

// Installer installs firmware images, and commits or rolls back an installed one. The
// default runs ota.install_command, ota.commit_command and ota.rollback_command; an
// embedding program (the fleet simulator) passes its own as Options.Installer.
type Installer interface {
	// Install installs the verified image in file, whose manifest is m. Nil means the image
	// is installed and the device runs it after the agent's restart.
	Install(ctx context.Context, file string, m firmware.Manifest) error
	// Commit makes the installed update u permanent: the new version reached the server.
	Commit(ctx context.Context, u PendingUpdate) error
	// Rollback goes back to u.From: the new version did not reach the server within
	// ota.confirm_timeout. The agent restarts after it.
	Rollback(ctx context.Context, u PendingUpdate) error
}

// The states of a PendingUpdate.
const (
	// PendingInstalled: installed; the device is to restart into it and confirm it.
	PendingInstalled = "installed"
	// PendingConfirmed: the new version reached the server and was committed; the report
	// "succeeded" is still to be delivered.
	PendingConfirmed = "confirmed"
	// PendingRolledBack: the update was rolled back; the report is still to be delivered.
	PendingRolledBack = "rolled_back"
)

// PendingUpdate is the record of an installed update (PendingUpdateFile).
type PendingUpdate struct {
	// Command and Rollout are the firmware.update command's ID and its rollout argument.
	Command string `json:"command"`
	Rollout string `json:"rollout,omitempty"`
	// Version is the installed version, From the one the device ran before.
	Version string `json:"version"`
	From    string `json:"from"`
	// SHA256 is the installed artifact's.
	SHA256 string `json:"sha256"`
	// State is one of the Pending* states; Detail explains a rollback.
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// DecodePendingUpdate reads a pending-update record strictly: known fields only, each
// valid.
func DecodePendingUpdate(b []byte) (PendingUpdate, error) {
	var u PendingUpdate
	if len(b) > maxPendingUpdate {
		return u, fmt.Errorf("pending update record: %d bytes, at most %d", len(b), maxPendingUpdate)
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(&u); err != nil {
		return PendingUpdate{}, fmt.Errorf("pending update record: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return PendingUpdate{}, errors.New("pending update record: data after the JSON object")
	}
	if err := protocol.ValidateMessageID(u.Command); err != nil {
		return PendingUpdate{}, fmt.Errorf("pending update record: command: %w", err)
	}
	if err := firmware.ValidVersion(u.Version); err != nil {
		return PendingUpdate{}, fmt.Errorf("pending update record: version: %w", err)
	}
	if u.From != "" {
		if err := firmware.ValidVersion(u.From); err != nil {
			return PendingUpdate{}, fmt.Errorf("pending update record: from: %w", err)
		}
	}
	switch u.State {
	case PendingInstalled, PendingConfirmed, PendingRolledBack:
	default:
		return PendingUpdate{}, fmt.Errorf("pending update record: state %q is not installed, confirmed or rolled_back", u.State)
	}
	rep := protocol.UpdateReport{Command: u.Command, Rollout: u.Rollout, Version: u.Version, Phase: protocol.UpdateSucceeded, Detail: u.Detail}
	if _, err := protocol.DecodeState(mustJSON(protocol.State{Update: &rep})); err != nil {
		return PendingUpdate{}, fmt.Errorf("pending update record: %w", err)
	}
	return u, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// ota is the agent's update machinery; nil fields mean updates are off.
type ota struct {
	dir   string
	keys  firmware.TrustedKeys
	on    bool // trusted keys configured
	inst  Installer
	cfg   OTAConfig
	base  string // https://host:port of the device HTTPS endpoint
	httpc *http.Client

	busy atomic.Bool // a firmware.update runs

	mu      sync.Mutex
	pending *PendingUpdate // nil: none
}

// setupOTA prepares updates: the trusted keys, the installer, the download client, and the
// pending-update record of an update installed before this start.
func (a *Agent) setupOTA(cfg Config, opts Options) error {
	o := &ota{dir: cfg.otaDir(), cfg: cfg.OTA, inst: opts.Installer}
	a.ota = o
	if cfg.OTA.TrustedKeysFile != "" {
		b, err := os.ReadFile(cfg.OTA.TrustedKeysFile)
		if err != nil {
			return configErr("ota.trusted_keys_file", "%v", err)
		}
		if o.keys, err = firmware.ParseTrustedKeys(b); err != nil {
			return configErr("ota.trusted_keys_file", "%s: %v", cfg.OTA.TrustedKeysFile, err)
		}
		o.on = true
		if o.inst == nil && len(cfg.OTA.InstallCommand) == 0 {
			return configErr("ota.install_command", "required with ota.trusted_keys_file (or pass Options.Installer)")
		}
	}
	if o.inst == nil {
		o.inst = &execInstaller{cfg: cfg.OTA}
	}
	u := cfg.Uplink
	addr := endpoint(u, a.device, u.HTTPSPort)
	if u.DevAddress != "" && u.Transport != TransportHTTPS {
		host, _, _ := net.SplitHostPort(u.DevAddress)
		addr = net.JoinHostPort(host, strconv.Itoa(u.HTTPSPort))
	}
	o.base = "https://" + addr
	dialer := a.dialer
	o.httpc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, u.ConnectTimeout)
			defer cancel()
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       a.tls,
		TLSHandshakeTimeout:   u.ConnectTimeout,
		ResponseHeaderTimeout: u.AckTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1,
		IdleConnTimeout:       90 * time.Second,
	}}
	b, err := os.ReadFile(filepath.Join(o.dir, PendingUpdateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		a.log.Error("read the pending update record", "error", err)
	default:
		p, err := DecodePendingUpdate(b)
		if err != nil {
			a.log.Error("the pending update record is damaged; removed", "error", err)
			_ = os.Remove(filepath.Join(o.dir, PendingUpdateFile))
			break
		}
		o.pending = &p
	}
	return nil
}

// removeStale removes the downloads of other artifacts than sha256 (an offer that was
// replaced by another release): only one download is kept to resume.
func (o *ota) removeStale(sha256 string) {
	for _, pat := range []string{"*.part", "*.part.etag", "*.img"} {
		files, _ := filepath.Glob(filepath.Join(o.dir, pat))
		for _, f := range files {
			if !strings.HasPrefix(filepath.Base(f), sha256+".") {
				_ = os.Remove(f)
			}
		}
	}
}

// savePending writes (or, for nil, removes) the pending-update record.
func (o *ota) savePending(p *PendingUpdate) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	path := filepath.Join(o.dir, PendingUpdateFile)
	if p == nil {
		o.pending = nil
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return err
	}
	c := *p
	o.pending = &c
	return nil
}

func (o *ota) current() *PendingUpdate {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pending == nil {
		return nil
	}
	c := *o.pending
	return &c
}

// firmwareUpdateTimeout is firmware.update's: the start delay, the download and the
// installation.
func (a *Agent) firmwareUpdateTimeout(args map[string]string) time.Duration {
	delay, _ := protocol.ParseStartWithin(args[protocol.ArgStartWithin])
	return delay + a.local.OTA.DownloadTimeout + otaInstallTimeout
}

// updateResult is the result of a successful firmware.update.
type updateResult struct {
	Version string `json:"version"`
	Restart bool   `json:"restart"`
}

// firmwareUpdate runs firmware.update: verify, pre-check, download, verify, install, record.
// It reports every phase, offered first; a failure is reported (updateFailed) once the
// failed reply is sent.
func (a *Agent) firmwareUpdate(ctx context.Context, args map[string]string) (any, error) {
	rep := offerReport(commandID(ctx), args)
	a.reportUpdate(ctx, rep, protocol.UpdateOffered, "")
	return a.runUpdate(ctx, args, rep)
}

// offerReport is the update report of the offer with command ID id and arguments args.
func offerReport(id string, args map[string]string) protocol.UpdateReport {
	rep := protocol.UpdateReport{Command: id, Rollout: args[protocol.ArgRollout], Version: offeredVersion(args[protocol.ArgManifest])}
	if protocol.ValidateMessageID(rep.Command) != nil {
		rep.Command = ""
	}
	if len(rep.Rollout) > 64 || strings.ContainsFunc(rep.Rollout, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		rep.Rollout = ""
	}
	return rep
}

// offeredVersion is the version a signed manifest names, unverified (for the reports only);
// "" when it does not parse.
func offeredVersion(manifest string) string {
	sm, err := firmware.DecodeSignedManifest([]byte(manifest))
	if err != nil {
		return ""
	}
	m, err := firmware.ParseManifest(sm.Manifest)
	if err != nil {
		return ""
	}
	return m.Version
}

// updateFailed reports a firmware.update answered failed: phase failed, with the reply's
// reason and detail. It runs once the reply was sent, so the server has the reason of the
// reply (which decides, for a download, whether the offer is made again) first.
func (a *Agent) updateFailed(ctx context.Context, cmd protocol.Command, reply protocol.Reply) {
	rep := offerReport(cmd.ID, cmd.Args)
	rep.Reason = reply.Reason
	a.reportUpdate(ctx, rep, protocol.UpdateFailed, reply.Detail)
}

// runUpdate is firmwareUpdate's work; rep is its report, offered.
func (a *Agent) runUpdate(ctx context.Context, args map[string]string, rep protocol.UpdateReport) (any, error) {
	o := a.ota
	if !o.on {
		return nil, failf(protocol.FailRefused, "firmware updates are off on this device; its local configuration must set ota.trusted_keys_file")
	}
	if !o.busy.CompareAndSwap(false, true) {
		return nil, failf(protocol.FailPrecheck, "another firmware update is running")
	}
	defer o.busy.Store(false)
	if p := o.current(); p != nil {
		return nil, failf(protocol.FailPrecheck, "the update to %s (command %s) is %s and not settled yet", p.Version, p.Command, p.State)
	}
	cmdID := commandID(ctx)
	sm, err := firmware.DecodeSignedManifest([]byte(args[protocol.ArgManifest]))
	if err != nil {
		return nil, failf(protocol.FailVerify, "%v", err)
	}
	running := a.local.Identity.FirmwareVersion
	if running == "" {
		return nil, failf(protocol.FailPrecheck, "the device does not know the version it runs; its local configuration must set identity.firmware_version or identity.firmware_version_file")
	}
	m, err := firmware.Verify(sm, o.keys, a.local.Identity.HardwareModel, running, a.clk.Now())
	if err != nil {
		return nil, failf(protocol.FailVerify, "%v", err)
	}
	path := args[protocol.ArgArtifactPath]
	if path == "" {
		path = protocol.FirmwarePathPrefix + m.Artifact.SHA256
	}
	if !strings.HasPrefix(path, protocol.FirmwarePathPrefix) || strings.ContainsAny(path, "?#%") || strings.Contains(path, "..") {
		return nil, failf(protocol.FailBadArgs, "path %q is not under %s", path, protocol.FirmwarePathPrefix)
	}
	startWithin, err := protocol.ParseStartWithin(args[protocol.ArgStartWithin])
	if err != nil {
		return nil, failf(protocol.FailBadArgs, "%v", err)
	}
	rep.Version = m.Version
	log := a.log.With("version", m.Version, "sha256", m.Artifact.SHA256)

	// Pre-checks.
	if m.Artifact.Size > o.cfg.MaxArtifactBytes {
		return nil, failf(protocol.FailPrecheck, "the artifact is %d bytes, more than ota.max_artifact_bytes %d", m.Artifact.Size, o.cfg.MaxArtifactBytes)
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return nil, failf(protocol.FailPrecheck, "ota.dir: %v", err)
	}
	part := filepath.Join(o.dir, m.Artifact.SHA256+".part")
	o.removeStale(m.Artifact.SHA256)
	var have int64
	if fi, err := os.Stat(part); err == nil {
		have = fi.Size()
	}
	margin := o.cfg.MinFreeBytes
	if margin == 0 {
		margin = m.Artifact.Size / 10
	}
	if free, ok := freeBytes(o.dir); ok {
		if need := max(m.Artifact.Size-have, 0) + margin; free < need {
			return nil, failf(protocol.FailPrecheck, "%d bytes free in %s, the update needs %d (%d to download and %d to spare)", free, o.dir, need, max(m.Artifact.Size-have, 0), margin)
		}
	}

	// Wait the offer's start delay, so that the devices offered at once do not all download
	// at once.
	if startWithin > 0 {
		delay := time.Duration(a.rnd(int64(startWithin)))
		log.Info("firmware download starts after a random delay", "delay", delay, "start_within", startWithin)
		if !clock.Sleep(ctx, a.clk, delay) {
			return nil, ctx.Err()
		}
	}

	// The device's power must allow an update (checked again before the installer).
	if err := o.powerCheck(ctx, m); err != nil {
		return nil, err
	}

	// Download: a delta from the installed image when there is one to use, else — or when
	// anything goes wrong with the delta — the whole artifact. Either is verified against
	// the signed manifest.
	dctx, cancel := clockTimeout(ctx, a.clk, o.cfg.DownloadTimeout)
	defer cancel()
	var base *deltaBase
	if have == 0 {
		base = o.deltaBase(m, log)
	}
	detail, verified := "", ""
	if base != nil {
		detail = "asking for a delta from the installed image " + base.sha[:12]
	}
	a.reportUpdate(ctx, rep, protocol.UpdateDownloading, detail)
	if base != nil {
		log.Info("downloading a firmware delta", "path", path, "base", base.sha, "size", m.Artifact.Size)
		n, err := a.downloadDelta(dctx, path, part, base, m)
		if err == nil {
			err = verifyFile(part, m)
		}
		switch {
		case err == nil:
			verified = fmt.Sprintf("rebuilt from a delta of %d bytes from the installed image %s (the artifact is %d bytes)", n, base.sha[:12], m.Artifact.Size)
		case dctx.Err() != nil:
			return nil, a.downloadFailure(ctx, dctx, err, part)
		default:
			log.Warn("firmware delta not usable; downloading the whole artifact", "error", err)
			_ = os.Remove(part)
			_ = os.Remove(part + ".etag")
			base = nil
		}
	}
	if base == nil {
		log.Info("downloading firmware", "path", path, "size", m.Artifact.Size, "resume_from", have)
		if err := a.download(dctx, path, part, m.Artifact.Size); err != nil {
			return nil, a.downloadFailure(ctx, dctx, err, part)
		}
		if err := verifyFile(part, m); err != nil {
			_ = os.Remove(part)
			_ = os.Remove(part + ".etag")
			return nil, failf(protocol.FailVerify, "%v", err)
		}
	}
	_ = os.Remove(part + ".etag")
	a.reportUpdate(ctx, rep, protocol.UpdateVerified, verified)
	image := filepath.Join(o.dir, m.Artifact.SHA256+".img")
	if err := os.Rename(part, image); err != nil {
		return nil, failf(protocol.FailDownload, "%v", err)
	}
	defer os.Remove(image)

	// Install, if the power still allows it.
	if err := o.powerCheck(ctx, m); err != nil {
		return nil, err
	}
	a.reportUpdate(ctx, rep, protocol.UpdateInstalling, "")
	log.Info("installing firmware")
	ictx, icancel := context.WithTimeout(ctx, otaInstallTimeout)
	err = o.inst.Install(ictx, image, m)
	icancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, failf(protocol.FailInstall, "%v", err)
	}
	p := PendingUpdate{Command: rep.Command, Rollout: rep.Rollout, Version: m.Version, From: running, SHA256: m.Artifact.SHA256, State: PendingInstalled}
	if p.Command == "" {
		p.Command = "unknown"
	}
	if err := o.savePending(&p); err != nil {
		return nil, failf(protocol.FailInstall, "installed, but the record of the update cannot be written: %v", err)
	}
	res := updateResult{Version: m.Version, Restart: true}
	// Should the agent stop before its reply, the command delivered again is answered
	// with it all the same.
	if err := a.cmds.setProvisional(cmdID, protocol.Reply{State: protocol.ReplySucceeded, Result: mustJSON(res)}); err != nil {
		log.Error("record the update's outcome with its command", "error", err)
	}
	a.reportUpdate(ctx, rep, protocol.UpdateRebooting, "")
	log.Info("firmware installed; restarting into it")
	return res, nil
}

// downloadFailure is the error of firmware.update for a failed download (dctx: the
// download's context, within ctx).
func (a *Agent) downloadFailure(ctx, dctx context.Context, err error, part string) error {
	if ctx.Err() != nil {
		return err
	}
	if errors.Is(err, firmware.ErrArtifactMismatch) {
		_ = os.Remove(part)
		_ = os.Remove(part + ".etag")
		return failf(protocol.FailVerify, "%v", err)
	}
	if errors.Is(context.Cause(dctx), errCommandTimeout) {
		return failf(protocol.FailDownload, "the download did not finish within ota.download_timeout %v: %v", a.ota.cfg.DownloadTimeout, err)
	}
	return failf(protocol.FailDownload, "%v", err)
}

// verifyFile checks that file is the artifact m pins (size and SHA-256).
func verifyFile(file string, m firmware.Manifest) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return firmware.VerifyArtifact(f, m)
}

// powerCheckTimeout bounds ota.power_check_command.
const powerCheckTimeout = time.Minute

// powerCheck refuses an update (precheck) when the device's power does not allow one:
// ota.battery_capacity_file below ota.min_battery_percent, or ota.power_check_command
// failing.
func (o *ota) powerCheck(ctx context.Context, m firmware.Manifest) error {
	if f := o.cfg.BatteryCapacityFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return failf(protocol.FailPrecheck, "the battery's charge cannot be read (ota.battery_capacity_file): %v", err)
		}
		pct, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return failf(protocol.FailPrecheck, "ota.battery_capacity_file %s holds %q, not a percentage", f, clip(strings.TrimSpace(string(b))))
		}
		if pct < o.cfg.MinBatteryPercent {
			return failf(protocol.FailPrecheck, "the battery is at %d %%, below ota.min_battery_percent %d %%", pct, o.cfg.MinBatteryPercent)
		}
	}
	if len(o.cfg.PowerCheckCommand) > 0 {
		cctx, cancel := context.WithTimeout(ctx, powerCheckTimeout)
		defer cancel()
		if err := runHook(cctx, "ota.power_check_command", o.cfg.PowerCheckCommand, "MW_FIRMWARE_VERSION="+m.Version); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return failf(protocol.FailPrecheck, "the power check refused the update: %v", err)
		}
	}
	return nil
}

// deltaBase is the installed image, as the base of a delta.
type deltaBase struct {
	sha  string
	data []byte
}

// deltaBase reads ota.installed_image to ask for a delta of m from it; nil when there is
// none to use (not configured, missing, too large, or m's artifact itself).
func (o *ota) deltaBase(m firmware.Manifest, log *slog.Logger) *deltaBase {
	path := o.cfg.InstalledImage
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		log.Info("no firmware delta: the installed image cannot be read", "ota.installed_image", path, "error", err)
		return nil
	case !fi.Mode().IsRegular() || fi.Size() == 0:
		log.Info("no firmware delta: the installed image is not a regular file with content", "ota.installed_image", path)
		return nil
	case fi.Size()+m.Artifact.Size > o.cfg.DeltaMaxBytes:
		log.Info("no firmware delta: the installed image and the artifact are larger than ota.delta_max_bytes together",
			"installed", fi.Size(), "artifact", m.Artifact.Size, "ota.delta_max_bytes", o.cfg.DeltaMaxBytes)
		return nil
	}
	b, err := readFileMax(path, fi.Size())
	if err != nil || int64(len(b)) != fi.Size() {
		log.Info("no firmware delta: the installed image changed while read", "ota.installed_image", path, "error", err)
		return nil
	}
	sum := sha256.Sum256(b)
	d := &deltaBase{sha: hex.EncodeToString(sum[:]), data: b}
	if d.sha == m.Artifact.SHA256 {
		return nil
	}
	return d
}

// readFileMax reads at most n+1 bytes of path.
func readFileMax(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n+1))
}

// downloadDelta downloads the delta of m's artifact from base (resuming like any download,
// into <sha256>.delta-<base>.part), rebuilds the artifact into part, and returns the
// delta's size. The caller verifies part.
func (a *Agent) downloadDelta(ctx context.Context, path, part string, base *deltaBase, m firmware.Manifest) (int64, error) {
	o := a.ota
	url := path + "?" + protocol.DeltaQuery + "=" + base.sha
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, o.base+url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := o.httpc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("HEAD %s: %w", req.URL.Path, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HEAD %s delta from %s: %s", req.URL.Path, base.sha, resp.Status)
	}
	size := resp.ContentLength
	if size <= 0 || size >= m.Artifact.Size {
		return 0, fmt.Errorf("the delta is %d bytes, the artifact %d", size, m.Artifact.Size)
	}
	dpart := filepath.Join(o.dir, m.Artifact.SHA256+".delta-"+base.sha+".part")
	if err := a.download(ctx, url, dpart, size); err != nil {
		return 0, err
	}
	defer func() {
		_ = os.Remove(dpart)
		_ = os.Remove(dpart + ".etag")
	}()
	in, err := os.Open(dpart)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	dec, err := protocol.NewDeltaReader(in, base.data, base.sha, m.Artifact.Size)
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	out, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, io.LimitReader(dec, m.Artifact.Size+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("decode the delta: %w", err)
	}
	if n != m.Artifact.Size {
		return 0, fmt.Errorf("the delta gives %d bytes, the artifact is %d", n, m.Artifact.Size)
	}
	return size, nil
}

// reportUpdate sends a State with an update report, best effort (the reply, or the report
// after the restart, follows anyway).
func (a *Agent) reportUpdate(ctx context.Context, rep protocol.UpdateReport, phase, detail string) bool {
	rep.Phase, rep.Detail = phase, detail
	st := identityState(a.local.Identity)
	st.Update = &rep
	body, _ := json.Marshal(st)
	err := a.up.publishChannel(ctx, channelMsg{kind: chState, body: body})
	if err != nil {
		a.log.Debug("send an update report", "phase", phase, "error", err)
		return false
	}
	if h := a.updateHook; h != nil {
		h(rep)
	}
	return true
}

// download fetches path into part, resuming from what part holds (Range, If-Range with the
// ETag the server gave), until it holds size bytes or ctx ends. A cut connection or a
// server error is retried after a backoff wait; a refusal (4xx) is not.
func (a *Agent) download(ctx context.Context, path, part string, size int64) error {
	o := a.ota
	etagFile := part + ".etag"
	wait := time.Second
	for attempt := 1; ; attempt++ {
		f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		off, err := f.Seek(0, io.SeekEnd)
		if err == nil && off > size {
			err = f.Truncate(0)
			off = 0
		}
		if err != nil {
			_ = f.Close()
			return err
		}
		if off == size && size > 0 {
			return f.Close()
		}
		etag, _ := os.ReadFile(etagFile)
		n, retry, err := a.fetchRange(ctx, o.base+path, f, off, size, string(etag), etagFile)
		cerr := f.Close()
		if err == nil {
			err = cerr
		}
		if err == nil {
			return nil
		}
		if !retry || ctx.Err() != nil {
			return err
		}
		if n > 0 {
			wait = time.Second
		}
		var busy *errServerBusy
		if errors.As(err, &busy) {
			// Not a fault: wait what the server asks, and a random half of it more, so that
			// the devices it turned away do not all come back at once.
			after := min(max(busy.after, time.Second), maxDownloadRetryAfter)
			after += time.Duration(a.rnd(int64(after/2) + 1))
			a.log.Info("firmware download deferred: the server is busy with other downloads", "attempt", attempt, "have", off, "retry_in", after)
			if !clock.Sleep(ctx, a.clk, after) {
				return err
			}
			continue
		}
		a.log.Info("firmware download cut; resuming", "attempt", attempt, "error", err, "retry_in", wait)
		if !clock.Sleep(ctx, a.clk, wait) {
			return err
		}
		wait = min(2*wait, otaRetryWait)
	}
}

// fetchRange does one GET of url from offset off into f (at its end), and reports the bytes
// it wrote and whether a failure may be retried.
func (a *Agent) fetchRange(ctx context.Context, url string, f *os.File, off, size int64, etag, etagFile string) (int64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		if etag != "" {
			req.Header.Set("If-Range", etag)
		}
	}
	resp, err := a.ota.httpc.Do(req)
	if err != nil {
		a.ota.httpc.CloseIdleConnections()
		return 0, true, fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != off {
			return 0, true, truncateFrom(f, fmt.Errorf("GET %s: Content-Range %q does not start at %d", req.URL.Path, resp.Header.Get("Content-Range"), off))
		}
	case http.StatusOK:
		// The whole artifact: from the start.
		if err := f.Truncate(0); err != nil {
			return 0, false, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, false, err
		}
		off = 0
		if e := resp.Header.Get("ETag"); e != "" {
			_ = atomicfile.Write(etagFile, []byte(e), 0o600)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, true, truncateFrom(f, fmt.Errorf("GET %s: %s", req.URL.Path, resp.Status))
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("GET %s: %s %s", req.URL.Path, resp.Status, strings.TrimSpace(string(b)))
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests {
			if after := parseRetryAfter(resp.Header.Get("Retry-After"), a.clk.Now()); after > 0 {
				return 0, true, &errServerBusy{after: after, err: err}
			}
		}
		return 0, resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests, err
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, size-off+1))
	if err != nil {
		return n, true, fmt.Errorf("GET %s: %d of %d bytes, then: %w", req.URL.Path, off+n, size, err)
	}
	if off+n > size {
		_ = f.Truncate(0)
		return n, false, fmt.Errorf("GET %s: %w: longer than %d bytes", req.URL.Path, firmware.ErrArtifactMismatch, size)
	}
	if off+n < size {
		return n, true, fmt.Errorf("GET %s: the body ended after %d of %d bytes", req.URL.Path, off+n, size)
	}
	return n, false, nil
}

// truncateFrom empties the partial download (it cannot be resumed) and returns err.
func truncateFrom(f *os.File, err error) error {
	if terr := f.Truncate(0); terr != nil {
		return errors.Join(err, terr)
	}
	return err
}

// otaConfirm settles an update installed before this start: it waits for the new version to
// reach the server, commits it and reports "succeeded"; or rolls it back after
// ota.confirm_timeout and restarts; or reports a rollback that already happened.
func (a *Agent) otaConfirm(ctx context.Context) {
	o := a.ota
	p := o.current()
	if p == nil {
		return
	}
	running := a.local.Identity.FirmwareVersion
	rep := protocol.UpdateReport{Command: p.Command, Rollout: p.Rollout, Version: p.Version}
	log := a.log.With("version", p.Version, "from", p.From, "running", running)
	if p.State == PendingInstalled {
		switch running {
		case p.Version:
			log.Info("running the new firmware; waiting to reach the server to confirm it", "confirm_timeout", o.cfg.ConfirmTimeout)
			deadline := a.clk.NewTimer(o.cfg.ConfirmTimeout)
			reached := a.reachServer(ctx, deadline.C())
			deadline.Stop()
			if ctx.Err() != nil {
				return
			}
			if reached {
				ictx, cancel := context.WithTimeout(ctx, otaInstallTimeout)
				err := o.inst.Commit(ictx, *p)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					p.State, p.Detail = PendingConfirmed, ""
					log.Info("new firmware confirmed and committed")
				} else {
					p.State, p.Detail = PendingRolledBack, "the commit failed: "+err.Error()
					log.Error("commit the new firmware", "error", err)
				}
			} else {
				p.State, p.Detail = PendingRolledBack, fmt.Sprintf("%s did not reach the server within ota.confirm_timeout %v", p.Version, o.cfg.ConfirmTimeout)
			}
			if p.State == PendingRolledBack {
				log.Warn("rolling back the new firmware", "detail", p.Detail)
				if err := o.savePending(p); err != nil {
					log.Error("record the rollback", "error", err)
				}
				ictx, cancel := context.WithTimeout(ctx, otaInstallTimeout)
				err := o.inst.Rollback(ictx, *p)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					log.Error("roll back the new firmware", "error", err)
					p.Detail += "; the rollback failed: " + err.Error()
					_ = o.savePending(p)
				}
				// Start again, in the version the rollback put back.
				a.requestRestart()
				return
			}
			if err := o.savePending(p); err != nil {
				log.Error("record the confirmation", "error", err)
			}
		case p.From:
			p.State, p.Detail = PendingRolledBack, fmt.Sprintf("the device came back running %s, not %s: the bootloader rolled back", running, p.Version)
			log.Warn("the new firmware did not come up", "detail", p.Detail)
			_ = o.savePending(p)
		default:
			p.State, p.Detail = PendingRolledBack, fmt.Sprintf("the device came back running %s, neither %s nor %s", running, p.Version, p.From)
			log.Warn("the device runs another firmware than expected", "detail", p.Detail)
			_ = o.savePending(p)
		}
	}
	phase := protocol.UpdateSucceeded
	if p.State == PendingRolledBack {
		phase = protocol.UpdateRolledBack
	}
	// Deliver the outcome; the record goes once the server has it.
	wait := time.Second
	for {
		if a.reportUpdate(ctx, rep, phase, p.Detail) {
			if err := o.savePending(nil); err != nil {
				log.Error("remove the pending update record", "error", err)
			}
			return
		}
		if !a.waitReached(ctx, wait, nil) {
			return
		}
		wait = min(2*wait, otaRetryWait)
	}
}

// reachServer sends the device's State until the server takes one, and reports whether it
// did before deadline fired (or ctx ended).
func (a *Agent) reachServer(ctx context.Context, deadline <-chan time.Time) bool {
	body, _ := json.Marshal(identityState(a.local.Identity))
	wait := time.Second
	for {
		if err := a.up.publishChannel(ctx, channelMsg{kind: chState, body: body}); err == nil {
			return true
		}
		if !a.waitReached(ctx, wait, deadline) {
			return false
		}
		wait = min(2*wait, otaRetryWait)
	}
}

// waitReached waits for wait (on the agent's clock), a new connection, deadline or ctx; it
// returns false for the last two.
func (a *Agent) waitReached(ctx context.Context, wait time.Duration, deadline <-chan time.Time) bool {
	t := a.clk.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-deadline:
		return false
	case <-t.C():
	case <-a.connected:
	}
	return true
}

// pokeConnected tells otaConfirm that a connection came up.
func (a *Agent) pokeConnected() {
	select {
	case a.connected <- struct{}{}:
	default:
	}
}

// execInstaller is the default Installer: ota.install_command, ota.commit_command and
// ota.rollback_command.
type execInstaller struct{ cfg OTAConfig }

func (e *execInstaller) Install(ctx context.Context, file string, m firmware.Manifest) error {
	return runHook(ctx, "ota.install_command", e.cfg.InstallCommand,
		"MW_FIRMWARE_FILE="+file, "MW_FIRMWARE_VERSION="+m.Version, "MW_FIRMWARE_SHA256="+m.Artifact.SHA256)
}

func (e *execInstaller) Commit(ctx context.Context, u PendingUpdate) error {
	return runHook(ctx, "ota.commit_command", e.cfg.CommitCommand,
		"MW_FIRMWARE_VERSION="+u.Version, "MW_FIRMWARE_PREVIOUS_VERSION="+u.From, "MW_FIRMWARE_SHA256="+u.SHA256)
}

func (e *execInstaller) Rollback(ctx context.Context, u PendingUpdate) error {
	return runHook(ctx, "ota.rollback_command", e.cfg.RollbackCommand,
		"MW_FIRMWARE_VERSION="+u.Version, "MW_FIRMWARE_PREVIOUS_VERSION="+u.From, "MW_FIRMWARE_SHA256="+u.SHA256)
}

// runHook runs argv (none: nothing to do) in a process group of its own with env added to
// the agent's environment; a failure carries the end of its output.
func runHook(ctx context.Context, key string, argv []string, env ...string) error {
	if len(argv) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	source.OwnProcessGroup(cmd)
	cmd.WaitDelay = time.Second
	cmd.Env = append(os.Environ(), env...)
	out := &boundedBuffer{max: 2 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", key, argv[0], err, strings.TrimSpace(strings.ToValidUTF8(out.buf.String(), "\uFFFD")))
	}
	return nil
}

// commandIDKey carries the running command's ID in its context.
type commandIDKey struct{}

func commandID(ctx context.Context) string {
	id, _ := ctx.Value(commandIDKey{}).(string)
	return id
}
