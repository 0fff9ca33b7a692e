// Package sbom writes a software bill of materials of a Go binary in CycloneDX 1.5 JSON, from
// the build information Go records in every binary (debug/buildinfo, as `go version -m`
// prints it): the main module with the version the release build stamped, each module
// linked in with its version and go.sum hash, the Go toolchain, and the build settings
// (GOOS, GOARCH, CGO_ENABLED, -trimpath, the VCS revision). make release writes one beside
// each binary (scripts/sbom).
package sbom

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"
)

// BOM is the part of a CycloneDX 1.5 document this package writes.
type BOM struct {
	BOMFormat    string       `json:"bomFormat"`
	SpecVersion  string       `json:"specVersion"`
	SerialNumber string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     Metadata     `json:"metadata"`
	Components   []Component  `json:"components"`
	Dependencies []Dependency `json:"dependencies"`
}

// Metadata says when, by what and of what the BOM was made.
type Metadata struct {
	Timestamp string      `json:"timestamp"`
	Tools     []Component `json:"tools,omitempty"`
	Component Component   `json:"component"`
}

// Component is a module, the toolchain or the binary.
type Component struct {
	Type       string     `json:"type"`
	BOMRef     string     `json:"bom-ref,omitempty"`
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	PURL       string     `json:"purl,omitempty"`
	Hashes     []Hash     `json:"hashes,omitempty"`
	Properties []Property `json:"properties,omitempty"`
}

// Hash is a component's digest.
type Hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

// Property is a name and value CycloneDX does not model.
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Dependency says which components a component depends on.
type Dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// Binary describes the binary the BOM is of.
type Binary struct {
	// Name is the binary's name ("millwright"), Version its release version.
	Name, Version string
	// SHA256 is the binary file's digest, hex; "" leaves it out.
	SHA256 string
}

// New makes the BOM of a binary with build information bi, at time now.
func New(bin Binary, bi *debug.BuildInfo, now time.Time) BOM {
	main := Component{
		Type: "application", BOMRef: purl(bi.Main.Path, bin.Version), Name: bin.Name, Version: bin.Version,
		PURL: purl(bi.Main.Path, bin.Version),
	}
	if bin.SHA256 != "" {
		main.Hashes = []Hash{{Alg: "SHA-256", Content: bin.SHA256}}
	}
	main.Properties = append(main.Properties, Property{Name: "go:module", Value: bi.Main.Path}, Property{Name: "go:package", Value: bi.Path})
	for _, s := range bi.Settings {
		main.Properties = append(main.Properties, Property{Name: "go:build:" + s.Key, Value: s.Value})
	}
	toolchain := Component{Type: "library", BOMRef: "pkg:golang/std@" + bi.GoVersion, Name: "std", Version: bi.GoVersion,
		PURL: "pkg:golang/std@" + strings.TrimPrefix(bi.GoVersion, "go"), Properties: []Property{{Name: "go:toolchain", Value: bi.GoVersion}}}
	b := BOM{
		BOMFormat: "CycloneDX", SpecVersion: "1.5", SerialNumber: "urn:uuid:" + uuid(), Version: 1,
		Metadata: Metadata{
			Timestamp: now.UTC().Format(time.RFC3339),
			Tools:     []Component{{Type: "application", Name: "millwright scripts/sbom"}},
			Component: main,
		},
		Components: []Component{toolchain},
	}
	dep := Dependency{Ref: main.BOMRef, DependsOn: []string{toolchain.BOMRef}}
	for _, m := range bi.Deps {
		if m.Replace != nil {
			m = replaced(m)
		}
		c := Component{Type: "library", BOMRef: purl(m.Path, m.Version), Name: m.Path, Version: m.Version, PURL: purl(m.Path, m.Version)}
		if alg, sum, ok := goSum(m.Sum); ok {
			c.Hashes = []Hash{{Alg: alg, Content: sum}}
		}
		b.Components = append(b.Components, c)
		dep.DependsOn = append(dep.DependsOn, c.BOMRef)
	}
	b.Dependencies = []Dependency{dep}
	return b
}

// replaced is the module a replace directive put in m's place.
func replaced(m *debug.Module) *debug.Module {
	r := *m.Replace
	if r.Version == "" { // a local directory
		r.Version = m.Version
	}
	return &r
}

// Write writes b as indented JSON.
func (b BOM) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(b)
}

// purl is the package URL of a Go module (purl-spec, type golang).
func purl(path, version string) string {
	p := "pkg:golang/" + path
	if version != "" {
		p += "@" + version
	}
	return p
}

// goSum turns a go.sum hash "h1:<base64 SHA-256>" into CycloneDX's algorithm and hex; other
// hash versions are left out.
func goSum(sum string) (alg, hexSum string, ok bool) {
	b64, ok := strings.CutPrefix(sum, "h1:")
	if !ok {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 32 {
		return "", "", false
	}
	// h1 is the SHA-256 of the module's file list (golang.org/x/mod/sumdb/dirhash), not of
	// an archive; CycloneDX has no name for it, so it goes as SHA-256 of that list.
	return "SHA-256", hex.EncodeToString(raw), true
}

func uuid() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic(fmt.Sprintf("sbom: random serial: %v", err))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
