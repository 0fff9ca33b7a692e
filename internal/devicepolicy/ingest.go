package devicepolicy

import (
	"context"

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
	return gateway.IngestResult{Reason: r.Reason, Detail: r.Detail, Stored: r.Stored, Refused: r.Refused}
}
