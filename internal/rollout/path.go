package rollout

import (
	"errors"
	"fmt"
	"slices"

	fw "github.com/millwright/millwright/protocol/firmware"
)

// ErrNoPath is returned when no chain of releases leads from a device's version to the
// target.
var ErrNoPath = errors.New("no upgrade path")

// Release is what an upgrade path needs of an archived release for one hardware model: its
// version, and the oldest version that may install it directly ("" for any).
type Release struct {
	Version, MinFrom string
}

// UpgradePath is the releases a device running version running installs, in order, to reach
// target: the fewest hops, each release higher than the one before and allowed over it by
// its min_from; among paths as short, the one whose hops are the highest versions (the
// newest intermediate releases, the best tested on the way). Empty when the device runs the
// target already. A device that woke after years of sleep thus reaches the target through
// the intermediate releases that migrate its data, never straight past them.
func UpgradePath(releases []Release, running, target string) ([]string, error) {
	if _, err := fw.CompareVersions(running, target); err != nil {
		return nil, fmt.Errorf("upgrade path from %q to %q: %w", running, target, err)
	}
	if running == target {
		return nil, nil
	}
	byVersion := map[string]Release{}
	for _, r := range releases {
		if _, err := fw.CompareVersions(r.Version, r.Version); err != nil {
			return nil, fmt.Errorf("upgrade path: release %q: %w", r.Version, err)
		}
		byVersion[r.Version] = r
	}
	if _, ok := byVersion[target]; !ok {
		return nil, fmt.Errorf("upgrade path to %s: %w: the archive has no release %s", target, ErrNoPath, target)
	}
	less := func(a, b string) bool { c, _ := fw.CompareVersions(a, b); return c < 0 }
	// Candidates, highest first: the search meets the highest predecessor first, and so keeps
	// the highest hops among the shortest paths.
	var versions []string
	for v := range byVersion {
		if less(running, v) && !less(target, v) {
			versions = append(versions, v)
		}
	}
	slices.SortFunc(versions, func(a, b string) int { c, _ := fw.CompareVersions(b, a); return c })
	installs := func(from string, r Release) bool {
		return less(from, r.Version) && (r.MinFrom == "" || !less(from, r.MinFrom))
	}
	prev := map[string]string{}
	frontier := []string{running}
	seen := map[string]bool{running: true}
	for len(frontier) > 0 && !seen[target] {
		var next []string
		for _, from := range frontier {
			for _, v := range versions {
				if !seen[v] && installs(from, byVersion[v]) {
					seen[v] = true
					prev[v] = from
					next = append(next, v)
				}
			}
		}
		slices.SortFunc(next, func(a, b string) int { c, _ := fw.CompareVersions(b, a); return c })
		frontier = next
	}
	if !seen[target] {
		return nil, fmt.Errorf("upgrade path from %s to %s: %w: min_from of every release in between is above what the device could reach", running, target, ErrNoPath)
	}
	var path []string
	for v := target; v != running; v = prev[v] {
		path = append(path, v)
	}
	slices.Reverse(path)
	return path, nil
}
