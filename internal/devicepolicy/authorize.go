package devicepolicy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/registry"
)

// DefaultAuthorizationTTL is how long a RegistryAuthorizer reuses an answer by default.
const DefaultAuthorizationTTL = 30 * time.Second

// DeviceLookup is what authorization needs of the registry.
type DeviceLookup interface {
	Device(ctx context.Context, id string) (*registry.Device, error)
	Certificate(ctx context.Context, serial string) (*registry.Certificate, error)
}

// ErrDeviceRefused wraps every authorization refusal: the device may not connect. Any other
// error is the registry's, and leaves the question open.
var ErrDeviceRefused = errors.New("device refused")

// RegistryAuthorizer admits active devices with a known, unrevoked certificate. Answers are
// cached for TTL so that a reconnect storm does not become a registry storm; Invalidate drops a
// device's cached answer at once when its status changes. Expired answers are swept (within two
// TTLs of being cached), so that the cache holds the devices that connected recently, not every
// device ever seen: an idle fleet costs it nothing.
//
// It is the gateway's Authorizer, for MQTT connects and HTTPS batch POSTs alike.
type RegistryAuthorizer struct {
	reg DeviceLookup
	ttl time.Duration
	clk clock.Clock

	mu       sync.Mutex
	cache    map[string]authzEntry
	sweeping bool // a sweep is scheduled
}

type authzEntry struct {
	serial string
	err    error
	at     time.Time
}

var _ gateway.Authorizer = (*RegistryAuthorizer)(nil)

// NewRegistryAuthorizer caches answers for ttl (DefaultAuthorizationTTL, 30 s, when zero) on clk
// (the real clock when nil).
func NewRegistryAuthorizer(reg DeviceLookup, ttl time.Duration, clk clock.Clock) *RegistryAuthorizer {
	if ttl <= 0 {
		ttl = DefaultAuthorizationTTL
	}
	if clk == nil {
		clk = clock.Real()
	}
	return &RegistryAuthorizer{reg: reg, ttl: ttl, clk: clk, cache: map[string]authzEntry{}}
}

// Authorize implements gateway.Authorizer: an active device with its own registered, unrevoked
// certificate (none on the development listener) is admitted; a refusal wraps
// ErrDeviceRefused; a registry failure leaves the device to come back later, and is not
// cached.
func (a *RegistryAuthorizer) Authorize(ctx context.Context, device string, cert *x509.Certificate) gateway.Decision {
	err := a.authorize(ctx, device, cert)
	switch {
	case err == nil:
		return gateway.Admit()
	case errors.Is(err, ErrDeviceRefused):
		return gateway.Refuse(err)
	default:
		return gateway.Undecided(err)
	}
}

// authorize answers from the cache, or asks the registry: nil, a refusal wrapping
// ErrDeviceRefused, or the registry's error.
func (a *RegistryAuthorizer) authorize(ctx context.Context, device string, cert *x509.Certificate) error {
	serial := ""
	if cert != nil {
		serial = cert.SerialNumber.Text(16)
	}
	now := a.clk.Now()
	a.mu.Lock()
	e, ok := a.cache[device]
	a.mu.Unlock()
	if ok && e.serial == serial && now.Sub(e.at) < a.ttl {
		return e.err
	}
	err := a.check(ctx, device, serial)
	var transient bool
	if err != nil && !errors.Is(err, ErrDeviceRefused) {
		transient = true // a registry failure is not cached
	}
	if !transient {
		a.mu.Lock()
		a.cache[device] = authzEntry{serial: serial, err: err, at: now}
		if !a.sweeping {
			a.sweeping = true
			a.clk.AfterFunc(a.ttl, a.sweep)
		}
		a.mu.Unlock()
	}
	return err
}

// sweep drops the expired answers and schedules the next sweep while any remain. The answers
// kept move to a new map: a Go map keeps the room of its largest size after deletions, so the
// one filled by a connect storm would otherwise stay that large.
func (a *RegistryAuthorizer) sweep() {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	kept := map[string]authzEntry{}
	for device, e := range a.cache {
		if now.Sub(e.at) < a.ttl {
			kept[device] = e
		}
	}
	a.cache = kept
	if len(kept) == 0 {
		a.sweeping = false
		return
	}
	a.clk.AfterFunc(a.ttl, a.sweep)
}

// cached is the number of answers held.
func (a *RegistryAuthorizer) cached() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}

func (a *RegistryAuthorizer) check(ctx context.Context, device, serial string) error {
	dev, err := a.reg.Device(ctx, device)
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: unknown device %q", ErrDeviceRefused, device)
	}
	if err != nil {
		return fmt.Errorf("look up device %q: %w", device, err)
	}
	if dev.Status != registry.StatusActive {
		return fmt.Errorf("%w: device %q is %s", ErrDeviceRefused, device, dev.Status)
	}
	if serial == "" {
		return nil
	}
	c, err := a.reg.Certificate(ctx, serial)
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: certificate %s is not registered", ErrDeviceRefused, serial)
	}
	if err != nil {
		return fmt.Errorf("look up certificate %s: %w", serial, err)
	}
	if c.DeviceID != device {
		return fmt.Errorf("%w: certificate %s belongs to another device", ErrDeviceRefused, serial)
	}
	if !c.RevokedAt.IsZero() {
		return fmt.Errorf("%w: certificate %s was revoked", ErrDeviceRefused, serial)
	}
	return nil
}

// Invalidate forgets the cached answer for device.
func (a *RegistryAuthorizer) Invalidate(device string) {
	a.mu.Lock()
	delete(a.cache, device)
	a.mu.Unlock()
}
