package agent

import (
	"fmt"
	"log/slog"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
)

// buildSystem constructs the system source.
func buildSystem(opts *source.SystemOptions, clk clock.Clock, log *slog.Logger) (source.Source, error) {
	o := *opts
	o.Clock, o.Logger = clk, log.With("source", "system")
	s, err := source.NewSystem(o)
	if err != nil {
		return nil, keyErr("sources.system", err)
	}
	return s, nil
}

// buildSources constructs the configured sources but the system source (buildSystem), which
// a remote configuration may restart on its own.
func buildSources(cfg SourcesConfig, clk clock.Clock, log *slog.Logger) ([]source.Source, error) {
	var out []source.Source
	for i, e := range cfg.Exec {
		e.Clock, e.Logger = clk, log.With("source", e.Name)
		s, err := source.NewExec(e)
		if err != nil {
			return nil, keyErr(fmt.Sprintf("sources.exec[%d]", i), err)
		}
		out = append(out, s)
	}
	if cfg.LocalAPI != nil {
		o := *cfg.LocalAPI
		o.Clock, o.Logger = clk, log.With("source", "local_api")
		s, err := source.NewLocalAPI(o)
		if err != nil {
			return nil, keyErr("sources.local_api", err)
		}
		out = append(out, s)
	}
	return out, nil
}
