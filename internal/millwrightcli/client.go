package millwrightcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
)

// clientFlags are the flags of every command that talks to a running server's API.
type clientFlags struct {
	server, dataDir, caFile, tokenFile, output string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	f.addConnection(cmd, "")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output: table or json")
}

// addConnection adds the flags that reach the API: --server, --data, --ca and --token-file,
// or --<prefix>token-file where a command's --token-file means something else.
func (f *clientFlags) addConnection(cmd *cobra.Command, prefix string) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "https://localhost:8443", "the server's HTTPS API")
	fl.StringVar(&f.dataDir, "data", "data", "a server data directory to take ca.pem and admin.token from")
	fl.StringVar(&f.caFile, "ca", "", "CA certificate to verify the server (default <data>/ca.pem)")
	fl.StringVar(&f.tokenFile, prefix+"token-file", "", "file holding the API token (default $MILLWRIGHT_TOKEN, else <data>/admin.token)")
}

// apiClient calls the server's API with a token; it speaks the types of package apitypes.
type apiClient struct {
	base, token string
	http        *http.Client
	json        bool
}

func (f *clientFlags) client() (*apiClient, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usageError{fmt.Errorf("invalid --output %q: want table or json", f.output)}
	}
	c, err := newAPIClient(f.server, f.dataDir, f.caFile, f.tokenFile, "--token-file")
	if err != nil {
		return nil, err
	}
	c.json = f.output == "json"
	return c, nil
}

// newAPIClient makes a client of the API at base: it verifies the server with caFile
// (default <dataDir>/ca.pem) and sends the token in tokenFile, else $MILLWRIGHT_TOKEN, else
// <dataDir>/admin.token. tokenFlag names the token file's flag in errors.
func newAPIClient(base, dataDir, caFile, tokenFile, tokenFlag string) (*apiClient, error) {
	if caFile == "" {
		caFile = filepath.Join(dataDir, pki.CAFile)
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
	if tokenFile != "" || token == "" {
		path := tokenFile
		if path == "" {
			path = filepath.Join(dataDir, server.AdminTokenFile)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read API token (%s): %w", tokenFlag, err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &apiClient{
		base:  strings.TrimSuffix(base, "/"),
		token: token,
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
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.do(c.http, req, out)
}

// do sends req with the client's token through hc and decodes the data of the API's envelope
// into out.
func (c *apiClient) do(hc *http.Client, req *http.Request, out any) error {
	method, path := req.Method, req.URL.Path
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	var env apitypes.Response[json.RawMessage]
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&env); err != nil {
		return fmt.Errorf("%s %s: %s: unreadable answer: %w", method, path, resp.Status, err)
	}
	if env.Status != apitypes.StatusSuccess {
		return fmt.Errorf("server refused: %s (%s)", env.Error, env.ErrorType)
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return fmt.Errorf("%s %s: unreadable answer: %w", method, path, err)
		}
	}
	return nil
}

// certificatesPerRequest is how many certificates RegisterCertificates sends in one request,
// half of what the API takes.
const certificatesPerRequest = apitypes.MaxCertificatesPerRequest / 2

// RegisterCertificates records device certificates in the server's registry through
// POST /api/v1/certificates, in requests of certificatesPerRequest, and returns how many were
// newly recorded. The requests before a failing one stay recorded; sending the same
// certificates again is harmless.
func (c *apiClient) RegisterCertificates(ctx context.Context, certs []*x509.Certificate) (int, error) {
	added := 0
	for start := 0; start < len(certs); start += certificatesPerRequest {
		chunk := certs[start:min(start+certificatesPerRequest, len(certs))]
		req := apitypes.CertificatesRequest{Certificates: make([]string, len(chunk))}
		for i, cert := range chunk {
			req.Certificates[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
		}
		var out apitypes.CertificatesRegistered
		if err := c.call(ctx, http.MethodPost, "/api/v1/certificates", req, &out); err != nil {
			return added, fmt.Errorf("register certificates: %w", err)
		}
		added += out.Registered
	}
	return added, nil
}

// print writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printMore says that a list goes on, and how to get the rest: on standard output after a
// table, on standard error after JSON, which stays one value a program can read.
func printMore(cmd *cobra.Command, asJSON bool, hint string) {
	w := cmd.OutOrStdout()
	if asJSON {
		w = cmd.ErrOrStderr()
	}
	fmt.Fprintln(w, "more: "+hint)
}

// pager is a list command's --limit and --before: a page of a listing by descending ID.
type pager struct {
	limit  int
	before int64
	most   int
}

// addPager adds --limit (default def, 1 to most) and --before to cmd; what names the items.
func addPager(cmd *cobra.Command, def, most int, what string) *pager {
	p := &pager{most: most}
	cmd.Flags().IntVar(&p.limit, "limit", def, fmt.Sprintf("at most this many %s (1 to %d)", what, most))
	cmd.Flags().Int64Var(&p.before, "before", 0, fmt.Sprintf("only %s older than this ID (the \"more\" line of the previous page)", what))
	return p
}

// query checks the flags and returns them as the API's query parameters.
func (p *pager) query() (url.Values, error) {
	if p.limit < 1 || p.limit > p.most {
		return nil, usageError{fmt.Errorf("invalid --limit %d: want 1 to %d", p.limit, p.most)}
	}
	q := url.Values{"limit": {strconv.Itoa(p.limit)}}
	if p.before > 0 {
		q.Set("before", strconv.FormatInt(p.before, 10))
	}
	return q, nil
}

// more says how to get the next page after a full one, whose last item has ID last.
func (p *pager) more(cmd *cobra.Command, asJSON bool, n int, last int64) {
	if n == p.limit {
		printMore(cmd, asJSON, fmt.Sprintf("--before %d", last))
	}
}
