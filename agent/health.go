package agent

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// counters are the agent's own numbers since start, behind Stats and the
// agent_* health measurements. Safe for concurrent use.
type counters struct {
	mu              sync.Mutex
	connected       bool
	connectAttempts uint64
	connects        uint64
	connectFailures map[string]uint64
	reconnects      map[string]uint64
	dropped         map[string]uint64
	batchesSent     uint64
	recordsSent     uint64
	bytesSent       uint64
	refusedRetry    uint64
	lastRTT         time.Duration
	rttSum          time.Duration // since the last health report
	rttN            int
	latSum          time.Duration // send latency (append → ack), since the last report
	latN            int

	// the device channel
	commandsReceived uint64
	commands         map[string]uint64 // by outcome
	malformed        uint64
	configVersion    int64
	configRefused    int
	mailboxFetches   uint64
	mailboxFailures  uint64
}

func newCounters() *counters {
	return &counters{connectFailures: map[string]uint64{}, reconnects: map[string]uint64{}, dropped: map[string]uint64{}, commands: map[string]uint64{}}
}

// counterResent is the outcome of a command delivered again and answered with its kept
// reply.
const counterResent = "resent"

func (c *counters) commandReceived() { c.mu.Lock(); c.commandsReceived++; c.mu.Unlock() }
func (c *counters) command(outcome string) {
	c.mu.Lock()
	c.commands[outcome]++
	c.mu.Unlock()
}
func (c *counters) malformedMessage() { c.mu.Lock(); c.malformed++; c.mu.Unlock() }
func (c *counters) setConfig(version int64, refused int) {
	c.mu.Lock()
	c.configVersion, c.configRefused = version, refused
	c.mu.Unlock()
}
func (c *counters) mailboxFetch(ok bool) {
	c.mu.Lock()
	if ok {
		c.mailboxFetches++
	} else {
		c.mailboxFailures++
	}
	c.mu.Unlock()
}

func (c *counters) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	if v {
		c.connects++
	}
	c.mu.Unlock()
}
func (c *counters) connectAttempt() { c.mu.Lock(); c.connectAttempts++; c.mu.Unlock() }
func (c *counters) connectFailure(cause string) {
	c.mu.Lock()
	c.connectFailures[cause]++
	c.mu.Unlock()
}
func (c *counters) reconnect(cause string) { c.mu.Lock(); c.reconnects[cause]++; c.mu.Unlock() }
func (c *counters) drop(reason string, n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.dropped[reason] += uint64(n)
	c.mu.Unlock()
}
func (c *counters) retry() { c.mu.Lock(); c.refusedRetry++; c.mu.Unlock() }
func (c *counters) sent(records, bytes int, rtt, latency time.Duration) {
	c.mu.Lock()
	c.batchesSent++
	c.recordsSent += uint64(records)
	c.bytesSent += uint64(bytes)
	c.lastRTT = rtt
	c.rttSum += rtt
	c.rttN++
	c.latSum += latency
	c.latN++
	c.mu.Unlock()
}

