package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/rollout"
)

// Rollouts is the rollout engine, for the rollout routes.
type Rollouts interface {
	Create(ctx context.Context, s rollout.Spec, remote string) (registry.Rollout, error)
	Status(ctx context.Context, id string) (rollout.Status, error)
	List(ctx context.Context) ([]rollout.Status, error)
	Devices(ctx context.Context, id, state string) ([]registry.RolloutDevice, error)
	Pause(ctx context.Context, id, actor, remote string) (registry.Rollout, error)
	Resume(ctx context.Context, id, actor, remote string) (registry.Rollout, error)
	Abort(ctx context.Context, id, actor, remote string) (registry.Rollout, error)
	Rollback(ctx context.Context, id, actor, remote string) (registry.Rollout, error)
}

// UpdateRegistry is what the update history route needs of the registry.
type UpdateRegistry interface {
	UpdateHistory(ctx context.Context, device string, limit int, before int64) ([]registry.UpdateEvent, error)
}

// RolloutRequest is the body of POST /api/v1/rollouts.
type RolloutRequest struct {
	// ID names the rollout; empty: one is made.
	ID      string `json:"id,omitempty"`
	Version string `json:"version"`
	// Plan is a built-in plan's name (guide, 1-5-10-100); PlanYAML a plan file's text. One
	// of them; neither: guide.
	Plan      string   `json:"plan,omitempty"`
	PlanYAML  string   `json:"plan_yaml,omitempty"`
	Models    []string `json:"models,omitempty"`
	Operators []string `json:"operators,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Tags      []string `json:"tags,omitempty"`
}

// RolloutList is the answer of GET /api/v1/rollouts.
type RolloutList struct {
	Rollouts []rollout.Status `json:"rollouts"`
}

// RolloutDevices is the answer of GET /api/v1/rollouts/{id}/devices.
type RolloutDevices struct {
	Devices []registry.RolloutDevice `json:"devices"`
}

// UpdateHistory is the answer of GET /api/v1/devices/{id}/updates.
type UpdateHistory struct {
	Events []registry.UpdateEvent `json:"events"`
}

type rolloutAPI struct {
	eng     Rollouts
	history UpdateRegistry
}

func (a *rolloutAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if a.eng == nil {
			return nil, &apiError{errUnavailable, errors.New("this server has no rollout engine"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

func rolloutError(err error) *apiError {
	if errors.Is(err, rollout.ErrConflict) {
		return &apiError{errConflict, err, http.StatusConflict}
	}
	if errors.Is(err, rollout.ErrPlan) {
		return badData(err)
	}
	return registryError(err)
}

func (a *rolloutAPI) create(r *http.Request) (any, *apiError) {
	var body RolloutRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.Plan != "" && body.PlanYAML != "" {
		return nil, badData(errors.New(`give "plan" or "plan_yaml", not both`))
	}
	var (
		plan rollout.Plan
		err  error
	)
	name := body.Plan
	switch {
	case body.PlanYAML != "":
		plan, err = rollout.ParsePlan([]byte(body.PlanYAML))
		name = "custom"
	default:
		if name == "" {
			name = rollout.PlanGuide
		}
		plan, err = rollout.Builtin(name)
	}
	if err != nil {
		return nil, badData(err)
	}
	ro, err := a.eng.Create(r.Context(), rollout.Spec{ID: body.ID, Version: body.Version, PlanName: name, Plan: plan, Actor: actor(r),
		Scope: rollout.Scope{Models: body.Models, Operators: body.Operators, Groups: body.Groups, Tags: body.Tags}}, r.RemoteAddr)
	if err != nil {
		return nil, rolloutError(err)
	}
	st, err := a.eng.Status(r.Context(), ro.ID)
	if err != nil {
		return nil, rolloutError(err)
	}
	return st, nil
}

func (a *rolloutAPI) list(r *http.Request) (any, *apiError) {
	l, err := a.eng.List(r.Context())
	if err != nil {
		return nil, rolloutError(err)
	}
	return RolloutList{Rollouts: l}, nil
}

func (a *rolloutAPI) show(r *http.Request) (any, *apiError) {
	st, err := a.eng.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, rolloutError(err)
	}
	return st, nil
}

func (a *rolloutAPI) devices(r *http.Request) (any, *apiError) {
	d, err := a.eng.Devices(r.Context(), r.PathValue("id"), r.FormValue("state"))
	if err != nil {
		return nil, rolloutError(err)
	}
	return RolloutDevices{Devices: d}, nil
}

// action runs pause, resume, abort or rollback and answers the rollout's status.
func (a *rolloutAPI) action(fn func(e Rollouts, ctx context.Context, id, actor, remote string) (registry.Rollout, error)) func(*http.Request) (any, *apiError) {
	return a.needs(func(r *http.Request) (any, *apiError) {
		ro, err := fn(a.eng, r.Context(), r.PathValue("id"), actor(r), r.RemoteAddr)
		if err != nil {
			return nil, rolloutError(err)
		}
		st, err := a.eng.Status(r.Context(), ro.ID)
		if err != nil {
			return nil, rolloutError(err)
		}
		return st, nil
	})
}

func (a *rolloutAPI) updates(r *http.Request) (any, *apiError) {
	if a.history == nil {
		return nil, &apiError{errUnavailable, errors.New("this registry keeps no update history"), http.StatusServiceUnavailable}
	}
	limit, before, e := pageParams(r)
	if e != nil {
		return nil, e
	}
	ev, err := a.history.UpdateHistory(r.Context(), r.PathValue("id"), limit, before)
	if err != nil {
		return nil, registryError(err)
	}
	return UpdateHistory{Events: ev}, nil
}
