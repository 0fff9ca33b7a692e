package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The device channel: what travels between the server and one device beyond telemetry
// (docs/protocol.md, "Device channel"). Every message is one JSON object. Server → device:
// a Command on CommandTopic(device, id), the desired configuration (DesiredConfig) on
// ConfigTopic(device). Device → server: a Reply on ReplyTopic(device, id), the applied
// configuration (ReportedConfig) on ConfigReportedTopic(device), and what the device is
// (State) on StateTopic(device). Over HTTPS a device fetches its Mailbox from MailboxPath and
// POSTs the same documents to ReplyPath, ConfigReportedPath and StatePath.

// HTTPS paths of the device channel, on the device port with the device's client certificate.
const (
	// MailboxPath: GET returns the device's Mailbox (what is waiting for it).
	MailboxPath = "/device/v1/mailbox"
	// FirmwarePathPrefix + an artifact's SHA-256 (lowercase hex): GET the firmware image,
	// with Range to resume a download cut halfway (the ETag is the SHA-256).
	FirmwarePathPrefix = "/device/v1/firmware/"
	// ReplyPathPrefix + command ID: POST a Reply to that command.
	ReplyPathPrefix = "/device/v1/reply/"
	// ConfigReportedPath: POST a ReportedConfig.
	ConfigReportedPath = "/device/v1/config/reported"
	// StatePath: POST a State.
	StatePath = "/device/v1/state"
)

// MaxChannelMessage bounds a device → server channel message (a Reply, a ReportedConfig, a
// State) in bytes. A larger one is refused with ReasonTooLarge and counted.
const MaxChannelMessage = 64 << 10

// MaxMessageIDLen bounds a mailbox message ID (a command's ID): one topic level of at most 64
// characters out of a-z, 0-9 and '-'.
const MaxMessageIDLen = 64

// Command is a server → device command: run Name with Args, once, before ExpiresAt. A device
// that sees an ID it has already run must not run it again; it answers again with the result
// it kept, or, if it kept none, with a Reply of state failed and reason "duplicate".
type Command struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Args      map[string]string `json:"args,omitempty"`
	ExpiresAt time.Time         `json:"expires_at"`
}

// DesiredConfig is the configuration the server wants the device to run: Config is the
// whole document (not a patch), Version grows with every change of it for this device.
type DesiredConfig struct {
	Version int64           `json:"version"`
	Config  json.RawMessage `json:"config"`
}

// The states a Reply reports.
const (
	ReplySucceeded = "succeeded"
	ReplyFailed    = "failed"
)

// Reasons a device gives in a failed Reply.
const (
	// FailUnknown: the device does not know the command's name.
	FailUnknown = "unknown"
	// FailRefused: the device knows the command but its local configuration forbids it (an
	// arbitrary shell command on a device that did not enable them).
	FailRefused = "refused"
	// FailTimeout: the command ran out of its time.
	FailTimeout = "timeout"
	// FailExpired: the command reached the device after its expiry.
	FailExpired = "expired"
	// FailError: the command ran and failed; Detail says why.
	FailError = "error"
	// FailDuplicate: the device ran this ID before and kept no result.
	FailDuplicate = "duplicate"
	// FailBadArgs: the command's arguments are not what it takes.
	FailBadArgs = "bad_args"
)

// Reply is a device's answer to a command.
type Reply struct {
	// State is ReplySucceeded or ReplyFailed.
	State string `json:"state"`
	// Reason says why a command failed (the Fail* constants, or a device's own word).
	Reason string `json:"reason,omitempty"`
	// Detail explains a failure for a person.
	Detail string `json:"detail,omitempty"`
	// Result is the command's structured result, any JSON value.
	Result json.RawMessage `json:"result,omitempty"`
}

// ReportedConfig is what the device applied of a DesiredConfig.
type ReportedConfig struct {
	// Version is the DesiredConfig.Version applied.
	Version int64 `json:"version"`
	// Applied is the configuration the device runs now, as far as the server may set it.
	Applied json.RawMessage `json:"applied,omitempty"`
	// Refused maps each key the device did not apply (a dotted path such as
	// "schedule.interval") to the reason.
	Refused map[string]string `json:"refused,omitempty"`
}

// State is what a device reports about itself; empty fields are not reported. MQTT 5 devices
// may report the same at connect (PropHardwareModel and the others); MQTT 3.1.1 and HTTPS
// devices report it here.
type State struct {
	FirmwareVersion string `json:"firmware_version,omitempty"`
	HardwareModel   string `json:"hardware_model,omitempty"`
	NetworkOperator string `json:"network_operator,omitempty"`
	// Update is where the device is with a firmware update, when it has one to report.
	Update *UpdateReport `json:"update,omitempty"`
}

// Mailbox is what an HTTPS device gets from MailboxPath: the commands waiting for it, oldest
// first, and its desired configuration when the device has not reported it applied.
type Mailbox struct {
	Commands []Command      `json:"commands"`
	Config   *DesiredConfig `json:"config,omitempty"`
}

