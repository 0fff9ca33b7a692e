package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millwright/millwright/protocol"
)

// The packet layer: framing on the connection, and decoding with mochi-mqtt's packet codec
// (github.com/mochi-mqtt/server/v2/packets), which implements every MQTT 3.1.1 and 5 packet
// and property. The gateway uses the codec alone, not mochi's broker: see "Device sessions" in
// docs/design.md.

// readHeader reads a packet's fixed header: its first byte and its remaining length. A length
// above max is refused before any of the body is read.
func readHeader(r *bufio.Reader, max uint32) (packets.FixedHeader, error) {
	var fh packets.FixedHeader
	b, err := r.ReadByte()
	if err != nil {
		return fh, err
	}
	if err := fh.Decode(b); err != nil {
		return fh, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fh, io.ErrUnexpectedEOF
		}
		return fh, err
	}
	// The limit counts the whole packet: the fixed header is at most 5 bytes.
	if max > 0 && uint64(n)+5 > uint64(max) {
		return fh, packets.ErrPacketTooLarge
	}
	fh.Remaining = n
	return fh, nil
}

// bodyChunk is the buffer a packet body starts in when it is longer: the buffer doubles as
// the bytes arrive, so that a declared length costs memory only once it has been sent (a
// connection that declares 1 MiB and sends nothing holds bodyChunk).
const bodyChunk = 4 << 10

// readPacket reads one packet: its fixed header and its body, in a buffer of its own (the
// codec's strings point into it). A body longer than bodyChunk is read into a buffer that
// grows as its bytes arrive, never to more than twice what was received.
func readPacket(r *bufio.Reader, max uint32) (packets.FixedHeader, []byte, error) {
	fh, err := readHeader(r, max)
	if err != nil {
		return fh, nil, err
	}
	if fh.Remaining == 0 {
		return fh, nil, nil
	}
	body := make([]byte, min(fh.Remaining, bodyChunk))
	for n := 0; ; {
		m, err := io.ReadFull(r, body[n:])
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fh, nil, err
		}
		if n == fh.Remaining {
			return fh, body, nil
		}
		grown := make([]byte, min(2*len(body), fh.Remaining))
		copy(grown, body)
		body = grown
	}
}

// decode fills pk from a packet's body with the codec, and validates what the codec validates
// for the packets clients send. The packet's version must be set (CONNECT sets its own). A
// panic in the codec on hostile input is returned as a malformed packet, so that one device
// cannot take the gateway down. The packets only servers send decode too (the tests read the
// gateway's answers with it); a connection refuses them after decoding.
func decode(pk *packets.Packet, body []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder failed: %v", packets.ErrMalformedPacket, r)
		}
	}()
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if err := pk.ConnectDecode(body); err != nil {
			return err
		}
		return validated(pk.ConnectValidate())
	case packets.Publish:
		if err := pk.PublishDecode(body); err != nil {
			return err
		}
		return validated(pk.PublishValidate(topicAliasMaximum))
	case packets.Subscribe:
		if err := pk.SubscribeDecode(body); err != nil {
			return err
		}
		return validated(pk.SubscribeValidate())
	case packets.Unsubscribe:
		if err := pk.UnsubscribeDecode(body); err != nil {
			return err
		}
		return validated(pk.UnsubscribeValidate())
	case packets.Puback:
		return pk.PubackDecode(body)
	case packets.Pubrec:
		return pk.PubrecDecode(body)
	case packets.Pubrel:
		return pk.PubrelDecode(body)
	case packets.Pubcomp:
		return pk.PubcompDecode(body)
	case packets.Pingreq:
		return pk.PingreqDecode(body)
	case packets.Disconnect:
		return pk.DisconnectDecode(body)
	case packets.Auth:
		return pk.AuthDecode(body)
	case packets.Connack:
		return pk.ConnackDecode(body)
	case packets.Suback:
		return pk.SubackDecode(body)
	case packets.Unsuback:
		return pk.UnsubackDecode(body)
	case packets.Pingresp:
		return pk.PingrespDecode(body)
	}
	return fmt.Errorf("%w: packet type %d", packets.ErrProtocolViolation, pk.FixedHeader.Type)
}