// Stats is a snapshot of an agent's state and counters since New.
type Stats struct {
	// DeviceID is the device's ID.
	DeviceID string
	// Connected reports whether the MQTT connection is up (always true for
	// HTTPS).
	Connected bool
	// ConnectAttempts counts connection attempts (TCP dials).
	ConnectAttempts uint64
	// Connects counts connections that were established (MQTT CONNACK
	// accepted); zero on HTTPS.
	Connects uint64
	// ConnectFailures counts failed connection attempts by cause (dial,
	// tls, timeout, refused, server_busy, server_moved, server_other, network).
	ConnectFailures map[string]uint64
	// Reconnects counts lost connections by cause (network, keepalive,
	// ack_timeout, server_busy, server_moved, server_closing, server_other).
	Reconnects map[string]uint64
	// Dropped counts measurements dropped, by reason: "overflow" and
	// "overflow_event" (spool bound), "torn" (damaged spool data),
	// "undecodable" (a spooled record that could not be read), and the
	// server's reasons for refusing a batch for good (invalid, too_old,
	// not_authorized, …).
	Dropped map[string]uint64
	// BatchesSent, RecordsSent and BytesSent count acknowledged batches,
	// their measurements and their payload bytes.
	BatchesSent, RecordsSent, BytesSent uint64
	// RefusedForRetry counts batches the server refused for a retry (busy,
	// unavailable).
	RefusedForRetry uint64
	// MeasurementsStored counts measurements the sink stored in the spool;
	// MeasurementsInvalid those it refused as invalid.
	MeasurementsStored, MeasurementsInvalid uint64
	// LastRTT is the acknowledgement latency of the last batch.
	LastRTT time.Duration
	// Window is the current batch window.
	Window time.Duration
	// Seq is the sequence number of the batch in flight or the next one.
	Seq uint64
	// Spool is the spool's own snapshot.
	Spool spool.Stats

	// CommandsReceived counts the commands delivered to the agent (a command delivered
	// again counts again).
	CommandsReceived uint64
	// Commands counts the commands answered, by outcome: "succeeded", a failure's reason
	// (unknown, refused, timeout, expired, error, bad_args), or "resent" for a command
	// delivered again and answered with its kept reply.
	Commands map[string]uint64
	// ChannelMalformed counts messages of the device channel the agent could not read.
	ChannelMalformed uint64
	// ConfigVersion is the version of the remote configuration in effect (0: none), and
	// ConfigRefused the number of its keys the agent refused.
	ConfigVersion int64
	ConfigRefused int
	// MailboxFetches and MailboxFailures count the mailbox fetches (HTTPS) that succeeded
	// and failed.
	MailboxFetches, MailboxFailures uint64
}

func (c *counters) snapshot(st *Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Connected = c.connected
	st.ConnectAttempts, st.Connects = c.connectAttempts, c.connects
	st.ConnectFailures = maps.Clone(c.connectFailures)
	st.Reconnects = maps.Clone(c.reconnects)
	st.Dropped = maps.Clone(c.dropped)
	st.BatchesSent, st.RecordsSent, st.BytesSent = c.batchesSent, c.recordsSent, c.bytesSent
	st.RefusedForRetry = c.refusedRetry
	st.LastRTT = c.lastRTT
	st.CommandsReceived = c.commandsReceived
	st.Commands = maps.Clone(c.commands)
	st.ChannelMalformed = c.malformed
	st.ConfigVersion, st.ConfigRefused = c.configVersion, c.configRefused
	st.MailboxFetches, st.MailboxFailures = c.mailboxFetches, c.mailboxFailures
}

// Health measurement names. Counters end in _total and count since the
// agent started (a restart resets them; PromQL's increase() handles that).
const (
	HealthSpoolRecords     = "agent_spool_records"
	HealthSpoolBytes       = "agent_spool_bytes"
	HealthSpoolOldestAge   = "agent_spool_oldest_age_seconds"
	HealthFsyncLatency     = "agent_spool_fsync_latency_seconds"
	HealthRTT              = "agent_rtt_seconds"
	HealthSendLatency      = "agent_send_latency_seconds"
	HealthWindow           = "agent_batch_window_seconds"
	HealthConnected        = "agent_connected"
	HealthBatchesSent      = "agent_batches_sent_total"
	HealthRecordsSent      = "agent_records_sent_total"
	HealthBytesSent        = "agent_bytes_sent_total"
	HealthConnectAttempts  = "agent_connect_attempts_total"
	HealthRefusedForRetry  = "agent_batches_refused_retry_total"
	HealthStored           = "agent_measurements_stored_total"
	HealthInvalid          = "agent_measurements_invalid_total"
	HealthCommandsReceived = "agent_commands_received_total"
	HealthConfigVersion    = "agent_config_version"
	HealthChannelMalformed = "agent_channel_malformed_total"
	healthCommandsPrefix   = "agent_commands_"         // + outcome + _total
	healthDroppedPrefix    = "agent_dropped_records_"  // + reason + _total
	healthReconnectPrefix  = "agent_reconnects_"       // + cause + _total
	healthConnFailPrefix   = "agent_connect_failures_" // + cause + _total
	healthTotalSuffix      = "_total"
	dropOverflow           = "overflow"
	dropOverflowEvent      = "overflow_event"
	dropTorn               = "torn"
	dropUndecodable        = "undecodable"
	unitSeconds            = "s"
	unitBytes              = "B"
	healthAlwaysDropReason = dropOverflow
)

// HealthDropped is the name of the dropped-records counter for a reason,
// e.g. agent_dropped_records_overflow_total.
func HealthDropped(reason string) string { return healthDroppedPrefix + reason + healthTotalSuffix }

