package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
)

// Registry is what the device, token, operator and audit routes need of the registry.
type Registry interface {
	Device(ctx context.Context, id string) (*registry.Device, error)
	ListDevices(ctx context.Context, f registry.ListFilter) ([]registry.Device, string, error)
	SetStatus(ctx context.Context, id string, s registry.Status, actor, remote string) error
	SetTags(ctx context.Context, id string, set map[string]string, remove []string, actor, remote string) error
	SetGroups(ctx context.Context, id string, add, remove []string, actor, remote string) error
	CreateEnrollmentTokens(ctx context.Context, spec registry.TokenSpec, actor string) ([]string, error)
	CreateOperator(ctx context.Context, name string, role registry.Role, actor, remote string) (registry.Operator, string, error)
	ListOperators(ctx context.Context) ([]registry.Operator, error)
	RevokeOperator(ctx context.Context, id string, actor, remote string) error
	ListAudit(ctx context.Context, limit int, beforeID int64) ([]registry.AuditEntry, error)
}

type registryAPI struct {
	reg     Registry
	changed func(id string, s registry.Status)
}

// registryError maps registry errors to API errors with stable types.
func registryError(err error) *apiError {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return &apiError{errNotFound, err, http.StatusNotFound}
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, protocol.ErrInvalidDeviceID):
		return badData(err)
	case errors.Is(err, registry.ErrExists):
		return &apiError{"conflict", err, http.StatusConflict}
	}
	return &apiError{errInternal, err, http.StatusInternalServerError}
}

func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
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
		Firmware: q.Get("firmware"), Group: q.Get("group"), After: q.Get("after"),
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
	if devs == nil {
		devs = []registry.Device{}
	}
	return map[string]any{"devices": devs, "next": next}, nil
}

func (d *registryAPI) show(r *http.Request) (any, *apiError) {
	dev, err := d.reg.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, registryError(err)
	}
	return dev, nil
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
	var body struct {
		Set    map[string]string `json:"set"`
		Remove []string          `json:"remove"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if err := d.reg.SetTags(r.Context(), r.PathValue("id"), body.Set, body.Remove, actor(r), r.RemoteAddr); err != nil {
		return nil, registryError(err)
	}
	return d.show(r)
}

func (d *registryAPI) groups(r *http.Request) (any, *apiError) {
	var body struct {
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if err := d.reg.SetGroups(r.Context(), r.PathValue("id"), body.Add, body.Remove, actor(r), r.RemoteAddr); err != nil {
		return nil, registryError(err)
	}
	return d.show(r)
}

func (d *registryAPI) createTokens(r *http.Request) (any, *apiError) {
	var body struct {
		Count    int               `json:"count"`
		Expires  string            `json:"expires"`
		Model    string            `json:"model"`
		Tags     map[string]string `json:"tags"`
		DeviceID string            `json:"device_id"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.Count == 0 {
		body.Count = 1
	}
	if body.Count < 0 || body.Count > 10000 {
		return nil, badData(errors.New(`"count" must be 1 to 10000`))
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
	return map[string]any{"tokens": toks, "expires_in": ttl.String()}, nil
}

func (d *registryAPI) listOperators(r *http.Request) (any, *apiError) {
	ops, err := d.reg.ListOperators(r.Context())
	if err != nil {
		return nil, registryError(err)
	}
	if ops == nil {
		ops = []registry.Operator{}
	}
	return ops, nil
}

func (d *registryAPI) createOperator(r *http.Request) (any, *apiError) {
	var body struct {
		Name string        `json:"name"`
		Role registry.Role `json:"role"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if rank(body.Role) == 0 {
		return nil, badData(fmt.Errorf(`"role" must be admin, operator or viewer, not %q`, body.Role))
	}
	if strings.TrimSpace(body.Name) == "" {
		return nil, badData(errors.New(`"name" is required`))
	}
	op, tok, err := d.reg.CreateOperator(r.Context(), body.Name, body.Role, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, registryError(err)
	}
	return map[string]any{"operator": op, "token": tok}, nil
}

func (d *registryAPI) revokeOperator(r *http.Request) (any, *apiError) {
	if err := d.reg.RevokeOperator(r.Context(), r.PathValue("id"), actor(r), r.RemoteAddr); err != nil {
		return nil, registryError(err)
	}
	return map[string]string{"revoked": r.PathValue("id")}, nil
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
	if entries == nil {
		entries = []registry.AuditEntry{}
	}
	return entries, nil
}
