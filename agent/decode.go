package agent

import "github.com/millwright/millwright/yamlconf"

// DecodeYAML decodes a YAML document into v, a pointer to a struct with yaml
// tags, by the rules of the agent's own configuration: keys the document
// leaves out keep what v holds, unknown and repeated keys are errors,
// durations are Go durations ("45s", "5m"), and every error names the key
// with its path and line ("profiles[1].network.latency: invalid duration
// …"). Programs embedding the agent use it for their own configuration
// files, so that all of them fail the same way.
func DecodeYAML(data []byte, v any) error { return yamlconf.Decode(data, v) }
