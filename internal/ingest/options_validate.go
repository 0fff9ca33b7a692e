package ingest

import "github.com/millwright/millwright/internal/optcheck"

// Validate refuses a bound that is zero or negative: on a batch (limits), on the work waiting
// for the committer, on the future tolerance, or on what one device may make the server keep.
// The error is an *optcheck.Error keyed by the option's YAML key.
func (o Options) Validate() error {
	return optcheck.First(
		optcheck.Positive("limits.max_payload", o.Limits.MaxPayload),
		optcheck.Positive("limits.max_decompressed", o.Limits.MaxDecompressed),
		optcheck.Positive("limits.max_records", o.Limits.MaxRecords),
		optcheck.Positive("max_pending_batches", o.MaxPendingBatches),
		optcheck.Positive("max_pending_samples", o.MaxPendingSamples),
		optcheck.Positive("max_commit_samples", o.MaxCommitSamples),
		optcheck.Positive("future_tolerance", o.FutureTolerance),
		optcheck.Positive("max_name_length", o.MaxNameLength),
		optcheck.Positive("max_unit_length", o.MaxUnitLength),
		optcheck.Positive("max_string_length", o.MaxStringLength),
		optcheck.Positive("max_series_per_device", o.MaxSeriesPerDevice),
		optcheck.Positive("max_event_bytes_per_hour", o.MaxEventBytesPerHour),
	)
}
