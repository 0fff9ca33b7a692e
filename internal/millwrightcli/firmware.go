package millwrightcli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
	fw "github.com/millwright/millwright/protocol/firmware"
)

func newFirmwareCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "firmware", Short: "Keep the firmware archive: signing keys, signed uploads, releases"}

	var out string
	keygen := &cobra.Command{
		Use:   "keygen",
		Short: "Make an ed25519 signing key pair: firmware.key (keep it off the server) and firmware.pub (give it to the devices)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, priv, err := fw.GenerateKey()
			if err != nil {
				return err
			}
			privPEM, err := fw.EncodePrivateKeyPEM(priv)
			if err != nil {
				return err
			}
			pubPEM, err := fw.EncodePublicKeyPEM(pub)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			keyPath, pubPath := filepath.Join(out, "firmware.key"), filepath.Join(out, "firmware.pub")
			if _, err := os.Stat(keyPath); err == nil {
				return fmt.Errorf("%s exists: a key is never overwritten; choose another --out", keyPath)
			}
			if err := os.WriteFile(keyPath, privPEM, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s\nprivate %s\npublic %s\n", fw.KeyID(pub), keyPath, pubPath)
			return nil
		},
	}
	keygen.Flags().StringVar(&out, "out", ".", "directory for firmware.key and firmware.pub")

	var (
		uf                            clientFlags
		keyFile, version, model, from string
		notes                         string
		expires                       time.Duration
		rollback                      bool
	)
	upload := &cobra.Command{
		Use:   "upload --key KEY --version V --model M FILE",
		Short: "Sign a firmware image's manifest here with --key, then upload both; the server never sees the key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" || version == "" || model == "" {
				return usageError{errors.New("upload needs --key, --version and --model")}
			}
			if expires <= 0 {
				return usageError{fmt.Errorf("invalid --expires %s: want more than 0", formatDuration(expires))}
			}
			c, err := uf.client()
			if err != nil {
				return err
			}
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("read --key: %w", err)
			}
			key, err := fw.DecodePrivateKeyPEM(b)
			if err != nil {
				return fmt.Errorf("--key %s: %w", keyFile, err)
			}
			sum, size, err := hashFile(args[0])
			if err != nil {
				return err
			}
			now := time.Now().UTC().Truncate(time.Second)
			sm, err := fw.Sign(fw.Manifest{Version: version, Model: model, MinFrom: from, Rollback: rollback, Notes: notes,
				Artifact: fw.Artifact{Name: filepath.Base(args[0]), SHA256: sum, Size: size},
				Created:  now, Expires: now.Add(expires)}, key)
			if err != nil {
				return usageError{err}
			}
			manifest, err := sm.Encode()
			if err != nil {
				return err
			}
			var rel apitypes.FirmwareRelease
			if err := c.uploadFirmware(cmd, manifest, args[0], &rel); err != nil {
				return err
			}
			return printRelease(cmd, c, rel)
		},
	}
	uf.add(upload)
	f := upload.Flags()
	f.StringVar(&keyFile, "key", "", "the private signing key (PEM, from firmware keygen)")
	f.StringVar(&version, "version", "", "the release's semantic version, such as 2.1.0")
	f.StringVar(&model, "model", "", "the hardware model the image is for")
	f.StringVar(&from, "min-from", "", "the oldest version that may install it directly (older devices get intermediate releases)")
	f.StringVar(&notes, "notes", "", "release notes")
	expires = 365 * 24 * time.Hour // before f.Var, which takes the default shown in --help
	f.Var(durationFlag{&expires}, "expires", "how long the signed manifest is valid; devices refuse it after")
	f.BoolVar(&rollback, "rollback", false, "sign it as a rollback: devices running a higher version may install it")

	var (
		lf   clientFlags
		lm   string
		sf   clientFlags
		df   clientFlags
		sv   string
		smdl string
		dv   string
		dmdl string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the firmware archive",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			var out apitypes.FirmwareList
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/firmware?"+url.Values{"model": {lm}}.Encode(), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tMODEL\tSIZE\tMIN FROM\tSHA256\tUPLOADED\tBY")
			for _, r := range out.Releases {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Version, r.Model, r.Size, dash(r.MinFrom), r.SHA256[:12], when(r.UploadedAt), r.UploadedBy)
			}
			return w.Flush()
		},
	}
	lf.add(list)
	list.Flags().StringVar(&lm, "model", "", "only this hardware model")
	show := &cobra.Command{
		Use:   "show --version V --model M",
		Short: "Show one release",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var rel apitypes.FirmwareRelease
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/firmware/release?"+url.Values{"version": {sv}, "model": {smdl}}.Encode(), nil, &rel); err != nil {
				return err
			}
			return printRelease(cmd, c, rel)
		},
	}
	sf.add(show)
	show.Flags().StringVar(&sv, "version", "", "version")
	show.Flags().StringVar(&smdl, "model", "", "hardware model")
	del := &cobra.Command{
		Use:   "delete --version V --model M",
		Short: "Delete a release no device runs (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := df.client()
			if err != nil {
				return err
			}
			var out map[string]any
			if err := c.call(cmd.Context(), http.MethodDelete, "/api/v1/firmware/release?"+url.Values{"version": {dv}, "model": {dmdl}}.Encode(), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s for %s\n", dv, dmdl)
			return nil
		},
	}
	df.add(del)
	del.Flags().StringVar(&dv, "version", "", "version")
	del.Flags().StringVar(&dmdl, "model", "", "hardware model")
	cmd.AddCommand(keygen, upload, list, show, del)
	return cmd
}

// hashFile is a file's SHA-256 (lowercase hex) and size.
func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// uploadFirmware streams the signed manifest and the image as a multipart form, with no
// client timeout but the command's context: an image takes as long as the link needs.
func (c *apiClient) uploadFirmware(cmd *cobra.Command, manifest []byte, file string, out any) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := mw.WriteField(apitypes.FirmwareManifestField, string(manifest))
		if err == nil {
			var part io.Writer
			if part, err = mw.CreateFormFile(apitypes.FirmwareArtifactField, filepath.Base(file)); err == nil {
				if _, err = io.Copy(part, f); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, c.base+"/api/v1/firmware", pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	hc := *c.http
	hc.Timeout = 0
	return c.do(&hc, req, out)
}

func printRelease(cmd *cobra.Command, c *apiClient, r apitypes.FirmwareRelease) error {
	if c.json {
		return printJSON(cmd.OutOrStdout(), r)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"Version", r.Version}, {"Model", r.Model}, {"SHA-256", r.SHA256}, {"Size", fmt.Sprintf("%d bytes", r.Size)},
		{"Min from", dash(r.MinFrom)}, {"Notes", dash(r.Notes)}, {"Uploaded", when(r.UploadedAt)}, {"By", r.UploadedBy},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1])
	}
	return w.Flush()
}
