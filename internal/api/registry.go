package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// Registry is what the device, token, operator and audit routes need of the registry.
type Registry interface {
	Device(ctx context.Context, id string) (*registry.Device, error)
	ListDevices(ctx context.Context, f registry.ListFilter) ([]registry.Device, string, error)
	SetStatus(ctx context.Context, id string, s registry.Status, actor, remote string) error
	DeleteDevice(ctx context.Context, id, actor, remote string) error
	SetTags(ctx context.Context, id string, set map[string]string, remove []string, actor, remote string) error
	SetGroups(ctx context.Context, id string, add, remove []string, actor, remote string) error
	CreateEnrollmentTokens(ctx context.Context, spec registry.TokenSpec, actor string) ([]string, error)
	ListEnrollmentTokens(ctx context.Context, all bool) ([]registry.EnrollmentToken, error)
	DeleteEnrollmentToken(ctx context.Context, id, actor, remote string) error
	AddCertificates(ctx context.Context, certs []registry.DeviceCertificate, actor, remote string) (int, error)
	CreateOperator(ctx context.Context, name string, role registry.Role, actor, remote string) (registry.Operator, string, error)
	ListOperators(ctx context.Context) ([]registry.Operator, error)
	RevokeOperator(ctx context.Context, id string, actor, remote string) error
	ListAudit(ctx context.Context, limit int, beforeID int64) ([]registry.AuditEntry, error)
	DeviceCertificates(ctx context.Context, deviceID string) ([]registry.Certificate, error)
}

var _ Registry = (*registry.Registry)(nil)

type registryAPI struct {
	reg     Registry
	changed func(id string, s registry.Status)
	deleted func(ctx context.Context, id string) (int, error)
	roots   *x509.CertPool   // device CAs, for POST /api/v1/certificates
	now     func() time.Time // when certificates are verified
	channel Channel          // told of group and tag changes; may be nil
}

// membershipChanged recomputes the desired configuration of a device whose groups or tags
// changed; a failure is logged by the channel's next delivery, which computes it again.
func (d *registryAPI) membershipChanged(r *http.Request, id string) {
	if d.channel != nil {
		_ = d.channel.DevicesChanged(r.Context(), []string{id})
	}
}

// registryError maps registry errors to API errors with stable types.
func registryError(err error) *apiError {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return &apiError{errNotFound, err, http.StatusNotFound}
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, protocol.ErrInvalidDeviceID):
		return badData(err)
	case errors.Is(err, registry.ErrExists):
		return &apiError{errConflict, err, http.StatusConflict}
	}
	return &apiError{errInternal, err, http.StatusInternalServerError}
}

// Request bodies: most are small; a certificates body holds up to
// apitypes.MaxCertificatesPerRequest PEM certificates of any key type.
const (
	maxBody             = 1 << 20
	maxCertificatesBody = 4 << 20
)

func decodeBody(r *http.Request, v any) *apiError { return decodeBodyLimit(r, v, maxBody) }

// decodeBodyLimit decodes a JSON body of at most limit bytes into v; unknown fields are errors.
func decodeBodyLimit(r *http.Request, v any, limit int64) *apiError {
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badData(fmt.Errorf("request body: %w", err))
	}
	return nil
}

func actor(r *http.Request) string { return PrincipalFrom(r.Context()).Name }

func (d *registryAPI) list(r *http.Request) (any, *apiError) {
	q := r.URL.Query()
	f := registry.ListFilter{
		Status: registry.Status(q.Get("status")), Model: q.Get("model"), Operator: q.Get("operator"),
		Firmware: q.Get("firmware"), Group: q.Get("group"), After: q.Get("after"), Prefix: q.Get("prefix"),
	}
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, badData(fmt.Errorf("invalid parameter \"tag\": %q is not key=value", t))
		}
		if f.Tag == nil {
			f.Tag = map[string]string{}
		}
		f.Tag[k] = v
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 10000 {
			return nil, badData(errors.New(`invalid parameter "limit": want 1 to 10000`))
		}
		f.Limit = n
	}
	devs, next, err := d.reg.ListDevices(r.Context(), f)
	if err != nil {
		return nil, registryError(err)
	}
	out := apitypes.DeviceList{Devices: make([]apitypes.Device, len(devs)), Next: next}
	for i, dev := range devs {
		out.Devices[i] = toDevice(dev)
	}
	return out, nil
}

