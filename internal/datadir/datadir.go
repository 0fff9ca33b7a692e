// Package datadir guards a server's data directory: a lock that keeps a second server off it
// (flock on DataDir/lock, holding the PID of the server that has it), and a format stamp
// (DataDir/format.json) that says which layout the directory is in and which version of
// Millwright last wrote it, so that a server refuses a directory laid out by a newer one
// instead of misreading it. docs/operations.md "Upgrading" is the operator's side.
package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/millwright/millwright/atomicfile"
)

// File names inside the data directory.
const (
	// LockFile is flocked by the server that has the directory, and holds its PID.
	LockFile = "lock"
	// StampFile holds the format stamp, JSON.
	StampFile = "format.json"
)

// Format is the data directory layout this build reads and writes. It grows by one when a
// change to the layout (a file renamed, a store's on-disk format changed) means an older
// server would misread the directory; a newer server upgrades an older format in place when
// it opens it. The registry's schema has its own migrations (internal/registry) and does not
// change it, nor does the TSDB, whose blocks carry their own version.
//
// Format 1 is the layout of docs/operations.md "The data directory": ca.pem, ca.key,
// server.pem, server.key, admin.token, registry.db, tsdb/, events/events.jsonl, firmware/.
// A directory without a stamp was written before stamps existed, in format 1.
//
// Format 2 holds the event log in segments, events/<seq>.jsonl with their indexes
// events/<seq>.idx, where format 1 had the one events/events.jsonl (an older server would
// start an empty log beside them). Opening a format 1 directory makes its events.jsonl
// segment 0.
const Format = 2

// Errors of Lock and Stamp.
var (
	// ErrInUse means another process holds the data directory's lock.
	ErrInUse = errors.New("data directory in use")
	// ErrNewerFormat means the data directory was written by a newer Millwright, in a format
	// this build does not know.
	ErrNewerFormat = errors.New("data directory from a newer Millwright")
)

// Lock is a held data directory lock.
type Lock struct{ f *os.File }

// Acquire takes the data directory's lock, creating dir (mode 0700) when absent. When another
// process holds it, the error wraps ErrInUse and names that process: "data directory DIR in
// use by PID n". The lock goes with the process, so a server killed by SIGKILL leaves none
// behind.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b, _ := os.ReadFile(path)
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				return nil, fmt.Errorf("%w: data directory %s in use by PID %d", ErrInUse, dir, pid)
			}
			return nil, fmt.Errorf("%w: data directory %s in use by another process", ErrInUse, dir)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("write data directory lock: %w", err), f.Close())
	}
	return &Lock{f: f}, nil
}

// Release gives the lock up. The file stays; an unlocked lock file means nothing.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}

// Stamp is the content of the format stamp.
type Stamp struct {
	// Format is the layout the directory is in.
	Format int `json:"format"`
	// Version is the Millwright version that last opened the directory.
	Version string `json:"version"`
}

// ReadStamp reads dir's stamp; a directory without one is format 1 of an unknown version.
func ReadStamp(dir string) (Stamp, error) {
	b, err := os.ReadFile(filepath.Join(dir, StampFile))
	if errors.Is(err, os.ErrNotExist) {
		return Stamp{Format: 1}, nil
	}
	if err != nil {
		return Stamp{}, fmt.Errorf("read data directory stamp: %w", err)
	}
	var s Stamp
	if err := json.Unmarshal(b, &s); err != nil || s.Format < 1 {
		return Stamp{}, fmt.Errorf("data directory stamp %s is damaged (want {\"format\": N, \"version\": V}): %q", filepath.Join(dir, StampFile), strings.TrimSpace(string(b)))
	}
	return s, nil
}

// Check reads dir's stamp and refuses a format newer than this build's; it returns the stamp
// read. A server calls it while holding the lock, before opening any store.
func Check(dir, version string) (Stamp, error) {
	s, err := ReadStamp(dir)
	if err != nil {
		return Stamp{}, err
	}
	if s.Format > Format {
		return s, fmt.Errorf("%w: %s is in format %d, written by Millwright %s; this Millwright %s reads format %d and older: run Millwright %s or newer, or restore a backup made by this version (docs/operations.md \"Upgrading\")",
			ErrNewerFormat, dir, s.Format, s.Version, version, Format, s.Version)
	}
	return s, nil
}

// Write stamps dir with this build's format and version.
func Write(dir, version string) error {
	b, err := json.Marshal(Stamp{Format: Format, Version: version})
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, StampFile), append(b, '\n'), 0o644)
}
