package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Audit actions of DNS routing.
const (
	ActionClusterAdd    = "cluster.add"
	ActionClusterRemove = "cluster.remove"
	ActionClusterDrain  = "cluster.drain"
	ActionRouteSet      = "route.set"
	ActionRouteClear    = "route.clear"
	ActionRouteExpire   = "route.expire"
)

// HistoryRoute is the update_history event of a device whose DNS answer was changed by a
// route (set, cleared or expired) of its own, of one of its groups or of one of its tags.
const HistoryRoute = "route"

// MaxClusterAddresses bounds the addresses of one cluster: each is a record in every answer
// that names the cluster, and a UDP answer should fit 512 bytes.
const MaxClusterAddresses = 16

// Cluster is a set of gateway addresses devices can be sent to by DNS.
type Cluster struct {
	Name string `json:"name"`
	// Addresses are the cluster's IPv4 (A) and IPv6 (AAAA) addresses.
	Addresses []netip.Addr `json:"addresses"`
	Region    string       `json:"region,omitempty"`
	// Default: this cluster answers the zone's wildcard, i.e. every device without a route.
	// At most one cluster is the default.
	Default bool `json:"default"`
	// Draining: the cluster answers no name any more; its devices fall through to the next
	// route that applies to them, or to the default cluster.
	Draining  bool      `json:"draining,omitempty"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// RouteScope is what a route selects.
type RouteScope string

// The scopes of routes, in precedence order: a device's own route beats its groups' routes,
// which beat its tags' routes, which beat the default cluster.
const (
	RouteDevice RouteScope = "device"
	RouteGroup  RouteScope = "group"
	RouteTag    RouteScope = "tag"
)

// Route sends the devices its Scope and Selector select to a Cluster or to one literal
// Address (exactly one of the two is set).
type Route struct {
	Scope RouteScope `json:"scope"`
	// Selector is a device ID, a group name or a tag "key=value".
	Selector string     `json:"selector"`
	Cluster  string     `json:"cluster,omitempty"`
	Address  netip.Addr `json:"address,omitzero"`
	// ExpiresAt, when not zero, is when the route ends by itself (a debug redirect).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	SetBy     string    `json:"set_by"`
	SetAt     time.Time `json:"set_at"`
}

// Target says where the route sends devices, for people: "cluster NAME" or "address IP".
func (rt Route) Target() string {
	if rt.Cluster != "" {
		return "cluster " + rt.Cluster
	}
	return "address " + rt.Address.String()
}

// Expired reports whether the route has ended at now.
func (rt Route) Expired(now time.Time) bool {
	return !rt.ExpiresAt.IsZero() && !now.Before(rt.ExpiresAt)
}

// DNSData is everything the DNS server answers from, read in one transaction: the clusters,
// the routes, and the members of the groups and tag selections that have routes. Devices
// without a route of any kind are not in it: the wildcard answers for them, so its size
// follows the number of routed devices, not the fleet's.
type DNSData struct {
	// Revision grows with every change; it is the zone's SOA serial.
	Revision int64
	Clusters []Cluster
	Routes   []Route
	// GroupMembers maps a routed group to its devices; TagMembers a routed "key=value" to
	// the devices carrying that tag.
	GroupMembers map[string][]string
	TagMembers   map[string][]string
}

func validateScope(s RouteScope, selector string) error {
	switch s {
	case RouteDevice:
		return validateDeviceID(selector)
	case RouteGroup:
		return validateName("group", selector)
	case RouteTag:
		k, v, ok := strings.Cut(selector, "=")
		if !ok {
			return fmt.Errorf("%w: tag selection %q: want key=value", ErrInvalid, selector)
		}
		if err := validateName("tag key", k); err != nil {
			return err
		}
		return validateText("tag value", v, MaxValueLen)
	}
	return fmt.Errorf("%w: route scope %q: want device, group or tag", ErrInvalid, s)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func splitAddrs(s string) ([]netip.Addr, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	for f := range strings.SplitSeq(s, ",") {
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// validAddr checks an address a route or cluster may answer with: IPv4 or IPv6, no zone,
// not unspecified; IPv4-mapped IPv6 addresses are taken as the IPv4 address.
func validAddr(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
		return a, fmt.Errorf("%w: address %q is not a usable IPv4 or IPv6 address", ErrInvalid, a)
	}
	return a, nil
}

// bumpDNSRevision marks a change of what the zone answers.
func bumpDNSRevision(ctx context.Context, q querier) error {
	_, err := q.ExecContext(ctx, `UPDATE dns_revision SET revision = revision + 1 WHERE id = 1`)
	return err
}

// AddCluster records a new cluster, audited as cluster.add. A default cluster takes the
// default from whichever cluster had it.
func (r *Registry) AddCluster(ctx context.Context, c Cluster, actor, remote string) (Cluster, error) {
	if err := validateName("cluster", c.Name); err != nil {
		return Cluster{}, fmt.Errorf("add cluster: %w", err)
	}
	if err := validateText("region", c.Region, MaxNameLen); err != nil {
		return Cluster{}, fmt.Errorf("add cluster %s: %w", c.Name, err)
	}
	if len(c.Addresses) == 0 || len(c.Addresses) > MaxClusterAddresses {
		return Cluster{}, fmt.Errorf("add cluster %s: %w: a cluster has 1 to %d addresses, not %d", c.Name, ErrInvalid, MaxClusterAddresses, len(c.Addresses))
	}
	for i, a := range c.Addresses {
		v, err := validAddr(a)
		if err != nil {
			return Cluster{}, fmt.Errorf("add cluster %s: %w", c.Name, err)
		}
		c.Addresses[i] = v
	}
	slices.SortFunc(c.Addresses, func(a, b netip.Addr) int { return a.Compare(b) })
	c.Addresses = slices.Compact(c.Addresses)
	c.CreatedBy, c.Draining = actor, false
	err := r.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM dns_clusters WHERE name = $1`, c.Name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("cluster %s: %w", c.Name, ErrExists)
		}
		c.CreatedAt = r.now()
		if c.Default {
			if _, err := tx.ExecContext(ctx, `UPDATE dns_clusters SET is_default = 0 WHERE is_default = 1`); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dns_clusters (name, addresses, region, is_default, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, c.Name, joinAddrs(c.Addresses), c.Region, boolInt(c.Default), actor, toMS(c.CreatedAt)); err != nil {
			return err
		}
		if err := bumpDNSRevision(ctx, tx); err != nil {
			return err
		}
		detail := joinAddrs(c.Addresses)
		if c.Region != "" {
			detail += ", region " + c.Region
		}
		if c.Default {
			detail += ", default"
		}
		return r.audit(ctx, tx, c.CreatedAt, actor, ActionClusterAdd, c.Name, detail, remote)
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("add cluster: %w", err)
	}
	return c, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func scanCluster(s scanner) (Cluster, error) {
	var (
		c              Cluster
		addrs          string
		def, drain, at int64
	)
	if err := s.Scan(&c.Name, &addrs, &c.Region, &def, &drain, &c.CreatedBy, &at); err != nil {
		return c, err
	}
	var err error
	c.Addresses, err = splitAddrs(addrs)
	c.Default, c.Draining, c.CreatedAt = def == 1, drain == 1, fromMS(at)
	return c, err
}

