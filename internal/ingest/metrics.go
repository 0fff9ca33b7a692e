package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	batches         *prometheus.CounterVec
	rejectedBatches *prometheus.CounterVec
	refusedSamples  *prometheus.CounterVec
	samples         prometheus.Counter
	ackLatency      prometheus.Histogram
	commitDuration  prometheus.Histogram
	fsyncDuration   prometheus.Histogram
	groupSize       prometheus.Histogram
	commitErrors    prometheus.Counter
	storageFaults   prometheus.Counter
	storageRepairs  *prometheus.CounterVec
	seqGaps         prometheus.Counter
	seqLate         prometheus.Counter
	seqRepeats      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		batches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_ingest_batches_total",
			Help: "Batches handled, by result: stored, partial (some values refused as too old or too new), refused.",
		}, []string{"result"}),
		rejectedBatches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_ingest_rejected_batches_total",
			Help: "Batches refused whole, by reason.",
		}, []string{"reason"}),
		refusedSamples: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_ingest_refused_values_total",
			Help: "Values refused from otherwise stored batches, by reason.",
		}, []string{"reason"}),
		samples: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_ingest_values_total",
			Help: "Values stored (samples in the TSDB and events in the event log).",
		}),
		ackLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "millwright_ingest_ack_latency_seconds",
			Help:    "Time from receiving a batch to its durable acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		commitDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "millwright_ingest_commit_duration_seconds",
			Help:    "Duration of one group commit, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		fsyncDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "millwright_ingest_fsync_duration_seconds",
			Help:    "Duration of the fsync of a group commit.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}),
		groupSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "millwright_ingest_group_commit_batches",
			Help:    "Batches per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		commitErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_ingest_commit_errors_total",
			Help: "Group commits that failed; their batches were refused for retry.",
		}),
		storageFaults: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_ingest_storage_faults_total",
			Help: "Storage write errors after which batches were refused until storage was repaired.",
		}),
		storageRepairs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_ingest_storage_repairs_total",
			Help: "Attempts to make storage consistent after a write error, by result: repaired, failed.",
		}, []string{"result"}),
		seqGaps: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_ingest_seq_gaps_total",
			Help: "Batch sequence numbers skipped when a higher one arrived (possible loss).",
		}),
		seqLate: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_ingest_seq_late_total",
			Help: "Batch sequence numbers that arrived after a higher one (a gap filled).",
		}),
		seqRepeats: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_ingest_seq_repeats_total",
			Help: "Batches whose sequence number was seen before (retransmits).",
		}),
	}
}
