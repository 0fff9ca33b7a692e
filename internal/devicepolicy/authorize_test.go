package devicepolicy

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
)

// authzFixture is a registry on SQLite and a CA on a fake clock; certOf issues a device
// certificate from the CA.
func authzFixture(t *testing.T) (*clock.Fake, *registry.Registry, func(id string) *x509.Certificate) {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	reg, err := registry.Open(context.Background(), "", t.TempDir(), clk)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Close() })
	ca, err := pki.NewCA("test", clk.Now())
	require.NoError(t, err)
	return clk, reg, func(id string) *x509.Certificate {
		pair, err := ca.DeviceKeyPair(id, clk.Now(), 24*time.Hour)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(pair.Certificate[0])
		require.NoError(t, err)
		return c
	}
}

// TestRegistryAuthorizerCache: answers come from the registry, are cached for the TTL (a status
// change shows only after it, or at once with Invalidate), refusals are cached too, and
// expired answers are swept so that the cache does not keep every device ever seen.
func TestRegistryAuthorizerCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk, reg, certOf := authzFixture(t)
	a1, a2 := certOf("dev-1"), certOf("dev-2")
	require.NoError(t, reg.AddCertificate(ctx, "dev-1", a1, true))
	require.NoError(t, reg.AddCertificate(ctx, "dev-2", a2, true))
	const ttl = 30 * time.Second
	a := NewRegistryAuthorizer(reg, ttl, clk)

	require.ErrorIs(t, a.authorize(ctx, "dev-1", a2), ErrDeviceRefused, "another device's certificate")
	require.NoError(t, a.authorize(ctx, "dev-1", a1), "an answer for another certificate is not reused")
	require.NoError(t, a.authorize(ctx, "dev-2", a2))
	require.ErrorIs(t, a.authorize(ctx, "dev-3", certOf("dev-3")), ErrDeviceRefused, "unknown device")
	require.Equal(t, 3, a.cached())
	require.Equal(t, 1, clk.Pending(), "one sweep scheduled, however many answers")

	require.NoError(t, reg.SetStatus(ctx, "dev-1", registry.StatusSuspended, "test", ""))
	require.NoError(t, reg.SetStatus(ctx, "dev-2", registry.StatusSuspended, "test", ""))
	clk.Advance(ttl / 2)
	require.NoError(t, a.authorize(ctx, "dev-1", a1), "cached within the TTL")
	a.Invalidate("dev-2")
	require.ErrorIs(t, a.authorize(ctx, "dev-2", a2), ErrDeviceRefused, "re-checked at once after Invalidate")

	// First sweep, one TTL after the first answers: dev-1's and dev-3's have expired; dev-2's
	// refusal, cached at TTL/2, stays and is still what dev-2 gets.
	clk.Advance(ttl / 2)
	require.Equal(t, 1, a.cached())
	require.NoError(t, reg.SetStatus(ctx, "dev-2", registry.StatusActive, "test", ""))
	require.ErrorIs(t, a.authorize(ctx, "dev-2", a2), ErrDeviceRefused, "cached refusal")
	require.ErrorIs(t, a.authorize(ctx, "dev-1", a1), ErrDeviceRefused, "re-checked after the TTL: suspended")
	require.Equal(t, 2, a.cached())

	// Second sweep: both answers have expired; none is left and no sweep is scheduled.
	clk.Advance(ttl)
	require.Zero(t, a.cached())
	require.Zero(t, clk.Pending())

	// A new answer schedules sweeping again.
	require.NoError(t, a.authorize(ctx, "dev-2", a2), "re-checked after the TTL: active again")
	require.Equal(t, 1, clk.Pending())
	clk.Advance(ttl)
	require.Zero(t, a.cached())
	require.Zero(t, clk.Pending())
}

// failingLookup is a registry that cannot answer.
type failingLookup struct{ calls int }

func (f *failingLookup) Device(context.Context, string) (*registry.Device, error) {
	f.calls++
	return nil, errors.New("registry: connection refused")
}

func (f *failingLookup) Certificate(context.Context, string) (*registry.Certificate, error) {
	return nil, errors.New("registry: connection refused")
}

// TestAuthorizeDecision: the gateway is told admitted, refused (with why) or unavailable — a
// registry that cannot answer leaves the device to come back later, and that is not cached.
func TestAuthorizeDecision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk, reg, certOf := authzFixture(t)
	cert := certOf("dev-1")
	require.NoError(t, reg.AddCertificate(ctx, "dev-1", cert, true))
	a := NewRegistryAuthorizer(reg, 0, clk)

	for _, tc := range []struct {
		name   string
		device string
		cert   *x509.Certificate
		want   gateway.Verdict
	}{
		{"its own certificate", "dev-1", cert, gateway.Admitted},
		{"development listener: no certificate", "dev-1", nil, gateway.Admitted},
		{"another device's certificate", "dev-2", cert, gateway.Refused},
		{"unknown device", "dev-3", nil, gateway.Refused},
	} {
		d := a.Authorize(ctx, tc.device, tc.cert)
		require.Equal(t, tc.want, d.Verdict, tc.name)
		if tc.want == gateway.Admitted {
			require.NoError(t, d.Err, tc.name)
			continue
		}
		require.ErrorIs(t, d.Err, ErrDeviceRefused, tc.name)
	}

	down := &failingLookup{}
	b := NewRegistryAuthorizer(down, time.Hour, clk)
	for range 2 {
		d := b.Authorize(ctx, "dev-1", cert)
		require.Equal(t, gateway.Unavailable, d.Verdict)
		require.NotErrorIs(t, d.Err, ErrDeviceRefused)
	}
	require.Equal(t, 2, down.calls, "a registry failure is not cached")
	require.Zero(t, b.cached())
}
