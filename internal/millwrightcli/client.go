package millwrightcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
)

// clientFlags are the flags of every command that talks to a running server's API.
type clientFlags struct {
	server, dataDir, caFile, tokenFile, output string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "https://localhost:8443", "the server's HTTPS API")
	fl.StringVar(&f.dataDir, "data", "data", "a server data directory to take ca.pem and admin.token from")
	fl.StringVar(&f.caFile, "ca", "", "CA certificate to verify the server (default <data>/ca.pem)")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the API token (default $MILLWRIGHT_TOKEN, else <data>/admin.token)")
	fl.StringVarP(&f.output, "output", "o", "table", "output: table or json")
}

type apiClient struct {
	base, token string
	http        *http.Client
	json        bool
}

func (f *clientFlags) client() (*apiClient, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usageError{fmt.Errorf("invalid --output %q: want table or json", f.output)}
	}
	caFile := f.caFile
	if caFile == "" {
		caFile = filepath.Join(f.dataDir, pki.CAFile)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate (--ca): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	token := os.Getenv("MILLWRIGHT_TOKEN")
	if f.tokenFile != "" || token == "" {
		path := f.tokenFile
		if path == "" {
			path = filepath.Join(f.dataDir, server.AdminTokenFile)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read API token (--token-file): %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &apiClient{
		base:  strings.TrimSuffix(f.server, "/"),
		token: token,
		json:  f.output == "json",
		http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}, nil
}

// call sends a request and decodes the data of the API's envelope into out.
func (c *apiClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&env); err != nil {
		return fmt.Errorf("%s %s: %s: unreadable answer: %w", method, path, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("server refused: %s (%s)", env.Error, env.ErrorType)
	}
	if out != nil {
		return json.Unmarshal(env.Data, out)
	}
	return nil
}

// print writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
