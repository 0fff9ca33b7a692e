//go:build unix

package sim

import (
	"math"
	"syscall"
)

// openFileLimit is how many files this process may open (Go raises the soft limit to the
// hard one at start).
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return math.MaxUint64
	}
	return l.Cur
}
