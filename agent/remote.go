package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/yamlconf"
)

// Remote configuration: the server's desired configuration (protocol.DesiredConfig) laid
// over the configuration of the device's own file. docs/agent.md, "Remote configuration".

// RemoteConfigFile is the file in the spool directory that keeps the last desired
// configuration the agent received, so that it is applied again after a restart.
const RemoteConfigFile = "mw_remote_config.json"

// remoteLeaves are the keys the server may set, as dotted paths: the leaves of
// agent/remoteconfig.schema.json. A value is taken whole (sources.aggregate is one list).
var remoteLeaves = []string{
	"batch.max_bytes",
	"batch.max_records",
	"batch.max_window",
	"batch.min_window",
	"batch.slow_link",
	"health.interval",
	"log.level",
	"schedule.interval",
	"schedule.jitter",
	"schedule.max_batches_per_cycle",
	"sources.aggregate",
	"sources.system.collectors",
	"sources.system.interfaces",
	"sources.system.interval",
	"sources.system.mount_points",
	"uplink.keepalive",
}

// remoteSystem is the one section the server may turn on (an object, even {}) or off (null)
// as a whole: the system source.
const remoteSystem = "sources.system"

// Reasons for refusing a key of a desired configuration, as reported in
// protocol.ReportedConfig.Refused. A key whose value the agent cannot use is refused with
// the value's error instead ("10ms is below the minimum of 1s").
const (
	// RefuseLocalOnly: the key exists but only the device's own file may set it.
	RefuseLocalOnly = "local-only key"
	// RefuseUnknown: the agent has no such key.
	RefuseUnknown = "unknown key"
)

var allConfigKeys = yamlconf.Keys(reflect.TypeFor[Config]())

// knownKey reports whether path names a key of Config, a section of them, or a part of
// one that holds a list or map.
func knownKey(path string) bool {
	for _, k := range allConfigKeys {
		if k == path || strings.HasPrefix(k, path+".") || strings.HasPrefix(path, k+".") || strings.HasPrefix(path, k+"[") {
			return true
		}
	}
	return false
}

func isRemoteLeaf(path string) bool { return slices.Contains(remoteLeaves, path) }

// isRemoteSection reports whether path is a section above a remote leaf.
func isRemoteSection(path string) bool {
	for _, l := range remoteLeaves {
		if strings.HasPrefix(l, path+".") {
			return true
		}
	}
	return false
}

// remoteOverlay is the outcome of laying a desired configuration over the local one.
type remoteOverlay struct {
	// cfg is the configuration to run: the local one with the applied keys set.
	cfg Config
	// applied maps each applied key to its value as the server sent it; remoteSystem maps
	// to null when the server turned the system source off, or to {} when it turned it on
	// without setting any of its keys.
	applied map[string]json.RawMessage
	// refused maps each refused key to the reason.
	refused map[string]string
}

// overlayRemote lays the desired configuration doc (a JSON object; null or empty means no
// key is set remotely) over local, a valid configuration. Keys the server may not set are
// refused with RefuseLocalOnly or RefuseUnknown, values the agent cannot use with their
// error, and every other key is applied; the result is always valid. levelSettable is false
// when the program running the agent did not pass Options.LogLevel: log.level is refused
// then.
func overlayRemote(local Config, doc json.RawMessage, levelSettable bool) remoteOverlay {
	o := &overlayWalk{leaves: map[string]json.RawMessage{}, refused: map[string]string{}}
	if len(bytes.TrimSpace(doc)) > 0 && string(bytes.TrimSpace(doc)) != "null" {
		o.walk("", doc)
	}
	if !levelSettable {
		if _, ok := o.leaves["log.level"]; ok {
			delete(o.leaves, "log.level")
			o.refused["log.level"] = "the program running the agent sets its own log level"
		}
	}
	// Decode each value on its own into a copy of the local configuration, so that a value
	// of the wrong form is refused alone.
	for _, k := range slices.Sorted(maps.Keys(o.leaves)) {
		cand := local
		if err := o.set(&cand, k); err != nil {
			delete(o.leaves, k)
			o.refused[k] = err.Error()
		}
	}
	// Check the whole; refuse the keys a failure is due to until it passes. Each round
	// refuses at least one key, and the local configuration alone is valid.
	for {
		cand := o.build(local)
		err := cand.Validate()
		if err == nil {
			return remoteOverlay{cfg: cand, applied: o.applied(), refused: o.refused}
		}
		culprits, reason := o.attribute(err)
		for _, k := range culprits {
			o.refused[k] = reason
			delete(o.leaves, k)
			if k == remoteSystem {
				// Refused as a whole: its keys go with it.
				o.system = systemUnset
				for l := range o.leaves {
					if strings.HasPrefix(l, remoteSystem+".") {
						delete(o.leaves, l)
					}
				}
			}
		}
	}
}

