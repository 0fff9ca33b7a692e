package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/protocol"
)

// The device channel, the agent's side (docs/protocol.md, "The device channel"): commands
// and the desired configuration come from the server — over MQTT as they are sent, over
// HTTPS in the mailbox the agent fetches — and replies, the reported configuration and the
// device's state go back.

// channelKind names a device → server message of the channel.
type channelKind uint8

const (
	chReply channelKind = iota
	chReported
	chState
)

// channelMsg is one device → server message: its kind, the command ID of a reply, and the
// JSON body.
type channelMsg struct {
	kind channelKind
	id   string
	body []byte
}

// topic is the message's MQTT topic.
func (m channelMsg) topic(device string) string {
	switch m.kind {
	case chReply:
		return protocol.ReplyTopic(device, m.id)
	case chReported:
		return protocol.ConfigReportedTopic(device)
	}
	return protocol.StateTopic(device)
}

// path is the message's HTTPS path.
func (m channelMsg) path() string {
	switch m.kind {
	case chReply:
		return protocol.ReplyPathPrefix + m.id
	case chReported:
		return protocol.ConfigReportedPath
	}
	return protocol.StatePath
}

// stateBody is the State message for identity, or nil when it says nothing.
func stateBody(id IdentityConfig) []byte {
	if id.FirmwareVersion == "" && id.HardwareModel == "" && id.NetworkOperator == "" {
		return nil
	}
	b, _ := json.Marshal(identityState(id))
	return b
}

// identityState is the State of identity, without an update report.
func identityState(id IdentityConfig) protocol.State {
	return protocol.State{FirmwareVersion: id.FirmwareVersion, HardwareModel: id.HardwareModel, NetworkOperator: id.NetworkOperator}
}

// receiveMQTT takes a message the server published to the device (on paho's routing
// goroutine: it hands the work on and returns).
func (a *Agent) receiveMQTT(topic string, payload []byte) {
	rest, ok := strings.CutPrefix(topic, protocol.DeviceRoot(a.device))
	switch {
	case ok && rest == protocol.TopicConfig:
		dc, err := protocol.DecodeDesiredConfig(payload)
		if err != nil {
			a.m.malformedMessage()
			a.log.Warn("malformed configuration from the server; ignored", "error", err)
			return
		}
		a.onDesired(dc)
	case ok && strings.HasPrefix(rest, protocol.TopicCommand+"/"):
		id := strings.TrimPrefix(rest, protocol.TopicCommand+"/")
		cmd, err := protocol.DecodeCommand(payload)
		if err == nil && cmd.ID != id {
			err = fmt.Errorf("%w: command ID %q differs from its topic's %q", protocol.ErrChannelMessage, cmd.ID, id)
		}
		if err != nil {
			a.malformedCommand(id, err)
			return
		}
		a.onCommand(cmd)
	default:
		a.log.Debug("message on an unexpected topic; ignored", "topic", topic)
	}
}

// malformedCommand answers a command that could not be read, when its ID can be, so that
// the server stops delivering it.
func (a *Agent) malformedCommand(id string, err error) {
	a.m.malformedMessage()
	a.log.Warn("malformed command from the server", "id", id, "error", err)
	if protocol.ValidateMessageID(id) != nil {
		return
	}
	reply := protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailError, Detail: clip("the device could not read the command: " + err.Error())}
	a.parts.goWork(func(ctx context.Context) { a.sendReply(ctx, id, reply) })
}

// onCommand runs cmd on a goroutine of its own and sends the reply.
func (a *Agent) onCommand(cmd protocol.Command) {
	a.m.commandReceived()
	a.parts.goWork(func(ctx context.Context) {
		reply, after, ok := a.command(ctx, cmd)
		if !ok {
			return
		}
		a.sendReply(ctx, cmd.ID, reply)
		if after != nil {
			after(ctx)
		}
	})
}

func (a *Agent) sendReply(ctx context.Context, id string, reply protocol.Reply) {
	body, err := json.Marshal(reply)
	if err != nil {
		a.log.Error("encode a reply", "id", id, "error", err)
		return
	}
	if err := a.up.publishChannel(ctx, channelMsg{kind: chReply, id: id, body: body}); err != nil && ctx.Err() == nil {
		// The server delivers the command again until it has the reply, and the agent
		// answers from its record then.
		a.log.Info("reply not delivered; it goes with the command's next delivery", "id", id, "error", err)
	}
}

