package anomaly

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// fleetOf builds an Input from per-device-set counts: each part is a set of devices with its
// keys, its devices, and its drops per window (baseline windows equal, then now).
type part struct {
	keys     []Key
	devices  int
	baseline float64 // drops per window
	now      float64
}

func fleetOf(m Metric, parts ...part) Input {
	const windows = 8
	in := Input{Metric: m, Slices: map[Key]Series{}}
	in.Fleet.Baseline = make([]Counts, windows)
	for _, p := range parts {
		den := float64(p.devices) * 0.25
		add := func(s *Series) {
			if s.Baseline == nil {
				s.Baseline = make([]Counts, windows)
			}
			for i := range s.Baseline {
				// A little variation between windows, as real counts have.
				s.Baseline[i].Num += p.baseline * (1 + 0.02*float64(i%3-1))
				s.Baseline[i].Den += den
			}
			s.Now.Num += p.now
			s.Now.Den += den
			s.Devices += p.devices
		}
		add(&in.Fleet)
		for _, k := range p.keys {
			s := in.Slices[k]
			add(&s)
			in.Slices[k] = s
		}
	}
	return in
}

var (
	fw210 = Key{"firmware", "2.1.0"}
	fw200 = Key{"firmware", "2.0.0"}
	gw200 = Key{"model", "gw-200"}
	gw100 = Key{"model", "gw-100"}
	opA   = Key{"operator", "op-a"}
	opB   = Key{"operator", "op-b"}
)

func TestAnalyze(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name   string
		in     Input
		want   Key  // zero: a finding without a cause
		none   bool // nothing reported
		prefix string
	}{
		{
			name: "nothing moved",
			in: fleetOf(DropsPerDeviceHour,
				part{[]Key{fw210, gw200, opA}, 200, 50, 52},
				part{[]Key{fw200, gw100, opB}, 800, 200, 195}),
			none: true,
		},
		{
			// All of 2.1.0 is on gw-200; gw-200 also runs 2.0.0, which is fine. Both account
			// for the excess and both rests are normal: the firmware is the more specific.
			name: "firmware within a model",
			in: fleetOf(DropsPerDeviceHour,
				part{[]Key{fw210, gw200, opA}, 200, 50, 400},
				part{[]Key{fw200, gw200, opB}, 100, 25, 25},
				part{[]Key{fw200, gw100, opB}, 700, 175, 180}),
			want:   fw210,
			prefix: "drops per device-hour up 2.4×, explained by firmware=2.1.0 (",
		},
		{
			// The fault is the model's: 2.1.0 on gw-200 accounts for part, and its rest
			// (gw-200 on 2.0.0) moved too, so the model is named.
			name: "model across firmware",
			in: fleetOf(DropsPerDeviceHour,
				part{[]Key{fw210, gw200, opA}, 200, 50, 400},
				part{[]Key{fw200, gw200, opB}, 300, 75, 600},
				part{[]Key{fw200, gw100, opB}, 500, 125, 130}),
			want: gw200,
		},
		{
			name: "a small group does not trigger on its own noise",
			in: fleetOf(DropsPerDeviceHour,
				part{[]Key{fw210, gw200, opA}, 3, 1, 30},
				part{[]Key{fw200, gw100, opB}, 997, 250, 255}),
			none: true,
		},
		{
			name: "a move no single value explains",
			in: fleetOf(DropsPerDeviceHour,
				part{[]Key{fw210, gw200, opA}, 500, 125, 300},
				part{[]Key{fw200, gw100, opB}, 500, 125, 300}),
			want:   Key{},
			prefix: "drops per device-hour up 2.4×, not explained by any single",
		},
		{
			// 20 of 1,000 devices drop ten times as often: the fleet moves only 1.2×, too
			// little to be called; the group alone is the finding.
			name: "a small group's move",
			in: fleetOf(DropsPerDeviceHour,
				part{[]Key{fw210, gw200, opA}, 20, 5, 50},
				part{[]Key{fw200, gw200, opA}, 180, 45, 45},
				part{[]Key{fw200, gw100, opB}, 800, 200, 200}),
			want:   fw210,
			prefix: "drops per device-hour on firmware=2.1.0 up 10.0× (",
		},
		{
			name: "latency by operator",
			in: fleetOf(IngestDelaySeconds,
				part{[]Key{fw210, gw200, opA}, 150, 150, 750},
				part{[]Key{fw200, gw100, opA}, 150, 150, 750},
				part{[]Key{fw210, gw200, opB}, 300, 300, 290},
				part{[]Key{fw200, gw100, opB}, 400, 400, 410}),
			want: opA,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Analyze(tc.in, cfg)
			if tc.none {
				require.Nil(t, f)
				return
			}
			require.NotNil(t, f)
			require.Equal(t, tc.want, f.Key(), f.Text)
			require.Contains(t, f.Text, tc.prefix)
			if tc.want != (Key{}) {
				require.Greater(t, f.Share, 0.5)
				require.Greater(t, f.GroupFactor, 1.25)
			}
		})
	}
}

