package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/millwright/millwright/internal/registry"
)

// RoutingRegistry is what the DNS routing routes need of the registry.
type RoutingRegistry interface {
	AddCluster(ctx context.Context, c registry.Cluster, actor, remote string) (registry.Cluster, error)
	Clusters(ctx context.Context) ([]registry.Cluster, error)
	RemoveCluster(ctx context.Context, name, actor, remote string) error
	SetClusterDraining(ctx context.Context, name string, draining bool, actor, remote string) ([]string, error)
	Routes(ctx context.Context) ([]registry.Route, error)
	SetRoute(ctx context.Context, rt registry.Route, actor, remote string) (registry.Route, []string, error)
	ClearRoute(ctx context.Context, scope registry.RouteScope, selector, actor, remote string) ([]string, error)
}

// Routing connects the DNS routing routes to the rest of the server: a change of the zone
// reloads the DNS server, and the devices whose answer changed are told to reconnect.
type Routing interface {
	// Moved is told, after a change, the devices whose DNS answer it changed; they are told
	// to reconnect, at most perSecond a second (0: as fast as the server can).
	Moved(devices []string, perSecond float64)
}

// MaxDrainRate bounds POST /api/v1/clusters/{name}/drain's rate, in devices per second.
const MaxDrainRate = 10_000

// ClusterRequest is the body of POST /api/v1/clusters.
type ClusterRequest struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	Region    string   `json:"region,omitempty"`
	Default   bool     `json:"default,omitempty"`
}

// ClusterList is the answer of GET /api/v1/clusters.
type ClusterList struct {
	Clusters []registry.Cluster `json:"clusters"`
}

// RouteRequest is the body of PUT /api/v1/routes: a device, a group or a tag selection
// ("key=value") sent to a cluster or to one address, for a while (Expires, a Go duration
// such as "10m") or until cleared.
type RouteRequest struct {
	Scope    registry.RouteScope `json:"scope"`
	Selector string              `json:"selector"`
	Cluster  string              `json:"cluster,omitempty"`
	Address  string              `json:"address,omitempty"`
	Expires  string              `json:"expires,omitempty"`
}

// RouteList is the answer of GET /api/v1/routes.
type RouteList struct {
	Routes []registry.Route `json:"routes"`
}

// RouteChange is the answer of PUT and DELETE /api/v1/routes and of a drain: the route (none
// for a removal or a drain) and the devices whose answer changed, which are told to reconnect.
type RouteChange struct {
	Route   *registry.Route `json:"route,omitempty"`
	Devices []string        `json:"devices"`
}

// DrainRequest is the body of POST /api/v1/clusters/{name}/drain.
type DrainRequest struct {
	// Rate is how many devices a second are told to reconnect elsewhere; 1 to MaxDrainRate.
	Rate float64 `json:"rate"`
	// Undo takes the drain mark away: the cluster answers again.
	Undo bool `json:"undo,omitempty"`
}

type dnsAPI struct {
	reg     RoutingRegistry
	routing Routing
	now     func() time.Time
}

func (a *dnsAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if a.reg == nil {
			return nil, &apiError{errUnavailable, errors.New("this server's registry has no DNS routing"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

func routingError(err error) *apiError {
	if errors.Is(err, registry.ErrInUse) {
		return &apiError{errConflict, err, http.StatusConflict}
	}
	return registryError(err)
}

func (a *dnsAPI) moved(devices []string, rate float64) {
	if a.routing != nil {
		a.routing.Moved(devices, rate)
	}
}

func (a *dnsAPI) listClusters(r *http.Request) (any, *apiError) {
	cs, err := a.reg.Clusters(r.Context())
	if err != nil {
		return nil, routingError(err)
	}
	return ClusterList{Clusters: cs}, nil
}

func (a *dnsAPI) addCluster(r *http.Request) (any, *apiError) {
	var body ClusterRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if len(body.Addresses) > registry.MaxClusterAddresses {
		return nil, badData(fmt.Errorf("a cluster has at most %d addresses", registry.MaxClusterAddresses))
	}
	c := registry.Cluster{Name: body.Name, Region: body.Region, Default: body.Default}
	for _, s := range body.Addresses {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, badData(fmt.Errorf("address %q is not an IPv4 or IPv6 address", s))
		}
		c.Addresses = append(c.Addresses, ip)
	}
	c, err := a.reg.AddCluster(r.Context(), c, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, routingError(err)
	}
	a.moved(nil, 0)
	return c, nil
}

func (a *dnsAPI) removeCluster(r *http.Request) (any, *apiError) {
	if err := a.reg.RemoveCluster(r.Context(), r.PathValue("name"), actor(r), r.RemoteAddr); err != nil {
		return nil, routingError(err)
	}
	a.moved(nil, 0)
	return map[string]string{"removed": r.PathValue("name")}, nil
}

func (a *dnsAPI) drain(r *http.Request) (any, *apiError) {
	var body DrainRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if !body.Undo && (body.Rate < 1 || body.Rate > MaxDrainRate) {
		return nil, badData(fmt.Errorf("rate %v: want 1 to %d devices a second", body.Rate, MaxDrainRate))
	}
	devices, err := a.reg.SetClusterDraining(r.Context(), r.PathValue("name"), !body.Undo, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, routingError(err)
	}
	a.moved(devices, body.Rate)
	return RouteChange{Devices: devices}, nil
}

func (a *dnsAPI) listRoutes(r *http.Request) (any, *apiError) {
	rts, err := a.reg.Routes(r.Context())
	if err != nil {
		return nil, routingError(err)
	}
	return RouteList{Routes: rts}, nil
}

func (a *dnsAPI) setRoute(r *http.Request) (any, *apiError) {
	var body RouteRequest
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	rt := registry.Route{Scope: body.Scope, Selector: body.Selector, Cluster: body.Cluster}
	if body.Address != "" {
		ip, err := netip.ParseAddr(body.Address)
		if err != nil {
			return nil, badData(fmt.Errorf("address %q is not an IPv4 or IPv6 address", body.Address))
		}
		rt.Address = ip
	}
	if body.Expires != "" {
		d, err := time.ParseDuration(body.Expires)
		if err != nil || d <= 0 {
			return nil, badData(fmt.Errorf("expires %q: want a positive duration such as 10m", body.Expires))
		}
		now := time.Now
		if a.now != nil {
			now = a.now
		}
		rt.ExpiresAt = now().Add(d)
	}
	rt, devices, err := a.reg.SetRoute(r.Context(), rt, actor(r), r.RemoteAddr)
	if err != nil {
		return nil, routingError(err)
	}
	a.moved(devices, 0)
	return RouteChange{Route: &rt, Devices: devices}, nil
}

func (a *dnsAPI) clearRoute(r *http.Request) (any, *apiError) {
	q := r.URL.Query()
	devices, err := a.reg.ClearRoute(r.Context(), registry.RouteScope(q.Get("scope")), q.Get("selector"), actor(r), r.RemoteAddr)
	if err != nil {
		return nil, routingError(err)
	}
	a.moved(devices, 0)
	return RouteChange{Devices: devices}, nil
}
