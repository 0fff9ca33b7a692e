// Package spool is the device agent's durable store-and-forward queue: every
// measurement is written to local storage first and deleted only after the
// server has acknowledged it durably.
//
// Sources Append records (an opaque payload and a Class) from any number of
// goroutines; the sender reads the oldest unacknowledged records with Peek or
// ReadFrom (keeping several batches in flight), and calls Ack or AckIDs when
// the server confirms them. Records get increasing uint64 IDs that survive
// restarts. Delivery is at least once: the server deduplicates.
//
// # Storage
//
// Records live in segment files named after their first record ID
// (00000000000000000001.seg) in one directory. Each segment has a versioned
// header; each record a length, a CRC32C and a small header (class, append
// time). A spool written by this version is readable by the next minor
// versions and by the previous ones after a firmware rollback: readers skip
// header fields they do not know and refuse only an unknown major version
// (ErrUnsupportedVersion, naming the file). docs/spool.md has the byte
// layout.
//
// # What a crash can lose
//
// A crash of the process (panic, SIGKILL, OOM kill) loses nothing that
// Append returned for, under every policy: Append writes the record with
// write(2) before returning, and the kernel keeps it. A power cut or kernel
// crash loses, by Options.Sync:
//
//   - SyncAlways: nothing that Append returned without error for.
//   - SyncBatch (default): the records appended since the start of the last
//     successful fsync: at most about SyncInterval (default 200 ms) plus one
//     fsync time, or SyncBytes (default 256 KiB), of appends. Readers see
//     only durable records, so a lost record was never sent, and its ID may
//     be given to a new record after restart without confusing the server.
//     Durable reports the watermark; Sync forces a group commit.
//   - SyncNever: anything the operating system had not written back
//     (typically up to 30 s); readers see records at once. For tests and
//     benchmarks.
//
// Acknowledgements are persisted under SyncAlways before Ack returns and
// otherwise with the next group commit; out-of-order acknowledgements above
// the contiguous prefix (AckIDs) are held in memory. A crash can therefore
// make already acknowledged records be sent again, never the reverse.
//
// # Recovery
//
// Open checks every segment. A torn or corrupt record cuts its segment at
// that point (a torn last write is the usual case); the loss is counted in
// Stats.TornRecords and TornBytes. A segment whose header is unreadable is
// removed if it is header-sized (a crash during creation) or renamed to
// *.seg.corrupt otherwise; the other segments are still used. Open never
// discards the whole spool because of one bad segment and fails only for an
// unknown major version, a directory it cannot use or a lock held by another
// Spool. Each Open starts a new segment, so a segment is written by one
// software version only.
//
// # Bound
//
// The segment files stay under Options.MaxBytes (default 64 MiB). When an
// Append would exceed it, whole segments are dropped, oldest first, choosing
// only segments that hold raw records while any remain; the unacknowledged
// events in such a segment are re-appended at the tail (keeping their
// original time, getting a new ID) before the file is deleted. Once only
// events remain, the oldest events go. Drops are counted in
// Stats.DroppedOverflow and DroppedOverflowEvents; Append never fails or
// blocks because the spool is full. A disk that is full for other reasons
// makes Append fail with ErrDiskFull without losing stored data.
package spool
