// Command millwright is the Millwright server, fleet simulator and operator CLI in one binary.
package main

import (
	"os"

	"github.com/millwright/millwright/internal/millwrightcli"
)

func main() {
	os.Exit(millwrightcli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