// How a desired configuration treats the system source as a whole.
const (
	systemUnset = iota // as the local file says
	systemOn           // on, with the local file's settings (or the defaults) under the remote keys
	systemOff          // off
)

type overlayWalk struct {
	leaves  map[string]json.RawMessage // remote leaf → value
	system  int
	refused map[string]string
}

func (o *overlayWalk) walk(prefix string, raw json.RawMessage) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		o.refused[orRoot(prefix)] = "expected an object of keys"
		return
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		p := yamlconf.Path(prefix, k)
		v := obj[k]
		switch {
		case isRemoteLeaf(p):
			if string(bytes.TrimSpace(v)) == "null" {
				o.refused[p] = "null is not a value; leave the key out to keep the device's own value"
				continue
			}
			o.leaves[p] = v
		case p == remoteSystem && string(bytes.TrimSpace(v)) == "null":
			o.system = systemOff
		case p == remoteSystem:
			var sub map[string]json.RawMessage
			if json.Unmarshal(v, &sub) != nil || sub == nil {
				o.refused[p] = "expected an object of keys, or null to turn the source off"
				continue
			}
			o.system = systemOn
			o.walk(p, v)
		case isRemoteSection(p):
			o.walk(p, v)
		case knownKey(p):
			o.refused[p] = RefuseLocalOnly
		default:
			o.refused[p] = RefuseUnknown
		}
	}
}

func orRoot(p string) string {
	if p == "" {
		return "config"
	}
	return p
}

// set decodes the value of leaf k into cfg.
func (o *overlayWalk) set(cfg *Config, k string) error {
	// {"a":{"b":value}} for "a.b": JSON is YAML, and the agent's own decoder reads it by
	// the rules of its configuration file (durations as "30s", strict keys).
	doc := []byte(o.leaves[k])
	parts := strings.Split(k, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		name, _ := json.Marshal(parts[i])
		doc = append(append(append([]byte("{"), name...), ':'), append(doc, '}')...)
	}
	if err := yamlconf.Decode(doc, cfg); err != nil {
		msg := err.Error()
		msg = strings.TrimPrefix(msg, k+": ")
		if i := strings.LastIndex(msg, " (line "); i >= 0 {
			msg = msg[:i] + msg[strings.Index(msg[i:], ")")+i+1:]
		}
		return errors.New(msg)
	}
	return nil
}

// build returns local with the remote keys still standing.
func (o *overlayWalk) build(local Config) Config {
	cfg := local
	switch o.system {
	case systemOff:
		cfg.Sources.System = nil
	case systemOn:
		s := source.SystemOptions{}
		if local.Sources.System != nil {
			s = *local.Sources.System
		}
		cfg.Sources.System = &s
	}
	for _, k := range slices.Sorted(maps.Keys(o.leaves)) {
		_ = o.set(&cfg, k) // decoded once already
	}
	return cfg
}

