//go:build linux

package source

import "syscall"

// statfs returns the space of the file system mounted at path. Free space
// is what unprivileged users may use (f_bavail), as df(1) shows it; used
// space is total minus all free blocks (f_bfree), also as df shows it.
func statfs(path string) (diskUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return diskUsage{}, err
	}
	bs := uint64(st.Bsize)
	return diskUsage{total: st.Blocks * bs, free: st.Bfree * bs, avail: st.Bavail * bs}, nil
}
