package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// seedDevices creates n devices dev-000 … with certificates, facts, tags and groups that cycle.
func seedDevices(t *testing.T, r *Registry, n int) {
	t.Helper()
	ctx := context.Background()
	ca := newTestCA(t, fakeClock(r).Now)
	issue := ca.issuer(t)
	for i := range n {
		id := fmt.Sprintf("dev-%03d", i)
		c, err := issue(id)
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, id, c, true))
		require.NoError(t, r.ReportFacts(ctx, id, fmt.Sprintf("model-%d", i%3), fmt.Sprintf("op-%d", i%2), fmt.Sprintf("fw-%d", i%4), time.Time{}, 0))
		require.NoError(t, r.SetTags(ctx, id, map[string]string{"site": fmt.Sprintf("s%d", i%5), "line": fmt.Sprintf("l%d", i%2)}, nil, "o-test", ""))
		if i%3 == 0 {
			require.NoError(t, r.SetGroups(ctx, id, []string{"third"}, nil, "o-test", ""))
		}
		if i%7 == 0 {
			require.NoError(t, r.SetStatus(ctx, id, StatusSuspended, "o-test", ""))
		}
	}
}

func TestListDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		const n = 60
		seedDevices(t, r, n)
		total, err := r.CountDevices(ctx)
		require.NoError(t, err)
		require.Equal(t, n, total)

		match := func(f func(i int) bool) []string {
			var ids []string
			for i := range n {
				if f(i) {
					ids = append(ids, fmt.Sprintf("dev-%03d", i))
				}
			}
			return ids
		}
		for _, tc := range []struct {
			name   string
			filter ListFilter
			want   []string
		}{
			{"all", ListFilter{}, match(func(int) bool { return true })},
			{"status", ListFilter{Status: StatusSuspended}, match(func(i int) bool { return i%7 == 0 })},
			{"model", ListFilter{Model: "model-1"}, match(func(i int) bool { return i%3 == 1 })},
			{"operator", ListFilter{Operator: "op-0"}, match(func(i int) bool { return i%2 == 0 })},
			{"firmware", ListFilter{Firmware: "fw-3"}, match(func(i int) bool { return i%4 == 3 })},
			{"tag", ListFilter{Tag: map[string]string{"site": "s2"}}, match(func(i int) bool { return i%5 == 2 })},
			{"two tags", ListFilter{Tag: map[string]string{"site": "s2", "line": "l1"}}, match(func(i int) bool { return i%5 == 2 && i%2 == 1 })},
			{"group", ListFilter{Group: "third"}, match(func(i int) bool { return i%3 == 0 })},
			{"tag+group", ListFilter{Tag: map[string]string{"site": "s0"}, Group: "third"}, match(func(i int) bool { return i%5 == 0 && i%3 == 0 })},
			{"tags+group+after", ListFilter{Tag: map[string]string{"site": "s0", "line": "l1"}, Group: "third", After: "dev-014"}, match(func(i int) bool { return i > 14 && i%5 == 0 && i%2 == 1 && i%3 == 0 })},
			{"combined", ListFilter{Status: StatusActive, Group: "third", Operator: "op-1"}, match(func(i int) bool { return i%7 != 0 && i%3 == 0 && i%2 == 1 })},
			{"after", ListFilter{After: "dev-049"}, match(func(i int) bool { return i > 49 })},
			{"no match", ListFilter{Tag: map[string]string{"site": "nowhere"}}, nil},
		} {
			for _, limit := range []int{0, 1, 7, n} {
				t.Run(fmt.Sprintf("%s/limit=%d", tc.name, limit), func(t *testing.T) {
					f := tc.filter
					f.Limit = limit
					var got []string
					pages := 0
					for {
						devs, next, err := r.ListDevices(ctx, f)
						require.NoError(t, err)
						pages++
						for _, d := range devs {
							got = append(got, d.ID)
						}
						if next == "" {
							break
						}
						require.Equal(t, devs[len(devs)-1].ID, next)
						f.After = next
						require.Less(t, pages, 100)
					}
					require.Equal(t, tc.want, got)
				})
			}
		}

		devs, _, err := r.ListDevices(ctx, ListFilter{Limit: 1, After: "dev-014"})
		require.NoError(t, err)
		require.Equal(t, Device{
			ID: "dev-015", Status: StatusActive, HardwareModel: "model-0", NetworkOperator: "op-1", FirmwareVersion: "fw-3",
			Tags: map[string]string{"site": "s0", "line": "l1"}, Groups: []string{"third"},
			CreatedAt: testStart, EnrolledAt: testStart, LastSeenAt: testStart,
		}, devs[0])

		_, _, err = r.ListDevices(ctx, ListFilter{Status: "broken"})
		require.ErrorIs(t, err, ErrInvalid)
	})
}

