package firmware

import (
	"cmp"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

var versionCases = []struct {
	a, b string
	want int
	bad  bool
}{
	{a: "1.0.0", b: "1.0.0", want: 0},
	{a: "1.0.0", b: "2.0.0", want: -1},
	{a: "2.0.0", b: "2.1.0", want: -1},
	{a: "2.1.0", b: "2.1.1", want: -1},
	{a: "1.10.0", b: "1.9.0", want: 1},
	{a: "10.0.0", b: "9.99.99", want: 1},
	// semver 2.0.0 §11: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta <
	// 1.0.0-beta < 1.0.0-beta.2 < 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0.
	{a: "1.0.0-alpha", b: "1.0.0-alpha.1", want: -1},
	{a: "1.0.0-alpha.1", b: "1.0.0-alpha.beta", want: -1},
	{a: "1.0.0-alpha.beta", b: "1.0.0-beta", want: -1},
	{a: "1.0.0-beta", b: "1.0.0-beta.2", want: -1},
	{a: "1.0.0-beta.2", b: "1.0.0-beta.11", want: -1},
	{a: "1.0.0-beta.11", b: "1.0.0-rc.1", want: -1},
	{a: "1.0.0-rc.1", b: "1.0.0", want: -1},
	{a: "1.0.0", b: "1.0.0-rc.1", want: 1},
	{a: "1.0.0-rc.1", b: "1.0.0-rc.1", want: 0},
	{a: "1.0.0-99999999999999999999999", b: "1.0.0-100000000000000000000000", want: -1},
	{a: "1.0.0-A", b: "1.0.0-a", want: -1},
	{a: "1.0.0-x-y", b: "1.0.0-x", want: 1},
	// Build metadata is ignored.
	{a: "1.0.0+build.1", b: "1.0.0+build.2", want: 0},
	{a: "1.0.0-rc.1+exp.sha.5114f85", b: "1.0.0-rc.1", want: 0},
	{a: "1.2.3", b: "1.2.4+0001", want: -1},
	// Malformed.
	{a: "", b: "1.0.0", bad: true},
	{a: "1.0", b: "1.0.0", bad: true},
	{a: "1.0.0.0", b: "1.0.0", bad: true},
	{a: "v1.0.0", b: "1.0.0", bad: true},
	{a: "01.0.0", b: "1.0.0", bad: true},
	{a: "1.00.0", b: "1.0.0", bad: true},
	{a: "1.0.-1", b: "1.0.0", bad: true},
	{a: "1.0.0-", b: "1.0.0", bad: true},
	{a: "1.0.0-01", b: "1.0.0", bad: true},
	{a: "1.0.0-a..b", b: "1.0.0", bad: true},
	{a: "1.0.0-a_b", b: "1.0.0", bad: true},
	{a: "1.0.0+", b: "1.0.0", bad: true},
	{a: "1.0.0+a+b", b: "1.0.0", bad: true},
	{a: "1.0.0", b: " 1.0.0", bad: true},
	{a: "18446744073709551616.0.0", b: "1.0.0", bad: true},
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range versionCases {
		t.Run(tc.a+"_vs_"+tc.b, func(t *testing.T) {
			got, err := CompareVersions(tc.a, tc.b)
			if tc.bad {
				require.ErrorIs(t, err, ErrMalformed)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			// Antisymmetric.
			back, err := CompareVersions(tc.b, tc.a)
			require.NoError(t, err)
			require.Equal(t, -tc.want, back)
		})
	}
}

func TestVersionPrecedenceChain(t *testing.T) {
	chain := []string{"0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
		"1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"}
	for i := range chain {
		for j := range chain {
			got, err := CompareVersions(chain[i], chain[j])
			require.NoError(t, err)
			require.Equal(t, cmp.Compare(i, j), got, "%s vs %s", chain[i], chain[j])
		}
	}
}

func FuzzCompareVersions(f *testing.F) {
	for _, tc := range versionCases {
		f.Add(tc.a, tc.b)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, errA := CompareVersions(a, b)
		ba, errB := CompareVersions(b, a)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("asymmetric errors: %v / %v", errA, errB)
		}
		if errA != nil {
			if !errors.Is(errA, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", errA)
			}
			return
		}
		if ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("CompareVersions(%q,%q)=%d, reversed %d", a, b, ab, ba)
		}
		if aa, _ := CompareVersions(a, a); aa != 0 {
			t.Fatalf("CompareVersions(%q,%q)=%d", a, a, aa)
		}
	})
}
