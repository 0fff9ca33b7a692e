package spool

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// ioErr wraps a file-system error as "op path: [kind: ][ErrDiskFull: ]err",
// adding ErrDiskFull when the system reported ENOSPC.
func ioErr(op, path string, err error, kind error) error {
	args := []any{op, path}
	if kind != nil {
		args = append(args, kind)
	}
	if errors.Is(err, syscall.ENOSPC) {
		args = append(args, ErrDiskFull)
	}
	args = append(args, err)
	return fmt.Errorf("%s %s: "+strings.Repeat("%w: ", len(args)-3)+"%w", args...)
}
