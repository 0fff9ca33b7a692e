package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/backup"
	"github.com/millwright/millwright/internal/datadir"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

// The data directory of format 1, as the server of that format wrote it (through a backup and
// restore, so it holds no write-ahead log in progress), with what it answered: every later
// Millwright must open it and answer the same (TestFixtureDataDir). Never regenerate it for a
// new format: add a directory of the new format beside it, and keep this one.
const (
	fixtureDir       = "testdata/datadir-format1"
	fixtureExpected  = "testdata/datadir-format1.json"
	fixtureDeviceDir = "testdata/datadir-format1-device" // fix-1's certificate and key
)

var writeFixture = flag.Bool("write-fixture", false, "write "+fixtureDir+" anew (only with today's format, for a new format's fixture)")

// fixtureAnswers is what the fixture's server answered when it was written.
type fixtureAnswers struct {
	// At is the query time, Unix seconds.
	At      int64             `json:"at"`
	Queries map[string]string `json:"queries"` // PromQL → the single value answered
	// Devices are the registry's records, each with its certificates' serials.
	Devices map[string]fixtureDevice `json:"devices"`
	Events  int                      `json:"events"`
}

type fixtureDevice struct {
	Status  registry.Status   `json:"status"`
	Tags    map[string]string `json:"tags"`
	Serials []string          `json:"serials"`
}

var fixtureQueries = []string{
	`count_over_time(temp_c{device="fix-1"}[2h])`,
	`sum_over_time(temp_c{device="fix-1"}[2h])`,
	`sum(count_over_time(temp_c[2h]))`,
	`max by (device) (max_over_time(pressure_kpa[2h]))`,
	`count(count by (device) (temp_c))`,
}

// TestFixtureDataDir opens a copy of the committed data directory of format 1 with today's
// code: the PromQL answers, the device records and the events are those of the server that
// wrote it, and its device connects with the certificate it was issued then.
func TestFixtureDataDir(t *testing.T) {
	if *writeFixture {
		writeFixtureDataDir(t)
	}
	b, err := os.ReadFile(fixtureExpected)
	require.NoError(t, err)
	var want fixtureAnswers
	require.NoError(t, json.Unmarshal(b, &want))

	dir := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.CopyFS(dir, os.DirFS(fixtureDir)))
	st, err := datadir.ReadStamp(dir)
	require.NoError(t, err)
	require.Equal(t, 1, st.Format)
	s := startServer(t, func(o *server.Options) { o.DataDir = dir })
	require.Equal(t, want, fixtureState(t, s, time.Unix(want.At, 0), want.Devices))

	pair, err := tls.LoadX509KeyPair(filepath.Join(fixtureDeviceDir, "fix-1.crt"), filepath.Join(fixtureDeviceDir, "fix-1.key"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := mqttConnect(ctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), "fix-1")
	require.NoError(t, err, "fix-1 connects with its certificate of format 1")
	require.NoError(t, c.Disconnect(&paho.Disconnect{}))
}

// fixtureState reads what TestFixtureDataDir compares: the answers to fixtureQueries at at,
// the records of devices, the events of fix-1.
func fixtureState(t *testing.T, s *testServer, at time.Time, devices map[string]fixtureDevice) fixtureAnswers {
	t.Helper()
	got := fixtureAnswers{At: at.Unix(), Queries: map[string]string{}, Devices: map[string]fixtureDevice{}}
	for _, q := range fixtureQueries {
		d := s.query(t, q, at)
		var vals []string
		for _, r := range d.Result {
			vals = append(vals, fmt.Sprintf("%v=%v", r.Metric, r.Value[1]))
		}
		got.Queries[q] = fmt.Sprint(vals)
	}
	for id := range devices {
		dev, err := s.Registry().Device(context.Background(), id)
		require.NoError(t, err)
		certs, err := s.Registry().DeviceCertificates(context.Background(), id)
		require.NoError(t, err)
		fd := fixtureDevice{Status: dev.Status, Tags: dev.Tags}
		for _, c := range certs {
			fd.Serials = append(fd.Serials, c.Serial)
		}
		got.Devices[id] = fd
	}
	code, pr := s.get(t, "/api/v1/events", map[string][]string{"device": {"fix-1"}})
	require.Equal(t, 200, code)
	var events []json.RawMessage
	require.NoError(t, json.Unmarshal(pr.Data, &events))
	got.Events = len(events)
	return got
}

// writeFixtureDataDir runs a server with three devices, an hour of telemetry and some events,
// backs it up, restores the backup into fixtureDir, and records its answers.
func writeFixtureDataDir(t *testing.T) {
	require.Equal(t, 1, datadir.Format, "format 1's fixture is written by a server of format 1 only")
	s := startServer(t, nil)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	devices := map[string]fixtureDevice{}
	require.NoError(t, os.RemoveAll(fixtureDeviceDir))
	require.NoError(t, os.MkdirAll(fixtureDeviceDir, 0o755))
	for d, id := range []string{"fix-1", "fix-2", "fix-3"} {
		now := time.Now()
		// Valid as long as the CA, so that the device still connects years later.
		pair, err := s.CA().DeviceKeyPair(id, now, s.CA().Cert.NotAfter.Sub(now))
		require.NoError(t, err)
		leafDER := pair.Certificate[0]
		leaf, err := x509.ParseCertificate(leafDER)
		require.NoError(t, err)
		require.NoError(t, s.Registry().AddCertificate(ctx, id, leaf, true))
		require.NoError(t, s.Registry().SetTags(ctx, id, map[string]string{"site": "plant-" + strconv.Itoa(d%2)}, nil, "admin", ""))
		if id == "fix-1" {
			key, err := pki.EncodeKey(pair.PrivateKey.(crypto.Signer))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(fixtureDeviceDir, id+".crt"), pki.EncodeCert(leafDER), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(fixtureDeviceDir, id+".key"), key, 0o600))
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, _, err := mqttConnect(cctx, s.MQTTAddr().String(), clientTLS(s.CA().Pool(), pair), id)
		require.NoError(t, err)
		for m := range 60 { // a sample a minute for an hour
			at := float64(base.Add(time.Duration(m)*time.Minute).UnixMilli()) / 1000
			pack := protocol.Pack{
				{Name: "temp_c", Value: ptr(20 + float64(d) + float64(m)/10), Time: at, Unit: "Cel"},
				{Name: "pressure_kpa", Value: ptr(100 + float64(d*m%7)), Time: at},
			}
			if m%10 == 0 {
				pack = append(pack, protocol.Record{Name: "state", StringValue: ptr(fmt.Sprintf("cycle-%d", m/10)), Time: at})
			}
			resp, err := publish(cctx, c, id, encode(t, pack, cborZstd))
			require.NoError(t, err)
			require.Less(t, resp.ReasonCode, byte(0x80))
		}
		require.NoError(t, c.Disconnect(&paho.Disconnect{}))
		cancel()
		devices[id] = fixtureDevice{}
	}
	at := base.Add(time.Hour)
	answers := fixtureState(t, s, at, devices)

	var archive bytes.Buffer
	_, err := s.Backup(ctx, &archive)
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(fixtureDir))
	_, err = backup.Restore(&archive, fixtureDir)
	require.NoError(t, err)
	// Backups carry the admin token; the fixture's is as good as any.
	require.NoError(t, filepath.WalkDir(fixtureDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			err = os.Chmod(p, 0o755)
		}
		return err
	}))
	b, err := json.MarshalIndent(answers, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(fixtureExpected, append(b, '\n'), 0o644))
}
