package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/monitor"
	"github.com/millwright/millwright/internal/registry"
)

// Monitor is what the liveness routes need of the fleet monitor.
type Monitor interface {
	Liveness() *monitor.Liveness
	// Feedback counts a recorded feedback event in the device's series.
	Feedback(device, kind string)
}

// SessionRegistry is what the connection-history route needs of the registry.
type SessionRegistry interface {
	DeviceSessions(ctx context.Context, device string, limit int, before int64) ([]registry.Session, error)
}

var _ SessionRegistry = (*registry.Registry)(nil)

type monitorAPI struct {
	mon      Monitor
	sessions SessionRegistry
}

// needs answers 503 on a server without a monitor.
func (a *monitorAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if a.mon == nil || a.sessions == nil {
			return nil, &apiError{errUnavailable, errors.New("this server has no fleet monitor"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

func (a *monitorAPI) deviceSessions(r *http.Request) (any, *apiError) {
	limit := 100
	if s := r.FormValue("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > registry.MaxSessionsLimit {
			return nil, badData(fmt.Errorf(`invalid parameter "limit": want 1 to %d`, registry.MaxSessionsLimit))
		}
		limit = n
	}
	var before int64
	if s := r.FormValue("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return nil, badData(errors.New(`invalid parameter "before": want a session ID`))
		}
		before = n
	}
	ss, err := a.sessions.DeviceSessions(r.Context(), r.PathValue("id"), limit, before)
	if err != nil {
		return nil, registryError(err)
	}
	out := apitypes.SessionList{Sessions: make([]apitypes.Session, len(ss))}
	for i, s := range ss {
		out.Sessions[i] = apitypes.Session{ID: s.ID, Device: s.DeviceID, ConnectedAt: s.ConnectedAt, DisconnectedAt: s.DisconnectedAt,
			DurationSeconds: s.Duration().Seconds(), Cause: s.Cause, ReceivedBytes: s.ReceivedBytes, SentBytes: s.SentBytes,
			ReceivedMessages: s.ReceivedMessages, SentMessages: s.SentMessages, TLSVersion: s.TLSVersion, MQTTVersion: s.MQTTVersion,
			Remote: s.Remote, Node: s.Node}
	}
	if len(ss) == limit {
		out.Next = ss[len(ss)-1].ID
	}
	return out, nil
}

// liveness lists the active devices' liveness, filtered by state and by the device facts.
func (a *monitorAPI) liveness(r *http.Request) (any, *apiError) {
	state := monitor.State(r.FormValue("state"))
	if state != "" && state != monitor.Online && state != monitor.Silent && state != monitor.Offline {
		return nil, badData(fmt.Errorf(`invalid parameter "state": %q; use online, silent or offline`, state))
	}
	limit := apitypes.DefaultLivenessLimit
	if s := r.FormValue("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > apitypes.MaxLivenessLimit {
			return nil, badData(fmt.Errorf(`invalid parameter "limit": want 1 to %d`, apitypes.MaxLivenessLimit))
		}
		limit = n
	}
	after := r.FormValue("after")
	firmware, model, operator, group := r.FormValue("firmware"), r.FormValue("model"), r.FormValue("operator"), r.FormValue("group")
	l := a.mon.Liveness()
	out := apitypes.LivenessList{At: l.At, Devices: []apitypes.DeviceLiveness{}}
	if ids := r.URL.Query()["device"]; len(ids) > 0 {
		// Named devices: a page of a registry listing, looked up one by one.
		if len(ids) > limit {
			return nil, badData(fmt.Errorf(`too many "device" parameters: %d, at most the limit %d`, len(ids), limit))
		}
		for _, id := range ids {
			if i, ok := slices.BinarySearchFunc(l.Devices, id, func(d monitor.DeviceLiveness, id string) int { return strings.Compare(d.Device, id) }); ok {
				out.Devices = append(out.Devices, livenessOf(l.Devices[i]))
			}
		}
		return out, nil
	}
	// The devices are sorted by ID: a page starts after the last one of the page before.
	start, _ := slices.BinarySearchFunc(l.Devices, after, func(d monitor.DeviceLiveness, id string) int { return strings.Compare(d.Device, id) })
	for _, d := range l.Devices[start:] {
		if d.Device == after || state != "" && d.State != state || firmware != "" && d.Firmware != firmware || model != "" && d.Model != model ||
			operator != "" && d.Operator != operator || group != "" && !slices.Contains(d.Groups, group) {
			continue
		}
		if len(out.Devices) == limit {
			out.Next = out.Devices[limit-1].Device
			break
		}
		out.Devices = append(out.Devices, livenessOf(d))
	}
	return out, nil
}

func livenessOf(d monitor.DeviceLiveness) apitypes.DeviceLiveness {
	return apitypes.DeviceLiveness{Device: d.Device, State: string(d.State), Connected: d.Connected,
		LastHeard: d.LastHeard, IntervalSeconds: d.Interval.Seconds(), IntervalSource: d.IntervalSource, SilentAfter: d.SilentAfter,
		Firmware: d.Firmware, Model: d.Model, Operator: d.Operator, Groups: d.Groups}
}

// livenessCounts counts the active devices by state for each value of a dimension.
func (a *monitorAPI) livenessCounts(r *http.Request) (any, *apiError) {
	by := r.FormValue("by")
	l := a.mon.Liveness()
	counts, err := l.Count(by)
	if err != nil {
		return nil, badData(fmt.Errorf(`invalid parameter "by": %w`, err))
	}
	out := apitypes.LivenessCounts{At: l.At, By: by, Counts: make([]apitypes.LivenessCount, len(counts))}
	for i, c := range counts {
		out.Counts[i] = apitypes.LivenessCount(c)
	}
	return out, nil
}
