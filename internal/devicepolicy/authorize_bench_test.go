package devicepolicy_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/devicepolicy"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
)

// BenchmarkAuthorize measures the connect-time authorization of a device against the SQLite
// registry: "cold" misses the cache every time (two indexed lookups: device, certificate),
// "cached" is the reconnect case within the cache TTL.
func BenchmarkAuthorize(b *testing.B) {
	ctx := context.Background()
	reg, err := registry.Open(ctx, "", b.TempDir(), clock.Real())
	require.NoError(b, err)
	defer reg.Close()
	ca, err := pki.NewCA("bench", time.Now())
	require.NoError(b, err)
	const devices = 1000
	certs := make([]*x509.Certificate, devices)
	for i := range certs {
		pair, err := ca.DeviceKeyPair(fmt.Sprintf("dev-%04d", i), time.Now(), time.Hour)
		require.NoError(b, err)
		certs[i], err = x509.ParseCertificate(pair.Certificate[0])
		require.NoError(b, err)
		require.NoError(b, reg.AddCertificate(ctx, fmt.Sprintf("dev-%04d", i), certs[i], true))
	}
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{{"cold", time.Nanosecond}, {"cached", time.Hour}} {
		b.Run(tc.name, func(b *testing.B) {
			a := devicepolicy.NewRegistryAuthorizer(reg, tc.ttl, nil)
			for i := range devices {
				require.True(b, a.Authorize(ctx, fmt.Sprintf("dev-%04d", i), certs[i]).Admitted())
			}
			ids := make([]string, devices)
			for i := range ids {
				ids[i] = fmt.Sprintf("dev-%04d", i)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if d := a.Authorize(ctx, ids[i%devices], certs[i%devices]); !d.Admitted() {
					b.Fatal(d.Err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
		})
	}
}