const clusterColumns = `name, addresses, region, is_default, draining, created_by, created_at`

// Clusters returns every cluster, by name.
func (r *Registry) Clusters(ctx context.Context) ([]Cluster, error) {
	out, err := clusters(ctx, r.db)
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	return out, nil
}

func clusters(ctx context.Context, q querier) ([]Cluster, error) {
	return queryAll(ctx, q, scanCluster, `SELECT `+clusterColumns+` FROM dns_clusters ORDER BY name`)
}

// RemoveCluster removes a cluster no route refers to, audited as cluster.remove; one with
// routes is refused with ErrInUse.
func (r *Registry) RemoveCluster(ctx context.Context, name, actor, remote string) error {
	err := r.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM dns_routes WHERE cluster = $1`, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("cluster %s: %w: %d routes send devices to it; move them first", name, ErrInUse, n)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM dns_clusters WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return fmt.Errorf("cluster %s: %w", name, ErrNotFound)
		}
		if err := bumpDNSRevision(ctx, tx); err != nil {
			return err
		}
		return r.audit(ctx, tx, r.now(), actor, ActionClusterRemove, name, "", remote)
	})
	if err != nil {
		return fmt.Errorf("remove cluster: %w", err)
	}
	return nil
}

// SetClusterDraining marks a cluster draining (it answers no name any more, its devices fall
// through to their next route or the default) or takes the mark away; audited as
// cluster.drain. It returns the devices that routes send to the cluster, whose answer
// changes; devices on a draining default cluster have no answer left but their own routes.
func (r *Registry) SetClusterDraining(ctx context.Context, name string, draining bool, actor, remote string) ([]string, error) {
	var moved []string
	err := r.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE dns_clusters SET draining = $2 WHERE name = $1`, name, boolInt(draining))
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return fmt.Errorf("cluster %s: %w", name, ErrNotFound)
		}
		rows, err := tx.QueryContext(ctx, `SELECT scope, selector FROM dns_routes WHERE cluster = $1`, name)
		if err != nil {
			return err
		}
		var sel []Route
		err = eachRow(rows, func() error {
			var rt Route
			err := rows.Scan(&rt.Scope, &rt.Selector)
			sel = append(sel, rt)
			return err
		})
		if err != nil {
			return err
		}
		for _, rt := range sel {
			ds, err := selected(ctx, tx, rt.Scope, rt.Selector)
			if err != nil {
				return err
			}
			moved = append(moved, ds...)
		}
		slices.Sort(moved)
		moved = slices.Compact(moved)
		if err := bumpDNSRevision(ctx, tx); err != nil {
			return err
		}
		return r.audit(ctx, tx, r.now(), actor, ActionClusterDrain, name, fmt.Sprintf("draining %v", draining), remote)
	})
	if err != nil {
		return nil, fmt.Errorf("drain cluster: %w", err)
	}
	return moved, nil
}

