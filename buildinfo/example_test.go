package buildinfo_test

import (
	"os"

	"github.com/millwright/millwright/buildinfo"
)

func ExampleInfo_Print() {
	info := buildinfo.Info{Version: "1.2.3", Revision: "4f1c2ab", BuildDate: "2026-12-05T07:00:00Z", GoVersion: "go1.26.8"}
	_ = info.Print(os.Stdout, "millwright")
	// Output:
	// millwright version 1.2.3
	//   revision:   4f1c2ab
	//   build date: 2026-12-05T07:00:00Z
	//   go version: go1.26.8
}
