// Package protocol is the wire contract between a Millwright device and the
// Millwright server: what a device publishes, where, in which encoding, and
// what the server answers. Firmware authors implement exactly this; the
// device agent (package agent) and the server's ingest path both import it,
// so the two sides cannot drift apart. It depends on no server code.
//
// The contract, in short (docs/protocol.md is the full specification):
//
//   - Topics: every device owns the MQTT topic tree DeviceRoot(id),
//     "mw/v1/<device-id>/", and publishes telemetry to BatchTopic(id). A
//     device ID is a DNS label (ValidateDeviceID). The topics of the device
//     channel (CommandTopic, ConfigTopic, ConfigReportedTopic, StateTopic,
//     ReplyTopic) are reserved for it.
//   - Transports: MQTT 5 over TLS, where a device reports what it is in
//     CONNECT user properties (PropHardwareModel, PropNetworkOperator,
//     PropFirmwareVersion) and the server answers with the reason codes named
//     MQTT*; or HTTPS POSTs to BatchPath.
//   - Telemetry: a batch is one SenML pack (RFC 8428, type Pack) encoded as
//     CBOR with integer labels or as JSON, optionally zstd-compressed; the
//     first bytes tell which (Sniff). The first record may carry the
//     Millwright extension field "mw_seq", a per-device batch sequence
//     number that lets the server count lost and repeated batches.
//   - Decoding: Decode checks the size limits (Limits), decompresses with a
//     bound, parses, and resolves the pack (Resolve, RFC 8428 §4.6) into a
//     Batch of Measurements with absolute millisecond timestamps.
//   - Answers: a refused batch carries a Reason, which maps to an MQTT 5
//     PUBACK reason code and to an HTTP status, and tells the device whether
//     to retry the batch or to drop it from its spool (Reason.Retry).
//
// Encode is the device side of Decode. Everything in this package is safe for
// concurrent use.
package protocol