// ErrChannelMessage is wrapped by every error of the Decode* functions of the channel.
var ErrChannelMessage = errors.New("invalid device channel message")

// ValidateMessageID checks a mailbox message ID (a command's ID).
func ValidateMessageID(id string) error {
	if id == "" || len(id) > MaxMessageIDLen {
		return fmt.Errorf("%w: message ID must be 1 to %d characters", ErrChannelMessage, MaxMessageIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: message ID %q has a character outside a-z, 0-9 and '-'", ErrChannelMessage, id)
		}
	}
	return nil
}

// decodeStrict decodes one JSON object into v, refusing trailing data and payloads over
// MaxChannelMessage.
func decodeStrict(what string, b []byte, v any) error {
	if len(b) > MaxChannelMessage {
		return fmt.Errorf("%w: %s of %d bytes exceeds %d", ErrChannelMessage, what, len(b), MaxChannelMessage)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrChannelMessage, what, err)
	}
	if d.More() {
		return fmt.Errorf("%w: %s: data after the JSON object", ErrChannelMessage, what)
	}
	return nil
}

// DecodeReply parses and checks a Reply.
func DecodeReply(b []byte) (Reply, error) {
	var r Reply
	if err := decodeStrict("reply", b, &r); err != nil {
		return Reply{}, err
	}
	switch r.State {
	case ReplySucceeded, ReplyFailed:
	default:
		return Reply{}, fmt.Errorf("%w: reply state %q is neither %q nor %q", ErrChannelMessage, r.State, ReplySucceeded, ReplyFailed)
	}
	if len(r.Reason) > 64 || len(r.Detail) > 4096 {
		return Reply{}, fmt.Errorf("%w: reply reason (64 bytes) or detail (4096 bytes) too long", ErrChannelMessage)
	}
	if r.State == ReplyFailed && r.Reason == "" {
		r.Reason = FailError
	}
	if len(r.Result) > 0 && !json.Valid(r.Result) {
		return Reply{}, fmt.Errorf("%w: reply result is not JSON", ErrChannelMessage)
	}
	return r, nil
}

// DecodeReportedConfig parses and checks a ReportedConfig.
func DecodeReportedConfig(b []byte) (ReportedConfig, error) {
	var r ReportedConfig
	if err := decodeStrict("reported configuration", b, &r); err != nil {
		return ReportedConfig{}, err
	}
	if r.Version < 0 {
		return ReportedConfig{}, fmt.Errorf("%w: reported configuration version %d is negative", ErrChannelMessage, r.Version)
	}
	if len(r.Applied) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(r.Applied, &obj); err != nil && string(r.Applied) != "null" {
			return ReportedConfig{}, fmt.Errorf("%w: reported configuration \"applied\" is not a JSON object", ErrChannelMessage)
		}
	}
	if len(r.Refused) > 1000 {
		return ReportedConfig{}, fmt.Errorf("%w: reported configuration refuses %d keys, at most 1000", ErrChannelMessage, len(r.Refused))
	}
	return r, nil
}

// DecodeState parses and checks a State: each field at most 256 bytes, printable.
func DecodeState(b []byte) (State, error) {
	var s State
	if err := decodeStrict("state", b, &s); err != nil {
		return State{}, err
	}
	for _, f := range []struct{ name, v string }{{"firmware_version", s.FirmwareVersion}, {"hardware_model", s.HardwareModel}, {"network_operator", s.NetworkOperator}} {
		if len(f.v) > 256 {
			return State{}, fmt.Errorf("%w: state %s is %d bytes, at most 256", ErrChannelMessage, f.name, len(f.v))
		}
		if strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return State{}, fmt.Errorf("%w: state %s has a control character", ErrChannelMessage, f.name)
		}
	}
	if s.Update != nil {
		if err := s.Update.validate(); err != nil {
			return State{}, err
		}
	}
	return s, nil
}

// DecodeCommand parses a Command, as a device does.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := decodeStrict("command", b, &c); err != nil {
		return Command{}, err
	}
	if err := ValidateMessageID(c.ID); err != nil {
		return Command{}, err
	}
	if c.Name == "" {
		return Command{}, fmt.Errorf("%w: command %s has no name", ErrChannelMessage, c.ID)
	}
	return c, nil
}

// DecodeDesiredConfig parses a DesiredConfig, as a device does.
func DecodeDesiredConfig(b []byte) (DesiredConfig, error) {
	var c DesiredConfig
	if err := decodeStrict("configuration", b, &c); err != nil {
		return DesiredConfig{}, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(c.Config, &obj); err != nil {
		return DesiredConfig{}, fmt.Errorf("%w: configuration \"config\" is not a JSON object", ErrChannelMessage)
	}
	return c, nil
}

// ReplyID returns the command ID of a reply topic's rest ("reply/<id>", as ParseTopic gives
// it), and whether rest is one.
func ReplyID(rest string) (string, bool) {
	id, ok := strings.CutPrefix(rest, TopicReply+"/")
	if !ok || ValidateMessageID(id) != nil {
		return "", false
	}
	return id, true
}
