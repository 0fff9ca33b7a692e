package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
)

// Channel is what the configuration and command routes need of the device channel: to send
// messages just queued, to wait for a command's outcome, and to recompute devices whose
// groups or tags changed.
type Channel interface {
	Queued(msgs []registry.Message)
	Wait(ctx context.Context, id string, d time.Duration) (registry.Message, error)
	DevicesChanged(ctx context.Context, ids []string) error
}

// ChannelRegistry is what those routes need of the registry.
type ChannelRegistry interface {
	SetConfigLayer(ctx context.Context, scope registry.ConfigScope, selector string, document json.RawMessage, actor, remote string) ([]registry.Message, error)
	ConfigLayers(ctx context.Context) ([]registry.ConfigLayer, error)
	ConfigStatus(ctx context.Context) (registry.ConfigStatus, error)
	DeviceConfig(ctx context.Context, id string) (registry.DeviceConfig, error)
	SendCommand(ctx context.Context, spec registry.CommandSpec, actor, remote string) (registry.Message, error)
	Message(ctx context.Context, id string) (registry.Message, error)
	ListMessages(ctx context.Context, device, kind string, limit int, before string) ([]registry.Message, error)
}

var _ ChannelRegistry = (*registry.Registry)(nil)

// MaxCommandWait bounds the wait of a command request or GET /api/v1/commands/{id}?wait=.
const MaxCommandWait = 5 * time.Minute

type channelAPI struct {
	reg ChannelRegistry
	ch  Channel
}

var (
	schemaOnce     sync.Once
	schemaCompiled *jsonschema.Schema
	schemaErr      error
)

// remoteConfigSchema is the agent's schema, compiled once.
func remoteConfigSchema() (*jsonschema.Schema, error) {
	schemaOnce.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(agent.RemoteConfigSchema))
		if err != nil {
			schemaErr = err
			return
		}
		c := jsonschema.NewCompiler()
		const url = "https://millwright.dev/schemas/agent-remote-config/v1.json"
		if err := c.AddResource(url, doc); err != nil {
			schemaErr = err
			return
		}
		schemaCompiled, schemaErr = c.Compile(url)
	})
	return schemaCompiled, schemaErr
}

var schemaPrinter = message.NewPrinter(language.English)

