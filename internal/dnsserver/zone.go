package dnsserver

import (
	"net/netip"
	"slices"
	"time"

	"github.com/millwright/millwright/internal/registry"
)

// target is where one route sends a device: a cluster's addresses or one address, until an
// expiry (zero: none).
type target struct {
	addrs   []netip.Addr
	expires time.Time
}

// snapshot is the zone as of one registry revision, immutable once built: queries read it
// without locks. Only routed devices are in it; every other name gets the wildcard.
type snapshot struct {
	serial uint32
	// wildcard: the default cluster's addresses; nil when there is no default (or it drains).
	wildcard []netip.Addr
	// devices: for each device some route selects, its targets in precedence order (its own,
	// its groups' by group name, its tags' by key=value). The first not expired answers;
	// when all expired, the wildcard.
	devices map[string][]target
	// expiry is the earliest route expiry after at, zero for none: the answer of some device
	// changes then. stale: a route in the registry had expired already at at (it is removed
	// at the next maintenance).
	expiry time.Time
	stale  bool
	// at is when the snapshot was made: moved compares its answers then with a newer one's.
	at time.Time
}

// buildSnapshot turns the registry's data into a snapshot.
func buildSnapshot(d *registry.DNSData, at time.Time) *snapshot {
	s := &snapshot{serial: uint32(d.Revision), devices: map[string][]target{}, at: at}
	clusters := map[string][]netip.Addr{}
	for _, c := range d.Clusters {
		if c.Draining {
			continue
		}
		clusters[c.Name] = c.Addresses
		if c.Default {
			s.wildcard = c.Addresses
		}
	}
	// Routes come ordered by scope name (device < group < tag) and selector: the order of
	// precedence.
	rts := slices.Clone(d.Routes)
	rank := map[registry.RouteScope]int{registry.RouteDevice: 0, registry.RouteGroup: 1, registry.RouteTag: 2}
	slices.SortStableFunc(rts, func(a, b registry.Route) int { return rank[a.Scope] - rank[b.Scope] })
	for _, rt := range rts {
		t := target{expires: rt.ExpiresAt}
		if rt.Cluster != "" {
			addrs, ok := clusters[rt.Cluster]
			if !ok {
				continue // a draining cluster: its devices fall through
			}
			t.addrs = addrs
		} else {
			t.addrs = []netip.Addr{rt.Address}
		}
		switch {
		case t.expires.IsZero():
		case !t.expires.After(at):
			s.stale = true
		case s.expiry.IsZero() || t.expires.Before(s.expiry):
			s.expiry = t.expires
		}
		var members []string
		switch rt.Scope {
		case registry.RouteDevice:
			members = []string{rt.Selector}
		case registry.RouteGroup:
			members = d.GroupMembers[rt.Selector]
		case registry.RouteTag:
			members = d.TagMembers[rt.Selector]
		}
		for _, m := range members {
			s.devices[m] = append(s.devices[m], t)
		}
	}
	return s
}

// lookup returns the addresses answering for device at now, and whether the name exists.
func (s *snapshot) lookup(device string, now time.Time) ([]netip.Addr, bool) {
	for _, t := range s.devices[device] {
		if t.expires.IsZero() || now.Before(t.expires) {
			return t.addrs, true
		}
	}
	return s.wildcard, s.wildcard != nil
}

// moved returns the devices with a route in old or new whose answer in new at now differs
// from old's when old was made, and whether the wildcard's answer changed (then every device
// without a route in new moved too).
func moved(old, new *snapshot, now time.Time) (devices []string, wildcard bool) {
	seen := map[string]bool{}
	check := func(d string) {
		if seen[d] {
			return
		}
		seen[d] = true
		a, _ := old.lookup(d, old.at)
		b, _ := new.lookup(d, now)
		if !slices.Equal(a, b) {
			devices = append(devices, d)
		}
	}
	for d := range old.devices {
		check(d)
	}
	for d := range new.devices {
		check(d)
	}
	slices.Sort(devices)
	return devices, !slices.Equal(old.wildcard, new.wildcard)
}

// hasRoute reports whether a route, not expired at now, answers for device.
func (s *snapshot) hasRoute(device string, now time.Time) bool {
	for _, t := range s.devices[device] {
		if t.expires.IsZero() || now.Before(t.expires) {
			return true
		}
	}
	return false
}
