package millwrightcli

import (
	"github.com/spf13/cobra"

	"github.com/millwright/millwright/buildinfo"
)

// newVersionCmd is millwright version: the build information the server's
// /api/v1/status/buildinfo reports, as millwright --version prints it.
func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, revision, build date and Go version (also --version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return buildinfo.Get().Print(cmd.OutOrStdout(), "millwright")
		},
	}
}

// setVersion gives root the --version flag, printing what millwright version prints.
func setVersion(root *cobra.Command) {
	root.Version = buildinfo.Get().Version
	root.SetVersionTemplate(buildinfo.Get().String())
}