// ValidateConfigDocument checks a layer against the agent's schema, its nulls (removals of a
// lower layer's keys) left out. The error names the failing JSON path.
func ValidateConfigDocument(doc json.RawMessage) error {
	sch, err := remoteConfigSchema()
	if err != nil {
		return fmt.Errorf("agent configuration schema: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("document: %w", err)
	}
	err = sch.Validate(withoutNulls(v))
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	path := "/" + strings.Join(ve.InstanceLocation, "/")
	return fmt.Errorf("document %s: %s", path, ve.ErrorKind.LocalizedString(schemaPrinter))
}

// withoutNulls drops the members whose value is null, at every depth.
func withoutNulls(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := make(map[string]any, len(m))
	for k, x := range m {
		if x != nil {
			out[k] = withoutNulls(x)
		}
	}
	return out
}

// needs answers 503 when the API was built without a device channel.
func (c *channelAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if c.reg == nil || c.ch == nil {
			return nil, &apiError{apitypes.ErrorUnavailable, errors.New("this server has no device channel"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

func (c *channelAPI) schema(*http.Request) (any, *apiError) {
	return json.RawMessage(agent.RemoteConfigSchema), nil
}

func (c *channelAPI) setLayer(r *http.Request) (any, *apiError) {
	var body apitypes.ConfigLayerRequest
	if err := decodeBodyLimit(r, &body, registry.MaxConfigDocument+4096); err != nil {
		return nil, err
	}
	doc := bytes.TrimSpace(body.Document)
	if len(doc) > 0 && string(doc) != "null" {
		if err := ValidateConfigDocument(doc); err != nil {
			return nil, badData(err)
		}
	}
	msgs, err := c.reg.SetConfigLayer(r.Context(), registry.ConfigScope(body.Scope), body.Selector, doc, actor(r), r.RemoteAddr)
	c.ch.Queued(msgs)
	out := apitypes.ConfigLayerSet{Scope: body.Scope, Selector: body.Selector, DevicesChanged: len(msgs)}
	var over *registry.OversizeError
	if errors.As(err, &over) {
		// The layer is stored and the other devices have their new documents; these keep
		// their previous one until a layer shrinks.
		out.DevicesTooLarge = over.Devices
		return out, nil
	}
	if err != nil {
		return nil, registryError(err)
	}
	return out, nil
}

func (c *channelAPI) layers(r *http.Request) (any, *apiError) {
	ls, err := c.reg.ConfigLayers(r.Context())
	if err != nil {
		return nil, registryError(err)
	}
	out := make([]apitypes.ConfigLayer, len(ls))
	for i, l := range ls {
		out[i] = apitypes.ConfigLayer{Scope: string(l.Scope), Selector: l.Selector, Document: l.Document, UpdatedAt: l.UpdatedAt, UpdatedBy: l.UpdatedBy}
	}
	return out, nil
}

func (c *channelAPI) status(r *http.Request) (any, *apiError) {
	st, err := c.reg.ConfigStatus(r.Context())
	if err != nil {
		return nil, registryError(err)
	}
	return apitypes.ConfigStatus{Devices: st.Devices, InSync: st.InSync, Refused: st.Refused, Pending: st.Pending}, nil
}

func (c *channelAPI) deviceConfig(r *http.Request) (any, *apiError) {
	dc, err := c.reg.DeviceConfig(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, registryError(err)
	}
	return apitypes.DeviceConfig{Device: dc.Device, Desired: dc.Desired, DesiredVersion: dc.DesiredVersion, DesiredAt: dc.DesiredAt,
		Layers: dc.Layers, Reported: dc.Reported, AppliedVersion: dc.AppliedVersion, Refused: dc.Refused, ReportedAt: dc.ReportedAt,
		Difference: configDifference(dc.Desired, dc.Reported)}, nil
}

// configDifference lists the dotted paths whose values differ between two JSON objects,
// sorted; an object missing on one side counts as empty.
func configDifference(desired, reported json.RawMessage) []string {
	var a, b map[string]any
	_ = json.Unmarshal(desired, &a)
	_ = json.Unmarshal(reported, &b)
	out := []string{}
	diffInto(&out, "", a, b)
	sort.Strings(out)
	return out
}

func diffInto(out *[]string, prefix string, a, b map[string]any) {
	seen := map[string]bool{}
	for k := range a {
		seen[k] = true
	}
	for k := range b {
		seen[k] = true
	}
	for k := range seen {
		x, y := a[k], b[k]
		xm, xok := x.(map[string]any)
		ym, yok := y.(map[string]any)
		switch {
		case xok && yok, xok && y == nil, yok && x == nil:
			diffInto(out, prefix+k+".", xm, ym)
		case !reflect.DeepEqual(x, y):
			*out = append(*out, prefix+k)
		}
	}
}

func parseWait(s string) (time.Duration, *apiError) {
	if s == "" {
		return 0, nil
	}
	d, err := parseDuration(s)
	if err != nil || d < 0 || d > MaxCommandWait {
		return 0, badData(fmt.Errorf(`"wait": %q is not a duration from 0 to %v`, s, MaxCommandWait))
	}
	return d, nil
}

func (c *channelAPI) sendCommand(r *http.Request) (any, *apiError) {
	var body apitypes.CommandRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	ttl := time.Duration(0)
	if body.Expires != "" {
		d, err := parseDuration(body.Expires)
		if err != nil || d <= 0 {
			return nil, badData(fmt.Errorf(`"expires": %q is not a positive duration`, body.Expires))
		}
		ttl = d
	}
	wait, aerr := parseWait(body.Wait)
	if aerr != nil {
		return nil, aerr
	}
	m, err := c.reg.SendCommand(r.Context(), registry.CommandSpec{Device: r.PathValue("id"), Name: body.Name, Args: body.Args, TTL: ttl}, actor(r), r.RemoteAddr)
	switch {
	case errors.Is(err, registry.ErrDeviceRevoked):
		return nil, &apiError{errConflict, err, http.StatusConflict}
	case errors.Is(err, registry.ErrMailboxFull):
		return nil, &apiError{apitypes.ErrorUnavailable, err, http.StatusTooManyRequests}
	case err != nil:
		return nil, registryError(err)
	}
	c.ch.Queued([]registry.Message{m})
	if wait > 0 {
		if m, err = c.ch.Wait(r.Context(), m.ID, wait); err != nil {
			return nil, registryError(err)
		}
	}
	return toCommand(m), nil
}

func (c *channelAPI) showCommand(r *http.Request) (any, *apiError) {
	wait, aerr := parseWait(r.URL.Query().Get("wait"))
	if aerr != nil {
		return nil, aerr
	}
	m, err := c.reg.Message(r.Context(), r.PathValue("id"))
	if err == nil && m.Kind != registry.KindCommand {
		err = fmt.Errorf("command %s: %w", m.ID, registry.ErrNotFound)
	}
	if err == nil && wait > 0 {
		m, err = c.ch.Wait(r.Context(), m.ID, wait)
	}
	if err != nil {
		return nil, registryError(err)
	}
	return toCommand(m), nil
}

func (c *channelAPI) listCommands(r *http.Request) (any, *apiError) {
	q := r.URL.Query()
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 10000 {
			return nil, badData(errors.New(`invalid parameter "limit": want 1 to 10000`))
		}
		limit = n
	}
	msgs, err := c.reg.ListMessages(r.Context(), r.PathValue("id"), registry.KindCommand, limit, q.Get("before"))
	if err != nil {
		return nil, registryError(err)
	}
	out := apitypes.CommandList{Commands: make([]apitypes.Command, len(msgs))}
	for i, m := range msgs {
		out.Commands[i] = toCommand(m)
	}
	if len(msgs) == limit {
		out.Next = msgs[len(msgs)-1].ID
	}
	return out, nil
}

func toCommand(m registry.Message) apitypes.Command {
	return apitypes.Command{ID: m.ID, Device: m.Device, Name: m.Name, Args: m.Args, State: string(m.State), Reason: m.Reason,
		Detail: m.Detail, Result: m.Result, CreatedBy: m.CreatedBy, CreatedAt: m.CreatedAt, ExpiresAt: m.ExpiresAt,
		UpdatedAt: m.UpdatedAt, Attempts: m.Attempts}
}
