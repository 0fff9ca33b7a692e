package agent

import _ "embed"

// RemoteConfigSchema is the JSON Schema (draft 2020-12) of the configuration keys the server
// may set on the agent (docs/agent.md, "Remote configuration"). The server refuses a desired
// configuration that breaks it; the agent checks each key again against its own rules and
// reports the ones it refuses.
//
//go:embed remoteconfig.schema.json
var RemoteConfigSchema []byte
