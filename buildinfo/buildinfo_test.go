package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFrom(t *testing.T) {
	vcs := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef"},
		{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	for _, tc := range []struct {
		name                  string
		bi                    *debug.BuildInfo
		ldVersion, ldRev, ldD string
		want                  Info
	}{
		{name: "release build: the linker's values win", bi: vcs, ldVersion: "1.2.3", ldRev: "fedcba", ldD: "2026-12-05T07:00:00Z",
			want: Info{Version: "1.2.3", Revision: "fedcba", BuildDate: "2026-12-05T07:00:00Z", GoVersion: "go1.26.8"}},
		{name: "work tree build: VCS information", bi: vcs,
			want: Info{Version: "devel", Revision: "0123456789abcdef-dirty", BuildDate: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8"}},
		{name: "go install of a tagged module", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}},
			want: Info{Version: "v1.4.0", Revision: Unknown, BuildDate: Unknown, GoVersion: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, from(tc.bi, tc.ldVersion, tc.ldRev, tc.ldD))
		})
	}
	got := from(nil, "", "", "")
	require.Equal(t, "devel", got.Version)
	require.NotEmpty(t, got.GoVersion)
}

func TestPrint(t *testing.T) {
	i := Info{Version: "1.2.3", Revision: "abc", BuildDate: "2026-12-05T07:00:00Z", GoVersion: "go1.26.8"}
	require.Equal(t, "millwright-agent version 1.2.3\n  revision:   abc\n  build date: 2026-12-05T07:00:00Z\n  go version: go1.26.8\n",
		func() string { var b strings.Builder; _ = i.Print(&b, "millwright-agent"); return b.String() }())
}
