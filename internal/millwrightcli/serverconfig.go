package millwrightcli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/millwright/millwright/internal/optcheck"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/yamlconf"
)

// serverConfig is what millwright server runs with: the server's options and the command's
// own. Its YAML form is the configuration file of --config, with a key for every flag
// (serverFlagKeys); docs/operations.md shows it whole, with every default.
type serverConfig struct {
	server.Options `yaml:",inline"`
	// LogLevel is the level of the log written to standard error: debug, info, warn or error.
	// Default info.
	LogLevel string `yaml:"log_level"`
}

func defaultServerConfig() serverConfig {
	return serverConfig{Options: server.DefaultOptions(), LogLevel: "info"}
}

// Validate refuses what the server's options refuse, and an unknown log level. The error is
// an *optcheck.Error keyed by the option's YAML key.
func (c serverConfig) Validate() error {
	if err := c.Options.Validate(); err != nil {
		return err
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(c.LogLevel))); err != nil {
		return optcheck.Invalid("log_level", c.LogLevel, "want debug, info, warn or error")
	}
	return nil
}

// serverConfigDecoder reads durations as the flags do: "90s", "36h", "90d", "2w".
var serverConfigDecoder = yamlconf.Decoder{
	ParseDuration: parseDuration,
	DurationHint:  "write a number with a unit, such as 90s, 15m, 36h, 90d or 2w",
}

// loadServerConfig reads the configuration file at path over the defaults. Relative paths in
// it (data, ca_cert, ca_key, alerting.rule_files) are relative to the file's directory. It returns the line of
// every key the file gave.
func loadServerConfig(path string) (serverConfig, yamlconf.Lines, error) {
	cfg := defaultServerConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, nil, fmt.Errorf("read config: %w", err)
	}
	lines, err := serverConfigDecoder.Decode(data, &cfg)
	if err != nil {
		return cfg, nil, fmt.Errorf("config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for key, p := range map[string]*string{"data": &cfg.DataDir, "ca_cert": &cfg.CACert, "ca_key": &cfg.CAKey} {
		if _, given := lines[key]; given && *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if _, given := lines["alerting.rule_files"]; given {
		for i, f := range cfg.Alerting.RuleFiles {
			if f != "" && !filepath.IsAbs(f) {
				cfg.Alerting.RuleFiles[i] = filepath.Join(dir, f)
			}
		}
	}
	return cfg, lines, nil
}

// resolve lays the flags given on the command line over the configuration file, if any (the
// file over the defaults), and validates the result. An error names the flag or the key of
// the file, with its line, that set the value at fault.
func (c *serverCommand) resolve() (serverConfig, error) {
	flags := c.cmd.Flags()
	cfg := c.cfg
	var lines yamlconf.Lines
	if c.configFile != "" {
		file, l, err := loadServerConfig(c.configFile)
		if err != nil {
			return cfg, usageError{err}
		}
		var setErr error
		flags.Visit(func(f *pflag.Flag) {
			key, ok := serverFlagKeys[f.Name]
			if !ok {
				return
			}
			dst, ok1 := yamlconf.Lookup(&file, key)
			src, ok2 := yamlconf.Lookup(&cfg, key)
			if !ok1 || !ok2 {
				setErr = errors.Join(setErr, fmt.Errorf("--%s sets %s, which is no configuration key", f.Name, key))
				return
			}
			dst.Set(src)
		})
		if setErr != nil {
			return cfg, setErr
		}
		cfg, lines = file, l
		cfg.ConfigFile = c.configFile // backups include it
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{c.describe(err, lines)}
	}
	return cfg, nil
}

// describe says which flag, or which key of the configuration file, set the value an
// *optcheck.Error refuses.
func (c *serverCommand) describe(err error, lines yamlconf.Lines) error {
	var e *optcheck.Error
	if !errors.As(err, &e) {
		return err
	}
	value := optcheck.FormatValue(e.Value, formatDuration)
	flag := ""
	for f, key := range serverFlagKeys {
		if key == e.Key {
			flag = f
		}
	}
	if flag != "" && (c.configFile == "" || c.cmd.Flags().Changed(flag)) {
		return fmt.Errorf("invalid --%s %s: %s", flag, value, e.Reason)
	}
	if line, ok := lines[e.Key]; ok {
		return fmt.Errorf("invalid %s %s in %s (line %d): %s", e.Key, value, c.configFile, line, e.Reason)
	}
	return fmt.Errorf("invalid %s %s: %s", e.Key, value, e.Reason)
}
