package protocol

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHighlyCompressibleBatch decodes a valid batch that compresses far better than the first
// buffer guess (constant readings): the decoder must grow its buffer, not call it malformed.
func TestHighlyCompressibleBatch(t *testing.T) {
	v := 21.5
	p := make(Pack, 5000)
	for i := range p {
		p[i] = Record{Name: "temperature", Unit: "Cel", Value: &v}
	}
	for _, f := range []Format{FormatJSON, FormatCBOR} {
		b, err := Encode(p, Encoding{Format: f, Compressed: true})
		require.NoError(t, err)
		batch, _, err := Decode(b, time.Now(), DefaultLimits())
		require.NoError(t, err, "%v: %d bytes compressed", f, len(b))
		require.Len(t, batch.Measurements, len(p))
	}
}
