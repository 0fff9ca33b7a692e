// Package apitypes is the wire contract of Millwright's operator API: the envelope every
// answer comes in, its error types, and the bodies of the device, enrollment-token, operator,
// certificate, audit, configuration and command routes. The server (package api) encodes these types and clients —
// the millwright command line, the fleet simulator through it — decode them. It imports
// nothing of the server, so a client that uses it links neither the registry nor its SQL
// drivers; internal/api/openapi.json describes the same bodies for other clients.
//
// The PromQL routes answer in Prometheus's own formats, which are not repeated here.
package apitypes

import (
	"encoding/json"
	"time"
)

// Response is the envelope of every answer: Status is StatusSuccess with Data, or
// StatusError with ErrorType and Error. The server encodes Response[any]; a client decodes
// Response[json.RawMessage] and then Data into the type of the route.
type Response[T any] struct {
	Status    string    `json:"status"`
	Data      T         `json:"data,omitempty"`
	ErrorType ErrorType `json:"errorType,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// Envelope statuses.
const (
	StatusSuccess = "success"
	StatusError   = "error"
)

// ErrorType is the stable, machine-readable kind of an error answer; the message beside it
// is for people and may change.
type ErrorType string

// Error types. The first seven are Prometheus's, with the meanings Prometheus gives them.
const (
	ErrorBadData      ErrorType = "bad_data"     // 400: a parameter or body is invalid
	ErrorExecution    ErrorType = "execution"    // 422: a query failed to evaluate
	ErrorTimeout      ErrorType = "timeout"      // 503: a query's timeout ended
	ErrorCanceled     ErrorType = "canceled"     // 503: the request ended first
	ErrorInternal     ErrorType = "internal"     // 500
	ErrorNotFound     ErrorType = "not_found"    // 404: no such route or object
	ErrorUnavailable  ErrorType = "unavailable"  // 503
	ErrorUnauthorized ErrorType = "unauthorized" // 401: no token, or not a valid one
	ErrorForbidden    ErrorType = "forbidden"    // 403: the token's role is too low
	ErrorConflict     ErrorType = "conflict"     // 409: the object exists already
)

// DeviceStatus is a device's lifecycle state.
type DeviceStatus string

// Device statuses.
const (
	DevicePending   DeviceStatus = "pending"   // created, not enrolled yet
	DeviceActive    DeviceStatus = "active"    // admitted at connect
	DeviceSuspended DeviceStatus = "suspended" // refused at connect until resumed
	DeviceRevoked   DeviceStatus = "revoked"   // refused for good, its certificates revoked
)

// Device is a device of the fleet (GET /api/v1/devices/{id}, and the answer of every device
// mutation).
type Device struct {
	ID     string       `json:"id"`
	Status DeviceStatus `json:"status"`
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

// DeviceList is one page of GET /api/v1/devices.
type DeviceList struct {
	Devices []Device `json:"devices"`
	// Next continues the listing as the "after" parameter; "" on the last page.
	Next string `json:"next"`
}

// TagsRequest is the body of POST /api/v1/devices/{id}/tags.
type TagsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// GroupsRequest is the body of POST /api/v1/devices/{id}/groups.
type GroupsRequest struct {
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// MaxTokensPerRequest bounds TokensRequest.Count.
const MaxTokensPerRequest = 10000

// TokensRequest is the body of POST /api/v1/enrollment-tokens.
type TokensRequest struct {
	// Count is how many tokens, 1 to MaxTokensPerRequest; 0 means 1.
	Count int `json:"count,omitempty"`
	// Expires is how long the tokens stay usable, a duration ("36h", "90d"); "" means 24h.
	Expires string `json:"expires,omitempty"`
	// Model is the hardware model an enrolling device must state; "" for any.
	Model string `json:"model,omitempty"`
	// Tags are given to the enrolled device.
	Tags map[string]string `json:"tags,omitempty"`
	// DeviceID binds the token to a device ID (Count 1); "" lets the server assign one.
	DeviceID string `json:"device_id,omitempty"`
}

// TokensCreated answers POST /api/v1/enrollment-tokens: the tokens in plaintext, the only
// time they exist so (the server keeps their hashes).
type TokensCreated struct {
	Tokens []string `json:"tokens"`
	// IDs name the tokens, in the same order, for tokens list and revoke.
	IDs       []string `json:"ids"`
	ExpiresIn string   `json:"expires_in"`
}

// EnrollmentToken is a stored enrollment token, without its secret.
type EnrollmentToken struct {
	ID string `json:"id"`
	// State is unused, used or expired.
	State     string            `json:"state"`
	Model     string            `json:"model,omitempty"`
	DeviceID  string            `json:"device_id,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	CreatedBy string            `json:"created_by"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	UsedAt    time.Time         `json:"used_at,omitzero"`
	UsedBy    string            `json:"used_by,omitempty"`
}

