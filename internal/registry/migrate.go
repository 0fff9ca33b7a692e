package registry

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// A migration moves the schema from version-1 to version. Migrations are append-only: once
// released, a migration's statements never change; a fix is a new migration.
type migration struct {
	version int
	name    string
	// stmts is the migration's SQL, one statement per element. {{identity}}, {{key}} and
	// {{withoutRowID}} are replaced by the dialect's auto-increment primary key, its
	// byte-ordered text type and its clustered-table suffix.
	stmts []string
}

var migrations = []migration{
	{version: 1, name: "initial schema", stmts: []string{
		`CREATE TABLE devices (
			id               {{key}} PRIMARY KEY,
			status           TEXT NOT NULL CHECK (status IN ('pending', 'active', 'suspended', 'revoked')),
			hardware_model   {{key}} NOT NULL DEFAULT '',
			network_operator {{key}} NOT NULL DEFAULT '',
			firmware_version {{key}} NOT NULL DEFAULT '',
			created_at       BIGINT NOT NULL,
			enrolled_at      BIGINT NOT NULL DEFAULT 0,
			last_seen_at     BIGINT NOT NULL DEFAULT 0
		){{withoutRowID}}`,
		`CREATE INDEX devices_status ON devices (status, id)`,
		`CREATE INDEX devices_model ON devices (hardware_model, id)`,
		`CREATE INDEX devices_operator ON devices (network_operator, id)`,
		`CREATE INDEX devices_firmware ON devices (firmware_version, id)`,
		`CREATE TABLE device_tags (
			device_id {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			key       {{key}} NOT NULL,
			value     {{key}} NOT NULL,
			PRIMARY KEY (device_id, key)
		){{withoutRowID}}`,
		`CREATE INDEX device_tags_key_value ON device_tags (key, value, device_id)`,
		`CREATE TABLE device_groups (
			device_id {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			name      {{key}} NOT NULL,
			PRIMARY KEY (device_id, name)
		){{withoutRowID}}`,
		`CREATE INDEX device_groups_name ON device_groups (name, device_id)`,
		`CREATE TABLE certificates (
			serial     {{key}} PRIMARY KEY,
			device_id  {{key}} NOT NULL REFERENCES devices (id),
			not_before BIGINT NOT NULL,
			not_after  BIGINT NOT NULL,
			created_at BIGINT NOT NULL,
			revoked_at BIGINT NOT NULL DEFAULT 0
		)`,
		`CREATE INDEX certificates_device ON certificates (device_id)`,
		`CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at <> 0`,
		`CREATE TABLE enrollment_tokens (
			hash       {{key}} PRIMARY KEY,
			id         {{key}} NOT NULL UNIQUE,
			model      TEXT NOT NULL DEFAULT '',
			device_id  TEXT NOT NULL DEFAULT '',
			tags       TEXT NOT NULL DEFAULT '{}',
			created_by TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			used_at    BIGINT NOT NULL DEFAULT 0,
			used_by    TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE TABLE operators (
			id         {{key}} PRIMARY KEY,
			name       TEXT NOT NULL,
			role       TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
			token_hash {{key}} NOT NULL UNIQUE,
			created_by TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL,
			revoked_at BIGINT NOT NULL DEFAULT 0
		)`,
		`CREATE UNIQUE INDEX operators_active_name ON operators (name) WHERE revoked_at = 0`,
		`CREATE TABLE audit_log (
			id     {{identity}},
			at     BIGINT NOT NULL,
			actor  TEXT NOT NULL,
			action TEXT NOT NULL,
			target TEXT NOT NULL DEFAULT '',
			detail TEXT NOT NULL DEFAULT '',
			remote TEXT NOT NULL DEFAULT ''
		)`,
	}},
	{version: 2, name: "device channel: mailbox and configuration", stmts: []string{
		`CREATE TABLE mailbox (
			id         {{key}} PRIMARY KEY,
			device_id  {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			kind       TEXT NOT NULL CHECK (kind IN ('command', 'config')),
			name       TEXT NOT NULL DEFAULT '',
			payload    TEXT NOT NULL,
			version    BIGINT NOT NULL DEFAULT 0,
			state      TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'acknowledged', 'succeeded', 'failed', 'expired', 'superseded')),
			reason     TEXT NOT NULL DEFAULT '',
			detail     TEXT NOT NULL DEFAULT '',
			result     TEXT NOT NULL DEFAULT '',
			created_by TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL DEFAULT 0,
			updated_at BIGINT NOT NULL,
			attempts   BIGINT NOT NULL DEFAULT 0
		){{withoutRowID}}`,
		`CREATE INDEX mailbox_device ON mailbox (device_id, created_at, id)`,
		`CREATE INDEX mailbox_open ON mailbox (device_id, kind, created_at, id) WHERE state IN ('queued', 'delivered', 'acknowledged')`,
		`CREATE INDEX mailbox_expiry ON mailbox (expires_at) WHERE state IN ('queued', 'delivered', 'acknowledged') AND expires_at <> 0`,
		`CREATE TABLE config_layers (
			scope      TEXT NOT NULL CHECK (scope IN ('fleet', 'group', 'tag', 'device')),
			selector   {{key}} NOT NULL,
			document   TEXT NOT NULL,
			updated_at BIGINT NOT NULL,
			updated_by TEXT NOT NULL DEFAULT '',
			PRIMARY KEY (scope, selector)
		){{withoutRowID}}`,
		`CREATE TABLE device_config (
			device_id       {{key}} PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
			desired         TEXT NOT NULL DEFAULT '{}',
			desired_hash    TEXT NOT NULL DEFAULT '',
			desired_version BIGINT NOT NULL DEFAULT 0,
			desired_at      BIGINT NOT NULL DEFAULT 0,
			applied         TEXT NOT NULL DEFAULT '',
			refused         TEXT NOT NULL DEFAULT '',
			applied_version BIGINT NOT NULL DEFAULT 0,
			reported_at     BIGINT NOT NULL DEFAULT 0
		){{withoutRowID}}`,
		// One row whose revision grows with every change of config_layers: a server keeps the
		// parsed layers and reads only this row at a device's connect.
		`CREATE TABLE config_revision (
			id       BIGINT PRIMARY KEY CHECK (id = 1),
			revision BIGINT NOT NULL
		)`,
		`INSERT INTO config_revision (id, revision) VALUES (1, 0)`,
	}},
	{version: 3, name: "fleet monitoring: reporting intervals and connection history", stmts: []string{
		`ALTER TABLE devices ADD COLUMN report_interval_ms BIGINT NOT NULL DEFAULT 0`,
		`CREATE TABLE device_sessions (
			id                {{identity}},
			device_id         {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			connected_at      BIGINT NOT NULL,
			disconnected_at   BIGINT NOT NULL,
			cause             TEXT NOT NULL,
			received_bytes    BIGINT NOT NULL DEFAULT 0,
			sent_bytes        BIGINT NOT NULL DEFAULT 0,
			received_messages BIGINT NOT NULL DEFAULT 0,
			sent_messages     BIGINT NOT NULL DEFAULT 0,
			tls_version       TEXT NOT NULL DEFAULT '',
			mqtt_version      BIGINT NOT NULL DEFAULT 0,
			remote            TEXT NOT NULL DEFAULT '',
			node              TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE INDEX device_sessions_device ON device_sessions (device_id, connected_at)`,
		`CREATE INDEX device_sessions_end ON device_sessions (disconnected_at)`,
	}},
	{version: 4, name: "firmware archive: releases", stmts: []string{
		`CREATE TABLE firmware_releases (
			version     {{key}} NOT NULL,
			model       {{key}} NOT NULL,
			sha256      TEXT NOT NULL,
			size        BIGINT NOT NULL,
			min_from    TEXT NOT NULL DEFAULT '',
			notes       TEXT NOT NULL DEFAULT '',
			manifest    TEXT NOT NULL,
			uploaded_by TEXT NOT NULL DEFAULT '',
			uploaded_at BIGINT NOT NULL,
			PRIMARY KEY (version, model)
		){{withoutRowID}}`,
		`CREATE INDEX firmware_releases_model ON firmware_releases (model, version)`,
		`CREATE INDEX firmware_releases_sha256 ON firmware_releases (sha256)`,
	}},
	{version: 5, name: "rollouts and update history", stmts: []string{
		`CREATE TABLE rollouts (
			id            {{key}} PRIMARY KEY,
			version       TEXT NOT NULL,
			selector      TEXT NOT NULL,
			plan          TEXT NOT NULL,
			plan_name     TEXT NOT NULL DEFAULT '',
			state         TEXT NOT NULL,
			phase         BIGINT NOT NULL DEFAULT 0,
			phase_since   BIGINT NOT NULL,
			halt_reason   TEXT NOT NULL DEFAULT '',
			halt_evidence TEXT NOT NULL DEFAULT '',
			created_by    TEXT NOT NULL DEFAULT '',
			created_at    BIGINT NOT NULL,
			updated_at    BIGINT NOT NULL
		){{withoutRowID}}`,
		`CREATE INDEX rollouts_state ON rollouts (state, id)`,
		`CREATE TABLE rollout_devices (
			rollout_id   {{key}} NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
			device_id    {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			phase        BIGINT NOT NULL,
			from_version TEXT NOT NULL DEFAULT '',
			target       TEXT NOT NULL DEFAULT '',
			state        TEXT NOT NULL,
			command_id   TEXT NOT NULL DEFAULT '',
			offered_at   BIGINT NOT NULL DEFAULT 0,
			installed_at BIGINT NOT NULL DEFAULT 0,
			updated_at   BIGINT NOT NULL,
			reported     TEXT NOT NULL DEFAULT '',
			detail       TEXT NOT NULL DEFAULT '',
			attempts     BIGINT NOT NULL DEFAULT 0,
			PRIMARY KEY (rollout_id, device_id)
		){{withoutRowID}}`,
		`CREATE INDEX rollout_devices_device ON rollout_devices (device_id, rollout_id)`,
		`CREATE TABLE update_history (
			id          {{identity}},
			device_id   {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			rollout_id  TEXT NOT NULL DEFAULT '',
			at          BIGINT NOT NULL,
			event       TEXT NOT NULL,
			from_version TEXT NOT NULL DEFAULT '',
			to_version  TEXT NOT NULL DEFAULT '',
			detail      TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE INDEX update_history_device ON update_history (device_id, id)`,
	}},
	{version: 6, name: "feedback events; rollout states succeeded and completed", stmts: []string{
		`CREATE TABLE feedback_events (
			id               {{identity}},
			device_id        {{key}} NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			firmware_version TEXT NOT NULL DEFAULT '',
			model            TEXT NOT NULL DEFAULT '',
			kind             TEXT NOT NULL,
			severity         TEXT NOT NULL DEFAULT '',
			message          TEXT NOT NULL DEFAULT '',
			source           TEXT NOT NULL DEFAULT '',
			at               BIGINT NOT NULL
		)`,
		`CREATE INDEX feedback_events_device ON feedback_events (device_id, id)`,
		`CREATE INDEX feedback_events_firmware ON feedback_events (firmware_version, at)`,
		// The states take the names operators read in the field guide's terms.
		`UPDATE rollouts SET state = 'completed' WHERE state = 'complete'`,
		`UPDATE rollout_devices SET state = 'succeeded' WHERE state = 'confirmed'`,
		`UPDATE update_history SET event = 'succeeded' WHERE event = 'confirmed'`,
	}},
	{version: 7, name: "dns routing: clusters and routes", stmts: []string{
		// addresses: the cluster's IPv4 and IPv6 addresses, comma-separated, in canonical form.
		// At most one cluster is the default (is_default = 1): it answers the zone's wildcard.
		`CREATE TABLE dns_clusters (
			name       {{key}} PRIMARY KEY,
			addresses  TEXT NOT NULL,
			region     TEXT NOT NULL DEFAULT '',
			is_default BIGINT NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
			draining   BIGINT NOT NULL DEFAULT 0 CHECK (draining IN (0, 1)),
			created_by TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL
		){{withoutRowID}}`,
		`CREATE UNIQUE INDEX dns_clusters_one_default ON dns_clusters (is_default) WHERE is_default = 1`,
		// A route sends a device, a group or a tag selection ("key=value") to a cluster or to
		// one literal address; expires_at 0 means never.
		`CREATE TABLE dns_routes (
			scope      TEXT NOT NULL CHECK (scope IN ('device', 'group', 'tag')),
			selector   {{key}} NOT NULL,
			cluster    {{key}} NOT NULL DEFAULT '',
			address    TEXT NOT NULL DEFAULT '',
			expires_at BIGINT NOT NULL DEFAULT 0,
			set_by     TEXT NOT NULL DEFAULT '',
			set_at     BIGINT NOT NULL,
			PRIMARY KEY (scope, selector)
		){{withoutRowID}}`,
		`CREATE INDEX dns_routes_cluster ON dns_routes (cluster)`,
		`CREATE INDEX dns_routes_expiry ON dns_routes (expires_at) WHERE expires_at <> 0`,
		// One row whose revision grows with every change of what the zone answers: DNS servers
		// poll it and reload their snapshot only when it moved; it is also the SOA serial.
		`CREATE TABLE dns_revision (
			id       BIGINT PRIMARY KEY CHECK (id = 1),
			revision BIGINT NOT NULL
		)`,
		`INSERT INTO dns_revision (id, revision) VALUES (1, 1)`,
	}},
}

