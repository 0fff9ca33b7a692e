package registry

import (
	"testing"
)

// FuzzScheduleInterval: the configuration a device reports applied is the device's to write;
// reading its schedule never panics, and gives a positive interval or none.
func FuzzScheduleInterval(f *testing.F) {
	for _, seed := range []string{
		`{"schedule":{"interval":"30s","jitter":"10s"}}`,
		`{"schedule":{"interval":"6h"}}`,
		`{"schedule":{"interval":"-5s","jitter":"1s"}}`,
		`{"schedule":{"interval":30}}`,
		`{"schedule":null}`,
		`[]`, ``, `{"schedule":{"interval":"9223372036s"}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		if d := scheduleInterval(doc); d < 0 || d > maxScheduleInterval {
			t.Fatalf("interval %v from %q", d, doc)
		}
	})
}
