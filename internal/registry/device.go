package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Status is a device's lifecycle state.
type Status string

// Device states. Only active devices may connect; the gateway enforces that.
const (
	// StatusPending: registered by an operator ([Registry.CreateDevice]) but not enrolled yet.
	StatusPending Status = "pending"
	// StatusActive: enrolled and allowed to connect.
	StatusActive Status = "active"
	// StatusSuspended: temporarily refused; its certificates stay valid.
	StatusSuspended Status = "suspended"
	// StatusRevoked: refused for good; its certificates are revoked (they appear on the CRL).
	StatusRevoked Status = "revoked"
)

// Device is one registered device.
type Device struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
	// HardwareModel, NetworkOperator and FirmwareVersion are what the device last reported
	// (the model also at enrollment); "" when never reported.
	HardwareModel   string `json:"hardware_model"`
	NetworkOperator string `json:"network_operator"`
	FirmwareVersion string `json:"firmware_version"`
	// Tags are operator-assigned key/value labels; never nil.
	Tags map[string]string `json:"tags"`
	// Groups are the names of the groups the device belongs to, sorted; never nil.
	Groups    []string  `json:"groups"`
	CreatedAt time.Time `json:"created_at"`
	// EnrolledAt and LastSeenAt are zero when the device has never enrolled or connected.
	EnrolledAt time.Time `json:"enrolled_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
}

// deviceColumns is the SELECT list that scanDevice reads, for a device row aliased d.
func (d *dialect) deviceColumns() string {
	return `SELECT d.id, d.status, d.hardware_model, d.network_operator, d.firmware_version,
		d.created_at, d.enrolled_at, d.last_seen_at, ` + d.tagsJSON + `, ` + d.groupsJSON
}

// deviceSelect is deviceColumns with its FROM clause, one row per device.
func (d *dialect) deviceSelect() string { return d.deviceColumns() + ` FROM devices d` }

type scanner interface{ Scan(dest ...any) error }

func scanDevice(s scanner) (Device, error) {
	var (
		dev                     Device
		created, enrolled, seen int64
		tagsJSON, groupsJSON    string
	)
	if err := s.Scan(&dev.ID, &dev.Status, &dev.HardwareModel, &dev.NetworkOperator, &dev.FirmwareVersion,
		&created, &enrolled, &seen, &tagsJSON, &groupsJSON); err != nil {
		return Device{}, err
	}
	dev.CreatedAt, dev.EnrolledAt, dev.LastSeenAt = fromMS(created), fromMS(enrolled), fromMS(seen)
	dev.Tags = map[string]string{}
	if err := json.Unmarshal([]byte(tagsJSON), &dev.Tags); err != nil {
		return Device{}, fmt.Errorf("decode tags of %s: %w", dev.ID, err)
	}
	dev.Groups = []string{}
	if err := json.Unmarshal([]byte(groupsJSON), &dev.Groups); err != nil {
		return Device{}, fmt.Errorf("decode groups of %s: %w", dev.ID, err)
	}
	slices.Sort(dev.Groups)
	return dev, nil
}

func (r *Registry) device(ctx context.Context, tx *sql.Tx, id string) (*Device, error) {
	var row *sql.Row
	if tx != nil {
		row = tx.QueryRowContext(ctx, r.d.deviceSelect()+` WHERE d.id = $1`, id)
	} else {
		row = r.deviceByID.QueryRowContext(ctx, id)
	}
	dev, err := scanDevice(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read device %s: %w", id, err)
	}
	return &dev, nil
}

// Device returns the device with the given ID, with its tags and groups, in one query. This is
// the connect-time authorisation path.
func (r *Registry) Device(ctx context.Context, id string) (*Device, error) {
	if err := validateDeviceID(id); err != nil {
		return nil, fmt.Errorf("read device: %w", err)
	}
	return r.device(ctx, nil, id)
}

// CreateDevice registers a device before it enrolls, with status pending, so that it can be
// tagged and grouped in advance; an enrollment token whose DeviceID names it activates it.
func (r *Registry) CreateDevice(ctx context.Context, id string, tags map[string]string, groups []string, actor, remote string) (*Device, error) {
	if err := validateDeviceID(id); err != nil {
		return nil, fmt.Errorf("create device: %w", err)
	}
	if err := validateTags(tags); err != nil {
		return nil, fmt.Errorf("create device %s: %w", id, err)
	}
	for _, g := range groups {
		if err := validateName("group", g); err != nil {
			return nil, fmt.Errorf("create device %s: %w", id, err)
		}
	}
	var dev *Device
	err := r.write(ctx, func(tx *sql.Tx) error {
		now := r.now()
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (id, status, created_at) VALUES ($1, $2, $3)`, id, StatusPending, toMS(now))
		if isUniqueViolation(err) {
			return fmt.Errorf("device %s: %w", id, ErrExists)
		}
		if err != nil {
			return err
		}
		if err := putTags(ctx, tx, id, tags); err != nil {
			return err
		}
		for _, g := range groups {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_groups (device_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, id, g); err != nil {
				return err
			}
		}
		detail := strings.TrimSpace(describeTags("tags", tags) + " " + describeList("groups", groups))
		if err := r.audit(ctx, tx, now, actor, ActionDeviceCreate, id, detail, remote); err != nil {
			return err
		}
		dev, err = r.device(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create device: %w", err)
	}
	return dev, nil
}

