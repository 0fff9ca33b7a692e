package spool_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
)

const (
	helperDirEnv    = "SPOOL_CRASH_HELPER_DIR"
	helperSyncEnv   = "SPOOL_CRASH_HELPER_SYNC"
	helperRoundEnv  = "SPOOL_CRASH_HELPER_ROUND"
	helperBatchSize = 40
)

func crashOptions(p spool.SyncPolicy) spool.Options {
	return spool.Options{SegmentBytes: 16 << 10, Sync: p, SyncInterval: 5 * time.Millisecond}
}

// TestHelperProcess is the child of TestCrashDurability: it appends records
// in a loop and, after each Sync, prints "ID payload" for every record the
// Sync made durable, until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashDurability")
	}
	var p spool.SyncPolicy
	if err := p.UnmarshalText([]byte(os.Getenv(helperSyncEnv))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := spool.Open(dir, crashOptions(p))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	round := os.Getenv(helperRoundEnv)
	var out bytes.Buffer
	for seq := 0; ; {
		out.Reset()
		for range helperBatchSize {
			c := spool.ClassRaw
			if seq%7 == 0 {
				c = spool.ClassEvent
			}
			pl := fmt.Sprintf("r%s-s%08d", round, seq)
			id, err := s.Append(c, []byte(pl))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
			fmt.Fprintf(&out, "%d %s\n", id, pl)
			seq++
		}
		if err := s.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		// One write of under PIPE_BUF bytes: the parent sees all lines or none.
		if _, err := os.Stdout.Write(out.Bytes()); err != nil {
			os.Exit(5)
		}
	}
}

// TestCrashDurability SIGKILLs a process appending to the spool at random
// moments and checks, after each kill, that the spool opens and holds every
// record the process reported durable, in order, and none that the parent
// acknowledged.
func TestCrashDurability(t *testing.T) {
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>7))

	durable := make(map[uint64]string) // reported durable, not yet acknowledged
	var acked uint64
	var totalReported int
	const rounds = 24
	for round := range rounds {
		p := spool.SyncBatch
		if round%3 == 2 {
			p = spool.SyncAlways
		}
		wait := time.Duration(100+rng.IntN(200)) * time.Millisecond
		if round%6 == 5 {
			wait = time.Duration(5+rng.IntN(40)) * time.Millisecond // during start-up and recovery
		}
		reported := runAndKill(t, dir, p, round, wait)
		totalReported += len(reported)
		for _, line := range reported {
			idText, pl, ok := strings.Cut(line, " ")
			require.True(t, ok, "line %q", line)
			id, err := strconv.ParseUint(idText, 10, 64)
			require.NoError(t, err)
			require.Greater(t, id, acked, "child used an acknowledged ID")
			durable[id] = pl
		}

		s, err := spool.Open(dir, crashOptions(spool.SyncAlways))
		require.NoError(t, err, "round %d: the spool must always open", round)
		recs := readAll(t, s)
		present := make(map[uint64]string, len(recs))
		for i, r := range recs {
			require.Greater(t, r.ID, acked, "round %d: acknowledged record came back", round)
			if i > 0 {
				require.Greater(t, r.ID, recs[i-1].ID)
			}
			present[r.ID] = string(r.Payload)
		}
		for id, pl := range durable {
			got, ok := present[id]
			require.True(t, ok, "round %d: durable record %d (%s) lost", round, id, pl)
			require.Equal(t, pl, got, "round %d: record %d", round, id)
		}
		// Within a round, payload sequence numbers follow ID order.
		prevSeq := map[string]int{}
		for _, r := range recs {
			roundTag, seqText, _ := strings.Cut(string(r.Payload), "-s")
			seq, err := strconv.Atoi(seqText)
			require.NoError(t, err)
			if last, ok := prevSeq[roundTag]; ok {
				require.Greater(t, seq, last, "round %s out of order", roundTag)
			}
			prevSeq[roundTag] = seq
		}
		require.Zero(t, s.Stats().CorruptSegments)
		if round%2 == 1 && len(recs) > 0 {
			// Acknowledge all but the last few; they must never come back.
			upTo := recs[max(0, len(recs)-10)].ID
			require.NoError(t, s.Ack(upTo))
			for id := range durable {
				if id <= upTo {
					delete(durable, id)
				}
			}
			acked = upTo
		}
		require.NoError(t, s.Close())
	}
	require.Positive(t, totalReported, "the child never reported a durable record")
	t.Logf("%d rounds, %d records reported durable", rounds, totalReported)
}

// runAndKill starts the helper, SIGKILLs it after wait and returns the
// complete lines it printed.
func runAndKill(t *testing.T, dir string, p spool.SyncPolicy, round int, wait time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		helperDirEnv+"="+dir, helperSyncEnv+"="+p.String(), helperRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(stdout)
		done <- b
	}()
	time.Sleep(wait)
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	out := <-done
	err = cmd.Wait()
	require.Error(t, err, "the child exited by itself: %s", stderr.String())
	require.Contains(t, err.Error(), "killed", "child failed: %s", stderr.String())
	lines := strings.Split(string(out), "\n")
	return lines[:len(lines)-1] // drop the text after the last newline
}
