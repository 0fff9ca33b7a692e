package aggregate_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// An Aggregator between the sources and the spool turns a vibration sensor
// sampled every second into one-minute min, max and mean; other metrics
// pass through.
func ExampleWrap() {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	spoolSink := source.SinkFunc(func(_ context.Context, recs []protocol.Record, class source.Class) error {
		for _, r := range recs {
			t := time.UnixMilli(int64(r.Time * 1000)).UTC().Format("15:04:05")
			fmt.Printf("%s %s %v %s\n", class, r.Name, *r.Value, t)
		}
		return nil
	})
	agg := aggregate.Wrap(spoolSink, []aggregate.Rule{
		{Metric: "*_vibration", Window: time.Minute, Functions: []aggregate.Func{aggregate.Min, aggregate.Max, aggregate.Mean}},
	}, clk)

	ctx := context.Background()
	for i := range 60 {
		v := 2 + float64(i%3) // 2, 3, 4, 2, 3, 4, …
		t := float64(clk.Now().UnixMilli()) / 1000
		err := agg.Write(ctx, []protocol.Record{{Name: "spindle_vibration", Unit: "m/s2", Time: t, Value: &v}}, source.ClassRaw)
		if err != nil {
			log.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	temp := 41.5
	t := float64(clk.Now().UnixMilli()) / 1000
	if err := agg.Write(ctx, []protocol.Record{{Name: "spindle_temp", Unit: "Cel", Time: t, Value: &temp}}, source.ClassRaw); err != nil {
		log.Fatal(err)
	}
	// The vibration sensor fell silent: the flush timer closes its window
	// a grace period (5 s) after the window's end.
	clk.Advance(5 * time.Second)
	// Output:
	// raw spindle_temp 41.5 12:01:00
	// raw spindle_vibration_min 2 12:01:00
	// raw spindle_vibration_max 4 12:01:00
	// raw spindle_vibration_mean 3 12:01:00
}
