//go:build !linux

package source

import "errors"

// statfs is implemented on Linux only; elsewhere the disk collector reports
// this error.
func statfs(string) (diskUsage, error) {
	return diskUsage{}, errors.ErrUnsupported
}