// SchemaVersion is the schema version this build migrates to.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

func (d *dialect) expand(stmt string) string {
	key := "TEXT"
	if d == postgresDialect {
		// Byte order, not the database's locale: device IDs sort the same on both backends,
		// and comparisons are cheaper.
		key = `TEXT COLLATE "C"`
	}
	return strings.NewReplacer("{{identity}}", d.identity, "{{key}}", key, "{{withoutRowID}}", d.withoutRowID).Replace(stmt)
}

// migrate brings the schema up to date. Each migration runs in its own transaction together
// with the schema_migrations row that records it, so a failed migration leaves no trace and
// is retried on the next start. Running it again on an up-to-date schema changes nothing.
func (r *Registry) migrate(ctx context.Context) error {
	err := r.write(ctx, func(tx *sql.Tx) error {
		if r.d.migrationLock != "" {
			if _, err := tx.ExecContext(ctx, r.d.migrationLock); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at BIGINT NOT NULL
		)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var newest sql.NullInt64
	if err := r.db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if newest.Valid && int(newest.Int64) > SchemaVersion() {
		return fmt.Errorf("database schema version %d is newer than this build's %d: run a newer Millwright", newest.Int64, SchemaVersion())
	}
	for _, m := range migrations {
		err := r.write(ctx, func(tx *sql.Tx) error {
			if r.d.migrationLock != "" {
				if _, err := tx.ExecContext(ctx, r.d.migrationLock); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, s := range m.stmts {
				if _, err := tx.ExecContext(ctx, r.d.expand(s)); err != nil {
					return fmt.Errorf("%s: %w", firstLine(s), err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.version, m.name, toMS(r.now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate to version %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "("))
}
