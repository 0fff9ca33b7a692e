package millwrightcli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/protocol"
	fw "github.com/millwright/millwright/protocol/firmware"
)

// TestFirmwareArchive drives millwright firmware against a real server: a key made here, a
// manifest signed here and uploaded with its image, the archive listed, the image downloaded
// by an operator and, with Range, by a device with its certificate; an image that is not the
// one its manifest pins refused and not kept; a release deleted only once no device runs it.
func TestFirmwareArchive(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	keys := t.TempDir()
	code, stdout, stderr := runIn("", "firmware", "keygen", "--out", keys)
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "firmware.pub")
	code, _, stderr = runIn("", "firmware", "keygen", "--out", keys)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "a key is never overwritten")

	img := make([]byte, 300_000)
	_, _ = rand.Read(img)
	imgPath := filepath.Join(t.TempDir(), "gw200-2.1.0.img")
	require.NoError(t, os.WriteFile(imgPath, img, 0o600))
	sum := sha256.Sum256(img)
	sha := hex.EncodeToString(sum[:])

	var rel apitypes.FirmwareRelease
	decodeStrict(t, cli.ok("firmware", "upload", "--key", filepath.Join(keys, "firmware.key"), "--version", "2.1.0", "--model", "gw-200",
		"--min-from", "2.0.0", "--notes", "modem fix", imgPath, "-o", "json"), &rel)
	require.Equal(t, sha, rel.SHA256)
	require.Equal(t, int64(len(img)), rel.Size)
	require.Equal(t, "2.0.0", rel.MinFrom)
	require.Equal(t, "admin", rel.UploadedBy)

	// What a device gets verifies against the public key alone.
	pubPEM, err := os.ReadFile(filepath.Join(keys, "firmware.pub"))
	require.NoError(t, err)
	trusted, err := fw.ParseTrustedKeys(pubPEM)
	require.NoError(t, err)
	sm, err := fw.DecodeSignedManifest(rel.Manifest)
	require.NoError(t, err)
	m, err := fw.Verify(sm, trusted, "gw-200", "2.0.4", time.Now())
	require.NoError(t, err)
	require.Equal(t, sha, m.Artifact.SHA256)

	code, _, stderr = cli.run("", "firmware", "upload", "--key", filepath.Join(keys, "firmware.key"), "--version", "2.1.0", "--model", "gw-200", imgPath)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(conflict)", "a release is never replaced")
	code, _, stderr = cli.run("", "firmware", "upload", "--key", filepath.Join(keys, "nope.key"), "--version", "2.1.1", "--model", "gw-200", imgPath)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "read --key")
	code, _, stderr = cli.run("", "firmware", "upload", "--key", filepath.Join(keys, "firmware.key"), "--version", "two", "--model", "gw-200", imgPath)
	require.Equal(t, 2, code, stderr)

	var list apitypes.FirmwareList
	decodeStrict(t, cli.ok("firmware", "list", "-o", "json"), &list)
	require.Len(t, list.Releases, 1)
	require.Contains(t, cli.ok("firmware", "show", "--version", "2.1.0", "--model", "gw-200"), sha)

	// An operator downloads it, in two parts.
	admin := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool()}}}
	get := func(c *http.Client, url, rangeHeader string, token bool) (int, []byte) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		if token {
			req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
		}
		if rangeHeader != "" {
			req.Header.Set("Range", rangeHeader)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b
	}
	api := "https://" + srv.HTTPAddr().String()
	status, head := get(admin, api+"/api/v1/firmware/artifact?version=2.1.0&model=gw-200", "bytes=0-99999", true)
	require.Equal(t, http.StatusPartialContent, status)
	status, tail := get(admin, api+"/api/v1/firmware/artifact?version=2.1.0&model=gw-200", "bytes=100000-", true)
	require.Equal(t, http.StatusPartialContent, status)
	require.Equal(t, img, append(head, tail...))

	// A device downloads it with its certificate, and resumes.
	dev := cli.device("dev-1")
	device := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool(), Certificates: []tls.Certificate{dev}}}}
	status, whole := get(device, api+protocol.FirmwarePathPrefix+sha, "", false)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, img, whole)
	status, part := get(device, api+protocol.FirmwarePathPrefix+sha, "bytes=250000-", false)
	require.Equal(t, http.StatusPartialContent, status)
	require.Equal(t, img[250_000:], part)
	status, _ = get(admin, api+protocol.FirmwarePathPrefix+sha, "", false)
	require.Equal(t, http.StatusUnauthorized, status, "no device certificate, no firmware")

	// An image that is not the one its manifest pins is refused, and not kept.
	_, key, err := fw.GenerateKey()
	require.NoError(t, err)
	now := time.Now().UTC().Truncate(time.Second)
	forged, err := fw.Sign(fw.Manifest{Version: "2.2.0", Model: "gw-200", Artifact: fw.Artifact{Name: "x.img", SHA256: sha, Size: int64(len(img))},
		Created: now, Expires: now.Add(time.Hour)}, key)
	require.NoError(t, err)
	forgedJSON, err := forged.Encode()
	require.NoError(t, err)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	require.NoError(t, mw.WriteField(apitypes.FirmwareManifestField, string(forgedJSON)))
	w, err := mw.CreateFormFile(apitypes.FirmwareArtifactField, "x.img")
	require.NoError(t, err)
	other := append([]byte{1}, img[1:]...)
	_, _ = w.Write(other)
	require.NoError(t, mw.Close())
	req, err := http.NewRequest(http.MethodPost, api+"/api/v1/firmware", &body)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := admin.Do(req)
	require.NoError(t, err)
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", answer)
	require.Contains(t, string(answer), "not the one the manifest pins")
	otherSum := sha256.Sum256(other)
	_, err = os.Stat(filepath.Join(srv.DataDir(), "firmware", hex.EncodeToString(otherSum[:])[:2], hex.EncodeToString(otherSum[:])))
	require.ErrorIs(t, err, os.ErrNotExist, "the refused image is not kept")

	// Not deleted while a device runs it.
	require.NoError(t, srv.Registry().ReportFacts(context.Background(), "dev-1", "gw-200", "", "2.1.0", time.Time{}, 0))
	code, _, stderr = cli.run("", "firmware", "delete", "--version", "2.1.0", "--model", "gw-200")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(conflict)")
	require.NoError(t, srv.Registry().ReportFacts(context.Background(), "dev-1", "", "", "2.1.1", time.Time{}, 0))
	require.Contains(t, cli.ok("firmware", "delete", "--version", "2.1.0", "--model", "gw-200"), "deleted 2.1.0 for gw-200")
	_, err = os.Stat(filepath.Join(srv.DataDir(), "firmware", sha[:2], sha))
	require.ErrorIs(t, err, os.ErrNotExist, "the last release of the image gone, the image goes")
	status, _ = get(device, api+protocol.FirmwarePathPrefix+sha, "", false)
	require.Equal(t, http.StatusNotFound, status)
}

// TestFirmwareUploadBound: an image over firmware.max_artifact_bytes is refused with 413 and
// not kept.
func TestFirmwareUploadBound(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, func(o *server.Options) { o.Firmware.MaxArtifactBytes = 1000 })
	cli := newCLI(t, srv)
	keys := t.TempDir()
	code, _, stderr := runIn("", "firmware", "keygen", "--out", keys)
	require.Zero(t, code, stderr)
	img := filepath.Join(t.TempDir(), "big.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 1001), 0o600))
	code, _, stderr = cli.run("", "firmware", "upload", "--key", filepath.Join(keys, "firmware.key"), "--version", "1.0.0", "--model", "m", img)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "artifact larger than the bound (1000 bytes)")
	tmp, err := os.ReadDir(filepath.Join(srv.DataDir(), "firmware", "tmp"))
	require.NoError(t, err)
	require.Empty(t, tmp)
}