// HealthReconnects is the name of the lost-connections counter for a cause.
func HealthReconnects(cause string) string { return healthReconnectPrefix + cause + healthTotalSuffix }

// HealthConnectFailures is the name of the failed-attempts counter for a cause.
func HealthConnectFailures(cause string) string {
	return healthConnFailPrefix + cause + healthTotalSuffix
}

// HealthCommands is the name of the answered-commands counter for an outcome, e.g.
// agent_commands_succeeded_total.
func HealthCommands(outcome string) string {
	return healthCommandsPrefix + outcome + healthTotalSuffix
}

// healthRecords builds the agent_* measurements from a snapshot.
func (a *Agent) healthRecords(now time.Time) []protocol.Record {
	st := a.Stats()
	t := float64(now.UnixMilli()) / 1000
	var recs []protocol.Record
	add := func(name, unit string, v float64) {
		recs = append(recs, protocol.Record{Name: name, Unit: unit, Time: t, Value: &v})
	}
	add(HealthSpoolRecords, "", float64(st.Spool.Records))
	add(HealthSpoolBytes, unitBytes, float64(st.Spool.Bytes))
	add(HealthSpoolOldestAge, unitSeconds, st.Spool.OldestAge.Seconds())
	add(HealthFsyncLatency, unitSeconds, st.Spool.LastSyncLatency.Seconds())
	add(HealthWindow, unitSeconds, st.Window.Seconds())
	add(HealthConnected, "", boolFloat(st.Connected))
	add(HealthBatchesSent, "", float64(st.BatchesSent))
	add(HealthRecordsSent, "", float64(st.RecordsSent))
	add(HealthBytesSent, unitBytes, float64(st.BytesSent))
	add(HealthConnectAttempts, "", float64(st.ConnectAttempts))
	add(HealthRefusedForRetry, "", float64(st.RefusedForRetry))
	add(HealthStored, "", float64(st.MeasurementsStored))
	add(HealthInvalid, "", float64(st.MeasurementsInvalid))

	a.m.mu.Lock()
	rttN, rttSum, latN, latSum := a.m.rttN, a.m.rttSum, a.m.latN, a.m.latSum
	a.m.rttN, a.m.rttSum, a.m.latN, a.m.latSum = 0, 0, 0, 0
	a.m.mu.Unlock()
	if rttN > 0 {
		add(HealthRTT, unitSeconds, (rttSum / time.Duration(rttN)).Seconds())
	}
	if latN > 0 {
		add(HealthSendLatency, unitSeconds, (latSum / time.Duration(latN)).Seconds())
	}
	if _, ok := st.Dropped[healthAlwaysDropReason]; !ok {
		st.Dropped[healthAlwaysDropReason] = 0
	}
	for _, r := range slices.Sorted(maps.Keys(st.Dropped)) {
		add(HealthDropped(r), "", float64(st.Dropped[r]))
	}
	for _, c := range slices.Sorted(maps.Keys(st.Reconnects)) {
		add(HealthReconnects(c), "", float64(st.Reconnects[c]))
	}
	for _, c := range slices.Sorted(maps.Keys(st.ConnectFailures)) {
		add(HealthConnectFailures(c), "", float64(st.ConnectFailures[c]))
	}
	// The device channel, once it was used: most devices never see a command.
	if st.CommandsReceived > 0 {
		add(HealthCommandsReceived, "", float64(st.CommandsReceived))
	}
	for _, o := range slices.Sorted(maps.Keys(st.Commands)) {
		add(HealthCommands(o), "", float64(st.Commands[o]))
	}
	if st.ConfigVersion > 0 {
		add(HealthConfigVersion, "", float64(st.ConfigVersion))
	}
	if st.ChannelMalformed > 0 {
		add(HealthChannelMalformed, "", float64(st.ChannelMalformed))
	}
	return recs
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// healthLoop writes the health measurements every interval iv until ctx ends; none when iv
// is 0.
func (a *Agent) healthLoop(ctx context.Context, iv time.Duration) {
	if iv <= 0 {
		return
	}
	for clock.Sleep(ctx, a.clk, iv) {
		if err := a.sink.Write(ctx, a.healthRecords(a.clk.Now()), source.ClassRaw); err != nil && ctx.Err() == nil {
			a.log.Warn("write health measurements", "error", err)
		}
	}
}
