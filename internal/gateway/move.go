package gateway

import (
	"net/netip"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millwright/millwright/protocol"
)

// MoveDevice tells a connected device to reconnect elsewhere now, because DNS routing moved
// it: an MQTT 5 device gets DISCONNECT 0x9C "Use another server" with serverRef as its
// Server Reference (MQTT 5.0 §4.11), an MQTT 3.1.1 device has its connection closed; either
// reconnects and resolves its name again. Its session here ends, as it does at a takeover. It
// reports whether the device was connected.
func (m *MQTT) MoveDevice(id, serverRef string) bool {
	c := m.endSession(id)
	if c == nil {
		return false
	}
	c.moveTo(serverRef)
	return true
}

// moveTo closes the connection as kick does, with DISCONNECT 0x9C and a Server Reference.
func (c *conn) moveTo(serverRef string) {
	c.wmu.Lock()
	if !c.closed && c.kickedBy == "" {
		c.kickedBy = CauseKicked
	}
	if !c.closed && c.established && c.version == 5 {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: protocol.MQTTUseAnotherServer}
		pk.Properties.ServerReference = serverRef
		pk.Properties.ReasonString = "use another server: " + serverRef
		if b, err := c.encodeFor(&pk); err == nil {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.m.opts.DisconnectTimeout))
			if _, err := c.nc.Write(b); err == nil {
				c.traffic.sent(len(b))
			}
		}
	}
	c.closed = true
	c.wmu.Unlock()
	_ = c.nc.Close()
}

// Devices lists the devices with a live connection.
func (m *MQTT) Devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.sessions))
	for id, s := range m.sessions {
		s.mu.Lock()
		live := s.conn != nil
		s.mu.Unlock()
		if live {
			out = append(out, id)
		}
	}
	return out
}

// LocalAddr is the address of this server that device's live connection reached (the
// listener's own address, or the one the device dialed when it listens on all of them), and
// whether the device is connected.
func (m *MQTT) LocalAddr(id string) (netip.Addr, bool) {
	m.mu.Lock()
	s := m.sessions[id]
	m.mu.Unlock()
	if s == nil {
		return netip.Addr{}, false
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(c.nc.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, true
	}
	return ap.Addr().Unmap(), true
}
