package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// FleetDevice is what the fleet monitor needs to know of one device.
type FleetDevice struct {
	ID                        string
	Status                    Status
	Model, Operator, Firmware string
	Tags                      map[string]string // nil when none
	Groups                    []string          // nil when none
	LastSeen                  time.Time
	// ReportedInterval is the longest wait between two sends the device reported at connect;
	// ConfiguredInterval is schedule.interval + schedule.jitter of the configuration it
	// reported applied or, failing that, of its desired configuration. Zero when unknown.
	ReportedInterval, ConfiguredInterval time.Duration
	// CertificateExpiry is when the newest unrevoked certificate expires; zero without one.
	CertificateExpiry time.Time
}

// FleetSnapshot reads every device with its tags, groups, reporting interval and certificate
// expiry, in a handful of queries whatever the number of devices, sorted by ID.
func (r *Registry) FleetSnapshot(ctx context.Context) ([]FleetDevice, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT id, status, hardware_model, network_operator, firmware_version,
		last_seen_at, report_interval_ms FROM devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("fleet snapshot: %w", err)
	}
	var devs []FleetDevice
	index := map[string]int{}
	err = eachRow(rows, func() error {
		var (
			d          FleetDevice
			seen, ival int64
		)
		if err := rows.Scan(&d.ID, &d.Status, &d.Model, &d.Operator, &d.Firmware, &seen, &ival); err != nil {
			return err
		}
		d.LastSeen, d.ReportedInterval = fromMS(seen), time.Duration(ival)*time.Millisecond
		index[d.ID] = len(devs)
		devs = append(devs, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fleet snapshot: devices: %w", err)
	}
	if err := r.snapshotRows(ctx, "tags", `SELECT device_id, key, value FROM device_tags`, func(rows *sql.Rows) (string, func(*FleetDevice), error) {
		var id, k, v string
		err := rows.Scan(&id, &k, &v)
		return id, func(d *FleetDevice) {
			if d.Tags == nil {
				d.Tags = map[string]string{}
			}
			d.Tags[k] = v
		}, err
	}, devs, index); err != nil {
		return nil, err
	}
	if err := r.snapshotRows(ctx, "groups", `SELECT device_id, name FROM device_groups ORDER BY device_id, name`, func(rows *sql.Rows) (string, func(*FleetDevice), error) {
		var id, g string
		err := rows.Scan(&id, &g)
		return id, func(d *FleetDevice) { d.Groups = append(d.Groups, g) }, err
	}, devs, index); err != nil {
		return nil, err
	}
	if err := r.snapshotRows(ctx, "certificates", `SELECT device_id, max(not_after) FROM certificates WHERE revoked_at = 0 GROUP BY device_id`, func(rows *sql.Rows) (string, func(*FleetDevice), error) {
		var (
			id  string
			exp int64
		)
		err := rows.Scan(&id, &exp)
		return id, func(d *FleetDevice) { d.CertificateExpiry = fromMS(exp) }, err
	}, devs, index); err != nil {
		return nil, err
	}
	// Only the configurations that set an interval are read whole.
	if err := r.snapshotRows(ctx, "configuration", `SELECT device_id, desired, applied FROM device_config
		WHERE desired LIKE '%"interval"%' OR applied LIKE '%"interval"%'`, func(rows *sql.Rows) (string, func(*FleetDevice), error) {
		var id, desired, applied string
		err := rows.Scan(&id, &desired, &applied)
		return id, func(d *FleetDevice) {
			if iv := scheduleInterval(applied); iv > 0 {
				d.ConfiguredInterval = iv
			} else {
				d.ConfiguredInterval = scheduleInterval(desired)
			}
		}, err
	}, devs, index); err != nil {
		return nil, err
	}
	return devs, nil
}

// snapshotRows runs q and applies each row, as scan reads it, to its device in devs.
func (r *Registry) snapshotRows(ctx context.Context, what, q string, scan func(*sql.Rows) (string, func(*FleetDevice), error), devs []FleetDevice, index map[string]int) error {
	rows, err := r.db.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("fleet snapshot: %s: %w", what, err)
	}
	err = eachRow(rows, func() error {
		id, apply, err := scan(rows)
		if err != nil {
			return err
		}
		if i, ok := index[id]; ok {
			apply(&devs[i])
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fleet snapshot: %s: %w", what, err)
	}
	return nil
}

// eachRow calls fn for every row and closes rows.
// pageBounds gives a listing by descending ID its bounds: limit, def when not positive and at
// most most; before, the ID the page starts below, every ID when not positive.
func pageBounds(limit int, before int64, def, most int) (int, int64) {
	if limit <= 0 {
		limit = def
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	return min(limit, most), before
}

// queryAll runs a query and scans every row with scan; no rows is an empty slice, not nil.
func queryAll[T any](ctx context.Context, q querier, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	out := []T{}
	err = eachRow(rows, func() error {
		v, err := scan(rows)
		out = append(out, v)
		return err
	})
	return out, err
}

func eachRow(rows *sql.Rows, fn func() error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(); err != nil {
			return err
		}
	}
	return rows.Err()
}

// scheduleInterval is schedule.interval + schedule.jitter of a configuration document, 0
// when it sets no valid interval.
func scheduleInterval(doc string) time.Duration {
	var c struct {
		Schedule struct {
			Interval, Jitter string
		} `json:"schedule"`
	}
	if doc == "" || json.Unmarshal([]byte(doc), &c) != nil {
		return 0
	}
	iv, err := time.ParseDuration(c.Schedule.Interval)
	if err != nil || iv <= 0 {
		return 0
	}
	iv = min(iv, maxScheduleInterval)
	if j, err := time.ParseDuration(c.Schedule.Jitter); err == nil && j > 0 {
		iv += min(j, maxScheduleInterval)
	}
	return min(iv, maxScheduleInterval)
}

// maxScheduleInterval bounds an interval read from a configuration, as the server bounds one
// reported at connect (protocol.MaxSendInterval).
const maxScheduleInterval = 30 * 24 * time.Hour

// MaxSessionsLimit is the most sessions DeviceSessions returns at once.
const MaxSessionsLimit = 1000

// Session is one ended MQTT connection of a device.
type Session struct {
	ID             int64     `json:"id"`
	DeviceID       string    `json:"device_id"`
	ConnectedAt    time.Time `json:"connected_at"`
	DisconnectedAt time.Time `json:"disconnected_at"`
	// Cause is why it ended (gateway.Cause: clean, keepalive_timeout, reset, protocol_error,
	// takeover, kicked, server_shutdown).
	Cause            string `json:"cause"`
	ReceivedBytes    int64  `json:"received_bytes"`
	SentBytes        int64  `json:"sent_bytes"`
	ReceivedMessages int64  `json:"received_messages"`
	SentMessages     int64  `json:"sent_messages"`
	TLSVersion       string `json:"tls_version"`
	MQTTVersion      int    `json:"mqtt_version"`
	Remote           string `json:"remote"`
	// Node is the server that served it.
	Node string `json:"node"`
}

// Duration is how long the session lasted.
func (s Session) Duration() time.Duration { return s.DisconnectedAt.Sub(s.ConnectedAt) }

// RecordSessions stores ended sessions in one transaction; those of devices the registry does
// not know are skipped.
func (r *Registry) RecordSessions(ctx context.Context, sessions []Session) error {
	if len(sessions) == 0 {
		return nil
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO device_sessions (device_id, connected_at, disconnected_at, cause,
			received_bytes, sent_bytes, received_messages, sent_messages, tls_version, mqtt_version, remote, node)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 WHERE EXISTS (SELECT 1 FROM devices WHERE id = $13)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, s := range sessions {
			if _, err := stmt.ExecContext(ctx, s.DeviceID, toMS(s.ConnectedAt), toMS(s.DisconnectedAt), s.Cause,
				s.ReceivedBytes, s.SentBytes, s.ReceivedMessages, s.SentMessages, s.TLSVersion, s.MQTTVersion, s.Remote, s.Node,
				s.DeviceID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record %d sessions: %w", len(sessions), err)
	}
	return nil
}

// DeviceSessions lists a device's recorded sessions, newest first: at most limit (1 to
// MaxSessionsLimit), with IDs below before when before > 0 (the next page starts below the last
// ID of this one).
func (r *Registry) DeviceSessions(ctx context.Context, device string, limit int, before int64) ([]Session, error) {
	if err := validateDeviceID(device); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	if limit <= 0 || limit > MaxSessionsLimit {
		return nil, fmt.Errorf("sessions: limit %d: %w: 1 to %d", limit, ErrInvalid, MaxSessionsLimit)
	}
	limit, before = pageBounds(limit, before, limit, MaxSessionsLimit)
	rows, err := r.db.QueryContext(ctx, `SELECT id, device_id, connected_at, disconnected_at, cause, received_bytes, sent_bytes,
		received_messages, sent_messages, tls_version, mqtt_version, remote, node
		FROM device_sessions WHERE device_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, device, before, limit)
	if err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", device, err)
	}
	out := []Session{}
	err = eachRow(rows, func() error {
		var (
			s        Session
			con, dis int64
		)
		if err := rows.Scan(&s.ID, &s.DeviceID, &con, &dis, &s.Cause, &s.ReceivedBytes, &s.SentBytes, &s.ReceivedMessages,
			&s.SentMessages, &s.TLSVersion, &s.MQTTVersion, &s.Remote, &s.Node); err != nil {
			return err
		}
		s.ConnectedAt, s.DisconnectedAt = fromMS(con), fromMS(dis)
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", device, err)
	}
	if len(out) == 0 {
		if _, err := r.Device(ctx, device); err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
	}
	return out, nil
}

// PruneSessions deletes the sessions that ended before t, and says how many.
func (r *Registry) PruneSessions(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := r.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM device_sessions WHERE disconnected_at < $1`, toMS(t))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune sessions: %w", err)
	}
	return n, nil
}