func (d *registryAPI) show(r *http.Request) (any, *apiError) {
	dev, err := d.reg.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, registryError(err)
	}
	return toDevice(*dev), nil
}

// certificates lists a device's certificates, revoked ones included.
func (d *registryAPI) certificates(r *http.Request) (any, *apiError) {
	id := r.PathValue("id")
	if _, err := d.reg.Device(r.Context(), id); err != nil {
		return nil, registryError(err)
	}
	certs, err := d.reg.DeviceCertificates(r.Context(), id)
	if err != nil {
		return nil, registryError(err)
	}
	if certs == nil {
		certs = []registry.Certificate{}
	}
	return CertificateList{Certificates: certs}, nil
}

// CertificateList is the answer of GET /api/v1/devices/{id}/certificates.
type CertificateList struct {
	Certificates []registry.Certificate `json:"certificates"`
}

func (d *registryAPI) setStatus(s registry.Status) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		id := r.PathValue("id")
		if err := d.reg.SetStatus(r.Context(), id, s, actor(r), r.RemoteAddr); err != nil {
			return nil, registryError(err)
		}
		if d.changed != nil {
			d.changed(id, s)
		}
		return d.show(r)
	}
}

func (d *registryAPI) tags(r *http.Request) (any, *apiError) {
	var body apitypes.TagsRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if err := d.reg.SetTags(r.Context(), r.PathValue("id"), body.Set, body.Remove, actor(r), r.RemoteAddr); err != nil {
		return nil, registryError(err)
	}
	d.membershipChanged(r, r.PathValue("id"))
	return d.show(r)
}

func (d *registryAPI) groups(r *http.Request) (any, *apiError) {
	var body apitypes.GroupsRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if err := d.reg.SetGroups(r.Context(), r.PathValue("id"), body.Add, body.Remove, actor(r), r.RemoteAddr); err != nil {
		return nil, registryError(err)
	}
	d.membershipChanged(r, r.PathValue("id"))
	return d.show(r)
}

func (d *registryAPI) createTokens(r *http.Request) (any, *apiError) {
	var body apitypes.TokensRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.Count == 0 {
		body.Count = 1
	}
	if body.Count < 0 || body.Count > apitypes.MaxTokensPerRequest {
		return nil, badData(fmt.Errorf(`"count" must be 1 to %d`, apitypes.MaxTokensPerRequest))
	}
	ttl := 24 * time.Hour
	if body.Expires != "" {
		d, err := parseDuration(body.Expires)
		if err != nil || d <= 0 {
			return nil, badData(fmt.Errorf(`"expires": %q is not a positive duration`, body.Expires))
		}
		ttl = d
	}
	if body.DeviceID != "" {
		if err := protocol.ValidateDeviceID(body.DeviceID); err != nil {
			return nil, badData(err)
		}
		if body.Count != 1 {
			return nil, badData(errors.New(`a token bound to "device_id" must have "count" 1`))
		}
	}
	toks, err := d.reg.CreateEnrollmentTokens(r.Context(), registry.TokenSpec{
		Count: body.Count, TTL: ttl, Model: body.Model, Tags: body.Tags, DeviceID: body.DeviceID,
	}, actor(r))
	if err != nil {
		return nil, registryError(err)
	}
	ids := make([]string, len(toks))
	for i, t := range toks {
		ids[i] = registry.EnrollmentTokenID(t)
	}
	return apitypes.TokensCreated{Tokens: toks, IDs: ids, ExpiresIn: ttl.String()}, nil
}

