// Command sbom writes the CycloneDX 1.5 JSON bill of materials of a Go binary, from the build
// information Go recorded in it (package internal/sbom). make release runs it for each binary:
//
//	go run ./scripts/sbom -name millwright -version 1.2.3 -out dist/x.cdx.json dist/x
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/internal/sbom"
)

func main() {
	name := flag.String("name", "", "the binary's name (default: the file's)")
	version := flag.String("version", "", "the release version (default: the main module's version)")
	out := flag.String("out", "", "file to write (default: standard output)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: sbom [-name NAME] [-version V] [-out FILE] BINARY")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *name, *version, *out); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}

func run(path, name, version, out string) error {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read build information of %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	if name == "" {
		name = bi.Path
	}
	if version == "" {
		version = bi.Main.Version
	}
	bom := sbom.New(sbom.Binary{Name: name, Version: version, SHA256: hex.EncodeToString(h.Sum(nil))}, bi, now())
	if out == "" {
		return bom.Write(os.Stdout)
	}
	var b bytesBuffer
	if err := bom.Write(&b); err != nil {
		return err
	}
	return atomicfile.Write(out, b, 0o644)
}

// now is the BOM's timestamp: $SOURCE_DATE_EPOCH when set, for reproducible releases.
func now() time.Time {
	var s int64
	if _, err := fmt.Sscan(os.Getenv("SOURCE_DATE_EPOCH"), &s); err == nil {
		return time.Unix(s, 0)
	}
	return time.Now()
}

type bytesBuffer []byte

func (b *bytesBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
