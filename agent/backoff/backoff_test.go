package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWindowsGrowToCap(t *testing.T) {
	var asked []int64
	b := New(Policy{Base: 100 * time.Millisecond, Cap: time.Second}, func(n int64) int64 { asked = append(asked, n); return n - 1 })
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		require.Equal(t, w*time.Millisecond, b.Window(), "failure %d", i)
		require.Equal(t, w*time.Millisecond-1, b.Next())
	}
	require.Equal(t, 6, b.Failures())
	b.Reset()
	require.Equal(t, 100*time.Millisecond, b.Window())
}

func TestFullJitterIsUniform(t *testing.T) {
	b := New(Policy{Base: time.Second, Cap: time.Second}, nil)
	const n = 20000
	buckets := make([]int, 10)
	for range n {
		d := b.Next()
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, time.Second)
		buckets[int(d/(100*time.Millisecond))]++
	}
	for i, c := range buckets {
		require.InDelta(t, n/10, c, n/10*0.15, "bucket %d", i)
	}
}

func TestDefaults(t *testing.T) {
	b := New(Policy{Cap: -1}, nil)
	require.Equal(t, time.Second, b.Window())
	b = New(Policy{Base: time.Minute, Cap: time.Second}, nil)
	require.Equal(t, time.Minute, b.Window(), "a cap below the base is raised to it")
}

func TestJitterNoneIsPlainExponential(t *testing.T) {
	b := New(Policy{Base: 100 * time.Millisecond, Cap: time.Second, Jitter: JitterNone}, func(int64) int64 { panic("no draw without jitter") })
	require.Zero(t, b.Initial())
	for _, w := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		require.Equal(t, w*time.Millisecond, b.Next())
	}
	full := New(Policy{Base: 100 * time.Millisecond}, func(n int64) int64 { return n - 1 })
	require.Equal(t, 100*time.Millisecond-1, full.Initial())
}

func TestJitterText(t *testing.T) {
	for _, j := range []Jitter{JitterFull, JitterNone} {
		b, err := j.MarshalText()
		require.NoError(t, err)
		var back Jitter
		require.NoError(t, back.UnmarshalText(b))
		require.Equal(t, j, back)
	}
	var j Jitter
	require.ErrorContains(t, j.UnmarshalText([]byte("half")), `"half" is not a jitter mode`)
}
