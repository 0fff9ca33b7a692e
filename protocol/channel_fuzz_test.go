package protocol

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// The device → server messages of the device channel are outside input: whatever a device
// (or an attacker with one device's key) publishes reaches these decoders. Each must refuse
// with ErrChannelMessage or accept a value that survives its own encoding. Seed corpora are
// in testdata/fuzz/<target>.

func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"state":"succeeded","result":{"rtt_ms":41}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err != nil {
			require.ErrorIs(t, err, ErrChannelMessage)
			return
		}
		again, err := json.Marshal(r)
		require.NoError(t, err)
		r2, err := DecodeReply(again)
		require.NoError(t, err, "%s", again)
		require.Equal(t, r.State, r2.State)
		require.Equal(t, r.Reason, r2.Reason)
	})
}

func FuzzDecodeReportedConfig(f *testing.F) {
	f.Add([]byte(`{"version":3,"applied":{"log":{"level":"debug"}},"refused":{"x":"unknown key"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReportedConfig(b)
		if err != nil {
			require.ErrorIs(t, err, ErrChannelMessage)
			return
		}
		require.GreaterOrEqual(t, r.Version, int64(0))
		again, err := json.Marshal(r)
		require.NoError(t, err)
		_, err = DecodeReportedConfig(again)
		require.NoError(t, err, "%s", again)
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"firmware_version":"2.1.0","hardware_model":"gw-200","network_operator":"Telia"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			require.ErrorIs(t, err, ErrChannelMessage)
			return
		}
		again, err := json.Marshal(s)
		require.NoError(t, err)
		s2, err := DecodeState(again)
		require.NoError(t, err)
		require.Equal(t, s, s2)
	})
}
