package firmware

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/millwright/millwright/protocol"
)

// BenchmarkDelta measures what a delta saves on a real pair of firmware images, given as the
// files MW_DELTA_BASE (the image a device runs) and MW_DELTA_TARGET (the new one); without
// them it runs on a synthetic pair (deltaPair, 8 MiB). docs/benchmarks.md, "Delta artifacts",
// says how the real pair is made. Reported: the target's bytes, the target compressed alone
// at the same zstd level (what a device would download without a delta if images were served
// compressed), the delta's bytes, the share of the target's bytes saved, and the time to make
// the delta through the archive (Store.Delta, nothing kept) and to rebuild the target on the
// device side (protocol.NewDeltaReader).
func BenchmarkDelta(b *testing.B) {
	base, target := deltaPair(b, 8<<20)
	if bf, tf := os.Getenv("MW_DELTA_BASE"), os.Getenv("MW_DELTA_TARGET"); bf != "" && tf != "" {
		var err error
		if base, err = os.ReadFile(bf); err != nil {
			b.Fatal(err)
		}
		if target, err = os.ReadFile(tf); err != nil {
			b.Fatal(err)
		}
	}
	var alone bytes.Buffer
	enc, _ := zstd.NewWriter(&alone, zstd.WithEncoderLevel(DeltaLevel), zstd.WithEncoderConcurrency(1))
	_, _ = enc.Write(target)
	_ = enc.Close()

	var deltaLen int
	var make, rebuild time.Duration
	for i := 0; i < b.N; i++ {
		s, err := Open(b.TempDir(), 0)
		if err != nil {
			b.Fatal(err)
		}
		bsum, _, err := s.Put(bytes.NewReader(base))
		if err != nil {
			b.Fatal(err)
		}
		tsum, _, err := s.Put(bytes.NewReader(target))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		path, _, err := s.Delta(tsum, bsum)
		if err != nil {
			b.Fatal(err)
		}
		make += time.Since(start)
		delta, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		deltaLen = len(delta)
		start = time.Now()
		d, err := protocol.NewDeltaReader(bytes.NewReader(delta), base, bsum, int64(len(target)))
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.ReadAll(d)
		d.Close()
		if err != nil || !bytes.Equal(got, target) {
			b.Fatalf("the delta does not rebuild the target: %v", err)
		}
		rebuild += time.Since(start)
	}
	b.ReportMetric(float64(len(base)), "base_bytes")
	b.ReportMetric(float64(len(target)), "target_bytes")
	b.ReportMetric(float64(alone.Len()), "zstd_alone_bytes")
	b.ReportMetric(float64(deltaLen), "delta_bytes")
	b.ReportMetric(100*(1-float64(deltaLen)/float64(len(target))), "%saved")
	b.ReportMetric(make.Seconds()/float64(b.N), "make_s")
	b.ReportMetric(rebuild.Seconds()/float64(b.N), "rebuild_s")
}
