// Package agent is the Millwright device agent: it stores every measurement
// on the device first, in the durable spool (package agent/spool), and sends
// the measurements in compressed SenML batches to the server, deleting them
// only once the server has acknowledged them durably.
//
// The parts, each in its own file:
//
//   - Config (config.go): the YAML configuration, laid over DefaultConfig,
//     strictly decoded (an unknown key, a bad duration or an unreadable file
//     is an error naming the key's path).
//   - The sink (sink.go): what sources write to. It validates each
//     measurement with the server's rules and appends it to the spool as a
//     one-record CBOR pack with an absolute time.
//   - The batcher (batch.go): cuts batches from the spool (max records, max
//     bytes) and decides with the dynamic Window whether a partial batch is
//     due; encodes CBOR + zstd with the sequence number mw_seq (seq.go).
//   - The schedule (schedule.go, sender.go): send cycles every interval +
//     U[0, jitter), a bounded number of batches per cycle, full-jitter
//     backoff after refusals, the server's Retry-After obeyed.
//   - The uplinks: MQTT 5 over TLS with QoS 1 (mqtt.go), which keeps one
//     connection and reconnects with full-jitter backoff, acting on CONNACK
//     and DISCONNECT reason codes; or HTTPS with mutual TLS (https.go). The
//     endpoint is always <device-id>.<zone>, resolved by DNS, except for a
//     development override.
//   - Health (health.go): the agent's own numbers as agent_* measurements,
//     written to the spool and delivered in-band.
//   - The device channel (channel.go): commands and the desired
//     configuration from the server, over MQTT subscriptions or the HTTPS
//     mailbox; replies, the reported configuration and the device's state
//     back. The commands (commands.go) are an allowlist with timeouts,
//     run once per ID (cmdstore.go, a record in the spool directory). The
//     remote configuration (remote.go) is laid over the local file's, key
//     by key, applied without a restart and kept for the next start.
//
// The package has no global state: a process may run thousands of agents,
// each with its own Options (clock, logger, random source, dialer). It
// imports only the agent's own packages, protocol, clock, paho and YAML,
// never the server. docs/agent.md describes the configuration, the rules
// and the guarantees.
package agent
