package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/millwright/millwright/protocol"
)

// Desired configuration: a JSON document per device computed from layers — the fleet
// default, the device's groups, its tags, the device itself — each a JSON merge patch
// (RFC 7386) over the ones before it. Precedence, lowest first: fleet; groups in byte order
// of their names; tags in byte order of "key=value"; the device. A null in a layer removes the
// key set by the layers below. The document's version grows by one each time the document
// computed for the device changes; every new version is a config message in the device's
// mailbox, superseding the one before.

// ConfigScope says which devices a configuration layer applies to.
type ConfigScope string

// The scopes, in order of precedence (lowest first).
const (
	ScopeFleet  ConfigScope = "fleet"
	ScopeGroup  ConfigScope = "group"
	ScopeTag    ConfigScope = "tag"
	ScopeDevice ConfigScope = "device"
)

var scopeRank = map[ConfigScope]int{ScopeFleet: 0, ScopeGroup: 1, ScopeTag: 2, ScopeDevice: 3}

// MaxConfigDocument bounds a configuration layer and a computed document, in bytes: half of
// protocol.MaxChannelMessage, so that the message carrying a document and the device's report
// of it, each with its envelope, fit in a channel message.
const MaxConfigDocument = 32 << 10

// OversizeError is returned with the messages of a refresh when the documents computed for
// some devices exceed MaxConfigDocument: those devices keep their previous version, the others
// got theirs.
type OversizeError struct {
	Devices []string
}

func (e *OversizeError) Error() string {
	list := e.Devices
	more := ""
	if len(list) > 10 {
		list, more = list[:10], fmt.Sprintf(" and %d more", len(e.Devices)-10)
	}
	return fmt.Sprintf("the configuration documents of %d device(s) would exceed %d bytes and stay at their previous version: %s%s",
		len(e.Devices), MaxConfigDocument, strings.Join(list, ", "), more)
}

func (e *OversizeError) Unwrap() error { return ErrInvalid }

// errOversize marks a device whose computed document is too large.
var errOversize = errors.New("configuration document too large")

// MaxConfigLayers bounds the number of configuration layers.
const MaxConfigLayers = 10_000

// configChunk is how many devices one transaction recomputes.
const configChunk = 500

// ConfigLayer is one layer of desired configuration.
type ConfigLayer struct {
	Scope ConfigScope `json:"scope"`
	// Selector is "" for the fleet, a group name, "key=value" for a tag, or a device ID.
	Selector  string          `json:"selector"`
	Document  json.RawMessage `json:"document"`
	UpdatedAt time.Time       `json:"updated_at"`
	UpdatedBy string          `json:"updated_by"`
}

// Label is the layer as the CLI names it: "fleet", "group G", "tag k=v", "device ID".
func (l ConfigLayer) Label() string {
	if l.Scope == ScopeFleet {
		return string(ScopeFleet)
	}
	return string(l.Scope) + " " + l.Selector
}

// DeviceConfig is a device's desired and reported configuration.
type DeviceConfig struct {
	Device         string          `json:"device"`
	Desired        json.RawMessage `json:"desired"`
	DesiredVersion int64           `json:"desired_version"`
	DesiredAt      time.Time       `json:"desired_at,omitzero"`
	// Layers are the layers the desired document was computed from, lowest first.
	Layers []string `json:"layers"`
	// Reported is what the device last reported applied (null before its first report).
	Reported       json.RawMessage   `json:"reported"`
	AppliedVersion int64             `json:"applied_version"`
	Refused        map[string]string `json:"refused"`
	ReportedAt     time.Time         `json:"reported_at,omitzero"`
}

