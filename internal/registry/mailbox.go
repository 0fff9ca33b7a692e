package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/millwright/millwright/protocol"
)

// The mailbox: everything the server sends one device — commands, its desired configuration,
// later firmware offers — is a row here before it travels, with an expiry and a state, so that
// nothing queued for a device that is away is lost by a server restart (docs/design.md,
// "Device channel"). The MQTT session only carries it.

// MessageState is where a mailbox message is in its life.
type MessageState string

// Message states. queued, delivered and acknowledged are open: the message is sent again at
// the device's next connection. The others are final.
const (
	// MessageQueued: stored, not sent yet (the device is away, or has not subscribed).
	MessageQueued MessageState = "queued"
	// MessageDelivered: sent on a connection (MQTT) or fetched (HTTPS); no acknowledgement yet.
	MessageDelivered MessageState = "delivered"
	// MessageAcknowledged: the device acknowledged it (MQTT PUBACK); no answer yet.
	MessageAcknowledged MessageState = "acknowledged"
	// MessageSucceeded: the device answered that it ran the command, or applied the
	// configuration without refusing a key.
	MessageSucceeded MessageState = "succeeded"
	// MessageFailed: the device answered that the command failed (Reason says why), or
	// refused keys of the configuration.
	MessageFailed MessageState = "failed"
	// MessageExpired: its expiry passed before the device answered.
	MessageExpired MessageState = "expired"
	// MessageSuperseded: a configuration replaced by a newer version before the device
	// applied it.
	MessageSuperseded MessageState = "superseded"
)

// Open reports whether s is not final: the message is still to be delivered or answered.
func (s MessageState) Open() bool {
	return s == MessageQueued || s == MessageDelivered || s == MessageAcknowledged
}

// Message kinds.
const (
	KindCommand = "command"
	KindConfig  = "config"
)

// openStates is the SQL list of the open states.
const openStates = `('queued', 'delivered', 'acknowledged')`

// Limits on commands.
const (
	// MaxCommandNameLen bounds a command's name.
	MaxCommandNameLen = 64
	// MaxCommandArgs bounds the arguments of one command.
	MaxCommandArgs = 32
	// MaxCommandArgLen bounds one argument's value, in bytes.
	MaxCommandArgLen = 1024
	// MaxCommandExpiry is the longest a command may wait for its device.
	MaxCommandExpiry = 365 * 24 * time.Hour
	// DefaultMaxOpenCommands is how many open commands a device may have by default
	// ([CommandSpec.MaxOpen]).
	DefaultMaxOpenCommands = 100
)

// ErrDeviceRevoked is returned for a command to a revoked device.
var ErrDeviceRevoked = errors.New("device is revoked")

// ErrMailboxFull is returned for a command to a device that has as many open commands as it
// may.
var ErrMailboxFull = errors.New("too many open commands for the device")

// Message is one mailbox entry.
type Message struct {
	ID     string `json:"id"`
	Device string `json:"device"`
	Kind   string `json:"kind"`
	// Name and Args are a command's; Version is a configuration's.
	Name    string            `json:"name,omitempty"`
	Args    map[string]string `json:"args,omitempty"`
	Version int64             `json:"version,omitempty"`
	// Payload is the JSON document sent to the device (a protocol.Command or
	// protocol.DesiredConfig).
	Payload json.RawMessage `json:"-"`
	State   MessageState    `json:"state"`
	// Reason, Detail and Result are the device's answer (or "expired", "superseded").
	Reason    string          `json:"reason,omitempty"`
	Detail    string          `json:"detail,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	CreatedBy string          `json:"created_by"`
	CreatedAt time.Time       `json:"created_at"`
	// ExpiresAt is zero for a message that never expires (a configuration).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at"`
	// Attempts counts the times the message was sent to the device.
	Attempts int `json:"attempts"`
}

const messageColumns = `id, device_id, kind, name, payload, version, state, reason, detail, result, created_by, created_at, expires_at, updated_at, attempts`

