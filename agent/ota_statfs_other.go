//go:build !unix

package agent

// freeBytes cannot tell the free space on this system.
func freeBytes(string) (int64, bool) { return 0, false }
