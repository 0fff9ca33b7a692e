package agentcli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/millwright/millwright/agent/estclient"
)

// enrollCmd makes the device's key, enrolls it with a one-time token and stores the
// certificate: millwright-agent enroll --server https://HOST:8443 --ca ca.pem --token T --dir DIR.
func enrollCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "", "the server's HTTPS base `URL`, e.g. https://gw.example.com:8443 (required)")
	ca := fs.String("ca", "", "CA bundle `FILE` that verifies the server (required; no trust on first use)")
	token := fs.String("token", "", "one-time enrollment `TOKEN` (required)")
	dir := fs.String("dir", "/var/lib/millwright-agent/credentials", "`DIR` for device.key (0600), device.crt and ca.pem")
	model := fs.String("model", "", "hardware `MODEL` to state (a token may require one)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for name, v := range map[string]string{"--server": *server, "--ca": *ca, "--token": *token} {
		if v == "" {
			return usageError{fmt.Errorf("enroll: %s is required", name)}
		}
	}
	id, err := estclient.EnrollDir(ctx, estclient.Options{Server: *server, Token: *token, Model: *model, CAFile: *ca, Dir: *dir})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled as %s; certificate %s, key %s\n", id,
		filepath.Join(*dir, estclient.CertFile), filepath.Join(*dir, estclient.KeyFile))
	return nil
}