func scanMessage(s scanner) (Message, error) {
	var (
		m                             Message
		payload, result               string
		created, expires, updated, at int64
	)
	err := s.Scan(&m.ID, &m.Device, &m.Kind, &m.Name, &payload, &m.Version, &m.State, &m.Reason, &m.Detail, &result,
		&m.CreatedBy, &created, &expires, &updated, &at)
	if err != nil {
		return Message{}, err
	}
	m.Payload = json.RawMessage(payload)
	if result != "" {
		m.Result = json.RawMessage(result)
	}
	m.CreatedAt, m.ExpiresAt, m.UpdatedAt, m.Attempts = fromMS(created), fromMS(expires), fromMS(updated), int(at)
	if m.Kind == KindCommand {
		var c protocol.Command
		if json.Unmarshal(m.Payload, &c) == nil {
			m.Args = c.Args
		}
	}
	return m, nil
}

// newMessageID returns a mailbox message ID: "m-", the creation time in hexadecimal
// milliseconds (so IDs of one device sort roughly by age), "-" and 16 random hex digits. It is
// a valid MQTT topic level and protocol.ValidateMessageID accepts it.
func newMessageID(now time.Time) string {
	return fmt.Sprintf("m-%x-%s", now.UnixMilli(), randomHex(16))
}

// CommandSpec is a command for a device.
type CommandSpec struct {
	Device string
	Name   string
	Args   map[string]string
	// TTL is how long the command may wait for the device; 0 means 24 hours. At most
	// MaxCommandExpiry.
	TTL time.Duration
	// MaxOpen bounds the device's open commands; 0 means DefaultMaxOpenCommands.
	MaxOpen int
	// MaxArgLen bounds one argument's value; 0 means MaxCommandArgLen. The server's own
	// senders raise it (a firmware offer carries a signed manifest); the API does not.
	MaxArgLen int
}

// ValidateCommandName checks a command name: 1 to MaxCommandNameLen bytes of a-z, 0-9 and
// "._-", starting with a letter.
func ValidateCommandName(name string) error {
	if name == "" || len(name) > MaxCommandNameLen {
		return fmt.Errorf("%w: command name %q must be 1 to %d bytes long", ErrInvalid, name, MaxCommandNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			continue
		}
		return fmt.Errorf("%w: command name %q: only a-z, 0-9 and ._- are allowed, starting with a letter", ErrInvalid, name)
	}
	return nil
}

func (c CommandSpec) validate() error {
	if err := validateDeviceID(c.Device); err != nil {
		return err
	}
	if err := ValidateCommandName(c.Name); err != nil {
		return err
	}
	if len(c.Args) > MaxCommandArgs {
		return fmt.Errorf("%w: %d arguments, at most %d", ErrInvalid, len(c.Args), MaxCommandArgs)
	}
	for k, v := range c.Args {
		if err := validateName("argument name", k); err != nil {
			return err
		}
		limit := MaxCommandArgLen
		if c.MaxArgLen > 0 {
			limit = c.MaxArgLen
		}
		if err := validateText("argument "+k, v, limit); err != nil {
			return err
		}
	}
	if c.TTL < 0 || c.TTL > MaxCommandExpiry {
		return fmt.Errorf("%w: expiry %v is outside (0, %v]", ErrInvalid, c.TTL, MaxCommandExpiry)
	}
	return nil
}