// onDesired applies a desired configuration on a goroutine of its own.
func (a *Agent) onDesired(dc protocol.DesiredConfig) {
	a.parts.goWork(func(ctx context.Context) { a.applyDesired(ctx, dc) })
}

// remoteState is the remote configuration in effect.
type remoteState struct {
	version int64
	applied map[string]json.RawMessage
	refused map[string]string
}

// reported is the ReportedConfig of the remote configuration in effect.
func (r remoteState) reported() protocol.ReportedConfig {
	rc := protocol.ReportedConfig{Version: r.version, Refused: r.refused}
	if len(r.applied) > 0 {
		rc.Applied = nestKeys(r.applied)
	}
	return rc
}

// applyDesired applies dc over the local configuration, unless the agent already runs that
// version or a newer one, keeps it for the next start, and reports the outcome.
func (a *Agent) applyDesired(ctx context.Context, dc protocol.DesiredConfig) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if dc.Version <= a.remote.version {
		if dc.Version < a.remote.version {
			a.log.Info("configuration older than the one applied; ignored", "version", dc.Version, "applied", a.remote.version)
		}
		a.report(ctx)
		return
	}
	if err := saveRemoteConfig(a.local.Spool.Dir, dc); err != nil {
		a.log.Error("keep the remote configuration for the next start", "version", dc.Version, "error", err)
	}
	ov := overlayRemote(a.local, dc.Config, a.level != nil)
	reconnect := a.applyLive(ctx, ov.cfg)
	a.remote = remoteState{version: dc.Version, applied: ov.applied, refused: ov.refused}
	a.m.setConfig(dc.Version, len(ov.refused))
	a.log.Info("remote configuration applied", "version", dc.Version,
		"applied", strings.Join(slices.Sorted(maps.Keys(ov.applied)), ","), "refused", fmt.Sprint(ov.refused))
	a.report(ctx)
	if reconnect {
		a.up.(*mqttUplink).reconfigure(ov.cfg.Uplink.Keepalive)
	}
}

// report sends the ReportedConfig of the remote configuration in effect.
func (a *Agent) report(ctx context.Context) {
	body, _ := json.Marshal(a.remote.reported())
	if err := a.up.publishChannel(ctx, channelMsg{kind: chReported, body: body}); err != nil && ctx.Err() == nil {
		// The server sends the configuration again until it has the report.
		a.log.Info("configuration report not delivered", "version", a.remote.version, "error", err)
	}
}

// applyLive switches the running agent from a.cfg to cfg (both valid, differing only in
// remote keys): the log level at once; schedule, batch and health settings from their next
// cycle; the system source and the aggregation stage by restarting them. It reports
// whether uplink.keepalive changed on MQTT, which needs a new connection: the caller
// reconnects once it has reported. Called with applyMu held.
func (a *Agent) applyLive(ctx context.Context, cfg Config) (reconnect bool) {
	old := a.cfg
	a.cfg = cfg
	if a.level != nil && old.Log.Level != cfg.Log.Level {
		l, _ := parseLevel(cfg.Log.Level)
		a.level.Set(l)
	}
	if old.Schedule != cfg.Schedule || old.Batch != cfg.Batch {
		a.winMu.Lock()
		if old.Schedule != cfg.Schedule {
			a.sched = NewSchedule(cfg.Schedule, a.rnd)
		}
		a.batchCfg, a.maxPerCycle = cfg.Batch, cfg.Schedule.MaxBatchesPerCycle
		a.window.reconfigure(cfg.Batch)
		a.winMu.Unlock()
	}
	if old.Health != cfg.Health {
		a.parts.restart(&a.parts.health, func(ctx context.Context) { a.healthLoop(ctx, cfg.Health.Interval) })
	}
	if !reflect.DeepEqual(old.Sources.Aggregate, cfg.Sources.Aggregate) {
		a.swapAggregation(ctx, cfg.Sources.Aggregate)
	}
	if !reflect.DeepEqual(old.Sources.System, cfg.Sources.System) {
		a.parts.restart(&a.parts.system, nil) // stop the old one
		if cfg.Sources.System != nil {
			if s, err := buildSystem(cfg.Sources.System, a.clk, a.log); err != nil {
				a.log.Error("start the system source", "error", err)
			} else {
				a.parts.restart(&a.parts.system, a.runSource(s))
			}
		}
	}
	_, isMQTT := a.up.(*mqttUplink)
	return isMQTT && old.Uplink.Keepalive != cfg.Uplink.Keepalive
}