// selected returns the IDs of the existing devices a scope and selector select.
func selected(ctx context.Context, q querier, scope RouteScope, selector string) ([]string, error) {
	var (
		rows *sql.Rows
		err  error
	)
	switch scope {
	case RouteDevice:
		rows, err = q.QueryContext(ctx, `SELECT id FROM devices WHERE id = $1`, selector)
	case RouteGroup:
		rows, err = q.QueryContext(ctx, `SELECT device_id FROM device_groups WHERE name = $1 ORDER BY device_id`, selector)
	case RouteTag:
		k, v, _ := strings.Cut(selector, "=")
		rows, err = q.QueryContext(ctx, `SELECT device_id FROM device_tags WHERE key = $1 AND value = $2 ORDER BY device_id`, k, v)
	default:
		return nil, fmt.Errorf("%w: route scope %q", ErrInvalid, scope)
	}
	if err != nil {
		return nil, err
	}
	out := []string{}
	err = eachRow(rows, func() error {
		var id string
		err := rows.Scan(&id)
		out = append(out, id)
		return err
	})
	return out, err
}

const routeColumns = `scope, selector, cluster, address, expires_at, set_by, set_at`

func scanRoute(s scanner) (Route, error) {
	var (
		rt      Route
		addr    string
		exp, at int64
	)
	if err := s.Scan(&rt.Scope, &rt.Selector, &rt.Cluster, &addr, &exp, &rt.SetBy, &at); err != nil {
		return rt, err
	}
	if addr != "" {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return rt, fmt.Errorf("route %s %s: stored address %q: %w", rt.Scope, rt.Selector, addr, err)
		}
		rt.Address = a
	}
	rt.ExpiresAt, rt.SetAt = fromMS(exp), fromMS(at)
	return rt, nil
}

// Routes returns every route, by scope and selector (expired ones too, until ExpireRoutes
// removes them).
func (r *Registry) Routes(ctx context.Context) ([]Route, error) {
	out, err := routes(ctx, r.db)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return out, nil
}

func routes(ctx context.Context, q querier) ([]Route, error) {
	return queryAll(ctx, q, scanRoute, `SELECT `+routeColumns+` FROM dns_routes ORDER BY scope, selector`)
}