func validateLayer(scope ConfigScope, selector string) error {
	switch scope {
	case ScopeFleet:
		if selector != "" {
			return fmt.Errorf("%w: the fleet layer has no selector", ErrInvalid)
		}
	case ScopeGroup:
		return validateName("group", selector)
	case ScopeTag:
		k, v, ok := strings.Cut(selector, "=")
		if !ok {
			return fmt.Errorf("%w: tag selector %q is not key=value", ErrInvalid, selector)
		}
		return validateTags(map[string]string{k: v})
	case ScopeDevice:
		return validateDeviceID(selector)
	default:
		return fmt.Errorf("%w: %q is not a configuration scope (fleet, group, tag, device)", ErrInvalid, scope)
	}
	return nil
}

// SetConfigLayer sets (document not empty) or removes (document empty or null) a layer,
// recomputes the desired configuration of every device it applies to, and returns the
// configuration messages queued for the devices whose document changed. The document must be
// a JSON object of at most MaxConfigDocument bytes; what its keys may be is the caller's
// business (the API checks them against the agent's schema). Audited as config.set.
func (r *Registry) SetConfigLayer(ctx context.Context, scope ConfigScope, selector string, document json.RawMessage, actor, remote string) ([]Message, error) {
	if err := validateLayer(scope, selector); err != nil {
		return nil, fmt.Errorf("set configuration: %w", err)
	}
	remove := len(bytes.TrimSpace(document)) == 0 || string(bytes.TrimSpace(document)) == "null"
	var compact bytes.Buffer
	if !remove {
		if len(document) > MaxConfigDocument {
			return nil, fmt.Errorf("set configuration: %w: document of %d bytes exceeds %d", ErrInvalid, len(document), MaxConfigDocument)
		}
		var obj map[string]any
		if err := json.Unmarshal(document, &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("set configuration: %w: the document must be a JSON object", ErrInvalid)
		}
		if err := json.Compact(&compact, document); err != nil {
			return nil, fmt.Errorf("set configuration: %w: %v", ErrInvalid, err)
		}
	}
	layer := ConfigLayer{Scope: scope, Selector: selector}
	var devices []string
	err := r.write(ctx, func(tx *sql.Tx) error {
		now := r.now()
		if remove {
			if _, err := tx.ExecContext(ctx, `DELETE FROM config_layers WHERE scope = $1 AND selector = $2`, scope, selector); err != nil {
				return err
			}
		} else {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM config_layers`).Scan(&n); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO config_layers (scope, selector, document, updated_at, updated_by)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (scope, selector) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
				scope, selector, compact.String(), toMS(now), actor)
			if err != nil {
				return err
			}
			if n >= MaxConfigLayers {
				var after int
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM config_layers`).Scan(&after); err != nil {
					return err
				}
				if after > n {
					return fmt.Errorf("%w: there are %d configuration layers, the limit", ErrInvalid, MaxConfigLayers)
				}
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_revision SET revision = revision + 1 WHERE id = 1`); err != nil {
			return err
		}
		detail := layer.Label() + ": " + compact.String()
		if remove {
			detail = layer.Label() + ": removed"
		}
		if err := r.audit(ctx, tx, now, actor, ActionConfigSet, layer.Label(), truncate(detail, 1024), remote); err != nil {
			return err
		}
		var err error
		devices, err = r.layerDevices(ctx, tx, scope, selector)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set configuration of %s: %w", layer.Label(), err)
	}
	return r.RefreshConfig(ctx, devices)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// layerDevices lists the devices a layer applies to (revoked ones excluded).
func (r *Registry) layerDevices(ctx context.Context, q querier, scope ConfigScope, selector string) ([]string, error) {
	var (
		query string
		args  []any
	)
	switch scope {
	case ScopeFleet:
		query = `SELECT id FROM devices WHERE status <> 'revoked' ORDER BY id`
	case ScopeGroup:
		query = `SELECT g.device_id FROM device_groups g JOIN devices d ON d.id = g.device_id WHERE g.name = $1 AND d.status <> 'revoked' ORDER BY g.device_id`
		args = []any{selector}
	case ScopeTag:
		k, v, _ := strings.Cut(selector, "=")
		query = `SELECT t.device_id FROM device_tags t JOIN devices d ON d.id = t.device_id WHERE t.key = $1 AND t.value = $2 AND d.status <> 'revoked' ORDER BY t.device_id`
		args = []any{k, v}
	case ScopeDevice:
		return []string{selector}, nil
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// ConfigLayers returns every layer, in order of precedence.
func (r *Registry) ConfigLayers(ctx context.Context) ([]ConfigLayer, error) {
	layers, err := r.loadLayers(ctx, r.db)
	if err != nil {
		return nil, fmt.Errorf("read configuration layers: %w", err)
	}
	return layers, nil
}

func (r *Registry) loadLayers(ctx context.Context, q querier) ([]ConfigLayer, error) {
	rows, err := q.QueryContext(ctx, `SELECT scope, selector, document, updated_at, updated_by FROM config_layers`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ConfigLayer
	for rows.Next() {
		var (
			l   ConfigLayer
			doc string
			at  int64
		)
		if err := rows.Scan(&l.Scope, &l.Selector, &doc, &at, &l.UpdatedBy); err != nil {
			return nil, err
		}
		l.Document, l.UpdatedAt = json.RawMessage(doc), fromMS(at)
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Scope != out[j].Scope {
			return scopeRank[out[i].Scope] < scopeRank[out[j].Scope]
		}
		return out[i].Selector < out[j].Selector
	})
	return out, rows.Err()
}

// layerSet returns the layers, parsed and indexed: the cached set while the layers' revision
// is the one it was read at (one prepared single-row query), else read afresh. The set is
// shared and never changed.
func (r *Registry) layerSet(ctx context.Context) (*layerSet, error) {
	var rev int64
	if err := r.layerRevision.QueryRowContext(ctx).Scan(&rev); err != nil {
		return nil, fmt.Errorf("read configuration revision: %w", err)
	}
	r.layersMu.Lock()
	defer r.layersMu.Unlock()
	if r.layers != nil && r.layersAt == rev {
		return r.layers, nil
	}
	layers, err := r.loadLayers(ctx, r.db)
	if err != nil {
		return nil, err
	}
	set, err := indexLayers(layers)
	if err != nil {
		return nil, err
	}
	// Layers read after the revision: they are at least as new as rev, so a later revision
	// read refreshes them at worst once too often.
	r.layers, r.layersAt = set, rev
	return set, nil
}

// layerSet is the layers indexed for computing devices' documents.
type layerSet struct {
	fleet  *ConfigLayer
	groups map[string]*ConfigLayer
	tags   map[string]*ConfigLayer
	device map[string]*ConfigLayer
	parsed map[*ConfigLayer]any
}

func indexLayers(layers []ConfigLayer) (*layerSet, error) {
	s := &layerSet{groups: map[string]*ConfigLayer{}, tags: map[string]*ConfigLayer{}, device: map[string]*ConfigLayer{}, parsed: map[*ConfigLayer]any{}}
	for i := range layers {
		l := &layers[i]
		var v any
		if err := json.Unmarshal(l.Document, &v); err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Label(), err)
		}
		s.parsed[l] = v
		switch l.Scope {
		case ScopeFleet:
			s.fleet = l
		case ScopeGroup:
			s.groups[l.Selector] = l
		case ScopeTag:
			s.tags[l.Selector] = l
		case ScopeDevice:
			s.device[l.Selector] = l
		}
	}
	return s, nil
}

// compute merges the layers that apply to a device with these groups and tags, and returns
// the document (never nil) and the layers' labels, lowest first.
func (s *layerSet) compute(device string, groups []string, tags map[string]string) (map[string]any, []string) {
	var apply []*ConfigLayer
	if s.fleet != nil {
		apply = append(apply, s.fleet)
	}
	sort.Strings(groups)
	for _, g := range groups {
		if l := s.groups[g]; l != nil {
			apply = append(apply, l)
		}
	}
	kv := make([]string, 0, len(tags))
	for k, v := range tags {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	for _, t := range kv {
		if l := s.tags[t]; l != nil {
			apply = append(apply, l)
		}
	}
	if l := s.device[device]; l != nil {
		apply = append(apply, l)
	}
	doc := map[string]any{}
	labels := make([]string, 0, len(apply))
	for _, l := range apply {
		doc, _ = mergePatch(doc, s.parsed[l]).(map[string]any)
		labels = append(labels, l.Label())
	}
	if doc == nil {
		doc = map[string]any{}
	}
	return doc, labels
}

// mergePatch applies an RFC 7386 JSON merge patch to target without changing target (the
// maps it changes are copies).
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, _ := target.(map[string]any)
	out := make(map[string]any, len(t)+len(p))
	for k, v := range t {
		out[k] = v
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], v)
	}
	return out
}

// hashDocument is a document's fingerprint: SHA-256 of its canonical JSON (sorted keys).
func hashDocument(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:16])
}

// emptyDocumentHash is the fingerprint of {}: a device without any row has it, version 0.
var emptyDocumentHash = hashDocument([]byte("{}"))

// RefreshConfig recomputes the desired configuration of the given devices from the layers
// and their current groups and tags. For each device whose document changed it stores the
// new version, queues a config message (the device's older open config messages become
// superseded) and returns it. Revoked and unknown devices are skipped. The work is done in
// transactions of a few hundred devices.
func (r *Registry) RefreshConfig(ctx context.Context, devices []string) ([]Message, error) {
	if len(devices) == 0 {
		return nil, nil
	}
	set, err := r.layerSet(ctx)
	if err != nil {
		return nil, fmt.Errorf("refresh configuration: %w", err)
	}
	var (
		out      []Message
		oversize []string
	)
	for start := 0; start < len(devices); start += configChunk {
		chunk := devices[start:min(start+configChunk, len(devices))]
		// Read first: at a device's connect nothing has changed, and a read costs no write
		// lock.
		var stale []string
		for _, id := range chunk {
			_, changed, err := r.refreshOne(ctx, nil, set, id, time.Time{})
			if errors.Is(err, errOversize) {
				oversize = append(oversize, id)
				continue
			}
			if err != nil {
				return out, fmt.Errorf("refresh configuration of %s: %w", id, err)
			}
			if changed {
				stale = append(stale, id)
			}
		}
		if len(stale) == 0 {
			continue
		}
		err := r.write(ctx, func(tx *sql.Tx) error {
			now := r.now()
			var msgs []Message
			for _, id := range stale {
				m, changed, err := r.refreshOne(ctx, tx, set, id, now)
				if err != nil {
					return fmt.Errorf("device %s: %w", id, err)
				}
				if changed {
					msgs = append(msgs, m)
				}
			}
			out = append(out, msgs...)
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("refresh configuration: %w", err)
		}
	}
	if len(oversize) > 0 {
		return out, &OversizeError{Devices: oversize}
	}
	return out, nil
}

// refreshOne computes a device's document and reports whether it differs from the stored one;
// with tx not nil it reads through tx, stores the new version and queues its message.
func (r *Registry) refreshOne(ctx context.Context, tx *sql.Tx, set *layerSet, id string, now time.Time) (Message, bool, error) {
	dev, err := r.device(ctx, tx, id)
	if errors.Is(err, ErrNotFound) || err == nil && dev.Status == StatusRevoked {
		return Message{}, false, nil
	}
	if err != nil {
		return Message{}, false, err
	}
	doc, _ := set.compute(id, dev.Groups, dev.Tags)
	raw, err := json.Marshal(doc)
	if err != nil {
		return Message{}, false, err
	}
	if len(raw) > MaxConfigDocument {
		return Message{}, false, fmt.Errorf("%w: %d bytes, above %d", errOversize, len(raw), MaxConfigDocument)
	}
	hash := hashDocument(raw)
	var (
		curHash string
		version int64
	)
	if tx == nil {
		err = r.storedConfigHash.QueryRowContext(ctx, id).Scan(&curHash, &version)
	} else {
		err = tx.QueryRowContext(ctx, `SELECT desired_hash, desired_version FROM device_config WHERE device_id = $1`+r.d.forUpdate, id).Scan(&curHash, &version)
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		curHash = emptyDocumentHash
	case err != nil:
		return Message{}, false, err
	}
	if curHash == hash {
		return Message{}, false, nil
	}
	if tx == nil {
		return Message{}, true, nil
	}
	version++
	_, err = tx.ExecContext(ctx, `INSERT INTO device_config (device_id, desired, desired_hash, desired_version, desired_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (device_id) DO UPDATE SET desired = excluded.desired, desired_hash = excluded.desired_hash,
			desired_version = excluded.desired_version, desired_at = excluded.desired_at`,
		id, string(raw), hash, version, toMS(now))
	if err != nil {
		return Message{}, false, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET state = 'superseded', reason = 'superseded', detail = $1, updated_at = $2
		WHERE device_id = $3 AND kind = 'config' AND state IN `+openStates,
		fmt.Sprintf("superseded by version %d", version), toMS(now), id); err != nil {
		return Message{}, false, err
	}
	payload, err := json.Marshal(protocol.DesiredConfig{Version: version, Config: raw})
	if err != nil {
		return Message{}, false, err
	}
	m := Message{ID: newMessageID(now), Device: id, Kind: KindConfig, Version: version, Payload: payload,
		State: MessageQueued, CreatedBy: systemActor, CreatedAt: now, UpdatedAt: now}
	return m, true, insertMessage(ctx, tx, m)
}

// DeviceConfig returns a device's desired configuration as last computed, the layers it comes
// from now, and what the device reported.
func (r *Registry) DeviceConfig(ctx context.Context, id string) (DeviceConfig, error) {
	dev, err := r.Device(ctx, id)
	if err != nil {
		return DeviceConfig{}, fmt.Errorf("read configuration: %w", err)
	}
	set, err := r.layerSet(ctx)
	if err != nil {
		return DeviceConfig{}, fmt.Errorf("read configuration of %s: %w", id, err)
	}
	_, labels := set.compute(id, dev.Groups, dev.Tags)
	dc := DeviceConfig{Device: id, Desired: json.RawMessage("{}"), Layers: labels, Reported: json.RawMessage("null"), Refused: map[string]string{}}
	var (
		desired, applied, refused string
		desiredAt, reportedAt     int64
	)
	err = r.db.QueryRowContext(ctx, `SELECT desired, desired_version, desired_at, applied, refused, applied_version, reported_at
		FROM device_config WHERE device_id = $1`, id).Scan(&desired, &dc.DesiredVersion, &desiredAt, &applied, &refused, &dc.AppliedVersion, &reportedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return dc, nil
	}
	if err != nil {
		return DeviceConfig{}, fmt.Errorf("read configuration of %s: %w", id, err)
	}
	dc.Desired, dc.DesiredAt, dc.ReportedAt = json.RawMessage(desired), fromMS(desiredAt), fromMS(reportedAt)
	if applied != "" {
		dc.Reported = json.RawMessage(applied)
	}
	if refused != "" {
		if err := json.Unmarshal([]byte(refused), &dc.Refused); err != nil {
			return DeviceConfig{}, fmt.Errorf("read configuration of %s: refused keys: %w", id, err)
		}
	}
	return dc, nil
}

// ReportConfig records what a device reports it applied. The config message of that version
// becomes succeeded (no key refused) or failed with reason "refused" (the detail names the
// keys); open config messages of older versions become superseded. A report of a version the
// server never sent is recorded all the same: the device says what it runs.
func (r *Registry) ReportConfig(ctx context.Context, device string, rep protocol.ReportedConfig) error {
	return r.ReportConfigs(ctx, []ConfigReport{{Device: device, Report: rep}})
}

// ConfigReport is one device's report, for ReportConfigs.
type ConfigReport struct {
	Device string
	Report protocol.ReportedConfig
}

// ReportConfigs records many devices' reports in one transaction (as ReportConfig does each):
// the group commit of a configuration change reaching thousands of devices at once. An
// invalid or unknown device fails the whole call; the caller then records them one by one.
func (r *Registry) ReportConfigs(ctx context.Context, reports []ConfigReport) error {
	type row struct {
		device, applied, refused string
		rep                      protocol.ReportedConfig
	}
	rows := make([]row, 0, len(reports))
	for _, cr := range reports {
		if err := validateDeviceID(cr.Device); err != nil {
			return fmt.Errorf("report configuration: %w", err)
		}
		rw := row{device: cr.Device, rep: cr.Report}
		if a := cr.Report.Applied; len(a) > 0 && string(a) != "null" {
			var b bytes.Buffer
			if err := json.Compact(&b, a); err != nil {
				return fmt.Errorf("report configuration of %s: %w: %v", cr.Device, ErrInvalid, err)
			}
			rw.applied = b.String()
		}
		if len(cr.Report.Refused) > 0 {
			b, err := json.Marshal(cr.Report.Refused)
			if err != nil {
				return err
			}
			rw.refused = string(b)
		}
		rows = append(rows, rw)
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		now := toMS(r.now())
		for _, rw := range rows {
			if _, err := r.lockDevice(ctx, tx, rw.device); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO device_config (device_id, desired_hash, applied, refused, applied_version, reported_at)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (device_id) DO UPDATE SET applied = excluded.applied, refused = excluded.refused,
					applied_version = excluded.applied_version, reported_at = excluded.reported_at`,
				rw.device, emptyDocumentHash, rw.applied, rw.refused, rw.rep.Version, now)
			if err != nil {
				return fmt.Errorf("device %s: %w", rw.device, err)
			}
			state, reason, detail := MessageSucceeded, "", ""
			if len(rw.rep.Refused) > 0 {
				keys := make([]string, 0, len(rw.rep.Refused))
				for k := range rw.rep.Refused {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				state, reason, detail = MessageFailed, "refused", truncate("refused keys: "+strings.Join(keys, ", "), 1024)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET state = $1, reason = $2, detail = $3, result = $4, updated_at = $5
				WHERE device_id = $6 AND kind = 'config' AND version = $7 AND state IN `+openStates,
				state, reason, detail, rw.refused, now, rw.device, rw.rep.Version); err != nil {
				return fmt.Errorf("device %s: %w", rw.device, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET state = 'superseded', reason = 'superseded', detail = $1, updated_at = $2
				WHERE device_id = $3 AND kind = 'config' AND version < $4 AND state IN `+openStates,
				fmt.Sprintf("version %d applied", rw.rep.Version), now, rw.device, rw.rep.Version); err != nil {
				return fmt.Errorf("device %s: %w", rw.device, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("report configuration: %w", err)
	}
	return nil
}

// ConfigStatus counts the devices with a desired configuration by where they are: InSync
// (the device reported the desired version applied, refusing nothing), Refused (it reported it
// with refused keys) and Pending (it has not reported the desired version yet).
type ConfigStatus struct {
	Devices int `json:"devices"`
	InSync  int `json:"in_sync"`
	Refused int `json:"refused"`
	Pending int `json:"pending"`
}

// ConfigStatus returns how far the fleet's desired configuration has come.
func (r *Registry) ConfigStatus(ctx context.Context) (ConfigStatus, error) {
	var s ConfigStatus
	err := r.db.QueryRowContext(ctx, `SELECT count(*),
			COALESCE(sum(CASE WHEN applied_version >= desired_version AND refused = '' THEN 1 ELSE 0 END), 0),
			COALESCE(sum(CASE WHEN applied_version >= desired_version AND refused <> '' THEN 1 ELSE 0 END), 0)
		FROM device_config WHERE desired_version > 0`).Scan(&s.Devices, &s.InSync, &s.Refused)
	if err != nil {
		return ConfigStatus{}, fmt.Errorf("configuration status: %w", err)
	}
	s.Pending = s.Devices - s.InSync - s.Refused
	return s, nil
}