// validated is nil for the codec's success code and the code itself otherwise.
func validated(c packets.Code) error {
	if c == packets.CodeSuccess {
		return nil
	}
	return c
}

// encode writes pk in its wire form, with the codec (acknowledgements with encodeAck). The
// packets only clients send encode too, for the tests.
func encode(pk *packets.Packet) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return encodeAck(pk), nil
	case packets.Connack:
		err = pk.ConnackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(&buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		err = fmt.Errorf("encode packet type %d: not an MQTT packet type", pk.FixedHeader.Type)
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeAck writes a PUBACK, PUBREC or PUBCOMP. The codec leaves out an MQTT 5 reason code
// below 0x80 when there are no properties, which would turn 0x10 "no matching subscribers"
// into success; the specification allows leaving out only 0x00 (§3.4.2.1).
func encodeAck(pk *packets.Packet) []byte {
	body := []byte{byte(pk.PacketID >> 8), byte(pk.PacketID)}
	if pk.ProtocolVersion == 5 {
		reason := pk.Properties.ReasonString
		// The reason string is left out rather than exceed the device's maximum packet
		// size (§3.4.2.2.2); 4 bytes of header and 8 of code and property lengths.
		if pk.Mods.MaxSize > 0 && uint64(len(reason))+12 > uint64(pk.Mods.MaxSize) || len(reason) > 0xFFFF {
			reason = ""
		}
		if pk.ReasonCode != 0 || reason != "" {
			body = append(body, pk.ReasonCode)
		}
		if reason != "" {
			var props bytes.Buffer
			props.WriteByte(packets.PropReasonString)
			props.WriteByte(byte(len(reason) >> 8))
			props.WriteByte(byte(len(reason)))
			props.WriteString(reason)
			body = appendLength(body, props.Len())
			body = append(body, props.Bytes()...)
		}
	}
	fh := packets.FixedHeader{Type: pk.FixedHeader.Type}
	out := []byte{fh.Type << 4}
	out = appendLength(out, len(body))
	return append(out, body...)
}

// appendLength appends an MQTT variable byte integer (§1.5.5).
func appendLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// asCode is err's MQTT reason code, or 0x81 "malformed packet" for an error that carries none
// (a short read of a body, a codec error without a code).
func asCode(err error) packets.Code {
	var c packets.Code
	if errors.As(err, &c) {
		return c
	}
	return packets.ErrMalformedPacket
}

// connackV3Code maps an MQTT 5 CONNACK reason to the nearest MQTT 3.1.1 return code (§3.2.2.3).
func connackV3Code(c packets.Code) byte {
	switch c.Code {
	case packets.CodeSuccess.Code:
		return protocol.MQTT3Accepted
	case packets.ErrUnsupportedProtocolVersion.Code, packets.ErrProtocolViolationProtocolVersion.Code:
		return protocol.MQTT3UnacceptableVersion
	case packets.ErrClientIdentifierNotValid.Code:
		return protocol.MQTT3IdentifierRejected
	case packets.ErrServerUnavailable.Code, packets.ErrServerBusy.Code, packets.ErrServerShuttingDown.Code:
		return protocol.MQTT3ServerUnavailable
	default:
		return protocol.MQTT3NotAuthorized
	}
}

// matchTopic reports whether an MQTT topic filter (with + and # wildcards, §4.7) matches a
// topic name.
func matchTopic(filter, topic string) bool {
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" (§4.7.1.2).
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// MatchTopic reports whether the MQTT topic filter matches topic (MQTT 5.0 §4.7).
func MatchTopic(filter, topic string) bool { return matchTopic(filter, topic) }

// packetSize is the size of a whole packet with header fh on the wire: its first byte, its
// remaining length (1 to 4 bytes) and its body.
func packetSize(fh packets.FixedHeader) int {
	n := 2
	for r := fh.Remaining; r > 127; r >>= 7 {
		n++
	}
	return n + fh.Remaining
}