func TestTagsAndGroups(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "dev-1", map[string]string{"a": "1"}, []string{"g1"}, "o-test", "")
		require.NoError(t, err)

		require.NoError(t, r.SetTags(ctx, "dev-1", map[string]string{"a": "2", "b": "x y"}, []string{"missing"}, "o-test", ""))
		require.NoError(t, r.SetGroups(ctx, "dev-1", []string{"g2", "g0", "g1"}, nil, "o-test", ""))
		dev, err := r.Device(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, map[string]string{"a": "2", "b": "x y"}, dev.Tags)
		require.Equal(t, []string{"g0", "g1", "g2"}, dev.Groups)

		require.NoError(t, r.SetTags(ctx, "dev-1", nil, []string{"a"}, "o-test", ""))
		require.NoError(t, r.SetGroups(ctx, "dev-1", nil, []string{"g1", "g9"}, "o-test", ""))
		dev, err = r.Device(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, map[string]string{"b": "x y"}, dev.Tags)
		require.Equal(t, []string{"g0", "g2"}, dev.Groups)

		require.ErrorIs(t, r.SetTags(ctx, "dev-2", map[string]string{"a": "1"}, nil, "o-test", ""), ErrNotFound)
		require.ErrorIs(t, r.SetGroups(ctx, "dev-2", []string{"g"}, nil, "o-test", ""), ErrNotFound)
		require.ErrorIs(t, r.SetTags(ctx, "dev-1", map[string]string{"a": "1"}, []string{"a"}, "o-test", ""), ErrInvalid)
		require.ErrorIs(t, r.SetTags(ctx, "dev-1", map[string]string{"": "1"}, nil, "o-test", ""), ErrInvalid)
		require.ErrorIs(t, r.SetTags(ctx, "dev-1", map[string]string{"k": "\x00"}, nil, "o-test", ""), ErrInvalid)
		require.ErrorIs(t, r.SetGroups(ctx, "dev-1", []string{"a,b"}, nil, "o-test", ""), ErrInvalid)
		require.ErrorIs(t, r.SetGroups(ctx, "dev-1", []string{"g"}, []string{"g"}, "o-test", ""), ErrInvalid)
		_, err = r.Device(ctx, "UPPER")
		require.ErrorIs(t, err, ErrInvalid)
		_, err = r.Device(ctx, "dev-2")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

