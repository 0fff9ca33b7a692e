package devicepolicy

import (
	"context"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
)

// Pipeline is what the gateway's Ingester needs of the ingest pipeline.
type Pipeline interface {
	Ingest(ctx context.Context, device string, payload []byte) ingest.Result
}

var _ Pipeline = (*ingest.Pipeline)(nil)

// Ingester is the gateway's Ingester over the ingest pipeline: it passes a batch on and
// answers with the pipeline's result in the gateway's terms.
func Ingester(p Pipeline) gateway.Ingester { return ingester{p} }

type ingester struct{ p Pipeline }

func (i ingester) Ingest(ctx context.Context, device string, payload []byte) gateway.IngestResult {
	return gatewayResult(i.p.Ingest(ctx, device, payload))
}

// gatewayResult is r in the gateway's terms.
func gatewayResult(r ingest.Result) gateway.IngestResult {
	res := gateway.IngestResult{Reason: r.Reason, Detail: r.Detail, Stored: r.Stored, Refused: r.Refused}
	if r.Newest != 0 {
		res.Newest = time.UnixMilli(r.Newest)
	}
	return res
}

// SeenMarker takes the time a device was last heard from.
type SeenMarker interface {
	Seen(device string, t time.Time)
}

// SeenIngester passes batches to ing and marks the device seen, on clk's time, for every batch
// stored in whole or in part; a refused batch does not count.
func SeenIngester(ing gateway.Ingester, seen SeenMarker, clk clock.Clock) gateway.Ingester {
	return seenIngester{ing, seen, clk}
}

type seenIngester struct {
	ing  gateway.Ingester
	seen SeenMarker
	clk  clock.Clock
}

func (s seenIngester) Ingest(ctx context.Context, device string, payload []byte) gateway.IngestResult {
	res := s.ing.Ingest(ctx, device, payload)
	if res.Stored > 0 || res.Reason == protocol.ReasonNone {
		s.seen.Seen(device, s.clk.Now())
	}
	return res
}