// ListFilter selects devices for [Registry.ListDevices]. Zero fields do not filter.
type ListFilter struct {
	Status Status
	// Tag: every key must be present with exactly the given value.
	Tag                              map[string]string
	Model, Operator, Firmware, Group string
	// Prefix keeps the devices whose ID starts with it (a search box); read through the ID
	// order, so it costs a range scan of the matches.
	Prefix string
	// After continues a listing: only devices whose ID sorts after it (byte order).
	After string
	// Limit is the page size: default 100, at most 10000.
	Limit int
}

// ListDevices returns the devices matching f in ID order, one page at a time. next is the
// After of the following page, "" when this page is the last.
func (r *Registry) ListDevices(ctx context.Context, f ListFilter) (devices []Device, next string, err error) {
	if f.Status != "" {
		if err := validateStatus(f.Status); err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
	}
	drive, err := r.listDriver(ctx, f)
	if err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	q, args := r.listQuery(f, drive)
	limit := clampLimit(f.Limit)
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	devices = make([]Device, 0, min(limit+1, 1024))
	for rows.Next() {
		dev, err := scanDevice(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
		devices = append(devices, dev)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	if len(devices) > limit {
		devices = devices[:limit]
		next = devices[limit-1].ID
	}
	return devices, next, nil
}

// listQuery builds the query for one page of ListDevices: limit+1 rows, to tell whether
// another page follows.
//
// Without a tag or group filter the devices table is read in ID order, through the primary key
// or one of the (column, id) indexes. With one, the query is driven by the first tag's
// (key, value, device_id) index or the group's (name, device_id) index instead, which yields
// the matching device IDs already in order: the page is read without collecting every match
// first, however many devices carry the tag. Further tags and the group are checked per
// candidate through the (device_id, key) and (device_id, name) primary keys. CROSS JOIN makes
// SQLite keep that join order (listDriver picks the most selective filter to drive);
// PostgreSQL plans freely.
//
// drive names the filter that drives the query: "tag:<key>" or "group"; "" picks the first tag
// in key order, else the group.
func (r *Registry) listQuery(f ListFilter, drive string) (string, []any) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	from, order := "devices d", "d.id"
	tags := slices.Sorted(maps.Keys(f.Tag))
	group := f.Group
	if drive == "" && len(tags) > 0 {
		drive = "tag:" + tags[0]
	}
	switch k, isTag := strings.CutPrefix(drive, "tag:"); {
	case isTag:
		from, order = "device_tags x CROSS JOIN devices d", "x.device_id"
		where = append(where, "x.key = "+arg(k), "x.value = "+arg(f.Tag[k]), "d.id = x.device_id")
		tags = slices.DeleteFunc(tags, func(t string) bool { return t == k })
	case group != "":
		from, order = "device_groups x CROSS JOIN devices d", "x.device_id"
		where = append(where, "x.name = "+arg(group), "d.id = x.device_id")
		group = ""
	}
	if f.After != "" {
		where = append(where, order+" > "+arg(f.After))
	}
	if f.Prefix != "" {
		where = append(where, "d.id >= "+arg(f.Prefix))
		if end, ok := prefixEnd(f.Prefix); ok {
			where = append(where, "d.id < "+arg(end))
		}
	}
	if f.Status != "" {
		where = append(where, "d.status = "+arg(string(f.Status)))
	}
	for _, c := range []struct{ col, v string }{
		{"d.hardware_model", f.Model}, {"d.network_operator", f.Operator}, {"d.firmware_version", f.Firmware},
	} {
		if c.v != "" {
			where = append(where, c.col+" = "+arg(c.v))
		}
	}
	for _, k := range tags {
		where = append(where, "EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.key = "+arg(k)+" AND t.value = "+arg(f.Tag[k])+")")
	}
	if group != "" {
		where = append(where, "EXISTS (SELECT 1 FROM device_groups g WHERE g.device_id = d.id AND g.name = "+arg(group)+")")
	}
	q := r.d.deviceColumns() + " FROM " + from
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + fmt.Sprintf(" ORDER BY %s LIMIT %d", order, clampLimit(f.Limit)+1), args
}

// prefixEnd is the least string above every string starting with prefix in byte order, and
// false when there is none (prefix is all 0xff bytes).
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// listDriver chooses the filter to drive a ListDevices query from when there are several tag
// and group filters on SQLite: the one matching fewest devices (counted up to 5000 after the
// page start), so that a page reads few candidates. PostgreSQL's planner chooses by itself
// from its statistics; one filter leaves no choice.
func (r *Registry) listDriver(ctx context.Context, f ListFilter) (string, error) {
	if r.d != sqliteDialect || len(f.Tag)+min(len(f.Group), 1) < 2 {
		return "", nil
	}
	const limit = 5000
	best, bestN := "", limit+1
	count := func(drive, q string, args ...any) error {
		var n int
		if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM (`+q+` LIMIT `+fmt.Sprint(limit)+`) c`, args...).Scan(&n); err != nil {
			return err
		}
		if n < bestN {
			best, bestN = drive, n
		}
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(f.Tag)) {
		if err := count("tag:"+k, `SELECT 1 FROM device_tags WHERE key = $1 AND value = $2 AND device_id > $3`, k, f.Tag[k], f.After); err != nil {
			return "", err
		}
	}
	if f.Group != "" {
		if err := count("group", `SELECT 1 FROM device_groups WHERE name = $1 AND device_id > $2`, f.Group, f.After); err != nil {
			return "", err
		}
	}
	return best, nil
}

// CountDevices returns the number of registered devices, in every state.
func (r *Registry) CountDevices(ctx context.Context) (int, error) {
	var n int
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM devices`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count devices: %w", err)
	}
	return n, nil
}

// lockDevice reads a device's status inside tx, locking its row on PostgreSQL.
func (r *Registry) lockDevice(ctx context.Context, tx *sql.Tx, id string) (Status, error) {
	var s Status
	err := tx.QueryRowContext(ctx, `SELECT status FROM devices WHERE id = $1`+r.d.forUpdate, id).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("device %s: %w", id, ErrNotFound)
	}
	return s, err
}

