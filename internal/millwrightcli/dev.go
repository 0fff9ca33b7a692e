package millwrightcli

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

func newDevCmd() *cobra.Command {
	dev := &cobra.Command{
		Use:   "dev",
		Short: "Development helpers (not for production fleets)",
	}
	var (
		cf             clientFlags
		device, outDir string
		validity       time.Duration
	)
	cert := &cobra.Command{
		Use:   "cert",
		Short: "Issue a device certificate from the server's CA and register it (development only; the server must run)",
		Long: `Issue a device certificate and key from the development CA in the server's data
directory (--data), register the certificate through the API of the running server
(--server, with the admin token of --data or --token-file), and write <device>.crt and
<device>.key to --out.

The server must run: the device and its certificate are recorded by the server (and in
its audit log, as the token's holder), so the gateway admits the device like an
enrolled one. Nothing is written when the server refuses.

For tests and demos only: the key is made here, beside the CA, and written to disk.
Production devices make their own key and enroll with a one-time token.`,
		Example: `  millwright server &                     # in another terminal
  millwright dev cert --data data --device dev-1 --out certs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := protocol.ValidateDeviceID(device); err != nil {
				return usageError{fmt.Errorf("invalid --device: %w", err)}
			}
			if validity <= 0 {
				return usageError{fmt.Errorf("invalid --validity %s: must be positive", validity)}
			}
			if err := removedDatabaseFlag(cmd); err != nil {
				return err
			}
			ca, err := pki.LoadCA(cf.dataDir)
			if err != nil {
				return fmt.Errorf("%w (start the server once with --data %s to create it)", err, cf.dataDir)
			}
			if !ca.IsDevelopment() {
				return fmt.Errorf("the CA in %s is not the development CA the server makes: dev cert issues keys for development only; enroll devices with a one-time token instead", cf.dataDir)
			}
			c, err := newAPIClient(cf.server, cf.dataDir, cf.caFile, cf.tokenFile, "--token-file")
			if err != nil {
				return err
			}
			key, err := pki.GenerateKey()
			if err != nil {
				return err
			}
			leaf, certPEM, err := ca.DeviceCert(device, key.Public(), time.Now(), validity)
			if err != nil {
				return err
			}
			keyPEM, err := pki.EncodeKey(key)
			if err != nil {
				return err
			}
			if _, err := c.RegisterCertificates(cmd.Context(), []*x509.Certificate{leaf}); err != nil {
				return fmt.Errorf("%w (dev cert registers the device through the API of the running server, --server %s)", err, cf.server)
			}
			certPath, keyPath := filepath.Join(outDir, device+".crt"), filepath.Join(outDir, device+".key")
			if err := os.MkdirAll(outDir, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", outDir, err)
			}
			if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
				return err
			}
			if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), certPath)
			fmt.Fprintln(cmd.OutOrStdout(), keyPath)
			return nil
		},
	}
	cf.addConnection(cert, "")
	f := cert.Flags()
	f.Lookup("data").Usage = "the server's data directory: its development CA signs, its admin.token and ca.pem reach the API"
	f.StringVar(&device, "device", "", "device ID (required)")
	f.StringVar(&outDir, "out", ".", "directory for <device>.crt and <device>.key")
	f.DurationVar(&validity, "validity", 90*24*time.Hour, "certificate validity")
	addRemovedDatabaseFlag(cert)
	_ = cert.MarkFlagRequired("device")
	dev.AddCommand(cert)
	return dev
}

// addRemovedDatabaseFlag keeps --database, which dev cert and sim took when they wrote the
// server's registry themselves, as a hidden flag that explains what replaced it.
func addRemovedDatabaseFlag(cmd *cobra.Command) {
	cmd.Flags().String("database", "", "")
	_ = cmd.Flags().MarkHidden("database")
}

// removedDatabaseFlag refuses --database: the command registers devices through the API.
func removedDatabaseFlag(cmd *cobra.Command) error {
	if cmd.Flags().Changed("database") {
		return usageError{fmt.Errorf("--database is no longer taken: %s registers devices through the API of the running server (--server), which keeps its own registry", cmd.CommandPath())}
	}
	return nil
}
