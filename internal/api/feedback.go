package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/millwright/millwright/internal/registry"
)

// FeedbackRegistry is what the feedback routes need of the registry.
type FeedbackRegistry interface {
	RecordFeedback(ctx context.Context, f registry.Feedback, actor, remote string) (registry.Feedback, error)
	ListFeedback(ctx context.Context, f registry.FeedbackFilter) ([]registry.Feedback, error)
	FeedbackSummary(ctx context.Context, since time.Time) ([]registry.FeedbackCount, error)
}

// FeedbackRequest is the body of POST /api/v1/devices/{id}/feedback.
type FeedbackRequest struct {
	// Kind is feedback, incident or crash.
	Kind string `json:"kind"`
	// Severity is info, warning (default) or critical.
	Severity string `json:"severity,omitempty"`
	Message  string `json:"message,omitempty"`
	// Source names the integration that recorded it, if one did.
	Source string `json:"source,omitempty"`
	// At is when it happened; default now.
	At time.Time `json:"at,omitzero"`
}

// FeedbackList is the answer of GET /api/v1/feedback.
type FeedbackList struct {
	Events []registry.Feedback `json:"events"`
}

// FeedbackSummary is the answer of GET /api/v1/feedback/summary.
type FeedbackSummary struct {
	Since  time.Time                `json:"since"`
	Counts []registry.FeedbackCount `json:"counts"`
}

type feedbackAPI struct {
	fr  FeedbackRegistry
	mon Monitor
	now func() time.Time
}

func (a *feedbackAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if a.fr == nil {
			return nil, &apiError{errUnavailable, errors.New("this registry keeps no feedback"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

func (a *feedbackAPI) record(r *http.Request) (any, *apiError) {
	var req FeedbackRequest
	if e := decodeBody(r, &req); e != nil {
		return nil, e
	}
	f, err := a.fr.RecordFeedback(r.Context(), registry.Feedback{Device: r.PathValue("id"), Kind: req.Kind, Severity: req.Severity,
		Message: req.Message, Source: req.Source, At: req.At}, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, registryError(err)
	}
	if a.mon != nil {
		a.mon.Feedback(f.Device, f.Kind)
	}
	return f, nil
}

func (a *feedbackAPI) list(r *http.Request) (any, *apiError) {
	limit, before, e := pageParams(r)
	if e != nil {
		return nil, e
	}
	ev, err := a.fr.ListFeedback(r.Context(), registry.FeedbackFilter{Device: r.FormValue("device"), Firmware: r.FormValue("firmware"),
		Kind: r.FormValue("kind"), Limit: limit, Before: before})
	if err != nil {
		return nil, registryError(err)
	}
	return FeedbackList{Events: ev}, nil
}

func (a *feedbackAPI) summary(r *http.Request) (any, *apiError) {
	window := 7 * 24 * time.Hour
	if s := r.FormValue("since"); s != "" {
		d, err := model.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, badData(fmt.Errorf(`"since" %q is not a positive duration such as 24h or 7d`, s))
		}
		window = time.Duration(d)
	}
	since := a.now().Add(-window).UTC().Truncate(time.Millisecond)
	counts, err := a.fr.FeedbackSummary(r.Context(), since)
	if err != nil {
		return nil, registryError(err)
	}
	return FeedbackSummary{Since: since, Counts: counts}, nil
}

// pageParams reads a listing's "limit" (1 to 1000; 0 when absent) and "before" (a positive
// ID; 0 when absent).
func pageParams(r *http.Request) (int, int64, *apiError) {
	limit, before := 0, int64(0)
	if s := r.FormValue("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return 0, 0, badData(fmt.Errorf(`"limit" %q is not a number from 1 to 1000`, s))
		}
		limit = n
	}
	if s := r.FormValue("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return 0, 0, badData(fmt.Errorf(`"before" %q is not a positive ID`, s))
		}
		before = n
	}
	return limit, before, nil
}