// DeleteDevice erases a device from the registry (data protection): its row, tags, groups,
// certificates, sessions, mailbox, configuration, rollout records, update history and
// feedback. The audit log keeps the entries about it, and this one. Its certificates leave the
// CRL with it; the gateway admits only certificates registered to a device, so they admit
// nothing. The caller erases the device's series and events (the server's deviceDeleted).
func (r *Registry) DeleteDevice(ctx context.Context, id, actor, remote string) error {
	if err := validateDeviceID(id); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		old, err := r.lockDevice(ctx, tx, id)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM certificates WHERE device_id = $1`, id)
		if err != nil {
			return err
		}
		certs, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = $1`, id); err != nil {
			return err
		}
		return r.audit(ctx, tx, r.now(), actor, ActionDeviceDelete, id, fmt.Sprintf("%s device erased with %d certificate(s)", old, certs), remote)
	})
	if err != nil {
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	return nil
}

// SetStatus moves a device to status s. Revoking also revokes every certificate of the device
// not revoked yet; leaving revoked does not un-revoke them (the device needs a new
// certificate). A device cannot be set back to pending. Setting the current status again
// changes nothing and writes no audit entry.
func (r *Registry) SetStatus(ctx context.Context, id string, s Status, actor, remote string) error {
	if err := validateDeviceID(id); err != nil {
		return fmt.Errorf("set status: %w", err)
	}
	if err := validateStatus(s); err != nil {
		return fmt.Errorf("set status of %s: %w", id, err)
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		old, err := r.lockDevice(ctx, tx, id)
		if err != nil {
			return err
		}
		if old == s && s != StatusRevoked {
			return nil
		}
		if s == StatusPending {
			return fmt.Errorf("%w: a %s device cannot return to pending", ErrInvalid, old)
		}
		now := r.now()
		var revoked int64
		if s == StatusRevoked {
			res, err := tx.ExecContext(ctx, `UPDATE certificates SET revoked_at = $1 WHERE device_id = $2 AND revoked_at = 0`, toMS(now), id)
			if err != nil {
				return err
			}
			if revoked, err = res.RowsAffected(); err != nil {
				return err
			}
			if old == s && revoked == 0 {
				return nil
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET status = $1 WHERE id = $2`, s, id); err != nil {
			return err
		}
		detail := fmt.Sprintf("%s -> %s", old, s)
		if s == StatusRevoked {
			detail += fmt.Sprintf("; revoked %d certificate(s)", revoked)
		}
		return r.audit(ctx, tx, now, actor, ActionDeviceStatus, id, detail, remote)
	})
	if err != nil {
		return fmt.Errorf("set status of %s to %s: %w", id, s, err)
	}
	return nil
}

func putTags(ctx context.Context, tx *sql.Tx, id string, tags map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		_, err := tx.ExecContext(ctx, `INSERT INTO device_tags (device_id, key, value) VALUES ($1, $2, $3)
			ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value`, id, k, tags[k])
		if err != nil {
			return fmt.Errorf("set tag %s: %w", k, err)
		}
	}
	return nil
}

// SetTags sets the tags in set (adding or overwriting) and removes the keys in remove.
// Removing an absent key is not an error; a key may not be in both.
func (r *Registry) SetTags(ctx context.Context, id string, set map[string]string, remove []string, actor, remote string) error {
	if err := validateDeviceID(id); err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	if err := validateTags(set); err != nil {
		return fmt.Errorf("set tags of %s: %w", id, err)
	}
	for _, k := range remove {
		if err := validateName("tag key", k); err != nil {
			return fmt.Errorf("set tags of %s: %w", id, err)
		}
		if _, ok := set[k]; ok {
			return fmt.Errorf("set tags of %s: %w: tag %s is both set and removed", id, ErrInvalid, k)
		}
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		if _, err := r.lockDevice(ctx, tx, id); err != nil {
			return err
		}
		if len(set) == 0 && len(remove) == 0 {
			return nil
		}
		if err := putTags(ctx, tx, id, set); err != nil {
			return err
		}
		for _, k := range remove {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_tags WHERE device_id = $1 AND key = $2`, id, k); err != nil {
				return err
			}
		}
		if err := bumpIfTagsRouted(ctx, tx, slices.Concat(slices.Collect(maps.Keys(set)), remove)); err != nil {
			return err
		}
		detail := strings.TrimSpace(describeTags("set", set) + " " + describeList("removed", remove))
		return r.audit(ctx, tx, r.now(), actor, ActionDeviceTags, id, detail, remote)
	})
	if err != nil {
		return fmt.Errorf("set tags of %s: %w", id, err)
	}
	return nil
}

