package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

func TestGenerator(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := newGenerator(1, start, 10*time.Second)
	p := g.nextPack(25)
	require.Len(t, p, 25)
	require.Equal(t, float64(start.Unix()), p[0].BaseTime)
	require.Equal(t, "temp_motor", p[0].Name)
	require.Equal(t, "state", p[9].Name)
	require.Equal(t, "temp_motor", p[10].Name)
	require.Equal(t, 10.0, p[10].Time, "second sampling step")
	require.Equal(t, 20.0, p[24].Time)
	// The next batch starts after the three steps this one touched.
	q := g.nextPack(10)
	require.Equal(t, float64(start.Add(30*time.Second).Unix()), q[0].BaseTime)

	// Same device, same data.
	a := encode(newGenerator(3, start, time.Second), 100, encCBORZstd)
	b := encode(newGenerator(3, start, time.Second), 100, encCBORZstd)
	require.Equal(t, a, b)

	msgs := singles(newGenerator(2, start, time.Second), 12)
	require.Len(t, msgs, 12)
	d, _, err := protocol.Decode(msgs[11], time.Now(), protocol.Limits{})
	require.NoError(t, err)
	require.Len(t, d.Measurements, 1)
	require.Equal(t, "temp_bearing", d.Measurements[0].Name, "the 12th: second step, second metric")
	require.Equal(t, start.Add(time.Second).UnixMilli(), d.Measurements[0].Time)
}
