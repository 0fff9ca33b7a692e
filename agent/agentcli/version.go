package agentcli

import "runtime/debug"

// version is set at link time: -ldflags "-X github.com/millwright/millwright/agent/agentcli.version=1.2.3".
var version string

// Version returns the agent's version: the link-time version, else the
// module version or VCS revision from the build information.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}
