package millwrightcli

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory for the test: a small filesystem
// the test can fill. It needs root (CAP_SYS_ADMIN), as the test suite has on its machines.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s (the test needs root to make a small filesystem it can fill): %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a ballast file in dir until the filesystem is full, and returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	buf := bytes.Repeat([]byte{0xA5}, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			require.True(t, errors.Is(err, syscall.ENOSPC), "filling the disk: %v", err)
			return path
		}
	}
}

// TestDiskFullLosesNothingAcknowledged runs the server as a separate process on a small
// filesystem, fills the filesystem while two devices publish (batches are refused), frees it
// (batches are acknowledged again), then SIGKILLs and restarts the server: every batch that
// was acknowledged, before or after the disk filled, must be queryable — samples and string
// values. A write that fails part way leaves a torn record in the write-ahead log; a server
// that went on acknowledging after it lost those batches at the next start, when the log was
// repaired by cutting it at the torn record.
func TestDiskFullLosesNothingAcknowledged(t *testing.T) {
	dir := mountTmpfs(t, 64<<20)
	srv := startServerProcess(t, dir)
	pubs := srv.publishers("full", 2, 50, true)
	stop := runPublishers(pubs)
	defer stop()
	waitCounts := func(what string, ok func(p *publisher, acked, refused int) bool) {
		t.Helper()
		require.Eventually(t, func() bool {
			for _, p := range pubs {
				if acked, refused := p.counts(); !ok(p, acked, refused) {
					return false
				}
			}
			return true
		}, 60*time.Second, 10*time.Millisecond, "waiting for %s", what)
	}

	waitCounts("acknowledgements before the disk fills", func(_ *publisher, acked, _ int) bool { return acked >= 50 })
	ballast := fillDisk(t, dir)
	waitCounts("refusals on the full disk", func(_ *publisher, _, refused int) bool { return refused >= 20 })
	before := map[*publisher]int{}
	for _, p := range pubs {
		before[p], _ = p.counts()
	}
	require.NoError(t, os.Remove(ballast))
	waitCounts("acknowledgements after space returned", func(p *publisher, acked, _ int) bool { return acked >= before[p]+200 })
	stop()
	srv.kill()

	srv.start()
	for _, p := range pubs {
		missing := p.missingSamples(srv.storedValues(p.device))
		notes := srv.storedNotes(p.device)
		missingNotes := 0
		for _, n := range p.acked {
			if !notes[fmt.Sprintf("n%d", n)] {
				missingNotes++
			}
		}
		t.Logf("%s: %d batches acknowledged (%d after the disk was freed), %d refused; %d acknowledged samples and %d string values missing",
			p.device, len(p.acked), len(p.acked)-before[p], p.refused, missing, missingNotes)
		require.Zero(t, missing, "acknowledged samples lost")
		require.Zero(t, missingNotes, "acknowledged string values lost")
	}
}

// storedNotes reads every dur_note string value of the device from the event API.
func (s *serverProcess) storedNotes(device string) map[string]bool {
	s.t.Helper()
	var body struct {
		Data []struct {
			String *string `json:"vs"`
		} `json:"data"`
	}
	s.getAPI("/api/v1/events", url.Values{"device": {device}, "name": {"dur_note"}, "limit": {"100000"}}, &body)
	out := map[string]bool{}
	for _, e := range body.Data {
		if e.String != nil {
			out[*e.String] = true
		}
	}
	return out
}
