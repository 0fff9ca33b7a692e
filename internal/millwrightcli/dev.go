package millwrightcli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

func newDevCmd() *cobra.Command {
	dev := &cobra.Command{
		Use:   "dev",
		Short: "Development helpers (not for production fleets)",
	}
	var (
		dataDir, device, outDir, database string
		validity                          time.Duration
	)
	cert := &cobra.Command{
		Use:   "cert",
		Short: "Issue a device certificate from the server's CA (development only)",
		Long: `Issue a device certificate and key from the CA in the server's data directory.

For tests and demos only: the key is made here, beside the CA, and written to disk.
Production devices make their own key and enroll with a one-time token. The device
and its certificate are recorded in the registry (and the audit log), so the
gateway admits it like an enrolled device.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := protocol.ValidateDeviceID(device); err != nil {
				return usageError{fmt.Errorf("invalid --device: %w", err)}
			}
			if validity <= 0 {
				return usageError{fmt.Errorf("invalid --validity %s: must be positive", validity)}
			}
			ca, err := pki.LoadCA(dataDir)
			if err != nil {
				return fmt.Errorf("%w (start the server once with --data %s to create it)", err, dataDir)
			}
			if !ca.IsDevelopment() {
				return fmt.Errorf("the CA in %s is not the development CA the server makes: dev cert issues keys for development only; enroll devices with a one-time token instead", dataDir)
			}
			reg, err := registry.Open(cmd.Context(), database, dataDir, clock.Real())
			if err != nil {
				return err
			}
			defer reg.Close()
			certPath, keyPath, err := pki.WriteDeviceCert(ca, device, outDir, time.Now(), validity)
			if err != nil {
				return err
			}
			certPEM, err := os.ReadFile(certPath)
			if err != nil {
				return err
			}
			cert, err := pki.ParseCertPEM(certPEM)
			if err != nil {
				return err
			}
			if err := reg.AddCertificate(cmd.Context(), device, cert, true); err != nil {
				return err
			}
			if err := reg.Audit(cmd.Context(), "cli:dev-cert", "certificate.dev_issue", device, "serial "+cert.SerialNumber.Text(16), "local"); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), certPath)
			fmt.Fprintln(cmd.OutOrStdout(), keyPath)
			return nil
		},
	}
	f := cert.Flags()
	f.StringVar(&dataDir, "data", "data", "the server's data directory (holds the CA)")
	f.StringVar(&device, "device", "", "device ID (required)")
	f.StringVar(&outDir, "out", ".", "directory for <device>.crt and <device>.key")
	f.StringVar(&database, "database", "", "registry database, as given to the server (empty: SQLite in --data)")
	f.DurationVar(&validity, "validity", 90*24*time.Hour, "certificate validity")
	_ = cert.MarkFlagRequired("device")
	dev.AddCommand(cert)
	return dev
}
