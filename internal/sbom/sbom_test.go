package sbom

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBOMOfAgent builds millwright-agent as a release does and checks its BOM against what
// `go version -m` reports: the main module, the toolchain and every module linked in, each
// with its purl and its go.sum hash as hex SHA-256, in one dependency entry.
func TestBOMOfAgent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "millwright-agent")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../../cmd/millwright-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	bi, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	now := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	bom := New(Binary{Name: "millwright-agent", Version: "1.2.3", SHA256: strings.Repeat("ab", 32)}, bi, now)
	var buf bytes.Buffer
	require.NoError(t, bom.Write(&buf))

	var doc map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &doc))
	require.Equal(t, "CycloneDX", doc["bomFormat"])
	require.Equal(t, "1.5", doc["specVersion"])
	require.Regexp(t, `^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, doc["serialNumber"])
	require.Equal(t, "2026-12-05T07:00:00Z", bom.Metadata.Timestamp)
	require.Equal(t, "pkg:golang/github.com/millwright/millwright@1.2.3", bom.Metadata.Component.PURL)
	require.Equal(t, []Hash{{Alg: "SHA-256", Content: strings.Repeat("ab", 32)}}, bom.Metadata.Component.Hashes)
	require.Contains(t, bom.Metadata.Component.Properties, Property{Name: "go:build:CGO_ENABLED", Value: "0"})
	require.Equal(t, "std", bom.Components[0].Name)
	require.Equal(t, bi.GoVersion, bom.Components[0].Version)

	// Every dep line of go version -m is a component, with its version and hash.
	vm, err := exec.Command("go", "version", "-m", bin).Output()
	require.NoError(t, err)
	byName := map[string]Component{}
	for _, c := range bom.Components {
		byName[c.Name] = c
	}
	deps := 0
	for line := range strings.SplitSeq(string(vm), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "dep" {
			continue
		}
		deps++
		c, ok := byName[f[1]]
		require.True(t, ok, "%s missing from the BOM", f[1])
		require.Equal(t, f[2], c.Version)
		require.Equal(t, "pkg:golang/"+f[1]+"@"+f[2], c.PURL)
		_, sum, ok := goSum(f[3])
		require.True(t, ok, f[3])
		require.Equal(t, []Hash{{Alg: "SHA-256", Content: sum}}, c.Hashes)
	}
	require.Positive(t, deps)
	require.Len(t, bom.Components, deps+1)
	require.Len(t, bom.Dependencies, 1)
	require.Len(t, bom.Dependencies[0].DependsOn, len(bom.Components))
}

func TestGoSum(t *testing.T) {
	alg, sum, ok := goSum("h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
	require.True(t, ok)
	require.Equal(t, "SHA-256", alg)
	require.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sum)
	for _, bad := range []string{"", "h2:abc", "h1:not base64!", "h1:AAAA"} {
		_, _, ok := goSum(bad)
		require.False(t, ok, bad)
	}
}
