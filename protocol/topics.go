package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// TopicRoot is the root of every Millwright MQTT topic. The version level
// ("v1") changes only with an incompatible change of this contract.
const TopicRoot = "mw/v1"

// TopicBatch is the topic level, under a device's root, to which the device
// publishes its telemetry batches.
const TopicBatch = "batch"

// Topic levels of the device channel: messages between the server and one
// device beyond telemetry. They are reserved: this version of the server and
// agent uses none of them yet, and a device must not publish to them for
// other purposes (docs/protocol.md, "Reserved for the device channel").
const (
	// TopicCommand is the level under which the server sends a device
	// commands, one topic per command: "mw/v1/<device>/cmd/<id>".
	TopicCommand = "cmd"
	// TopicConfig is the topic of a device's desired configuration, sent by
	// the server: "mw/v1/<device>/config".
	TopicConfig = "config"
	// TopicConfigReported is the topic on which a device reports the
	// configuration it applied: "mw/v1/<device>/config/reported".
	TopicConfigReported = TopicConfig + "/reported"
	// TopicState is the topic on which a device reports its state:
	// "mw/v1/<device>/state".
	TopicState = "state"
	// TopicReply is the level under which a device answers a command, on the
	// command's ID: "mw/v1/<device>/reply/<id>".
	TopicReply = "reply"
)

// MaxDeviceIDLen is the longest device ID, the length limit of a DNS label.
const MaxDeviceIDLen = 63

// ErrInvalidDeviceID is wrapped by every error of ValidateDeviceID.
var ErrInvalidDeviceID = errors.New("invalid device ID")

// DeviceRoot returns the root of the device's topic tree,
// "mw/v1/<device>/". The server's ACL confines a device to this tree.
func DeviceRoot(device string) string {
	return TopicRoot + "/" + device + "/"
}

// DeviceFilter returns the MQTT topic filter that matches every topic of the
// device's tree, "mw/v1/<device>/#".
func DeviceFilter(device string) string {
	return DeviceRoot(device) + "#"
}

// BatchTopic returns the topic a device publishes telemetry batches to,
// "mw/v1/<device>/batch".
func BatchTopic(device string) string {
	return DeviceRoot(device) + TopicBatch
}

// CommandTopic returns the topic of the command id to the device,
// "mw/v1/<device>/cmd/<id>". id is one topic level: not empty, without '/',
// '+' or '#'.
func CommandTopic(device, id string) string {
	return DeviceRoot(device) + TopicCommand + "/" + id
}

// CommandFilter returns the topic filter a device subscribes to for its
// commands, "mw/v1/<device>/cmd/+".
func CommandFilter(device string) string {
	return DeviceRoot(device) + TopicCommand + "/+"
}

// ConfigTopic returns the topic of the device's desired configuration,
// "mw/v1/<device>/config".
func ConfigTopic(device string) string {
	return DeviceRoot(device) + TopicConfig
}

// ConfigReportedTopic returns the topic on which the device reports the
// configuration it applied, "mw/v1/<device>/config/reported".
func ConfigReportedTopic(device string) string {
	return DeviceRoot(device) + TopicConfigReported
}

// StateTopic returns the topic on which the device reports its state,
// "mw/v1/<device>/state".
func StateTopic(device string) string {
	return DeviceRoot(device) + TopicState
}

// ReplyTopic returns the topic on which the device answers the command id,
// "mw/v1/<device>/reply/<id>". id is the command's: one topic level.
func ReplyTopic(device, id string) string {
	return DeviceRoot(device) + TopicReply + "/" + id
}

// ParseTopic splits a topic of a device's tree into the device ID and the
// rest: "mw/v1/d1/batch" gives "d1", "batch", true. ok is false when the
// topic is not under TopicRoot, has no level after the device ID, or the
// device ID is not valid (ValidateDeviceID). rest may contain further
// levels ("cmd/reboot") and may be empty ("mw/v1/d1/").
func ParseTopic(topic string) (device, rest string, ok bool) {
	after, found := strings.CutPrefix(topic, TopicRoot+"/")
	if !found {
		return "", "", false
	}
	device, rest, found = strings.Cut(after, "/")
	if !found || ValidateDeviceID(device) != nil {
		return "", "", false
	}
	return device, rest, true
}

// ValidateDeviceID checks that id is a valid device ID: 1 to 63 characters
// out of a-z, 0-9 and '-', not starting or ending with '-'. Such an ID is at
// once a DNS label (devices connect to "<id>.<gateway zone>"), a single MQTT
// topic level, a certificate common name and a Prometheus label value. The
// error wraps ErrInvalidDeviceID and says what is wrong.
func ValidateDeviceID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidDeviceID)
	case len(id) > MaxDeviceIDLen:
		return fmt.Errorf("%w: %q is %d characters long, the limit is %d", ErrInvalidDeviceID, id, len(id), MaxDeviceIDLen)
	case id[0] == '-':
		return fmt.Errorf("%w: %q starts with '-'", ErrInvalidDeviceID, id)
	case id[len(id)-1] == '-':
		return fmt.Errorf("%w: %q ends with '-'", ErrInvalidDeviceID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' {
			continue
		}
		what := fmt.Sprintf("%q", rune(c))
		if c >= 0x80 {
			what = fmt.Sprintf("byte 0x%02x", c)
		}
		return fmt.Errorf("%w: %q has %s at position %d; only a-z, 0-9 and '-' are allowed", ErrInvalidDeviceID, id, what, i)
	}
	return nil
}