// TokenList is the answer of GET /api/v1/enrollment-tokens.
type TokenList struct {
	Tokens []EnrollmentToken `json:"tokens"`
}

// DeviceDeleted is the answer of DELETE /api/v1/devices/{id}: the device is gone from the
// registry, its series from the store, and Events of its events from the event log.
type DeviceDeleted struct {
	Deleted string `json:"deleted"`
	Events  int    `json:"events"`
}

// TokenRevoked is the answer of DELETE /api/v1/enrollment-tokens/{id}.
type TokenRevoked struct {
	Revoked string `json:"revoked"`
}

// Role is an operator's role: a role may do what every lower role may.
type Role string

// Roles, from most to least powerful.
const (
	RoleAdmin    Role = "admin"    // everything, including managing operators
	RoleOperator Role = "operator" // manage devices, tokens and certificates
	RoleViewer   Role = "viewer"   // read only
)

// Whoami is the answer of GET /api/v1/whoami: who the request's token belongs to, and its
// role ("admin" for the bootstrap admin token, "operator:<name>" for an operator's).
type Whoami struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// Operator is a person or program holding an API token.
type Operator struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at"` // zero while the token is valid
}

// OperatorRequest is the body of POST /api/v1/operators.
type OperatorRequest struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// OperatorCreated answers POST /api/v1/operators: the operator and its API token in
// plaintext, the only time it exists so.
type OperatorCreated struct {
	Operator Operator `json:"operator"`
	Token    string   `json:"token"`
}

// OperatorRevoked answers DELETE /api/v1/operators/{id}.
type OperatorRevoked struct {
	Revoked string `json:"revoked"`
}

// MaxCertificatesPerRequest bounds CertificatesRequest.Certificates; a client registers more
// in several requests.
const MaxCertificatesPerRequest = 1000

// CertificatesRequest is the body of POST /api/v1/certificates, which records device
// certificates issued outside enrollment (development certificates, simulated fleets,
// certificates from the operator's own issuing process) so that the gateway admits their
// devices, as enrollment would.
type CertificatesRequest struct {
	// Certificates are PEM "CERTIFICATE" blocks, one device certificate each, 1 to
	// MaxCertificatesPerRequest. Each must verify against the server's CA for client
	// authentication; its common name is the device ID. A missing device is created active.
	Certificates []string `json:"certificates"`
}

// CertificatesRegistered answers POST /api/v1/certificates.
type CertificatesRegistered struct {
	// Registered is how many certificates were newly recorded; the others were recorded for
	// their devices already.
	Registered int `json:"registered"`
}

// AuditEntry is one line of the audit log (GET /api/v1/audit): who did what to which object,
// when and from where.
type AuditEntry struct {
	ID     int64     `json:"id"`     // increasing; newer entries have larger IDs
	At     time.Time `json:"at"`     // UTC, millisecond precision
	Actor  string    `json:"actor"`  // "admin", "operator:<name>", "enroll:<token ID>", "device:<device ID>" or "system"
	Action string    `json:"action"` // e.g. "device.status"
	Target string    `json:"target"` // the object acted on: a device, operator or token ID
	Detail string    `json:"detail"` // human-readable specifics, e.g. "active -> suspended"
	Remote string    `json:"remote"` // the client's address, "" when not known
}

