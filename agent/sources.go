package agent

import (
	"fmt"
	"log/slog"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
)

// buildSources constructs the configured sources.
func buildSources(cfg SourcesConfig, clk clock.Clock, log *slog.Logger) ([]source.Source, error) {
	var out []source.Source
	if cfg.System != nil {
		o := *cfg.System
		o.Clock, o.Logger = clk, log.With("source", "system")
		s, err := source.NewSystem(o)
		if err != nil {
			return nil, fmt.Errorf("%w: sources.system: %w", ErrConfig, err)
		}
		out = append(out, s)
	}
	for i, e := range cfg.Exec {
		e.Clock, e.Logger = clk, log.With("source", e.Name)
		s, err := source.NewExec(e)
		if err != nil {
			return nil, fmt.Errorf("%w: sources.exec[%d]: %w", ErrConfig, i, err)
		}
		out = append(out, s)
	}
	if cfg.LocalAPI != nil {
		o := *cfg.LocalAPI
		o.Clock, o.Logger = clk, log.With("source", "local_api")
		s, err := source.NewLocalAPI(o)
		if err != nil {
			return nil, fmt.Errorf("%w: sources.local_api: %w", ErrConfig, err)
		}
		out = append(out, s)
	}
	return out, nil
}