// deleteDevice erases a device: its registry rows, then its series and events. A device the
// registry no longer has still gets its data erased (finishing an erasure a failure cut
// short), and the answer is 404.
func (d *registryAPI) deleteDevice(r *http.Request) (any, *apiError) {
	id := r.PathValue("id")
	regErr := d.reg.DeleteDevice(r.Context(), id, actor(r), r.RemoteAddr)
	if regErr != nil && !errors.Is(regErr, registry.ErrNotFound) {
		return nil, registryError(regErr)
	}
	events := 0
	if d.deleted != nil {
		n, err := d.deleted(r.Context(), id)
		if err != nil {
			return nil, &apiError{errInternal, fmt.Errorf("device %s: erasing its series and events failed (delete it again to finish): %w", id, err), http.StatusInternalServerError}
		}
		events = n
	}
	if regErr != nil {
		return nil, registryError(regErr)
	}
	return apitypes.DeviceDeleted{Deleted: id, Events: events}, nil
}

// listTokens lists the enrollment tokens still usable, or with all=true every stored one.
func (d *registryAPI) listTokens(r *http.Request) (any, *apiError) {
	all := false
	if s := r.FormValue("all"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, badData(fmt.Errorf(`"all" %q is not true or false`, s))
		}
		all = b
	}
	toks, err := d.reg.ListEnrollmentTokens(r.Context(), all)
	if err != nil {
		return nil, registryError(err)
	}
	now := d.now()
	out := apitypes.TokenList{Tokens: make([]apitypes.EnrollmentToken, len(toks))}
	for i, t := range toks {
		state := "unused"
		switch {
		case !t.UsedAt.IsZero():
			state = "used"
		case !t.ExpiresAt.After(now):
			state = "expired"
		}
		out.Tokens[i] = apitypes.EnrollmentToken{ID: t.ID, State: state, Model: t.Model, DeviceID: t.DeviceID, Tags: t.Tags,
			CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt, UsedBy: t.UsedBy}
	}
	return out, nil
}

// revokeToken deletes an unused enrollment token, so it can no longer enroll a device.
func (d *registryAPI) revokeToken(r *http.Request) (any, *apiError) {
	id := r.PathValue("id")
	if err := d.reg.DeleteEnrollmentToken(r.Context(), id, actor(r), r.RemoteAddr); err != nil {
		if errors.Is(err, registry.ErrTokenUsed) {
			return nil, &apiError{errConflict, fmt.Errorf("%w: it enrolled a device, and stays as the record of that", err), http.StatusConflict}
		}
		return nil, registryError(err)
	}
	return apitypes.TokenRevoked{Revoked: id}, nil
}

