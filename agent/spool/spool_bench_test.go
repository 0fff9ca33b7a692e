package spool_test

import (
	"testing"

	"github.com/millwright/millwright/agent/spool"
)

// Run with:
//
//	go test ./agent/spool -run '^$' -bench . -benchtime 2s
//
// Each benchmark appends 60-byte payloads (78 bytes on disk) and reports
// records/s and payload MB/s.

const benchPayload = 60

func benchSpool(b *testing.B, p spool.SyncPolicy) *spool.Spool {
	b.Helper()
	s, err := spool.Open(b.TempDir(), spool.Options{MaxBytes: 1 << 30, SegmentBytes: 4 << 20, Sync: p})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func reportThroughput(b *testing.B) {
	secs := b.Elapsed().Seconds()
	if secs == 0 {
		return
	}
	b.ReportMetric(float64(b.N)/secs, "records/s")
	b.ReportMetric(float64(b.N)*benchPayload/1e6/secs, "MB/s")
}

// BenchmarkAppend appends from one goroutine.
func BenchmarkAppend(b *testing.B) {
	for _, p := range []spool.SyncPolicy{spool.SyncAlways, spool.SyncBatch, spool.SyncNever} {
		b.Run(p.String(), func(b *testing.B) {
			s := benchSpool(b, p)
			payload := make([]byte, benchPayload)
			for b.Loop() {
				if _, err := s.Append(spool.ClassRaw, payload); err != nil {
					b.Fatal(err)
				}
			}
			reportThroughput(b)
		})
	}
}

// BenchmarkAppendBatch appends 10 records per call, as a local API request
// or a source's sample set does; records/s counts records.
func BenchmarkAppendBatch(b *testing.B) {
	for _, p := range []spool.SyncPolicy{spool.SyncBatch, spool.SyncNever} {
		b.Run(p.String(), func(b *testing.B) {
			s := benchSpool(b, p)
			batch := make([][]byte, 10)
			for i := range batch {
				batch[i] = make([]byte, benchPayload)
			}
			n := 0
			for b.Loop() {
				if _, _, err := s.AppendBatch(spool.ClassRaw, batch); err != nil {
					b.Fatal(err)
				}
				n += len(batch)
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(n)/secs, "records/s")
			b.ReportMetric(float64(n)*benchPayload/1e6/secs, "MB/s")
		})
	}
}

// BenchmarkAppendParallel appends from 32 goroutines (16 per CPU), as many
// sources do; under SyncAlways they share fsyncs (group commit).
func BenchmarkAppendParallel(b *testing.B) {
	for _, p := range []spool.SyncPolicy{spool.SyncAlways, spool.SyncBatch, spool.SyncNever} {
		b.Run(p.String(), func(b *testing.B) {
			s := benchSpool(b, p)
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				payload := make([]byte, benchPayload)
				for pb.Next() {
					if _, err := s.Append(spool.ClassRaw, payload); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportThroughput(b)
		})
	}
}

// BenchmarkSend measures the sender side: read a batch of 500 records and
// acknowledge it.
func BenchmarkSend(b *testing.B) {
	s := benchSpool(b, spool.SyncNever)
	payload := make([]byte, benchPayload)
	const batch = 500
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for range batch {
			if _, err := s.Append(spool.ClassRaw, payload); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		recs, err := s.Peek(batch, 0)
		if err != nil || len(recs) != batch {
			b.Fatal(err, len(recs))
		}
		if err := s.Ack(recs[len(recs)-1].ID); err != nil {
			b.Fatal(err)
		}
	}
	secs := b.Elapsed().Seconds()
	if secs > 0 {
		b.ReportMetric(float64(b.N*batch)/secs, "records/s")
	}
}
