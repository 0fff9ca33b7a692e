package ingest

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// TestRateLimitedLog: a burst of failures gives one ERROR line per interval, and the next line
// says how many were held back.
func TestRateLimitedLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	r := rateLimited{every: 10 * time.Second}
	for range 200 { // 200 failed commits in one second
		r.log(log, clk, "group commit failed")
		clk.Advance(5 * time.Millisecond)
	}
	require.Equal(t, 1, strings.Count(buf.String(), "group commit failed"))
	clk.Advance(10 * time.Second)
	r.log(log, clk, "group commit failed")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[1], "suppressed=199")
	require.Contains(t, lines[1], "level=ERROR")
}