// addCertificates records device certificates issued outside enrollment, each only once it
// verifies against the device CAs: a certificate of another CA would be a device the gateway
// never admits.
func (d *registryAPI) addCertificates(r *http.Request) (any, *apiError) {
	var body apitypes.CertificatesRequest
	if err := decodeBodyLimit(r, &body, maxCertificatesBody); err != nil {
		return nil, err
	}
	if n := len(body.Certificates); n == 0 || n > apitypes.MaxCertificatesPerRequest {
		return nil, badData(fmt.Errorf(`"certificates" must hold 1 to %d certificates, not %d`, apitypes.MaxCertificatesPerRequest, n))
	}
	if d.roots == nil {
		return nil, &apiError{errUnavailable, errors.New("this server has no device CA to verify certificates against"), http.StatusServiceUnavailable}
	}
	now := time.Now
	if d.now != nil {
		now = d.now
	}
	opts := x509.VerifyOptions{Roots: d.roots, CurrentTime: now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	certs := make([]registry.DeviceCertificate, len(body.Certificates))
	for i, p := range body.Certificates {
		c, err := parseCertificatePEM(p)
		if err != nil {
			return nil, badData(fmt.Errorf("certificate %d: %w", i+1, err))
		}
		if _, err := c.Verify(opts); err != nil {
			return nil, badData(fmt.Errorf("certificate %d (%q, serial %s) does not verify against the server's CA for client authentication: %w",
				i+1, c.Subject.CommonName, registry.SerialHex(c), err))
		}
		certs[i] = registry.DeviceCertificate{DeviceID: c.Subject.CommonName, Cert: c}
	}
	n, err := d.reg.AddCertificates(r.Context(), certs, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, registryError(err)
	}
	// A device that tried to connect before it was registered may have a refusal cached by
	// the gateway: drop it, so that the device is admitted at its next attempt. No status
	// changed (a revoked device fails the request above), so nothing is disconnected.
	if d.changed != nil {
		seen := map[string]bool{}
		for _, c := range certs {
			if !seen[c.DeviceID] {
				seen[c.DeviceID] = true
				d.changed(c.DeviceID, registry.StatusActive)
			}
		}
	}
	return apitypes.CertificatesRegistered{Registered: n}, nil
}

// parseCertificatePEM reads exactly one PEM CERTIFICATE block.
func parseCertificatePEM(s string) (*x509.Certificate, error) {
	b, rest := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM CERTIFICATE block")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("more than one PEM block: give one certificate per entry")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (d *registryAPI) listOperators(r *http.Request) (any, *apiError) {
	ops, err := d.reg.ListOperators(r.Context())
	if err != nil {
		return nil, registryError(err)
	}
	out := make([]apitypes.Operator, len(ops))
	for i, op := range ops {
		out[i] = toOperator(op)
	}
	return out, nil
}

func (d *registryAPI) createOperator(r *http.Request) (any, *apiError) {
	var body apitypes.OperatorRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	role := registry.Role(body.Role)
	if rank(role) == 0 {
		return nil, badData(fmt.Errorf(`"role" must be admin, operator or viewer, not %q`, body.Role))
	}
	if strings.TrimSpace(body.Name) == "" {
		return nil, badData(errors.New(`"name" is required`))
	}
	op, tok, err := d.reg.CreateOperator(r.Context(), body.Name, role, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, registryError(err)
	}
	return apitypes.OperatorCreated{Operator: toOperator(op), Token: tok}, nil
}

func (d *registryAPI) revokeOperator(r *http.Request) (any, *apiError) {
	if err := d.reg.RevokeOperator(r.Context(), r.PathValue("id"), actor(r), r.RemoteAddr); err != nil {
		return nil, registryError(err)
	}
	return apitypes.OperatorRevoked{Revoked: r.PathValue("id")}, nil
}

func (d *registryAPI) audit(r *http.Request) (any, *apiError) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 10000 {
			return nil, badData(errors.New(`invalid parameter "limit": want 1 to 10000`))
		}
		limit = n
	}
	var before int64
	if s := r.URL.Query().Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return nil, badData(errors.New(`invalid parameter "before": want an audit entry ID`))
		}
		before = n
	}
	entries, err := d.reg.ListAudit(r.Context(), limit, before)
	if err != nil {
		return nil, registryError(err)
	}
	out := make([]apitypes.AuditEntry, len(entries))
	for i, e := range entries {
		out[i] = apitypes.AuditEntry(e)
	}
	return out, nil
}

// toDevice is a registry device as the API gives it.
func toDevice(d registry.Device) apitypes.Device {
	return apitypes.Device{
		ID: d.ID, Status: apitypes.DeviceStatus(d.Status),
		HardwareModel: d.HardwareModel, NetworkOperator: d.NetworkOperator, FirmwareVersion: d.FirmwareVersion,
		Tags: d.Tags, Groups: d.Groups,
		CreatedAt: d.CreatedAt, EnrolledAt: d.EnrolledAt, LastSeenAt: d.LastSeenAt,
	}
}

// toOperator is a registry operator as the API gives it.
func toOperator(o registry.Operator) apitypes.Operator {
	return apitypes.Operator{ID: o.ID, Name: o.Name, Role: apitypes.Role(o.Role), CreatedAt: o.CreatedAt, RevokedAt: o.RevokedAt}
}
