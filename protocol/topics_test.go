package protocol

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTopics(t *testing.T) {
	require.Equal(t, "mw/v1/d1/", DeviceRoot("d1"))
	require.Equal(t, "mw/v1/d1/#", DeviceFilter("d1"))
	require.Equal(t, "mw/v1/d1/batch", BatchTopic("d1"))
	require.True(t, strings.HasPrefix(BatchTopic("d1"), DeviceRoot("d1")))
}

// TestDeviceChannelTopics: the reserved topics of the device channel, each under the device's
// root, and split by ParseTopic into the device and the level below its root.
func TestDeviceChannelTopics(t *testing.T) {
	for _, tc := range []struct {
		topic, want, rest string
	}{
		{CommandTopic("d1", "42"), "mw/v1/d1/cmd/42", "cmd/42"},
		{CommandFilter("d1"), "mw/v1/d1/cmd/+", "cmd/+"},
		{ConfigTopic("d1"), "mw/v1/d1/config", "config"},
		{ConfigReportedTopic("d1"), "mw/v1/d1/config/reported", "config/reported"},
		{StateTopic("d1"), "mw/v1/d1/state", "state"},
		{ReplyTopic("d1", "42"), "mw/v1/d1/reply/42", "reply/42"},
		{ReplyTopic("pump-7", "a-b"), "mw/v1/pump-7/reply/a-b", "reply/a-b"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			require.Equal(t, tc.want, tc.topic)
			device, rest, ok := ParseTopic(tc.topic)
			require.True(t, ok)
			require.Equal(t, tc.want[len("mw/v1/"):len("mw/v1/")+len(device)], device)
			require.Equal(t, tc.rest, rest)
			require.NotEqual(t, BatchTopic(device), tc.topic, "never the batch topic")
		})
	}
	require.Equal(t, TopicConfig+"/reported", TopicConfigReported)
}

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		topic        string
		device, rest string
		ok           bool
	}{
		{"mw/v1/d1/batch", "d1", "batch", true},
		{"mw/v1/pump-7/cmd/reboot", "pump-7", "cmd/reboot", true},
		{"mw/v1/d1/", "d1", "", true},
		{BatchTopic("a-b-c"), "a-b-c", TopicBatch, true},
		{"mw/v1/d1", "", "", false},       // the root itself, no level below
		{"mw/v1/", "", "", false},         // no device
		{"mw/v1//batch", "", "", false},   // empty device
		{"mw/v1/D1/batch", "", "", false}, // upper case
		{"mw/v1/+/batch", "", "", false},  // wildcard
		{"mw/v1/#", "", "", false},
		{"mw/v2/d1/batch", "", "", false},
		{"/mw/v1/d1/batch", "", "", false},
		{"mw/v1d1/batch", "", "", false},
		{"", "", "", false},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			device, rest, ok := ParseTopic(tc.topic)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.device, device)
			require.Equal(t, tc.rest, rest)
		})
	}
}

func TestValidateDeviceID(t *testing.T) {
	for _, tc := range []struct {
		id      string
		wantErr string // substring; empty means valid
	}{
		{"d1", ""},
		{"a", ""},
		{"0", ""},
		{"pump-7", ""},
		{"7-pump", ""},
		{"a--b", ""},
		{strings.Repeat("a", 63), ""},
		{"", "empty"},
		{strings.Repeat("a", 64), "64 characters long, the limit is 63"},
		{"-a", "starts with '-'"},
		{"a-", "ends with '-'"},
		{"-", "starts with '-'"},
		{"Pump", `'P' at position 0`},
		{"a.b", `'.' at position 1`},
		{"a_b", `'_' at position 1`},
		{"a/b", `'/' at position 1`},
		{"a+", `'+' at position 1`},
		{"a b", `' ' at position 1`},
		{"pümp", "byte 0xc3 at position 1"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			err := ValidateDeviceID(tc.id)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidDeviceID)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
