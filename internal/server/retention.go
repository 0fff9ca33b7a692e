package server

import (
	"context"
	"time"
)

const (
	// retentionInterval is how often the server applies the event and audit retention.
	retentionInterval = time.Hour
	// auditPruneBatch is how many audit entries one transaction deletes.
	auditPruneBatch = 1000
)

// eventRetention is Options.EventRetention with its default, the TSDB's retention.
func (o Options) eventRetention() time.Duration {
	if o.EventRetention > 0 {
		return o.EventRetention
	}
	return o.TSDB.Retention
}

// runRetention applies the retention at start and then once every retentionInterval, on
// the server's clock, until ctx ends.
func (s *Server) runRetention(ctx context.Context) error {
	s.applyRetention(ctx)
	t := s.clk.NewTimer(retentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			s.applyRetention(ctx)
			t.Reset(retentionInterval)
		}
	}
}

// applyRetention drops the event log segments older than the event retention and deletes
// the audit entries older than the audit retention; it logs what fails and goes on.
func (s *Server) applyRetention(ctx context.Context) {
	now := s.clk.Now()
	if n, err := s.events.DropBefore(now.Add(-s.opts.eventRetention()).UnixMilli()); err != nil {
		s.log.Warn("drop old event log segments", "error", err)
	} else if n > 0 {
		s.log.Debug("dropped old event log segments", "segments", n)
	}
	if s.opts.AuditRetention <= 0 {
		return
	}
	if n, err := s.registry.PruneAudit(ctx, now.Add(-s.opts.AuditRetention), auditPruneBatch); err != nil && ctx.Err() == nil {
		s.log.Warn("prune audit log", "error", err)
	} else if n > 0 {
		s.log.Debug("pruned audit log", "entries", n)
	}
}