// swapAggregation puts a new aggregation stage (none for no rules) in front of the spool and
// writes the old one's open windows.
func (a *Agent) swapAggregation(ctx context.Context, rules []aggregate.Rule) {
	var agg *aggregate.Aggregator
	if len(rules) > 0 {
		agg = aggregate.Wrap(a.sink, rules, a.clk)
		agg.SetLogger(a.log.With("component", "aggregate"))
	}
	if old := a.stage.swap(agg); old != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := old.Flush(fctx); err != nil {
			a.log.Warn("write the open aggregation windows", "error", err)
		}
	}
}

// decodeMailbox reads the mailbox an HTTPS device fetches: its commands, each checked as
// over MQTT (one that cannot be read but has a readable ID is returned in bad, to be
// answered), and the desired configuration, if any.
func decodeMailbox(b []byte) (cmds []protocol.Command, bad map[string]error, cfg *protocol.DesiredConfig, err error) {
	var mb struct {
		Commands []json.RawMessage `json:"commands"`
		Config   json.RawMessage   `json:"config"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&mb); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: mailbox: %v", protocol.ErrChannelMessage, err)
	}
	if d.More() {
		return nil, nil, nil, fmt.Errorf("%w: mailbox: data after the JSON object", protocol.ErrChannelMessage)
	}
	for _, raw := range mb.Commands {
		c, err := protocol.DecodeCommand(raw)
		if err == nil {
			cmds = append(cmds, c)
			continue
		}
		var id struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(raw, &id) == nil && protocol.ValidateMessageID(id.ID) == nil {
			if bad == nil {
				bad = map[string]error{}
			}
			bad[id.ID] = err
		}
	}
	if len(mb.Config) > 0 && string(bytes.TrimSpace(mb.Config)) != "null" {
		dc, err := protocol.DecodeDesiredConfig(mb.Config)
		if err != nil {
			return cmds, bad, nil, err
		}
		cfg = &dc
	}
	return cmds, bad, cfg, nil
}

// mailboxLoop fetches the mailbox over HTTPS: first at a uniform random moment within
// uplink.mailbox_interval of the start (devices started together do not all ask at once),
// then at most that interval apart, and after every cycle that delivered a batch. The
// device's state is POSTed before the first fetch, and again before the next one until
// it is taken.
func (a *Agent) mailboxLoop(ctx context.Context, u *httpsUplink) {
	iv := a.local.Uplink.MailboxInterval
	wait := time.Duration(a.rnd(int64(iv)))
	state := a.stateBody
	for {
		t := a.clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-a.mailboxPoke:
			t.Stop()
		}
		wait = iv
		if state != nil {
			if err := u.publishChannel(ctx, channelMsg{kind: chState, body: state}); err != nil {
				a.log.Debug("POST the device state", "error", err)
			} else {
				state = nil
			}
		}
		a.pollMailbox(ctx, u)
	}
}

func (a *Agent) pollMailbox(ctx context.Context, u *httpsUplink) {
	body, err := u.fetchMailbox(ctx)
	a.m.mailboxFetch(err == nil)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Debug("fetch the mailbox", "error", err)
		}
		return
	}
	cmds, bad, cfg, err := decodeMailbox(body)
	if err != nil {
		a.m.malformedMessage()
		a.log.Warn("malformed mailbox from the server", "error", err)
	}
	for _, id := range slices.Sorted(maps.Keys(bad)) {
		a.malformedCommand(id, bad[id])
	}
	for _, c := range cmds {
		a.onCommand(c)
	}
	if cfg != nil {
		a.onDesired(*cfg)
	}
}

// pokeMailbox asks the mailbox loop (HTTPS) to fetch now.
func (a *Agent) pokeMailbox() {
	select {
	case a.mailboxPoke <- struct{}{}:
	default:
	}
}