// SendCommand queues a command for a device: it is refused for a revoked device
// (ErrDeviceRevoked), an unknown one (ErrNotFound), or one with MaxOpen open commands
// (ErrMailboxFull). It is audited as command.send.
func (r *Registry) SendCommand(ctx context.Context, spec CommandSpec, actor, remote string) (Message, error) {
	if err := spec.validate(); err != nil {
		return Message{}, fmt.Errorf("send command: %w", err)
	}
	if spec.TTL == 0 {
		spec.TTL = 24 * time.Hour
	}
	if spec.MaxOpen <= 0 {
		spec.MaxOpen = DefaultMaxOpenCommands
	}
	var msg Message
	err := r.write(ctx, func(tx *sql.Tx) error {
		st, err := r.lockDevice(ctx, tx, spec.Device)
		if err != nil {
			return err
		}
		if st == StatusRevoked {
			return fmt.Errorf("device %s: %w", spec.Device, ErrDeviceRevoked)
		}
		now := r.now()
		var open int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM mailbox WHERE device_id = $1 AND kind = 'command' AND state IN `+openStates+`
			AND (expires_at = 0 OR expires_at > $2)`, spec.Device, toMS(now)).Scan(&open); err != nil {
			return err
		}
		if open >= spec.MaxOpen {
			return fmt.Errorf("device %s has %d open commands: %w", spec.Device, open, ErrMailboxFull)
		}
		if msg, err = queueCommand(ctx, tx, spec, actor, now); err != nil {
			return err
		}
		detail := strings.TrimSpace(spec.Name + " " + describeTags("args", spec.Args) + " expires " + msg.ExpiresAt.Format(time.RFC3339))
		return r.audit(ctx, tx, now, actor, ActionCommandSend, spec.Device, msg.ID+": "+detail, remote)
	})
	if err != nil {
		return Message{}, fmt.Errorf("send command to %s: %w", spec.Device, err)
	}
	return msg, nil
}

// queueCommand inserts a checked command into the mailbox, queued, and returns it.
func queueCommand(ctx context.Context, q querier, spec CommandSpec, actor string, now time.Time) (Message, error) {
	id := newMessageID(now)
	expires := now.Add(spec.TTL)
	payload, err := json.Marshal(protocol.Command{ID: id, Name: spec.Name, Args: spec.Args, ExpiresAt: expires})
	if err != nil {
		return Message{}, err
	}
	msg := Message{ID: id, Device: spec.Device, Kind: KindCommand, Name: spec.Name, Args: spec.Args, Payload: payload,
		State: MessageQueued, CreatedBy: actor, CreatedAt: now, ExpiresAt: expires, UpdatedAt: now}
	return msg, insertMessage(ctx, q, msg)
}

// ActionCommandSend and ActionConfigSet are the audit actions of the device channel.
const (
	ActionCommandSend = "command.send"
	ActionConfigSet   = "config.set"
)

func insertMessage(ctx context.Context, q querier, m Message) error {
	_, err := q.ExecContext(ctx, `INSERT INTO mailbox (`+messageColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		m.ID, m.Device, m.Kind, m.Name, string(m.Payload), m.Version, m.State, m.Reason, m.Detail, string(m.Result),
		m.CreatedBy, toMS(m.CreatedAt), toMS(m.ExpiresAt), toMS(m.UpdatedAt), m.Attempts)
	return err
}

// OpenMessages returns the device's open, unexpired messages of kind ("" for every kind),
// oldest first. This is the connect-time query: one index range scan.
func (r *Registry) OpenMessages(ctx context.Context, device, kind string) ([]Message, error) {
	if kind == "" {
		return r.scanMessages(r.openMessages.QueryContext(ctx, device, toMS(r.now())))
	}
	return r.scanMessages(r.openMessagesOfKind.QueryContext(ctx, device, toMS(r.now()), kind))
}

// openMessagesQuery selects a device's open, unexpired messages ($1 device, $2 now).
const openMessagesQuery = `SELECT ` + messageColumns + ` FROM mailbox WHERE device_id = $1 AND state IN ` + openStates + `
		AND (expires_at = 0 OR expires_at > $2)`

func (r *Registry) messages(ctx context.Context, q string, args ...any) ([]Message, error) {
	return r.scanMessages(r.db.QueryContext(ctx, q, args...))
}

func (r *Registry) scanMessages(rows *sql.Rows, err error) ([]Message, error) {
	if err != nil {
		return nil, fmt.Errorf("read mailbox: %w", err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("read mailbox: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read mailbox: %w", err)
	}
	return out, nil
}

// Message returns one mailbox message by ID.
func (r *Registry) Message(ctx context.Context, id string) (Message, error) {
	if err := protocol.ValidateMessageID(id); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m, err := scanMessage(r.db.QueryRowContext(ctx, `SELECT `+messageColumns+` FROM mailbox WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Message{}, fmt.Errorf("message %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Message{}, fmt.Errorf("read message %s: %w", id, err)
	}
	return m, nil
}

// ListMessages returns a device's messages of kind ("" for every kind), newest first, at most
// limit (default 100, at most 10,000), those created before the message before when it is
// not "".
func (r *Registry) ListMessages(ctx context.Context, device, kind string, limit int, before string) ([]Message, error) {
	if err := validateDeviceID(device); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	q := `SELECT ` + messageColumns + ` FROM mailbox WHERE device_id = $1`
	args := []any{device}
	if kind != "" {
		args = append(args, kind)
		q += fmt.Sprintf(` AND kind = $%d`, len(args))
	}
	if before != "" {
		b, err := r.Message(ctx, before)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		args = append(args, toMS(b.CreatedAt), b.ID)
		q += fmt.Sprintf(` AND (created_at < $%d OR created_at = $%d AND id < $%d)`, len(args)-1, len(args)-1, len(args))
	}
	args = append(args, clampLimit(limit))
	q += fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d`, len(args))
	return r.messages(ctx, q, args...)
}

// Progress is a step of an open message's delivery: sent on a connection or fetched
// (MessageDelivered), or acknowledged by the device (MessageAcknowledged).
type Progress struct {
	ID    string
	State MessageState
}

// RecordProgress records many delivery steps in one transaction, the cheap way under a
// config change to thousands of devices. A step never moves a message backwards nor changes
// a final one's state; delivered also counts an attempt.
func (r *Registry) RecordProgress(ctx context.Context, steps []Progress) error {
	if len(steps) == 0 {
		return nil
	}
	now := toMS(r.now())
	err := r.write(ctx, func(tx *sql.Tx) error {
		// A send counts as an attempt even when the answer was recorded first (the steps are
		// written in batches, the answer at once).
		deliver, err := tx.PrepareContext(ctx, `UPDATE mailbox SET attempts = attempts + 1,
			updated_at = CASE WHEN state = 'queued' THEN $1 ELSE updated_at END,
			state = CASE WHEN state = 'queued' THEN 'delivered' ELSE state END
			WHERE id = $2`)
		if err != nil {
			return err
		}
		defer deliver.Close()
		ack, err := tx.PrepareContext(ctx, `UPDATE mailbox SET state = 'acknowledged', updated_at = $1
			WHERE id = $2 AND state IN ('queued', 'delivered')`)
		if err != nil {
			return err
		}
		defer ack.Close()
		for _, s := range steps {
			st := deliver
			switch s.State {
			case MessageDelivered:
			case MessageAcknowledged:
				st = ack
			default:
				return fmt.Errorf("%w: %q is not a delivery step", ErrInvalid, s.State)
			}
			if _, err := st.ExecContext(ctx, now, s.ID); err != nil {
				return fmt.Errorf("message %s: %w", s.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// CompleteCommand records a device's reply to one of its commands and returns the message as
// it is now. A reply to a command already final (a reply sent again) changes nothing; a reply
// naming a message that is not one of the device's commands is ErrNotFound.
func (r *Registry) CompleteCommand(ctx context.Context, device, id string, reply protocol.Reply) (Message, error) {
	if err := protocol.ValidateMessageID(id); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	state := MessageSucceeded
	if reply.State == protocol.ReplyFailed {
		state = MessageFailed
	}
	var out Message
	err := r.write(ctx, func(tx *sql.Tx) error {
		m, err := scanMessage(tx.QueryRowContext(ctx, `SELECT `+messageColumns+` FROM mailbox WHERE id = $1`+r.d.forUpdate, id))
		if errors.Is(err, sql.ErrNoRows) || err == nil && (m.Device != device || m.Kind != KindCommand) {
			return fmt.Errorf("command %s of device %s: %w", id, device, ErrNotFound)
		}
		if err != nil {
			return err
		}
		out = m
		if !m.State.Open() {
			return nil
		}
		now := r.now()
		_, err = tx.ExecContext(ctx, `UPDATE mailbox SET state = $1, reason = $2, detail = $3, result = $4, updated_at = $5 WHERE id = $6`,
			state, reply.Reason, reply.Detail, string(reply.Result), toMS(now), id)
		out.State, out.Reason, out.Detail, out.Result, out.UpdatedAt = state, reply.Reason, reply.Detail, reply.Result, now
		return err
	})
	if err != nil {
		return Message{}, fmt.Errorf("complete command: %w", err)
	}
	return out, nil
}

// ExpireMessages marks every open message whose expiry has passed as expired and returns
// them (ID and device).
func (r *Registry) ExpireMessages(ctx context.Context) ([]Message, error) {
	now := toMS(r.now())
	var out []Message
	err := r.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, device_id FROM mailbox WHERE state IN `+openStates+`
			AND expires_at <> 0 AND expires_at <= $1`, now)
		if err != nil {
			return err
		}
		for rows.Next() {
			var m Message
			if err := rows.Scan(&m.ID, &m.Device); err != nil {
				rows.Close()
				return err
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE mailbox SET state = 'expired', reason = 'expired', updated_at = $1
			WHERE state IN `+openStates+` AND expires_at <> 0 AND expires_at <= $1`, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("expire messages: %w", err)
	}
	return out, nil
}
