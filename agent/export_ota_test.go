package agent

import "github.com/millwright/millwright/protocol"

// SetUpdateHook makes a see every update report the server took (the server does not keep
// them yet where a test could read them).
func SetUpdateHook(a *Agent, f func(protocol.UpdateReport)) { a.updateHook = f }