// Limits of the configuration and command routes, as the server applies them; a client may
// check its input against them before sending it.
const (
	// MaxConfigDocument bounds a configuration layer's document, in bytes.
	MaxConfigDocument = 32 << 10
	// MaxCommandArgs bounds the arguments of one command.
	MaxCommandArgs = 32
	// DefaultCommandExpiry is how long a command waits for its device when
	// CommandRequest.Expires is "".
	DefaultCommandExpiry = 24 * time.Hour
	// MaxCommandExpiry bounds CommandRequest.Expires.
	MaxCommandExpiry = 365 * 24 * time.Hour
	// MaxCommandWait bounds CommandRequest.Wait and the wait parameter of
	// GET /api/v1/commands/{id}.
	MaxCommandWait = 5 * time.Minute
)

// ConfigLayerRequest sets (Document a JSON object) or removes (Document null or absent) one
// layer of desired configuration: Scope is fleet, group, tag or device; Selector is "" for the
// fleet, a group name, "key=value" or a device ID. The document must satisfy the agent's
// schema (GET /api/v1/config/schema); a document that breaks it is refused with the failing
// JSON path.
type ConfigLayerRequest struct {
	Scope    string          `json:"scope"`
	Selector string          `json:"selector"`
	Document json.RawMessage `json:"document"`
}

// ConfigLayerSet is the answer to a ConfigLayerRequest: how many devices' documents changed
// (each gets the new version through its mailbox).
type ConfigLayerSet struct {
	Scope          string `json:"scope"`
	Selector       string `json:"selector"`
	DevicesChanged int    `json:"devices_changed"`
	// DevicesTooLarge lists the devices whose computed document would exceed the document
	// limit: the layer is stored, and they keep their previous document.
	DevicesTooLarge []string `json:"devices_too_large,omitempty"`
}

// ConfigLayer is one layer of desired configuration.
type ConfigLayer struct {
	Scope     string          `json:"scope"`
	Selector  string          `json:"selector"`
	Document  json.RawMessage `json:"document"`
	UpdatedAt time.Time       `json:"updated_at"`
	UpdatedBy string          `json:"updated_by"`
}

// DeviceConfig is a device's desired configuration, computed from Layers (lowest first), and
// what the device reported it applied. Difference lists the keys (dotted paths) whose
// desired and reported values differ; Refused maps the keys the device refused to its reason.
type DeviceConfig struct {
	Device         string            `json:"device"`
	Desired        json.RawMessage   `json:"desired"`
	DesiredVersion int64             `json:"desired_version"`
	DesiredAt      time.Time         `json:"desired_at,omitzero"`
	Layers         []string          `json:"layers"`
	Reported       json.RawMessage   `json:"reported"`
	AppliedVersion int64             `json:"applied_version"`
	Refused        map[string]string `json:"refused"`
	ReportedAt     time.Time         `json:"reported_at,omitzero"`
	Difference     []string          `json:"difference"`
}

// CommandRequest sends a command to a device: Expires (a duration such as "24h", default
// 24 h, at most a year) bounds how long it waits for the device; Wait (a duration, at most
// 5 m), when set, makes the answer wait for the command to finish and show its outcome.
type CommandRequest struct {
	Name    string            `json:"name"`
	Args    map[string]string `json:"args,omitempty"`
	Expires string            `json:"expires,omitempty"`
	Wait    string            `json:"wait,omitempty"`
}

