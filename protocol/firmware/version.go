package firmware

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// version is a parsed semantic version (semver 2.0.0); build metadata is dropped.
type version struct {
	major, minor, patch uint64
	pre                 []string // dot-separated prerelease identifiers; nil for a release
}

// maxVersionLen bounds a version string.
const maxVersionLen = 128

// parseVersion parses major.minor.patch[-prerelease][+build]. A leading "v" is
// not accepted: versions are compared as written in manifests.
func parseVersion(s string) (version, error) {
	var v version
	if s == "" || len(s) > maxVersionLen {
		return v, fmt.Errorf("%w: version %q: empty or longer than %d bytes", ErrMalformed, s, maxVersionLen)
	}
	rest := s
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		if err := checkIdents(rest[i+1:], false); err != nil {
			return v, fmt.Errorf("%w: version %q: build metadata: %v", ErrMalformed, s, err)
		}
		rest = rest[:i]
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		pre := rest[i+1:]
		if err := checkIdents(pre, true); err != nil {
			return v, fmt.Errorf("%w: version %q: prerelease: %v", ErrMalformed, s, err)
		}
		v.pre = strings.Split(pre, ".")
		rest = rest[:i]
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%w: version %q: want major.minor.patch", ErrMalformed, s)
	}
	nums := [3]*uint64{&v.major, &v.minor, &v.patch}
	for i, p := range parts {
		if !isNumeric(p) || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("%w: version %q: %q is not a number without leading zeros", ErrMalformed, s, p)
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return v, fmt.Errorf("%w: version %q: %v", ErrMalformed, s, err)
		}
		*nums[i] = n
	}
	return v, nil
}

// checkIdents checks dot-separated identifiers of [0-9A-Za-z-]; numeric
// prerelease identifiers may not have leading zeros.
func checkIdents(s string, pre bool) error {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return fmt.Errorf("empty identifier")
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return fmt.Errorf("identifier %q: invalid character %q", id, c)
			}
		}
		if pre && isNumeric(id) && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("identifier %q: leading zero", id)
		}
	}
	return nil
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (a version) compare(b version) int {
	if c := cmp.Compare(a.major, b.major); c != 0 {
		return c
	}
	if c := cmp.Compare(a.minor, b.minor); c != 0 {
		return c
	}
	if c := cmp.Compare(a.patch, b.patch); c != 0 {
		return c
	}
	// A release ranks above any of its prereleases.
	switch {
	case a.pre == nil && b.pre == nil:
		return 0
	case a.pre == nil:
		return 1
	case b.pre == nil:
		return -1
	}
	for i := 0; i < len(a.pre) && i < len(b.pre); i++ {
		x, y := a.pre[i], b.pre[i]
		xn, yn := isNumeric(x), isNumeric(y)
		switch {
		case xn && yn:
			// Equal-length digit strings without leading zeros compare as text;
			// a longer one is larger. This also covers values beyond uint64.
			if c := cmp.Compare(uint64(len(x)), uint64(len(y))); c != 0 {
				return c
			}
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		case xn:
			return -1 // numeric identifiers rank below alphanumeric ones
		case yn:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return cmp.Compare(uint64(len(a.pre)), uint64(len(b.pre)))
}

// ValidVersion reports whether s is a semantic version this package accepts,
// with an error (wrapping ErrMalformed) naming what is wrong.
func ValidVersion(s string) error {
	_, err := parseVersion(s)
	return err
}

// CompareVersions compares two semantic versions (semver 2.0.0:
// major.minor.patch, optional -prerelease, +build ignored) and returns -1, 0
// or +1. An invalid version is an error wrapping ErrMalformed.
func CompareVersions(a, b string) (int, error) {
	va, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	return va.compare(vb), nil
}
