package gateway

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// topicAliasMaximum is the Topic Alias Maximum (MQTT 5.0 §3.2.2.3.8) the broker announces: how
// many topic aliases a device may set on one connection. A device needs one per topic it
// publishes to often (the batch topic, reported state); the broker keeps each alias's topic for
// the life of the connection.
const topicAliasMaximum = 16

// errUnknownTopicAlias is a PUBLISH with a topic alias and no topic name, for an alias the
// client never set on this connection: a protocol error (§3.3.2.3.4).
var errUnknownTopicAlias = packets.Code{Code: packets.ErrProtocolViolation.Code, Reason: "topic alias not set on this connection"}

// aliasHook makes MQTT 5 topic aliases (§3.3.2.3.4) work with the embedded broker and keeps the
// device's topic root enforced for them. The broker (mochi-mqtt v2.7.9) accepts aliases up to
// Capabilities.TopicAliasMaximum but
//   - does not announce that maximum in its CONNACK, so a conforming client never uses an
//     alias: the hook adds it to every successful MQTT 5 CONNACK;
//   - checks the ACL on the topic name as received and resolves an alias only after, so a
//     PUBLISH with an alias alone would reach OnACLCheck with an empty topic: the hook resolves
//     the alias when the packet is read, so the ACL, OnPublish and ingest see the real topic;
//   - treats an alias it has no topic for as an empty topic: the hook disconnects the client
//     with 0x82 "protocol error", as the specification asks.
//
// The broker records an alias's topic only for a PUBLISH that passed the ACL, and resolving
// first means an alias alone is checked again, so an alias never reaches outside the root.
// Aliases belong to one network connection: the broker starts every connection with none.
type aliasHook struct {
	mqtt.HookBase
	srv *mqtt.Server
	max uint16
}

func (h *aliasHook) ID() string { return "millwright-topic-alias" }

func (h *aliasHook) Provides(b byte) bool {
	return b == mqtt.OnPacketRead || b == mqtt.OnPacketEncode
}

// OnPacketEncode announces the Topic Alias Maximum in a successful MQTT 5 CONNACK.
func (h *aliasHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.TopicAliasMaximum = h.max
	}
	return pk
}

// OnPacketRead gives a PUBLISH that carries an alias alone the topic the alias stands for. An
// alias of 0 or above the maximum is left for the broker's validation, which disconnects the
// client with 0x94 "topic alias invalid".
func (h *aliasHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	a := pk.Properties.TopicAlias
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "" || !pk.Properties.TopicAliasFlag || a == 0 || a > h.max {
		return pk, nil
	}
	// Set with an empty topic is the broker's lookup: it returns the alias's topic, or "".
	topic := cl.State.TopicAliases.Inbound.Set(a, "")
	if topic == "" {
		_ = h.srv.DisconnectClient(cl, errUnknownTopicAlias)
		return pk, errUnknownTopicAlias
	}
	pk.TopicName = topic
	return pk, nil
}
