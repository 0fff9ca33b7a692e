// Command millwright is the Millwright server, fleet simulator and operator CLI in one binary.
package main

import (
	"os"

	"github.com/millwright/millwright/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