// attribute names the remote keys a validation error is due to, and the reason to give.
func (o *overlayWalk) attribute(err error) ([]string, string) {
	var ke *KeyError
	key, reason := "", err.Error()
	if errors.As(err, &ke) {
		key, reason = ke.Key, ke.Err.Error()
	}
	active := slices.Sorted(maps.Keys(o.leaves))
	if o.system != systemUnset {
		active = append(active, remoteSystem)
	}
	var out []string
	// The key itself, or the list it is part of.
	for _, k := range active {
		if k == key || strings.HasPrefix(key, k+"[") || strings.HasPrefix(key, k+".") {
			out = append(out, k)
		}
	}
	if len(out) > 0 && !(len(out) == 1 && out[0] == remoteSystem) {
		out = without(out, remoteSystem)
		if len(out) > 1 || out[0] != key {
			reason = key + ": " + reason // the element of a list
		}
		return out, reason
	}
	if key == remoteSystem {
		// The source's own error names its field: "system: interval 10ms is below …".
		out = nil
		for _, k := range active {
			if f, ok := strings.CutPrefix(k, remoteSystem+"."); ok && strings.Contains(reason, f) {
				out = append(out, k)
			}
		}
		if len(out) > 0 {
			return out, reason
		}
		return []string{remoteSystem}, reason
	}
	// Another key's error that names a remote key ("batch.max_window: 5m is below
	// batch.min_window 10m", with min_window set remotely).
	for _, k := range active {
		if strings.Contains(reason, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		// The rest of its section, then all of them: the local file alone is valid.
		section, _, _ := strings.Cut(key, ".")
		for _, k := range active {
			if strings.HasPrefix(k, section+".") {
				out = append(out, k)
			}
		}
	}
	if len(out) == 0 {
		out = active
	}
	return out, key + ": " + reason
}

func without(s []string, v string) []string {
	return slices.DeleteFunc(s, func(x string) bool { return x == v })
}

// applied returns the applied keys.
func (o *overlayWalk) applied() map[string]json.RawMessage {
	out := maps.Clone(o.leaves)
	switch o.system {
	case systemOff:
		out[remoteSystem] = json.RawMessage("null")
	case systemOn:
		out[remoteSystem] = json.RawMessage("{}")
	}
	return out
}

// nestKeys turns dotted keys into nested JSON objects: {"schedule.interval": "30s"} →
// {"schedule": {"interval": "30s"}}. An object value (sources.system's {}) takes the keys
// under it.
func nestKeys(flat map[string]json.RawMessage) json.RawMessage {
	root := map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(flat)) {
		parts := strings.Split(k, ".")
		m := root
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		last := parts[len(parts)-1]
		if string(flat[k]) == "{}" {
			if _, ok := m[last].(map[string]any); !ok {
				m[last] = map[string]any{}
			}
			continue
		}
		m[last] = flat[k]
	}
	b, _ := json.Marshal(root)
	return b
}

// persistedConfig is the content of RemoteConfigFile.
type persistedConfig struct {
	Version int64           `json:"version"`
	Config  json.RawMessage `json:"config"`
}

// loadRemoteConfig reads the desired configuration kept in dir; none gives version 0.
func loadRemoteConfig(dir string) (protocol.DesiredConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, RemoteConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return protocol.DesiredConfig{}, nil
	}
	if err != nil {
		return protocol.DesiredConfig{}, fmt.Errorf("read remote configuration: %w", err)
	}
	dc, err := protocol.DecodeDesiredConfig(b)
	if err != nil {
		return protocol.DesiredConfig{}, fmt.Errorf("read remote configuration %s: %w", filepath.Join(dir, RemoteConfigFile), err)
	}
	return dc, nil
}

// saveRemoteConfig keeps dc in dir, atomically.
func saveRemoteConfig(dir string, dc protocol.DesiredConfig) error {
	b, err := json.Marshal(persistedConfig{Version: dc.Version, Config: dc.Config})
	if err != nil {
		return fmt.Errorf("encode remote configuration: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, RemoteConfigFile), b, 0o600)
}
