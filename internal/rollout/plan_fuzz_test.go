package rollout

import (
	"fmt"
	"testing"
)

// FuzzParsePlan: a plan file is the operator's to write; parsing never panics, and a plan it
// accepts assigns every device of a small fleet a phase, with nested sizes ending at all.
func FuzzParsePlan(f *testing.F) {
	for _, seed := range []string{
		"phases:\n  - {name: canary, percent: 10, soak: 20s}\n  - {name: complete, percent: 100}\n",
		"phases:\n  - {name: lab, select: {tag: ring=test}, max: 3, soak: 1d}\n  - {name: all, percent: 100}\n",
		"phases:\n  - {name: a, percent: 100, max: 0, soak: 1w}\n",
		"phases: [{name: x, percent: .nan}]",
		"phases:\n  - name: a\n    percent: 1e308\n",
	} {
		f.Add([]byte(seed))
	}
	devs := make([]Device, 50)
	for i := range devs {
		devs[i] = Device{ID: fmt.Sprintf("d-%d", i), Tags: map[string]string{"ring": "test"}}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePlan(data)
		if err != nil {
			return
		}
		sizes := p.Sizes(p.Assign("r", devs))
		for k := 1; k < len(sizes); k++ {
			if sizes[k] < sizes[k-1] {
				t.Fatalf("sizes not nested: %v", sizes)
			}
		}
		if sizes[len(sizes)-1] != len(devs) {
			t.Fatalf("the last phase reaches %d of %d devices", sizes[len(sizes)-1], len(devs))
		}
	})
}
