package protocol

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Firmware updates over the device channel (docs/protocol.md, "Firmware updates"). The server
// offers a release with a Command named CmdFirmwareUpdate; the device verifies the signed
// manifest against the keys it trusts, downloads the artifact from ArgArtifactPath on its
// HTTPS port (resuming with Range), verifies its size and SHA-256, installs it, and answers the
// command once the image is installed and the device is about to run it. What happens after —
// the restart into the new version, the confirmation, a rollback — it reports in
// State.Update, and the version it runs in State.FirmwareVersion (or at connect).

// CmdFirmwareUpdate is the command that offers a firmware release.
const CmdFirmwareUpdate = "firmware.update"

// Arguments of CmdFirmwareUpdate.
const (
	// ArgManifest is the release's firmware.SignedManifest envelope, as JSON.
	ArgManifest = "manifest"
	// ArgArtifactPath is where the device downloads the artifact: FirmwarePathPrefix + its
	// SHA-256, on the device HTTPS port, with the device's certificate.
	ArgArtifactPath = "path"
	// ArgRollout is the ID of the rollout that made the offer, echoed in UpdateReport.
	ArgRollout = "rollout"
	// ArgStartWithin spreads the downloads of devices offered a release at once: the device
	// waits a uniform random time in [0, start_within) seconds (on its clock) before it
	// downloads. A decimal integer of seconds, 0 to MaxStartWithin; absent or 0: at once.
	ArgStartWithin = "start_within"
)

// MaxStartWithin bounds ArgStartWithin: a day.
const MaxStartWithin = 24 * time.Hour

// ParseStartWithin reads an ArgStartWithin value ("" is 0).
func ParseStartWithin(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%s %q is not a whole number of seconds", ArgStartWithin, s)
	}
	if d := time.Duration(n) * time.Second; d <= MaxStartWithin {
		return d, nil
	}
	return 0, fmt.Errorf("%s %s is more than %d seconds", ArgStartWithin, s, int64(MaxStartWithin/time.Second))
}

// FormatStartWithin is d as an ArgStartWithin value: whole seconds, rounded up, at most
// MaxStartWithin.
func FormatStartWithin(d time.Duration) string {
	d = min(max(d, 0), MaxStartWithin)
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// Reasons a device gives when it fails a CmdFirmwareUpdate (besides the Fail* of every
// command); Detail says what exactly.
const (
	// FailVerify: the manifest is refused — no trusted signature, a bad one, another model,
	// expired, a downgrade not signed as a rollback, the running version, or too old a
	// running version for the release's min_from — or the artifact does not match it.
	FailVerify = "verify"
	// FailDownload: the artifact could not be downloaded.
	FailDownload = "download"
	// FailPrecheck: the device is not fit to install now (free space, its own checks).
	FailPrecheck = "precheck"
	// FailInstall: the installer failed; the device still runs its old version.
	FailInstall = "install"
)

// The phases of an update a device reports in UpdateReport.Phase, in the order they happen
// (issue 15: offered, downloading, verified, installing, rebooting, succeeded, failed(reason),
// rolled back).
const (
	// UpdateOffered: the device received the offer and is about to check it.
	UpdateOffered = "offered"
	// UpdateDownloading: the manifest was accepted (its signature by a trusted key, the
	// model, the version order) and the device has checked it can take the update; the
	// download starts (after the offer's ArgStartWithin delay).
	UpdateDownloading = "downloading"
	// UpdateVerified: the artifact was downloaded and matches the signed manifest (size and
	// SHA-256).
	UpdateVerified = "verified"
	// UpdateInstalling: the pre-install checks passed; the installer runs.
	UpdateInstalling = "installing"
	// UpdateRebooting: installed; the device restarts into the new version.
	UpdateRebooting = "rebooting"
	// UpdateSucceeded: the device runs the new version, reached the server with it and
	// committed it (it will not roll back by itself any more).
	UpdateSucceeded = "succeeded"
	// UpdateFailed: the update stopped; the device runs its old version. UpdateReport.Reason
	// says why (FailVerify, FailDownload, FailPrecheck, FailInstall, or a reason of every
	// command).
	UpdateFailed = "failed"
	// UpdateRolledBack: the device went back to the version it ran before (the new one did
	// not come up, or could not reach the server within its confirmation time).
	UpdateRolledBack = "rolled_back"
)

// UpdatePhases lists the phases in the order they happen.
var UpdatePhases = []string{UpdateOffered, UpdateDownloading, UpdateVerified, UpdateInstalling, UpdateRebooting,
	UpdateSucceeded, UpdateFailed, UpdateRolledBack}

// UpdateReport is where a device is with one firmware update, sent in State.Update.
type UpdateReport struct {
	// Command is the ID of the CmdFirmwareUpdate command.
	Command string `json:"command"`
	// Rollout is the command's ArgRollout.
	Rollout string `json:"rollout,omitempty"`
	// Version is the version being installed.
	Version string `json:"version"`
	// Phase is one of the Update* phases.
	Phase string `json:"phase"`
	// Reason is, for UpdateFailed only, the failure's reason code: the Reason of the
	// command's failed reply (FailVerify, FailPrecheck, …).
	Reason string `json:"reason,omitempty"`
	// Detail explains a failure or a rollback for a person.
	Detail string `json:"detail,omitempty"`
}

func (u *UpdateReport) validate() error {
	if err := ValidateMessageID(u.Command); err != nil {
		return fmt.Errorf("%w: update report command: %v", ErrChannelMessage, err)
	}
	if !slices.Contains(UpdatePhases, u.Phase) {
		return fmt.Errorf("%w: update report phase %q is not one of %s", ErrChannelMessage, u.Phase, strings.Join(UpdatePhases, ", "))
	}
	if u.Reason != "" && u.Phase != UpdateFailed {
		return fmt.Errorf("%w: update report reason %q with phase %q: a reason goes with %q only", ErrChannelMessage, u.Reason, u.Phase, UpdateFailed)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"rollout", u.Rollout, 64}, {"version", u.Version, 256}, {"reason", u.Reason, 64}, {"detail", u.Detail, 4096}} {
		if len(f.v) > f.max {
			return fmt.Errorf("%w: update report %s is %d bytes, at most %d", ErrChannelMessage, f.name, len(f.v), f.max)
		}
		if f.name != "detail" && strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("%w: update report %s has a control character", ErrChannelMessage, f.name)
		}
	}
	return nil
}
