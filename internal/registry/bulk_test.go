package registry

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAddCertificates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		issue := newTestCA(t, fakeClock(r).Now).issuer(t)
		var certs []DeviceCertificate
		for i := range 1200 { // three chunks
			id := fmt.Sprintf("sim-%d", i)
			c, err := issue(id)
			require.NoError(t, err)
			certs = append(certs, DeviceCertificate{DeviceID: id, Cert: c})
		}
		n, err := r.AddCertificates(ctx, certs, "operator:ci", "192.0.2.7:4410")
		require.NoError(t, err)
		require.Equal(t, 1200, n)
		// Each new certificate has its audit entry, written by the actor from its address.
		audit, err := r.ListAudit(ctx, maxListLimit, 0)
		require.NoError(t, err)
		added := 0
		for _, e := range audit {
			if e.Action == ActionCertificateAdd {
				added++
				require.Equal(t, "operator:ci", e.Actor)
				require.Equal(t, "192.0.2.7:4410", e.Remote)
			}
		}
		require.Equal(t, 1200, added)
		count, err := r.CountDevices(ctx)
		require.NoError(t, err)
		require.Equal(t, 1200, count)
		d, err := r.Device(ctx, "sim-1199")
		require.NoError(t, err)
		require.Equal(t, StatusActive, d.Status)
		got, err := r.DeviceCertificates(ctx, "sim-7")
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.Equal(t, SerialHex(certs[7].Cert), got[0].Serial)

		// Again, with one new certificate for an existing device: only that one is added.
		c, err := issue("sim-7")
		require.NoError(t, err)
		n, err = r.AddCertificates(ctx, append(certs[:10:10], DeviceCertificate{DeviceID: "sim-7", Cert: c}), "operator:ci", "")
		require.NoError(t, err)
		require.Equal(t, 1, n)

		// A serial recorded for another device, a revoked device, a bad ID.
		_, err = r.AddCertificates(ctx, []DeviceCertificate{{DeviceID: "sim-8", Cert: certs[9].Cert}}, "operator:ci", "")
		require.ErrorIs(t, err, ErrExists)
		require.NoError(t, r.SetStatus(ctx, "sim-3", StatusRevoked, "o-test", ""))
		c, err = issue("sim-3")
		require.NoError(t, err)
		_, err = r.AddCertificates(ctx, []DeviceCertificate{{DeviceID: "sim-3", Cert: c}}, "operator:ci", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, err = r.AddCertificates(ctx, []DeviceCertificate{{DeviceID: "Bad_ID", Cert: c}}, "operator:ci", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, err = r.AddCertificates(ctx, []DeviceCertificate{{DeviceID: "sim-9", Cert: c}}, "", "")
		require.ErrorIs(t, err, ErrInvalid, "an actor is required")
	})
}