func TestSetStatusRevokesCertificates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		issue := ca.issuer(t)
		var serials []string
		for _, id := range []string{"dev-1", "dev-1", "dev-2"} {
			c, err := issue(id)
			require.NoError(t, err)
			require.NoError(t, r.AddCertificate(ctx, id, c, true))
			serials = append(serials, SerialHex(c))
		}

		require.NoError(t, r.SetStatus(ctx, "dev-1", StatusSuspended, "o-test", ""))
		revoked, err := r.RevokedCertificates(ctx)
		require.NoError(t, err)
		require.Empty(t, revoked)

		fakeClock(r).Advance(time.Minute)
		require.NoError(t, r.SetStatus(ctx, "dev-1", StatusRevoked, "o-test", "10.1.2.3"))
		dev, err := r.Device(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, StatusRevoked, dev.Status)
		revoked, err = r.RevokedCertificates(ctx)
		require.NoError(t, err)
		require.Len(t, revoked, 2)
		for _, c := range revoked {
			require.Equal(t, "dev-1", c.DeviceID)
			require.Equal(t, testStart.Add(time.Minute), c.RevokedAt)
			require.Contains(t, serials[:2], c.Serial)
		}
		c, err := r.Certificate(ctx, serials[2])
		require.NoError(t, err)
		require.True(t, c.RevokedAt.IsZero())

		entries, err := r.ListAudit(ctx, 1, 0)
		require.NoError(t, err)
		require.Equal(t, "suspended -> revoked; revoked 2 certificate(s)", entries[0].Detail)
		require.Equal(t, "10.1.2.3", entries[0].Remote)

		// Revoked devices get no new certificates until reactivated; reactivating does not
		// un-revoke the old ones.
		c3, err := issue("dev-1")
		require.NoError(t, err)
		require.ErrorIs(t, r.AddCertificate(ctx, "dev-1", c3, false), ErrInvalid)
		require.NoError(t, r.SetStatus(ctx, "dev-1", StatusActive, "o-test", ""))
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c3, false))
		revoked, err = r.RevokedCertificates(ctx)
		require.NoError(t, err)
		require.Len(t, revoked, 2)

		// Same status: no change, no audit entry. Pending is not a target.
		before := auditActions(t, r)
		require.NoError(t, r.SetStatus(ctx, "dev-1", StatusActive, "o-test", ""))
		require.Equal(t, before, auditActions(t, r))
		require.ErrorIs(t, r.SetStatus(ctx, "dev-1", StatusPending, "o-test", ""), ErrInvalid)
		require.ErrorIs(t, r.SetStatus(ctx, "dev-1", "gone", "o-test", ""), ErrInvalid)
		require.ErrorIs(t, r.SetStatus(ctx, "dev-9", StatusActive, "o-test", ""), ErrNotFound)
	})
}

func TestReportFacts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "dev-1", nil, nil, "o-test", "")
		require.NoError(t, err)

		fakeClock(r).Advance(time.Minute)
		require.NoError(t, r.ReportFacts(ctx, "dev-1", "mx-1", "Telekom", "1.0.0", time.Time{}, 0))
		dev, err := r.Device(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, "mx-1", dev.HardwareModel)
		require.Equal(t, "Telekom", dev.NetworkOperator)
		require.Equal(t, "1.0.0", dev.FirmwareVersion)
		require.Equal(t, testStart.Add(time.Minute), dev.LastSeenAt)

		// Empty strings leave fields alone; last seen only moves forward.
		before := auditActions(t, r)
		seen := testStart.Add(time.Hour + 1234*time.Microsecond)
		require.NoError(t, r.ReportFacts(ctx, "dev-1", "", "", "", seen, 0))
		require.Equal(t, before, auditActions(t, r), "last seen alone is not audited")
		require.NoError(t, r.ReportFacts(ctx, "dev-1", "", "", "1.1.0", testStart, 0))
		dev, err = r.Device(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, "mx-1", dev.HardwareModel)
		require.Equal(t, "Telekom", dev.NetworkOperator)
		require.Equal(t, "1.1.0", dev.FirmwareVersion)
		require.Equal(t, seen.Truncate(time.Millisecond), dev.LastSeenAt)

		entries, err := r.ListAudit(ctx, 1, 0)
		require.NoError(t, err)
		require.Equal(t, AuditEntry{
			ID: entries[0].ID, At: testStart.Add(time.Minute), Actor: "device:dev-1", Action: ActionDeviceFacts,
			Target: "dev-1", Detail: `firmware "1.0.0" -> "1.1.0"`,
		}, entries[0])

		require.ErrorIs(t, r.ReportFacts(ctx, "dev-2", "m", "", "", time.Time{}, 0), ErrNotFound)
		require.ErrorIs(t, r.ReportFacts(ctx, "dev-1", "m\n", "", "", time.Time{}, 0), ErrInvalid)
	})
}