// SetGroups adds the device to the groups in add and takes it out of those in remove. Adding
// a present group or removing an absent one is not an error; a name may not be in both.
func (r *Registry) SetGroups(ctx context.Context, id string, add, remove []string, actor, remote string) error {
	if err := validateDeviceID(id); err != nil {
		return fmt.Errorf("set groups: %w", err)
	}
	for _, g := range slices.Concat(add, remove) {
		if err := validateName("group", g); err != nil {
			return fmt.Errorf("set groups of %s: %w", id, err)
		}
	}
	for _, g := range remove {
		if slices.Contains(add, g) {
			return fmt.Errorf("set groups of %s: %w: group %s is both added and removed", id, ErrInvalid, g)
		}
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		if _, err := r.lockDevice(ctx, tx, id); err != nil {
			return err
		}
		if len(add) == 0 && len(remove) == 0 {
			return nil
		}
		for _, g := range add {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_groups (device_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, id, g); err != nil {
				return err
			}
		}
		for _, g := range remove {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_groups WHERE device_id = $1 AND name = $2`, id, g); err != nil {
				return err
			}
		}
		if err := bumpIfGroupsRouted(ctx, tx, slices.Concat(add, remove)); err != nil {
			return err
		}
		detail := strings.TrimSpace(describeList("added", add) + " " + describeList("removed", remove))
		return r.audit(ctx, tx, r.now(), actor, ActionDeviceGroups, id, detail, remote)
	})
	if err != nil {
		return fmt.Errorf("set groups of %s: %w", id, err)
	}
	return nil
}

// ReportFacts records what a device reports when it connects: its hardware model, network
// operator and firmware version ("" leaves a field unchanged) and the time it was seen (zero
// means now; last seen never moves backwards). A change of a fact is audited with the actor
// "device:<id>"; the last-seen time alone is not, it changes on every connect. interval is the
// longest time the device says it waits between two reports (0 leaves it unchanged); the
// monitor judges the device silent after a multiple of it.
func (r *Registry) ReportFacts(ctx context.Context, id string, model, operator, firmware string, seen time.Time, interval time.Duration) error {
	if err := validateDeviceID(id); err != nil {
		return fmt.Errorf("report facts: %w", err)
	}
	for _, f := range []struct{ what, v string }{{"hardware model", model}, {"network operator", operator}, {"firmware version", firmware}} {
		if err := validateText(f.what, f.v, MaxValueLen); err != nil {
			return fmt.Errorf("report facts of %s: %w", id, err)
		}
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		var (
			cur      [3]string
			lastSeen int64
		)
		err := tx.QueryRowContext(ctx, `SELECT hardware_model, network_operator, firmware_version, last_seen_at
			FROM devices WHERE id = $1`+r.d.forUpdate, id).Scan(&cur[0], &cur[1], &cur[2], &lastSeen)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		now := r.now()
		if seen.IsZero() {
			seen = now
		}
		lastSeen = max(lastSeen, toMS(seen))
		var changes []string
		upd := cur
		for i, f := range []struct{ name, v string }{{"model", model}, {"operator", operator}, {"firmware", firmware}} {
			if f.v != "" && f.v != cur[i] {
				changes = append(changes, fmt.Sprintf("%s %q -> %q", f.name, cur[i], f.v))
				upd[i] = f.v
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE devices SET hardware_model = $1, network_operator = $2, firmware_version = $3,
			last_seen_at = $4, report_interval_ms = CASE WHEN $5 > 0 THEN $5 ELSE report_interval_ms END WHERE id = $6`,
			upd[0], upd[1], upd[2], lastSeen, interval.Milliseconds(), id)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			return nil
		}
		return r.audit(ctx, tx, now, deviceActorPrefix+id, ActionDeviceFacts, id, strings.Join(changes, ", "), "")
	})
	if err != nil {
		return fmt.Errorf("report facts of %s: %w", id, err)
	}
	return nil
}

// describeTags renders "label k1=v1,k2=v2" with sorted keys, or "" for no tags.
func describeTags(label string, tags map[string]string) string {
	if len(tags) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(label + " ")
	for i, k := range slices.Sorted(maps.Keys(tags)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + tags[k])
	}
	return b.String()
}

// describeList renders "label a,b", or "" for an empty list.
func describeList(label string, items []string) string {
	if len(items) == 0 {
		return ""
	}
	return label + " " + strings.Join(items, ",")
}

// MarkSeen records last-seen times for many devices in one transaction: the cheap way for the
// gateway to keep last seen current under a reconnect storm, one commit for a whole batch
// instead of one per device. Like ReportFacts it never moves a time backwards and writes no
// audit entry; unknown or invalid IDs are skipped.
func (r *Registry) MarkSeen(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	now := r.now()
	err := r.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE devices SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, id := range slices.Sorted(maps.Keys(seen)) { // one lock order for concurrent batches
			t := seen[id]
			if t.IsZero() {
				t = now
			}
			if _, err := stmt.ExecContext(ctx, toMS(t), id); err != nil {
				return fmt.Errorf("device %s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark devices seen: %w", err)
	}
	return nil
}