// Command is a command in a device's mailbox. State is queued, delivered, acknowledged,
// succeeded, failed or expired; Reason, Detail and Result are the device's answer.
type Command struct {
	ID        string            `json:"id"`
	Device    string            `json:"device"`
	Name      string            `json:"name"`
	Args      map[string]string `json:"args,omitempty"`
	State     string            `json:"state"`
	Reason    string            `json:"reason,omitempty"`
	Detail    string            `json:"detail,omitempty"`
	Result    json.RawMessage   `json:"result,omitempty"`
	CreatedBy string            `json:"created_by"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	Attempts  int               `json:"attempts"`
}

// CommandList is a page of a device's commands, newest first; Next, when not empty, is the
// "before" parameter of the next page.
type CommandList struct {
	Commands []Command `json:"commands"`
	Next     string    `json:"next,omitempty"`
}

// ConfigStatus counts the devices that have a desired configuration: InSync reported the
// desired version applied, Refused reported it with refused keys, Pending has not reported it.
type ConfigStatus struct {
	Devices int `json:"devices"`
	InSync  int `json:"in_sync"`
	Refused int `json:"refused"`
	Pending int `json:"pending"`
}

// Session is one ended MQTT connection of a device, in its connection history
// (GET /api/v1/devices/{id}/sessions).
type Session struct {
	ID             int64     `json:"id"`
	Device         string    `json:"device"`
	ConnectedAt    time.Time `json:"connected_at"`
	DisconnectedAt time.Time `json:"disconnected_at"`
	// DurationSeconds is DisconnectedAt − ConnectedAt.
	DurationSeconds float64 `json:"duration_seconds"`
	// Cause is why it ended: clean, keepalive_timeout, reset, protocol_error, takeover,
	// kicked or server_shutdown.
	Cause            string `json:"cause"`
	ReceivedBytes    int64  `json:"received_bytes"`
	SentBytes        int64  `json:"sent_bytes"`
	ReceivedMessages int64  `json:"received_messages"`
	SentMessages     int64  `json:"sent_messages"`
	TLSVersion       string `json:"tls_version"`
	MQTTVersion      int    `json:"mqtt_version"`
	Remote           string `json:"remote"`
	Node             string `json:"node"`
}

// SessionList is a page of a device's sessions, newest first; Next, when not 0, is the
// before parameter of the next page.
type SessionList struct {
	Sessions []Session `json:"sessions"`
	Next     int64     `json:"next,omitempty"`
}

// DeviceLiveness is one device's liveness (GET /api/v1/liveness): online (connected, or heard
// from within k × its interval), silent (unheard for longer, within the offline bound) or
// offline.
type DeviceLiveness struct {
	Device    string    `json:"device"`
	State     string    `json:"state"`
	Connected bool      `json:"connected"`
	LastHeard time.Time `json:"last_heard"`
	// IntervalSeconds is the device's expected reporting interval; IntervalSource says where
	// it came from: reported, configured or default. SilentAfter is when it turns silent
	// if not heard from before.
	IntervalSeconds float64   `json:"interval_seconds"`
	IntervalSource  string    `json:"interval_source"`
	SilentAfter     time.Time `json:"silent_after"`
	Firmware        string    `json:"firmware"`
	Model           string    `json:"model"`
	Operator        string    `json:"operator"`
	Groups          []string  `json:"groups"`
}

// LivenessList is a page of the active devices' liveness at the monitor's last judgement
// (At), sorted by device ID; Next, when set, is the after parameter of the next page.
type LivenessList struct {
	At      time.Time        `json:"at"`
	Devices []DeviceLiveness `json:"devices"`
	Next    string           `json:"next,omitempty"`
}

// Page sizes of GET /api/v1/liveness.
const (
	DefaultLivenessLimit = 1000
	MaxLivenessLimit     = 10000
)

// LivenessCount is the number of active devices in each state for one value of a dimension.
type LivenessCount struct {
	Value   string `json:"value"`
	Online  int    `json:"online"`
	Silent  int    `json:"silent"`
	Offline int    `json:"offline"`
}

// LivenessCounts counts the active devices by state for each value of By (firmware, model,
// operator, group, or "" for the whole fleet).
type LivenessCounts struct {
	At     time.Time       `json:"at"`
	By     string          `json:"by"`
	Counts []LivenessCount `json:"counts"`
}

// FirmwareRelease is one artifact of a firmware release in the archive: a version for one
// hardware model (POST /api/v1/firmware answers it; GET /api/v1/firmware lists them).
type FirmwareRelease struct {
	Version string `json:"version"`
	Model   string `json:"model"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	MinFrom string `json:"min_from"`
	Notes   string `json:"notes"`
	// Manifest is the signed manifest as uploaded (protocol/firmware.SignedManifest).
	Manifest   json.RawMessage `json:"manifest"`
	UploadedBy string          `json:"uploaded_by"`
	UploadedAt time.Time       `json:"uploaded_at"`
}

// FirmwareList is the archive's releases, by model and upload time.
type FirmwareList struct {
	Releases []FirmwareRelease `json:"releases"`
}

// Multipart form fields of a firmware upload (POST /api/v1/firmware): the signed manifest
// first, then the artifact it pins.
const (
	FirmwareManifestField = "manifest"
	FirmwareArtifactField = "artifact"
)
