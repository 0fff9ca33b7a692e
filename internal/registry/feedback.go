package registry

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Feedback is one event an operator or an integration recorded against a device: a person's
// feedback, an incident, a crash report. It is kept with the firmware version and hardware
// model the device had when it was recorded, so feedback is counted per firmware version
// (FeedbackSummary) and a rollout's health gate can compare the new version's with the old
// one's (docs/rollouts.md).
type Feedback struct {
	ID       int64  `json:"id"`
	Device   string `json:"device"`
	Firmware string `json:"firmware"`
	Model    string `json:"model"`
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	// Source is what recorded it: "operator:NAME", or that and the integration it named
	// ("operator:helpdesk via zendesk").
	Source string    `json:"source"`
	At     time.Time `json:"at"`
}

// Feedback kinds and severities; an event takes one of each.
var (
	FeedbackKinds      = []string{"feedback", "incident", "crash"}
	FeedbackSeverities = []string{"info", "warning", "critical"}
)

// Limits of a feedback event.
const (
	// MaxFeedbackMessage bounds a message's bytes.
	MaxFeedbackMessage = 2000
	// MaxFeedbackSource bounds the integration's name.
	MaxFeedbackSource = 100
	// FeedbackClockSkew is how far in the future an event's time may be.
	FeedbackClockSkew = 5 * time.Minute
)

// ActionFeedback is the audit action of a recorded feedback event.
const ActionFeedback = "device.feedback"

// RecordFeedback records f against its device and returns it with its ID, the device's
// firmware version and model, and its time (now when f.At is zero). Kind must be one of
// FeedbackKinds; Severity one of FeedbackSeverities (default "warning"). Unknown devices are
// refused with ErrNotFound, bad fields with ErrInvalid.
func (r *Registry) RecordFeedback(ctx context.Context, f Feedback, actor, remote string) (Feedback, error) {
	now := r.now()
	if f.Severity == "" {
		f.Severity = "warning"
	}
	if f.At.IsZero() {
		f.At = now
	}
	f.At = f.At.UTC().Truncate(time.Millisecond)
	var bad string
	switch {
	case validateDeviceID(f.Device) != nil:
		bad = validateDeviceID(f.Device).Error()
	case !slices.Contains(FeedbackKinds, f.Kind):
		bad = fmt.Sprintf("kind %q is not one of %s", f.Kind, strings.Join(FeedbackKinds, ", "))
	case !slices.Contains(FeedbackSeverities, f.Severity):
		bad = fmt.Sprintf("severity %q is not one of %s", f.Severity, strings.Join(FeedbackSeverities, ", "))
	case len(f.Message) > MaxFeedbackMessage || !utf8.ValidString(f.Message):
		bad = fmt.Sprintf("the message must be UTF-8 of at most %d bytes", MaxFeedbackMessage)
	case len(f.Source) > MaxFeedbackSource || !utf8.ValidString(f.Source):
		bad = fmt.Sprintf("the source must be UTF-8 of at most %d bytes", MaxFeedbackSource)
	case f.At.After(now.Add(FeedbackClockSkew)):
		bad = fmt.Sprintf("its time %s is in the future", f.At.Format(time.RFC3339))
	}
	if bad != "" {
		return Feedback{}, fmt.Errorf("record feedback: %w: %s", ErrInvalid, bad)
	}
	source := actor
	if f.Source != "" {
		source += " via " + f.Source
	}
	f.Source = source
	err := r.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT firmware_version, hardware_model FROM devices WHERE id = $1`, f.Device).Scan(&f.Firmware, &f.Model)
		if err == sql.ErrNoRows {
			return fmt.Errorf("device %s: %w", f.Device, ErrNotFound)
		}
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO feedback_events (device_id, firmware_version, model, kind, severity, message, source, at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
			f.Device, f.Firmware, f.Model, f.Kind, f.Severity, f.Message, f.Source, toMS(f.At)).Scan(&f.ID)
		if err != nil {
			return err
		}
		return r.audit(ctx, tx, now, actor, ActionFeedback, f.Device, fmt.Sprintf("%s %s on %s", f.Severity, f.Kind, dashIfEmpty(f.Firmware)), remote)
	})
	if err != nil {
		return Feedback{}, fmt.Errorf("record feedback: %w", err)
	}
	return f, nil
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// FeedbackFilter selects feedback events; every field given must match.
type FeedbackFilter struct {
	Device, Firmware, Kind string
	// Limit bounds the events returned (default 100, at most 1000); Before > 0 continues a
	// listing: only events with smaller IDs.
	Limit  int
	Before int64
}

// ListFeedback returns the feedback events f selects, newest first.
func (r *Registry) ListFeedback(ctx context.Context, f FeedbackFilter) ([]Feedback, error) {
	limit, before := pageBounds(f.Limit, f.Before, 100, 1000)
	q := `SELECT id, device_id, firmware_version, model, kind, severity, message, source, at FROM feedback_events WHERE id < $1`
	args := []any{before}
	for _, c := range []struct{ col, v string }{{"device_id", f.Device}, {"firmware_version", f.Firmware}, {"kind", f.Kind}} {
		if c.v != "" {
			args = append(args, c.v)
			q += fmt.Sprintf(" AND %s = $%d", c.col, len(args))
		}
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY id DESC LIMIT $%d", len(args))
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list feedback: %w", err)
	}
	out := []Feedback{}
	err = eachRow(rows, func() error {
		var (
			e  Feedback
			at int64
		)
		err := rows.Scan(&e.ID, &e.Device, &e.Firmware, &e.Model, &e.Kind, &e.Severity, &e.Message, &e.Source, &at)
		e.At = fromMS(at)
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list feedback: %w", err)
	}
	return out, nil
}

// FeedbackCount is the feedback of one firmware version and kind since a time, and how many
// devices it came from; Fleet is how many devices run that version now.
type FeedbackCount struct {
	Firmware string `json:"firmware"`
	Kind     string `json:"kind"`
	Events   int64  `json:"events"`
	Devices  int64  `json:"devices"`
	Fleet    int64  `json:"fleet"`
}

// FeedbackSummary counts the feedback events recorded since a time per firmware version and
// kind, by version then kind.
func (r *Registry) FeedbackSummary(ctx context.Context, since time.Time) ([]FeedbackCount, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT f.firmware_version, f.kind, COUNT(*), COUNT(DISTINCT f.device_id),
			(SELECT COUNT(*) FROM devices d WHERE d.firmware_version = f.firmware_version)
		FROM feedback_events f WHERE f.at >= $1 GROUP BY f.firmware_version, f.kind ORDER BY f.firmware_version, f.kind`, toMS(since))
	if err != nil {
		return nil, fmt.Errorf("summarize feedback: %w", err)
	}
	out := []FeedbackCount{}
	err = eachRow(rows, func() error {
		var c FeedbackCount
		err := rows.Scan(&c.Firmware, &c.Kind, &c.Events, &c.Devices, &c.Fleet)
		out = append(out, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("summarize feedback: %w", err)
	}
	return out, nil
}