// SetRoute sends the devices rt selects to rt.Cluster (which must exist: an unknown one is
// refused with ErrNotFound naming it) or to rt.Address. It replaces the route of the same
// scope and selector, is audited as route.set and is written into the update history of
// every device it selects; it returns those devices, whose connections should move.
// rt.SetBy is actor and rt.SetAt now; a device route needs the device to exist.
func (r *Registry) SetRoute(ctx context.Context, rt Route, actor, remote string) (Route, []string, error) {
	if err := validateScope(rt.Scope, rt.Selector); err != nil {
		return Route{}, nil, fmt.Errorf("set route: %w", err)
	}
	switch {
	case rt.Cluster != "" && rt.Address.IsValid():
		return Route{}, nil, fmt.Errorf("set route: %w: a route goes to a cluster or to an address, not both", ErrInvalid)
	case rt.Cluster == "" && !rt.Address.IsValid():
		return Route{}, nil, fmt.Errorf("set route: %w: a route needs a cluster or an address", ErrInvalid)
	case rt.Address.IsValid():
		a, err := validAddr(rt.Address)
		if err != nil {
			return Route{}, nil, fmt.Errorf("set route: %w", err)
		}
		rt.Address = a
	}
	rt.SetBy = actor
	var devices []string
	err := r.write(ctx, func(tx *sql.Tx) error {
		now := r.now()
		rt.SetAt = now
		if !rt.ExpiresAt.IsZero() {
			rt.ExpiresAt = rt.ExpiresAt.UTC().Truncate(time.Millisecond)
			if !rt.ExpiresAt.After(now) {
				return fmt.Errorf("%w: expiry %s is not in the future", ErrInvalid, rt.ExpiresAt.Format(time.RFC3339))
			}
		}
		if rt.Cluster != "" {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM dns_clusters WHERE name = $1`, rt.Cluster).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("cluster %q: %w", rt.Cluster, ErrNotFound)
			}
		}
		var err error
		if devices, err = selected(ctx, tx, rt.Scope, rt.Selector); err != nil {
			return err
		}
		if rt.Scope == RouteDevice && len(devices) == 0 {
			return fmt.Errorf("device %s: %w", rt.Selector, ErrNotFound)
		}
		var pc, pa string
		err = tx.QueryRowContext(ctx, `SELECT cluster, address FROM dns_routes WHERE scope = $1 AND selector = $2`, rt.Scope, rt.Selector).Scan(&pc, &pa)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		}
		addr := ""
		if rt.Address.IsValid() {
			addr = rt.Address.String()
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dns_routes (`+routeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (scope, selector) DO UPDATE SET cluster = excluded.cluster, address = excluded.address,
			expires_at = excluded.expires_at, set_by = excluded.set_by, set_at = excluded.set_at`,
			rt.Scope, rt.Selector, rt.Cluster, addr, toMS(rt.ExpiresAt), actor, toMS(now)); err != nil {
			return err
		}
		detail := "-> " + rt.Target()
		switch {
		case pc != "":
			detail += " (was cluster " + pc + ")"
		case pa != "":
			detail += " (was address " + pa + ")"
		}
		if !rt.ExpiresAt.IsZero() {
			detail += " until " + rt.ExpiresAt.Format(time.RFC3339)
		}
		return r.recordRouteChange(ctx, tx, now, actor, ActionRouteSet, rt.Scope, rt.Selector, detail, remote, devices)
	})
	if err != nil {
		return Route{}, nil, fmt.Errorf("set route: %w", err)
	}
	return rt, devices, nil
}

// recordRouteChange bumps the zone's revision and writes the audit entry and the devices'
// history entries of a route change.
func (r *Registry) recordRouteChange(ctx context.Context, tx *sql.Tx, now time.Time, actor, action string, scope RouteScope, selector, detail, remote string, devices []string) error {
	if err := bumpDNSRevision(ctx, tx); err != nil {
		return err
	}
	target := string(scope) + ":" + selector
	if err := r.audit(ctx, tx, now, actor, action, target, detail, remote); err != nil {
		return err
	}
	for _, d := range devices {
		if err := insertUpdateEvent(ctx, tx, UpdateEvent{Device: d, At: now, Event: HistoryRoute,
			Detail: action + " " + target + " " + detail + " by " + actor}); err != nil {
			return err
		}
	}
	return nil
}

// ClearRoute removes the route of scope and selector, audited as route.clear and written into
// the history of the devices it selected, which it returns. A missing route is ErrNotFound.
func (r *Registry) ClearRoute(ctx context.Context, scope RouteScope, selector, actor, remote string) ([]string, error) {
	if err := validateScope(scope, selector); err != nil {
		return nil, fmt.Errorf("clear route: %w", err)
	}
	var devices []string
	err := r.write(ctx, func(tx *sql.Tx) error {
		rt, err := scanRoute(tx.QueryRowContext(ctx, `SELECT `+routeColumns+` FROM dns_routes WHERE scope = $1 AND selector = $2`, scope, selector))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("route of %s %s: %w", scope, selector, ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM dns_routes WHERE scope = $1 AND selector = $2`, scope, selector); err != nil {
			return err
		}
		if devices, err = selected(ctx, tx, scope, selector); err != nil {
			return err
		}
		return r.recordRouteChange(ctx, tx, r.now(), actor, ActionRouteClear, scope, selector, "(was "+rt.Target()+")", remote, devices)
	})
	if err != nil {
		return nil, fmt.Errorf("clear route: %w", err)
	}
	return devices, nil
}

