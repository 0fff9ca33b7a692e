package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/firmware"
	"github.com/millwright/millwright/internal/httplimit"
	"github.com/millwright/millwright/internal/registry"
	fw "github.com/millwright/millwright/protocol/firmware"
)

// FirmwareRegistry is what the firmware routes need of the registry.
type FirmwareRegistry interface {
	AddRelease(ctx context.Context, rel registry.Release, remote string) error
	Releases(ctx context.Context, model string) ([]registry.Release, error)
	Release(ctx context.Context, version, model string) (*registry.Release, error)
	DeleteRelease(ctx context.Context, version, model, actor, remote string) (string, bool, error)
}

var _ FirmwareRegistry = (*registry.Registry)(nil)

// Artifacts is the firmware archive's artifact store.
type Artifacts interface {
	Put(r io.Reader) (sum string, size int64, err error)
	Delete(sum string) error
	Serve(w http.ResponseWriter, r *http.Request, sum string)
}

var _ Artifacts = (*firmware.Store)(nil)

type firmwareAPI struct {
	reg       FirmwareRegistry
	artifacts Artifacts
}

func (a *firmwareAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if a.reg == nil || a.artifacts == nil {
			return nil, &apiError{errUnavailable, errors.New("this server has no firmware archive"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

// transferDeadline gives a firmware upload or download timeout, counted once the operator is
// authorized, and the server's write deadline more to be answered.
func transferDeadline(timeout, writeTimeout time.Duration, next http.Handler) http.Handler {
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httplimit.Deadlines(w, timeout, timeout+writeTimeout)
		next.ServeHTTP(w, r)
	})
}

// upload takes a multipart form: the signed manifest, then the artifact. The manifest must
// parse and carry a signature; the artifact must be what it pins (SHA-256 and size). The
// server does not check the signature against any key — the devices do, against the keys
// they trust — and never holds a private key.
func (a *firmwareAPI) upload(r *http.Request) (any, *apiError) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, badData(fmt.Errorf("a firmware upload is a multipart form with the fields %q then %q: %w",
			apitypes.FirmwareManifestField, apitypes.FirmwareArtifactField, err))
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != apitypes.FirmwareManifestField {
		return nil, badData(fmt.Errorf("the first field of a firmware upload is %q, the signed manifest", apitypes.FirmwareManifestField))
	}
	raw, err := io.ReadAll(io.LimitReader(part, fw.MaxSignedManifestSize+1))
	if err != nil {
		return nil, badData(fmt.Errorf("read the manifest: %w", err))
	}
	sm, err := fw.DecodeSignedManifest(raw)
	if err != nil {
		return nil, badData(err)
	}
	m, err := fw.ParseManifest(sm.Manifest)
	if err != nil {
		return nil, badData(err)
	}
	part, err = mr.NextPart()
	if err != nil || part.FormName() != apitypes.FirmwareArtifactField {
		return nil, badData(fmt.Errorf("the second field of a firmware upload is %q, the image the manifest pins", apitypes.FirmwareArtifactField))
	}
	sum, size, err := a.artifacts.Put(part)
	if err != nil {
		if errors.Is(err, firmware.ErrTooLarge) {
			return nil, &apiError{errBadData, err, http.StatusRequestEntityTooLarge}
		}
		return nil, badData(fmt.Errorf("read the artifact: %w", err))
	}
	if sum != m.Artifact.SHA256 || size != m.Artifact.Size {
		a.release(r.Context(), sum)
		return nil, badData(fmt.Errorf("the artifact is not the one the manifest pins: sha256 %s and %d bytes, the manifest says %s and %d bytes",
			sum, size, m.Artifact.SHA256, m.Artifact.Size))
	}
	rel := registry.Release{Version: m.Version, Model: m.Model, SHA256: sum, Size: size, MinFrom: m.MinFrom, Notes: m.Notes,
		Manifest: string(raw), UploadedBy: actor(r)}
	if err := a.reg.AddRelease(r.Context(), rel, r.RemoteAddr); err != nil {
		a.release(r.Context(), sum)
		return nil, registryError(err)
	}
	got, err := a.reg.Release(r.Context(), m.Version, m.Model)
	if err != nil {
		return nil, registryError(err)
	}
	return toFirmwareRelease(*got), nil
}

// release removes an artifact stored for an upload that failed, unless a release uses it.
func (a *firmwareAPI) release(ctx context.Context, sum string) {
	rels, err := a.reg.Releases(ctx, "")
	if err != nil {
		return
	}
	for _, rel := range rels {
		if rel.SHA256 == sum {
			return
		}
	}
	_ = a.artifacts.Delete(sum)
}

func (a *firmwareAPI) list(r *http.Request) (any, *apiError) {
	rels, err := a.reg.Releases(r.Context(), r.FormValue("model"))
	if err != nil {
		return nil, registryError(err)
	}
	out := apitypes.FirmwareList{Releases: make([]apitypes.FirmwareRelease, len(rels))}
	for i, rel := range rels {
		out.Releases[i] = toFirmwareRelease(rel)
	}
	return out, nil
}

// versionModel reads the version and model parameters of a release route.
func versionModel(r *http.Request) (string, string, *apiError) {
	v, m := r.FormValue("version"), r.FormValue("model")
	if v == "" || m == "" {
		return "", "", badData(errors.New(`parameters "version" and "model" are required`))
	}
	return v, m, nil
}

func (a *firmwareAPI) show(r *http.Request) (any, *apiError) {
	v, m, aerr := versionModel(r)
	if aerr != nil {
		return nil, aerr
	}
	rel, err := a.reg.Release(r.Context(), v, m)
	if err != nil {
		return nil, registryError(err)
	}
	return toFirmwareRelease(*rel), nil
}

func (a *firmwareAPI) remove(r *http.Request) (any, *apiError) {
	v, m, aerr := versionModel(r)
	if aerr != nil {
		return nil, aerr
	}
	sum, shared, err := a.reg.DeleteRelease(r.Context(), v, m, actor(r), r.RemoteAddr)
	if errors.Is(err, registry.ErrInUse) {
		return nil, &apiError{errConflict, err, http.StatusConflict}
	}
	if err != nil {
		return nil, registryError(err)
	}
	if !shared {
		if err := a.artifacts.Delete(sum); err != nil {
			return nil, &apiError{errInternal, err, http.StatusInternalServerError}
		}
	}
	return map[string]any{"version": v, "model": m, "sha256": sum, "artifact_deleted": !shared}, nil
}

// artifact serves a release's image to an operator, with ranges.
func (a *firmwareAPI) artifact(r *http.Request) (any, *apiError) {
	rel, aerr := a.show(r)
	if aerr != nil {
		return nil, aerr
	}
	sum := rel.(apitypes.FirmwareRelease).SHA256
	return rawAnswer(func(w http.ResponseWriter) { a.artifacts.Serve(w, r, sum) }), nil
}

func toFirmwareRelease(rel registry.Release) apitypes.FirmwareRelease {
	return apitypes.FirmwareRelease{Version: rel.Version, Model: rel.Model, SHA256: rel.SHA256, Size: rel.Size, MinFrom: rel.MinFrom,
		Notes: rel.Notes, Manifest: json.RawMessage(rel.Manifest), UploadedBy: rel.UploadedBy, UploadedAt: rel.UploadedAt}
}
