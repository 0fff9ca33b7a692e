package spool

import "errors"

// ErrClosed is returned by every method called after [Spool.Close].
var ErrClosed = errors.New("spool closed")

// ErrDiskFull is wrapped by errors from Append (and Sync) when the file
// system reports no space (ENOSPC). Nothing already durable is lost; the
// record that failed was not stored, and appends work again once space
// returns. The underlying *os.PathError is wrapped too.
var ErrDiskFull = errors.New("disk full")

// ErrSyncFailed is wrapped by errors from Append (under SyncAlways) and Sync
// when fsync failed. The records concerned stay in the spool and are copied
// to a fresh segment and synced again on the next attempt.
var ErrSyncFailed = errors.New("fsync failed")

// ErrRecordTooLarge is returned by Append when a payload exceeds
// Options.MaxRecordBytes.
var ErrRecordTooLarge = errors.New("record too large")

// ErrUnknownClass is returned by Append for a Class other than ClassRaw and
// ClassEvent.
var ErrUnknownClass = errors.New("unknown record class")

// ErrUnsupportedVersion is wrapped by Open when a segment or the ack file was
// written with a major format version this build cannot read (for example
// after a firmware rollback across a major format change). The error names
// the file; the spool directory is left untouched.
var ErrUnsupportedVersion = errors.New("unsupported spool format version")

// ErrCorrupt is wrapped by decoding errors: a bad magic number, a checksum
// mismatch, an impossible length. Open never returns it for segment data: it
// truncates or quarantines instead and counts the loss in Stats.
var ErrCorrupt = errors.New("corrupt spool data")

// ErrLocked is returned by Open when another Spool (in this or another
// process) has the directory open.
var ErrLocked = errors.New("spool directory in use")

// ErrUnknownID is returned by Ack and AckIDs for an ID that readers cannot
// have seen yet (above the readable watermark); nothing is acknowledged.
var ErrUnknownID = errors.New("record ID not yet readable")

// ErrInvalidOptions is wrapped by Open and Options.Validate for an option
// value out of range; the message names the field.
var ErrInvalidOptions = errors.New("invalid spool options")