// ExpireRoutes removes the routes whose expiry has passed, each audited as route.expire by
// "system" and written into its devices' history. It returns the devices whose answer changed.
func (r *Registry) ExpireRoutes(ctx context.Context) ([]string, error) {
	var devices []string
	err := r.write(ctx, func(tx *sql.Tx) error {
		now := r.now()
		rows, err := tx.QueryContext(ctx, `SELECT `+routeColumns+` FROM dns_routes WHERE expires_at <> 0 AND expires_at <= $1`, toMS(now))
		if err != nil {
			return err
		}
		var expired []Route
		err = eachRow(rows, func() error {
			rt, err := scanRoute(rows)
			expired = append(expired, rt)
			return err
		})
		if err != nil {
			return err
		}
		for _, rt := range expired {
			if _, err := tx.ExecContext(ctx, `DELETE FROM dns_routes WHERE scope = $1 AND selector = $2`, rt.Scope, rt.Selector); err != nil {
				return err
			}
			ds, err := selected(ctx, tx, rt.Scope, rt.Selector)
			if err != nil {
				return err
			}
			detail := "(was " + rt.Target() + " until " + rt.ExpiresAt.Format(time.RFC3339) + ")"
			if err := r.recordRouteChange(ctx, tx, now, systemActor, ActionRouteExpire, rt.Scope, rt.Selector, detail, "", ds); err != nil {
				return err
			}
			devices = append(devices, ds...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire routes: %w", err)
	}
	return devices, nil
}

// DNSRevision is the revision of what the zone answers: it grows with every change of a
// cluster or route, and of the groups and tags of a device that a route selects.
func (r *Registry) DNSRevision(ctx context.Context) (int64, error) {
	var rev int64
	if err := r.db.QueryRowContext(ctx, `SELECT revision FROM dns_revision WHERE id = 1`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("read dns revision: %w", err)
	}
	return rev, nil
}

// DNSData reads everything the zone is answered from, consistently.
func (r *Registry) DNSData(ctx context.Context) (*DNSData, error) {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if r.d == postgresDialect {
		if _, err := tx.ExecContext(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`); err != nil {
			return nil, fmt.Errorf("read dns data: %w", err)
		}
	}
	d := &DNSData{GroupMembers: map[string][]string{}, TagMembers: map[string][]string{}}
	if err := tx.QueryRowContext(ctx, `SELECT revision FROM dns_revision WHERE id = 1`).Scan(&d.Revision); err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	if d.Clusters, err = clusters(ctx, tx); err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	if d.Routes, err = routes(ctx, tx); err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT g.name, g.device_id FROM device_groups g
		JOIN dns_routes r ON r.scope = 'group' AND r.selector = g.name ORDER BY g.name, g.device_id`)
	if err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	err = eachRow(rows, func() error {
		var g, id string
		err := rows.Scan(&g, &id)
		d.GroupMembers[g] = append(d.GroupMembers[g], id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT t.key, t.value, t.device_id FROM device_tags t
		JOIN dns_routes r ON r.scope = 'tag' AND r.selector = t.key || '=' || t.value ORDER BY t.key, t.value, t.device_id`)
	if err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	err = eachRow(rows, func() error {
		var k, v, id string
		err := rows.Scan(&k, &v, &id)
		d.TagMembers[k+"="+v] = append(d.TagMembers[k+"="+v], id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read dns data: %w", err)
	}
	return d, nil
}

// bumpIfGroupsRouted bumps the DNS revision when a route selects one of groups, whose
// membership changed.
func bumpIfGroupsRouted(ctx context.Context, q querier, groups []string) error {
	for _, g := range groups {
		var n int
		if err := q.QueryRowContext(ctx, `SELECT count(*) FROM dns_routes WHERE scope = 'group' AND selector = $1`, g).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return bumpDNSRevision(ctx, q)
		}
	}
	return nil
}

// bumpIfTagsRouted bumps the DNS revision when a route selects a value of one of the tag
// keys, whose value on a device changed.
func bumpIfTagsRouted(ctx context.Context, q querier, keys []string) error {
	for _, k := range keys {
		var n int
		if err := q.QueryRowContext(ctx, `SELECT count(*) FROM dns_routes WHERE scope = 'tag' AND selector >= $1 AND selector < $2`,
			k+"=", k+">").Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return bumpDNSRevision(ctx, q)
		}
	}
	return nil
}
