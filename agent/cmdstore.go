package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/protocol"
)

// CommandsFile is the file in the spool directory that records the IDs of the last commands
// the agent ran and their replies, so that a command delivered again — the server delivers
// each until it has the reply, and again after a restart — is answered, not run again.
const CommandsFile = "mw_commands.json"

// Bounds of the command record.
const (
	// maxCommandRecords is how many command IDs the agent remembers; the oldest is
	// forgotten first. The server delivers a command until it expires or is answered, so
	// only a device that gets more than this many commands while one is still pending could
	// run one twice.
	maxCommandRecords = 256
	// maxKeptReplyBytes bounds the replies kept with them (their JSON, newest first); an
	// older command keeps its ID alone and is answered "duplicate" when delivered again.
	maxKeptReplyBytes = 256 << 10
)

// cmdRecord is one command the agent ran, or is running.
type cmdRecord struct {
	ID string `json:"id"`
	// Reply is what the agent answers when the command comes again: its result, or, while
	// it runs, what it should answer if the agent stops before the command ends (for most
	// commands none, so "duplicate"; for system.reboot, success). Nil: none kept.
	Reply *protocol.Reply `json:"reply,omitempty"`
}

// cmdStore is the persisted record of commands (CommandsFile). Safe for concurrent use.
type cmdStore struct {
	path string

	mu      sync.Mutex
	recs    []cmdRecord // oldest first
	running map[string]bool
}

// openCmdStore reads the record in dir. A damaged record is set aside and counted as an
// error, and the agent starts with an empty one.
func openCmdStore(dir string) (*cmdStore, error) {
	s := &cmdStore{path: filepath.Join(dir, CommandsFile), running: map[string]bool{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read command record: %w", err)
	}
	if err := json.Unmarshal(b, &s.recs); err != nil {
		s.recs = nil
		return s, fmt.Errorf("command record %s is damaged, starting a new one: %w", s.path, err)
	}
	if len(s.recs) > maxCommandRecords {
		s.recs = s.recs[len(s.recs)-maxCommandRecords:]
	}
	return s, nil
}

// claim is the outcome of cmdStore.begin.
type claim int

const (
	claimNew     claim = iota // run it
	claimRunning              // it is running now: its reply will follow
	claimDone                 // it ran: answer with the kept reply
)

// begin claims command id. For a new ID it records the ID with the provisional reply (nil
// or what to answer if the agent stops mid-way) before the command runs, and returns
// claimNew. A known ID returns claimDone with the kept reply (a "duplicate" failure when
// none was kept), or claimRunning.
func (s *cmdStore) begin(id string, provisional *protocol.Reply) (claim, protocol.Reply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[id] {
		return claimRunning, protocol.Reply{}, nil
	}
	if i := s.find(id); i >= 0 {
		if r := s.recs[i].Reply; r != nil {
			return claimDone, *r, nil
		}
		return claimDone, protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailDuplicate,
			Detail: "the device ran this command before and kept no result"}, nil
	}
	s.recs = append(s.recs, cmdRecord{ID: id, Reply: provisional})
	if len(s.recs) > maxCommandRecords {
		s.recs = slices.Delete(s.recs, 0, len(s.recs)-maxCommandRecords)
	}
	s.running[id] = true
	return claimNew, protocol.Reply{}, s.saveLocked()
}

// finish records the reply of command id, which begin claimed.
func (s *cmdStore) finish(id string, r protocol.Reply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, id)
	i := s.find(id)
	if i < 0 {
		// Forgotten while it ran (more than maxCommandRecords newer ones): keep it as the
		// newest.
		s.recs = append(s.recs, cmdRecord{ID: id})
		i = len(s.recs) - 1
	}
	s.recs[i].Reply = &r
	return s.saveLocked()
}

// setProvisional replaces the reply kept for command id while it runs: what to answer if the
// agent stops before it ends, now that it got further.
func (s *cmdStore) setProvisional(id string, r protocol.Reply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.find(id)
	if i < 0 || !s.running[id] {
		return nil
	}
	s.recs[i].Reply = &r
	return s.saveLocked()
}

// abandon forgets that command id runs, keeping its provisional reply: the agent stopped
// before the command ended.
func (s *cmdStore) abandon(id string) {
	s.mu.Lock()
	delete(s.running, id)
	s.mu.Unlock()
}

func (s *cmdStore) find(id string) int {
	for i := len(s.recs) - 1; i >= 0; i-- {
		if s.recs[i].ID == id {
			return i
		}
	}
	return -1
}

// saveLocked writes the record atomically, dropping the replies of the oldest commands
// beyond maxKeptReplyBytes.
func (s *cmdStore) saveLocked() error {
	budget := maxKeptReplyBytes
	for i := len(s.recs) - 1; i >= 0; i-- {
		r := s.recs[i].Reply
		if r == nil {
			continue
		}
		b, _ := json.Marshal(r)
		if len(b) > budget {
			s.recs[i].Reply = nil
			budget = 0
			continue
		}
		budget -= len(b)
	}
	b, err := json.Marshal(s.recs)
	if err != nil {
		return fmt.Errorf("encode command record: %w", err)
	}
	return atomicfile.Write(s.path, b, 0o600)
}
