package firmware

import (
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// DefaultMaxDownloads bounds the artifact downloads served to devices at once: at 256, a
// 100 Mbit/s uplink still gives each about 50 kB/s.
const DefaultMaxDownloads = 256

// DownloadRetryAfter is the Retry-After of a download refused over the bound; devices add
// jitter of their own.
const DownloadRetryAfter = 30 * time.Second

// Downloads bounds the artifact downloads in progress at once, so that the start of a
// rollout phase is not a download storm: a GET over the bound is answered 503 with
// Retry-After, before any byte of the artifact, and the device resumes later with Range
// where it stopped. HEAD and conditional requests answered 304 pass like any other GET, but
// end at once.
type Downloads struct {
	slots   chan struct{}
	refused atomic.Uint64
	served  atomic.Uint64
}

// NewDownloads bounds downloads to max at once (0 or less: DefaultMaxDownloads).
func NewDownloads(max int) *Downloads {
	if max <= 0 {
		max = DefaultMaxDownloads
	}
	return &Downloads{slots: make(chan struct{}, max)}
}

// Max is the bound.
func (d *Downloads) Max() int { return cap(d.slots) }

// InProgress is the number of downloads being served.
func (d *Downloads) InProgress() int { return len(d.slots) }

// Refused counts the downloads refused over the bound.
func (d *Downloads) Refused() uint64 { return d.refused.Load() }

// Served counts the downloads admitted.
func (d *Downloads) Served() uint64 { return d.served.Load() }

// Serve returns serve bounded: a request over the bound gets 503 and Retry-After.
func (d *Downloads) Serve(serve func(w http.ResponseWriter, r *http.Request, sum string)) func(w http.ResponseWriter, r *http.Request, sum string) {
	return func(w http.ResponseWriter, r *http.Request, sum string) {
		if r.Method == http.MethodHead {
			serve(w, r, sum)
			return
		}
		select {
		case d.slots <- struct{}{}:
		default:
			d.refused.Add(1)
			w.Header().Set("Retry-After", strconv.Itoa(int(DownloadRetryAfter/time.Second)))
			http.Error(w, fmt.Sprintf("busy: %d firmware downloads in progress, the most this server serves at once; resume after the Retry-After", cap(d.slots)),
				http.StatusServiceUnavailable)
			return
		}
		defer func() { <-d.slots }()
		d.served.Add(1)
		serve(w, r, sum)
	}
}
