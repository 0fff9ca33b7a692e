package source_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// printRecord prints a record as name, value, unit and time.
func printRecord(r protocol.Record) {
	t := time.UnixMilli(int64(r.Time * 1000)).UTC().Format(time.RFC3339)
	switch {
	case r.Value != nil:
		fmt.Printf("%s = %v %s at %s\n", r.Name, *r.Value, r.Unit, t)
	case r.BoolValue != nil:
		fmt.Printf("%s = %v at %s\n", r.Name, *r.BoolValue, t)
	case r.StringValue != nil:
		fmt.Printf("%s = %q at %s\n", r.Name, *r.StringValue, t)
	}
}

// An Exec source runs a command and reads "name value [unit]" lines (or
// SenML JSON) from its output. Here the sink prints the records and stops
// the source after the first run.
func ExampleExec() {
	clk := clock.NewFake(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	src, err := source.NewExec(source.ExecOptions{
		Name:     "boiler",
		Command:  "sh",
		Args:     []string{"-c", `echo "temperature 71.5 Cel"; echo "burner_on true"; echo 'mode "eco"'`},
		Interval: time.Minute,
		Timeout:  5 * time.Second,
		Clock:    clk,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := source.SinkFunc(func(_ context.Context, recs []protocol.Record, class source.Class) error {
		for _, r := range recs {
			printRecord(r)
		}
		fmt.Println("class:", class)
		cancel()
		return nil
	})
	if err := src.Run(ctx, sink); err != nil {
		log.Fatal(err)
	}
	fmt.Println("runs:", src.Stats().Runs)
	// Output:
	// temperature = 71.5 Cel at 2025-03-01T12:00:00Z
	// burner_on = true at 2025-03-01T12:00:00Z
	// mode = "eco" at 2025-03-01T12:00:00Z
	// class: raw
	// runs: 1
}

// A System source samples procfs and sysfs; here fixture trees stand in for
// /proc and /sys.
func ExampleSystem() {
	clk := clock.NewFake(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	src, err := source.NewSystem(source.SystemOptions{
		Collectors: []string{source.CollectMemory, source.CollectUptime, source.CollectThermal},
		ProcRoot:   "testdata/proc",
		SysRoot:    "testdata/sys",
		Clock:      clk,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := source.SinkFunc(func(_ context.Context, recs []protocol.Record, _ source.Class) error {
		for _, r := range recs {
			printRecord(r)
		}
		cancel()
		return nil
	})
	if err := src.Run(ctx, sink); err != nil {
		log.Fatal(err)
	}
	// Output:
	// system_memory_total = 4.096e+09 B at 2025-03-01T12:00:00Z
	// system_memory_available = 3.072e+09 B at 2025-03-01T12:00:00Z
	// system_memory_used = 1.024e+09 B at 2025-03-01T12:00:00Z
	// system_uptime = 12345.67 s at 2025-03-01T12:00:00Z
	// system_temp_x86_pkg_temp = 45 Cel at 2025-03-01T12:00:00Z
	// system_temp_acpitz_1 = 27.8 Cel at 2025-03-01T12:00:00Z
	// system_temp_acpitz_2 = -1.5 Cel at 2025-03-01T12:00:00Z
}

// A LocalAPI accepts SenML JSON from other programs on the device.
func ExampleLocalAPI() {
	clk := clock.NewFake(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	api, err := source.NewLocalAPI(source.LocalAPIOptions{Listen: "127.0.0.1:0", Clock: clk})
	if err != nil {
		log.Fatal(err)
	}
	if err := api.Listen(); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- api.Run(ctx, source.SinkFunc(func(_ context.Context, recs []protocol.Record, class source.Class) error {
			for _, r := range recs {
				printRecord(r)
			}
			fmt.Println("class:", class)
			return nil
		}))
	}()

	resp, err := http.Post("http://"+api.Addr().String()+"/v1/measurements?class=event", "application/senml+json",
		strings.NewReader(`[{"bn":"press4_","n":"door_open","vb":true,"t":-2},{"n":"operator","vs":"K. Meyer"}]`))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status)

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// press4_door_open = true at 2025-03-01T11:59:58Z
	// press4_operator = "K. Meyer" at 2025-03-01T12:00:00Z
	// class: event
	// 202 Accepted
}

// Any function can be a Sink.
func ExampleSinkFunc() {
	var sink source.Sink = source.SinkFunc(func(_ context.Context, recs []protocol.Record, class source.Class) error {
		fmt.Println(len(recs), "records of class", class)
		return nil
	})
	v := 1.0
	_ = sink.Write(context.Background(), []protocol.Record{{Name: "x", Value: &v, Time: 1.75e9}}, source.ClassEvent)
	// Output: 1 records of class event
}