func TestFindOutlier(t *testing.T) {
	cfg := DefaultConfig()
	// Firmware 2.1.0, all on gw-200, has dropped five times as often since before the
	// baseline: no move, but an outlier, and the firmware, not the model, is named.
	in := fleetOf(DropsPerDeviceHour,
		part{[]Key{fw210, gw200, opA}, 200, 250, 250},
		part{[]Key{fw200, gw200, opB}, 200, 50, 50},
		part{[]Key{fw200, gw100, opB}, 600, 150, 150})
	require.Nil(t, Analyze(in, cfg))
	o := FindOutlier(in, cfg)
	require.NotNil(t, o)
	require.Equal(t, fw210, Key{o.Dimension, o.Value}, o.Text)
	require.InDelta(t, 5, o.Factor, 0.01)
	require.InDelta(t, 200.0/450, o.Share, 0.01)
	require.Equal(t, "drops per device-hour on firmware=2.1.0 is 5.0× the rest of the fleet's (200 devices; 44 % of the fleet's drops)", o.Text)

	// 2.5× the rest is not an outlier; nor is a small group's noise, nor the offline ratio.
	in = fleetOf(DropsPerDeviceHour,
		part{[]Key{fw210, gw200, opA}, 200, 125, 125},
		part{[]Key{fw200, gw100, opB}, 800, 200, 200})
	require.Nil(t, FindOutlier(in, cfg))
	in = fleetOf(DropsPerDeviceHour,
		part{[]Key{fw210, gw200, opA}, 4, 4, 4},
		part{[]Key{fw200, gw100, opB}, 996, 249, 249})
	require.Nil(t, FindOutlier(in, cfg))
	in = fleetOf(OfflineRatio,
		part{[]Key{fw210, gw200, opA}, 100, 100, 100},
		part{[]Key{fw200, gw100, opB}, 900, 9, 9})
	require.Nil(t, FindOutlier(in, cfg))
}

func TestFindOutlierCleanRest(t *testing.T) {
	// The rest of the fleet did not drop at all: the faulty firmware is still an outlier.
	in := fleetOf(DropsPerDeviceHour,
		part{[]Key{fw210, gw200, opA}, 20, 0, 30},
		part{[]Key{fw200, gw100, opB}, 80, 0, 0})
	o := FindOutlier(in, DefaultConfig())
	require.NotNil(t, o)
	require.Equal(t, fw210, Key{o.Dimension, o.Value}, o.Text)
}

func TestFindOutlierTooSmallToActOn(t *testing.T) {
	// Ingest delay of 0.3 s against 0.05 s: six times, but a quarter second.
	in := fleetOf(IngestDelaySeconds,
		part{[]Key{fw210, gw200, opA}, 200, 0.3 * 200 * 0.25, 0.3 * 200 * 0.25},
		part{[]Key{fw200, gw100, opB}, 800, 0.05 * 800 * 0.25, 0.05 * 800 * 0.25})
	require.Nil(t, FindOutlier(in, DefaultConfig()))
}
