package web

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever a login form's next field holds, the browser is sent to a path on
// this site — never to another host, whatever a browser makes of slashes and backslashes.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/devices?q=a", "//evil.example", "/\\evil.example", "https://evil.example/", "javascript:alert(1)", "", "devices", "/%2F%2Fevil", "\t//evil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") {
			t.Fatalf("safeNext(%q) = %q leaves the site", next, got)
		}
		u, err := url.Parse(got)
		if err != nil || u.Host != "" || u.Scheme != "" {
			t.Fatalf("safeNext(%q) = %q names a host", next, got)
		}
		if strings.ContainsAny(got, "\t\r\n") {
			t.Fatalf("safeNext(%q) = %q holds control characters", next, got)
		}
	})
}
