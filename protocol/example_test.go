package protocol_test

import (
	"fmt"
	"time"

	"github.com/millwright/millwright/protocol"
)

// A device encodes a batch of two temperature readings, ten seconds apart,
// as zstd-compressed CBOR and publishes it to its batch topic; the server
// decodes it into absolute, resolved measurements.
func Example() {
	seq := uint64(42)
	temp := func(v float64) *float64 { return &v }
	pack := protocol.Pack{
		{Seq: &seq, BaseName: "press-7:", BaseTime: 1735689600, BaseUnit: "Cel", Name: "temp", Value: temp(21.5)},
		{Name: "temp", Time: 10, Value: temp(21.5625)},
	}
	payload, err := protocol.Encode(pack, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
	if err != nil {
		panic(err)
	}
	fmt.Println("publish to", protocol.BatchTopic("press-7"))

	// On the server.
	now := time.Date(2025, 1, 1, 0, 1, 0, 0, time.UTC)
	batch, enc, err := protocol.Decode(payload, now, protocol.DefaultLimits())
	if err != nil {
		reason := protocol.ReasonOf(err)
		fmt.Println("refused:", reason, "PUBACK", reason.MQTTCode(), "retry:", reason.Retry())
		return
	}
	fmt.Println("encoding", enc, "seq", batch.Seq)
	for _, m := range batch.Measurements {
		fmt.Println(m.Name, time.UnixMilli(m.Time).UTC().Format(time.RFC3339), m.Value, m.Unit)
	}

	// A refused batch tells the device what to do with it.
	_, _, err = protocol.Decode([]byte(`[{"n":"bad name","v":1}]`), now, protocol.DefaultLimits())
	reason := protocol.ReasonOf(err)
	fmt.Printf("%v\nPUBACK 0x%02x, HTTP %d, retry: %v\n", err, reason.MQTTCode(), reason.HTTPStatus(), reason.Retry())
	// Output:
	// publish to mw/v1/press-7/batch
	// encoding cbor+zstd seq 42
	// press-7:temp 2025-01-01T00:00:00Z 21.5 Cel
	// press-7:temp 2025-01-01T00:00:10Z 21.5625 Cel
	// invalid: record 0: name "bad name": byte 3 is ' ', allowed there: A-Z a-z 0-9 - : . / _
	// PUBACK 0x99, HTTP 400, retry: false
}

func ExampleParseTopic() {
	device, rest, ok := protocol.ParseTopic("mw/v1/press-7/batch")
	fmt.Println(device, rest, ok)
	_, _, ok = protocol.ParseTopic("mw/v1/Press_7/batch")
	fmt.Println(ok)
	// Output:
	// press-7 batch true
	// false
}
