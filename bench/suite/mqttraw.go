package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// The idle-device load generator speaks just enough MQTT 5 to connect and stay connected, so
// that a process can hold thousands of TLS connections without a client library's goroutines
// and queues per connection.

// connectPacket is an MQTT 5 CONNECT with clean start, the keep-alive in seconds, no
// properties, and the client ID.
func connectPacket(clientID string, keepalive uint16) []byte {
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, byte(keepalive >> 8), byte(keepalive), 0}
	payload := append([]byte{byte(len(clientID) >> 8), byte(len(clientID))}, clientID...)
	rem := len(vh) + len(payload)
	out := append([]byte{0x10}, varint(rem)...)
	return append(append(out, vh...), payload...)
}

func varint(n int) []byte {
	var b []byte
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

// readConnack reads one packet and checks it is a CONNACK with reason 0 (success).
func readConnack(r *bufio.Reader) error {
	h, err := r.ReadByte()
	if err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return errors.New("read CONNACK: remaining length too long")
		}
		d, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("read CONNACK: %w", err)
		}
		n += int(d&0x7f) * mult
		mult *= 128
		if d&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	switch {
	case h>>4 != 2:
		return fmt.Errorf("expected CONNACK, got packet type %d", h>>4)
	case n < 2:
		return errors.New("CONNACK too short")
	case body[1] != 0:
		return fmt.Errorf("CONNACK reason 0x%02x", body[1])
	}
	return nil
}
