// Package buildinfo is what a Millwright binary knows of its own build: the version, the
// source revision, the build date and the Go version. The release build (make release) sets
// the first three with the linker's -X flags; a binary built otherwise (go build, go run,
// go install) takes what Go recorded in it (runtime/debug.ReadBuildInfo): the module version,
// the VCS revision and commit time. The server reports it at /api/v1/status/buildinfo, and
// `millwright version` and `millwright-agent version` print it, so the three always agree.
// The agent imports it, so it imports only the standard library.
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the release build with
// -ldflags "-X github.com/millwright/millwright/buildinfo.version=1.2.3 -X …revision=… -X …buildDate=…".
var (
	version   string
	revision  string
	buildDate string
)

// Unknown stands for a field neither the linker nor Go's build information gave.
const Unknown = "unknown"

// Info is a binary's build information. Its JSON is the data of /api/v1/status/buildinfo,
// with Prometheus's field names, so Grafana reads the version as it does Prometheus's.
type Info struct {
	// Version is the release version ("1.2.3"), the module version of a go install, or
	// "devel" for a build from a work tree.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, "-dirty" appended when the work
	// tree had changes; "unknown" when built outside a repository.
	Revision string `json:"revision"`
	// BuildDate is when the release was built (RFC 3339), or the commit's time for a build
	// from a work tree; "unknown" when neither is known.
	BuildDate string `json:"buildDate"`
	// GoVersion is the Go toolchain that built the binary ("go1.26.8").
	GoVersion string `json:"goVersion"`
}

// Get returns the running binary's build information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return from(bi, version, revision, buildDate)
}

// from builds the Info of build information bi (nil when the binary has none) and the
// link-time values, which take precedence.
func from(bi *debug.BuildInfo, ldVersion, ldRevision, ldDate string) Info {
	info := Info{Version: ldVersion, Revision: ldRevision, BuildDate: ldDate, GoVersion: runtime.Version()}
	var vcsRev, vcsTime string
	var modified bool
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				vcsRev = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if info.Version == "" {
			if v := bi.Main.Version; v != "" && v != "(devel)" {
				info.Version = v
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Revision == "" {
		info.Revision = vcsRev
		if vcsRev != "" && modified {
			info.Revision += "-dirty"
		}
	}
	if info.BuildDate == "" {
		info.BuildDate = vcsTime
	}
	for _, f := range []*string{&info.Revision, &info.BuildDate, &info.GoVersion} {
		if *f == "" {
			*f = Unknown
		}
	}
	return info
}

// Print writes the build information of program as `millwright version` shows it, one field
// a line:
//
//	millwright version 1.2.3
//	  revision:   0123456789ab…
//	  build date: 2026-12-05T07:00:00Z
//	  go version: go1.26.8
func (i Info) Print(w io.Writer, program string) error {
	_, err := fmt.Fprintf(w, "%s version %s\n  revision:   %s\n  build date: %s\n  go version: %s\n",
		program, i.Version, i.Revision, i.BuildDate, i.GoVersion)
	return err
}

// String is Print's text.
func (i Info) String() string {
	var b strings.Builder
	_ = i.Print(&b, "millwright")
	return b.String()
}
