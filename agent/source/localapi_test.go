package source

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

func TestLocalAPIListenMustBeLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen string
		err    string
	}{
		{"", ""}, // the default, 127.0.0.1:8747
		{"127.0.0.1:0", ""},
		{"127.3.2.1:9000", ""},
		{"localhost:0", ""},
		{"[::1]:0", ""},
		{":8747", "is on all interfaces"},
		{"0.0.0.0:8747", "is on a non-loopback address"},
		{"[::]:8747", "is on a non-loopback address"},
		{"192.168.1.20:8747", "is on a non-loopback address"},
		{"gateway.local:8747", "is on a non-loopback address"},
		{"127.0.0.1", "missing port"},
		{"127.0.0.1:http", "is not a number"},
		{"127.0.0.1:70000", "is not a number"},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			_, err := NewLocalAPI(LocalAPIOptions{Listen: tc.listen})
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, tc.err)
			require.ErrorContains(t, err, "local_api: listen")
		})
	}
	a, err := NewLocalAPI(LocalAPIOptions{Listen: "localhost:0"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:0", a.addr, "localhost is pinned to 127.0.0.1")
}

// startLocalAPI runs a LocalAPI on a free loopback port.
func startLocalAPI(t *testing.T, sink Sink, mod func(*LocalAPIOptions)) (*LocalAPI, string, func() error) {
	t.Helper()
	opts := LocalAPIOptions{Listen: "127.0.0.1:0", Clock: clock.NewFake(epoch)}
	if mod != nil {
		mod(&opts)
	}
	a, err := NewLocalAPI(opts)
	require.NoError(t, err)
	require.Nil(t, a.Addr())
	require.NoError(t, a.Listen())
	stop := runSource(t, a, sink)
	return a, "http://" + a.Addr().String() + "/v1/measurements", stop
}

type answer struct {
	status int
	body   map[string]any
	header http.Header
}

func post(t *testing.T, url, contentType, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(b, &a.body), string(b))
	}
	return a
}

func TestLocalAPIAccepts(t *testing.T) {
	sink := newRecordSink()
	a, url, stop := startLocalAPI(t, sink, nil)

	res := post(t, url, "application/senml+json",
		`[{"bn":"line1_","n":"temp","u":"Cel","v":21.5,"t":-5},{"n":"running","vb":true},{"n":"at","v":2,"t":1740000000}]`)
	require.Equal(t, http.StatusAccepted, res.status)
	require.Equal(t, map[string]any{"accepted": 3.0}, res.body)
	w := sink.next(t)
	require.Equal(t, ClassRaw, w.class)
	requireResolved(t, w.recs)
	tm := float64(epoch.Unix())
	require.Equal(t, []protocol.Record{
		{Name: "line1_temp", Unit: "Cel", Time: tm - 5, Value: ptr(21.5)},
		{Name: "line1_running", Time: tm, BoolValue: ptr(true)},
		{Name: "line1_at", Time: 1740000000, Value: ptr(2.0)},
	}, w.recs)

	// Events; no Content-Type at all is accepted too.
	res = post(t, url+"?class=event", "", `[{"n":"door_alarm","vs":"open"}]`)
	require.Equal(t, http.StatusAccepted, res.status)
	w = sink.next(t)
	require.Equal(t, ClassEvent, w.class)
	require.Equal(t, "door_alarm", w.recs[0].Name)

	// A pack of base fields only stores nothing, successfully.
	res = post(t, url+"?class=raw", "application/json; charset=utf-8", `[{"bn":"x_"}]`)
	require.Equal(t, http.StatusAccepted, res.status)
	require.Equal(t, map[string]any{"accepted": 0.0}, res.body)
	sink.none(t)

	// CBOR, as protocol.Encode writes it.
	cbor, err := protocol.Encode(protocol.Pack{{Name: "c", Value: ptr(1.0), Time: 1740000000}}, protocol.Encoding{Format: protocol.FormatCBOR})
	require.NoError(t, err)
	res = post(t, url, "application/senml+cbor", string(cbor))
	require.Equal(t, http.StatusAccepted, res.status)
	require.Equal(t, "c", sink.next(t).recs[0].Name)

	require.NoError(t, stop())
	st := a.Stats()
	require.Equal(t, LocalAPIStats{Requests: 4, Records: 5}, st)
}

