package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/protocol"
)

func ExampleParseConfig() {
	cfg, err := agent.ParseConfig([]byte(`
uplink:
  zone: gw.example.com
  keepalive: 45s
schedule:
  jitter: 0s
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Uplink.Zone, cfg.Uplink.Keepalive, cfg.Schedule.Interval, cfg.Schedule.Jitter)

	_, err = agent.ParseConfig([]byte("schedule:\n  intervall: 10s\n"))
	fmt.Println(err)
	// Output:
	// gw.example.com 45s 45s 0s
	// invalid agent configuration: schedule.intervall: unknown key (line 2); did you mean "interval"?
}

// An embedding program writes its own measurements through the agent's
// sink; they are in the spool, durable, before Write returns. Run (not
// called here) would send them.
func ExampleAgent_Sink() {
	dir, err := os.MkdirTemp("", "agent-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cfg := agent.DefaultConfig()
	cfg.TLS.CertFile = "testdata/certs/pump-7.crt"
	cfg.TLS.KeyFile = "testdata/certs/pump-7.key"
	cfg.Spool.Dir = filepath.Join(dir, "spool")
	a, err := agent.New(cfg, agent.Options{})
	if err != nil {
		panic(err)
	}
	defer a.Close()

	now := float64(time.Now().UnixMilli()) / 1000
	temp, open := 21.5, "door open"
	err = a.Sink().Write(context.Background(), []protocol.Record{
		{Name: "boiler_temp", Unit: "Cel", Time: now, Value: &temp},
	}, source.ClassRaw)
	if err != nil {
		panic(err)
	}
	err = a.Sink().Write(context.Background(), []protocol.Record{
		{Name: "alarm", Time: now, StringValue: &open},
	}, source.ClassEvent)
	if err != nil {
		panic(err)
	}
	bad := 1.0
	err = a.Sink().Write(context.Background(), []protocol.Record{{Name: "bad name", Value: &bad}}, source.ClassRaw)
	fmt.Println(a.DeviceID(), a.Stats().Spool.Records, err != nil)
	// Output: pump-7 2 true
}