func TestLocalAPIRefuses(t *testing.T) {
	sink := newRecordSink()
	a, url, _ := startLocalAPI(t, sink, func(o *LocalAPIOptions) { o.MaxBody = 256 })
	for _, tc := range []struct {
		name        string
		url         string
		contentType string
		body        string
		hdr         []string
		status      int
		err         string
	}{
		{"not JSON", url, "", `{"n":"x"}`, nil, 400, "malformed: "},
		{"broken JSON", url, "", `[{"n":"x","v":1}`, nil, 400, "malformed: "},
		{"bad name", url, "", `[{"n":"bad name","v":1}]`, nil, 400, `invalid: record 0: name "bad name"`},
		{"no value", url, "", `[{"n":"x"}]`, nil, 400, "invalid: record 0 has neither a value"},
		{"empty pack", url, "", `[]`, nil, 400, "invalid: empty pack"},
		{"bad class", url + "?class=alarm", "", `[{"n":"x","v":1}]`, nil, 400, `class "alarm": want raw or event`},
		{"too large", url, "", `[{"n":"x","vs":"` + strings.Repeat("a", 300) + `"}]`, nil, 413, "body exceeds 256 bytes"},
		{"form post", url, "application/x-www-form-urlencoded", `[{"n":"x","v":1}]`, nil, 415, "send application/senml+json"},
		{"text/plain", url, "text/plain", `[{"n":"x","v":1}]`, nil, 415, "Content-Type"},
		{"from a web page", url, "application/json", `[{"n":"x","v":1}]`, []string{"Origin", "http://evil.example"}, 403, "Origin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := post(t, tc.url, tc.contentType, tc.body, tc.hdr...)
			require.Equal(t, tc.status, res.status)
			require.Contains(t, res.body["error"], tc.err)
		})
	}
	sink.none(t)
	require.Equal(t, uint64(10), a.Stats().Rejected)

	// Other methods and paths.
	resp, err := http.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	resp, err = http.Post(strings.TrimSuffix(url, "measurements")+"other", "application/json", strings.NewReader("[]"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestLocalAPISinkFailure(t *testing.T) {
	sink := newRecordSink()
	sink.fail(errSinkDown)
	log, logs := newTestLogger()
	a, url, _ := startLocalAPI(t, sink, func(o *LocalAPIOptions) { o.Logger = log })
	res := post(t, url, "", `[{"n":"x","v":1}]`)
	require.Equal(t, http.StatusServiceUnavailable, res.status)
	require.Equal(t, "store measurements: sink down", res.body["error"])
	require.Equal(t, "1", res.header.Get("Retry-After"))
	require.Equal(t, uint64(1), a.Stats().SinkErrors)
	require.Contains(t, logs.String(), "sink down")

	// A sink that blocks is cut off after SinkTimeout.
	blocking := SinkFunc(func(ctx context.Context, _ []protocol.Record, _ Class) error {
		<-ctx.Done()
		return ctx.Err()
	})
	_, url, _ = startLocalAPI(t, blocking, func(o *LocalAPIOptions) { o.SinkTimeout = 100 * time.Millisecond })
	res = post(t, url, "", `[{"n":"x","v":1}]`)
	require.Equal(t, http.StatusServiceUnavailable, res.status)
	require.Contains(t, res.body["error"], "deadline exceeded")
}

func TestLocalAPIRunErrors(t *testing.T) {
	a, _, stop := startLocalAPI(t, newRecordSink(), nil)
	// The same port again cannot be bound.
	b, err := NewLocalAPI(LocalAPIOptions{Listen: a.Addr().String()})
	require.NoError(t, err)
	err = b.Run(context.Background(), newRecordSink())
	require.ErrorContains(t, err, "listen local api")
	start := time.Now()
	require.NoError(t, stop())
	require.Less(t, time.Since(start), 5*time.Second)
}
