package gateway

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millwright/millwright/clock"
)

// ErrInflightFull is a QoS 1 message to a device that already has as many unacknowledged
// messages as it may (MQTTOptions.MaxInflight, or its own Receive Maximum).
var ErrInflightFull = errors.New("too many messages to the device not yet acknowledged")

// session is what the gateway keeps of a device across its connections (MQTT 5.0 §4.1): its
// subscriptions, the QoS 1 messages sent to it and not yet acknowledged, and the QoS 2
// packet IDs it sent and has not yet released. A device that connects with Clean Start (all
// Millwright agents do) gets a new, empty session that ends with its connection.
//
// Each session has its own lock, so that one device's acknowledgements, subscriptions and
// messages never wait for another's; the MQTT's mutex guards only which session is a device's.
// Where both are taken, the MQTT's comes first.
type session struct {
	device string // set at creation, never changed

	mu       sync.Mutex    // guards the fields below
	conn     *conn         // the live connection; nil while the device is away
	expiry   time.Duration // how long the session outlives a connection
	timer    clock.Timer   // ends the session once expired; nil while connected
	subs     map[string]byte
	inflight []outbound // in the order sent
	nextID   uint16
	quota    int                 // the most messages in flight at once
	qos2     map[uint16]struct{} // QoS 2 publishes stored, awaiting PUBREL
	secure   bool                // held by a connection on the TLS listener, now or last
	ended    bool                // no longer the device's session: a message to it goes nowhere
}

// Subscription options kept per filter, beside the granted QoS in the low two bits.
const subNoLocal = 1 << 2

// outbound is a QoS 1 message to the device awaiting its PUBACK.
type outbound struct {
	id      uint16
	topic   string
	payload []byte
	sent    bool   // written to a connection once: sent again with DUP set
	onAck   func() // called once the device acknowledged it; may be nil
}

// stopExpiry stops the expiry timer; s.mu is held.
func (s *session) stopExpiry() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// end marks s as no longer the device's session; s.mu is held, and the MQTT's mutex, under
// which s leaves the sessions.
func (s *session) end() {
	s.stopExpiry()
	s.ended = true
}

// match is the highest QoS of the subscriptions matching topic, skipping No Local ones for a
// message the device published itself; s.mu is held.
func (s *session) match(topic string, local bool) (byte, bool) {
	var qos byte
	found := false
	for filter, opts := range s.subs {
		if local && opts&subNoLocal != 0 || !matchTopic(filter, topic) {
			continue
		}
		found = true
		qos = max(qos, opts&3)
	}
	return qos, found
}

// allocID returns a packet identifier not in use by a message in flight; s.mu is held.
func (s *session) allocID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		inUse := false
		for _, o := range s.inflight {
			if o.id == s.nextID {
				inUse = true
				break
			}
		}
		if !inUse {
			return s.nextID
		}
	}
}

// attach makes c the device's live connection and reports whether its session existed before
// (the CONNACK's Session Present). A connection the device still had
// is closed with reason 0x8E "session taken over"; with clean, any earlier session is
// discarded.
//
// A connection on the development listener, where the client ID alone names the device, may
// not touch a session held on the TLS listener, connected or kept for its expiry: it is refused
// with "not authorized", logged and counted, and the device's session goes on undisturbed.
func (m *MQTT) attach(c *conn, clean bool, expiry time.Duration, quota int) (bool, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false, packets.ErrServerShuttingDown
	}
	s := m.sessions[c.device]
	var old *conn
	if s != nil {
		s.mu.Lock()
		if s.secure && !c.secure {
			live := s.conn != nil
			s.mu.Unlock()
			m.mu.Unlock()
			m.met.insecureRefused.Inc()
			m.log.Warn("plain MQTT connection refused: the device's session belongs to the TLS listener",
				"device", c.device, "remote", c.nc.RemoteAddr().String(), "connected", live)
			return false, fmt.Errorf("plain connection for %q, whose session is on the TLS listener: %w", c.device, packets.ErrNotAuthorized)
		}
		old = s.conn
		s.stopExpiry()
		if clean {
			s.conn = nil
			s.end()
			s.mu.Unlock()
			s = nil
		}
	}
	present := s != nil
	if s == nil {
		s = &session{device: c.device}
		s.mu.Lock()
		m.sessions[c.device] = s
	}
	s.conn = c
	s.secure = c.secure
	s.expiry = expiry
	s.quota = min(quota, m.opts.MaxInflight)
	s.mu.Unlock()
	c.sess = s
	c.attached = true
	m.connected.Add(1)
	m.mu.Unlock()
	if old != nil {
		old.kickFor(packets.ErrSessionTakenOver)
	}
	return present, nil
}

// detach ends c: the session stays for its expiry interval if c is still its connection.
func (m *MQTT) detach(c *conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.conns, c)
	if !c.attached {
		return
	}
	m.connected.Add(-1)
	s := c.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c {
		return // taken over, or ended by DisconnectDevice
	}
	s.conn = nil
	if s.expiry <= 0 || m.closed {
		if m.sessions[s.device] == s {
			delete(m.sessions, s.device)
		}
		s.end()
		return
	}
	s.timer = m.opts.Clock.AfterFunc(s.expiry, func() { m.expire(s) })
}

// expire ends a session whose device did not come back in time.
func (m *MQTT) expire(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil && s.timer != nil && m.sessions[s.device] == s {
		s.timer = nil
		s.end()
		delete(m.sessions, s.device)
	}
}

// Publish sends a message to a device's matching subscriptions, at the lower of qos (0 or 1)
// and the subscription's QoS. It reports whether any subscription matched. A QoS 1 message
// is kept until the device acknowledges it, also while the device is away (for as long as its
// session lasts), and sent again when it returns; it returns ErrInflightFull, and drops the
// message, when the device already has as many in flight as it may.
func (m *MQTT) Publish(device, topic string, payload []byte, qos byte) (bool, error) {
	matched, _, err := m.publish(device, topic, payload, min(qos, 1), false, nil)
	return matched, err
}

// Deliver sends a message to a device with QoS 1 (or the lower QoS of its matching
// subscription) like Publish, and calls onAck once the device acknowledged it (at once for a
// QoS 0 subscription). It reports whether a subscription matched and whether the message was
// written to a live connection; a matched message to a device that is away waits in its
// session.
func (m *MQTT) Deliver(device, topic string, payload []byte, onAck func()) (matched, sent bool, err error) {
	return m.publish(device, topic, payload, 1, false, onAck)
}

func (m *MQTT) publish(device, topic string, payload []byte, qos byte, local bool, onAck func()) (matched, sent bool, err error) {
	m.mu.Lock()
	s := m.sessions[device]
	m.mu.Unlock()
	if s == nil {
		return false, false, nil
	}
	s.mu.Lock()
	q, ok := s.match(topic, local)
	if !ok || s.ended {
		s.mu.Unlock()
		return false, false, nil
	}
	q = min(q, qos)
	var id uint16
	if q > 0 {
		if len(s.inflight) >= s.quota {
			s.mu.Unlock()
			m.met.dropped.Inc()
			return true, false, ErrInflightFull
		}
		id = s.allocID()
		s.inflight = append(s.inflight, outbound{id: id, topic: topic, payload: payload, sent: s.conn != nil, onAck: onAck})
	}
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.sendPublish(topic, payload, q, id, false)
	}
	if q == 0 && onAck != nil {
		onAck()
	}
	return true, c != nil, nil
}

// acked removes the message the device acknowledged.
func (s *session) acked(id uint16) {
	s.mu.Lock()
	var onAck func()
	for i, o := range s.inflight {
		if o.id == id {
			onAck = o.onAck
			s.inflight = append(s.inflight[:i], s.inflight[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	if onAck != nil {
		onAck()
	}
}

// filters returns the session's subscriptions' filters.
func (s *session) filters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.subs))
	for f := range s.subs {
		out = append(out, f)
	}
	return out
}

// resend sends a returning device the messages it has not acknowledged, in order, those sent
// before flagged as duplicates (§4.4).
func (c *conn) resend() {
	s := c.sess
	s.mu.Lock()
	pending := append([]outbound(nil), s.inflight...)
	for i := range s.inflight {
		s.inflight[i].sent = true
	}
	s.mu.Unlock()
	for _, o := range pending {
		c.sendPublish(o.topic, o.payload, 1, o.id, o.sent)
	}
}

// subscribe records a subscription and returns the QoS granted (at most 1).
func (s *session) subscribe(sub packets.Subscription) byte {
	q := min(sub.Qos, 1)
	opts := q
	if sub.NoLocal {
		opts |= subNoLocal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[string]byte{}
	}
	s.subs[sub.Filter] = opts
	return q
}

// unsubscribe removes a subscription and reports whether it existed.
func (s *session) unsubscribe(filter string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return remove(s.subs, filter)
}

// qos2Received records an inbound QoS 2 packet ID and reports whether it was new: a PUBLISH
// sent again before its PUBREL is acknowledged again but not stored twice (§4.3.3).
func (s *session) qos2Received(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.qos2[id]; dup {
		return false
	}
	if s.qos2 == nil {
		s.qos2 = map[uint16]struct{}{}
	}
	s.qos2[id] = struct{}{}
	return true
}

// qos2Released forgets an inbound QoS 2 packet ID and reports whether it was known.
func (s *session) qos2Released(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return remove(s.qos2, id)
}

// remove deletes k from m and reports whether it was there.
func remove[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	delete(m, k)
	return ok
}

// setExpiry changes the session's expiry from a DISCONNECT (MQTT 5.0 §3.14.2.2.2): a session
// that was to end with the connection may not be given one.
func (s *session) setExpiry(d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expiry == 0 && d > 0 {
		return packets.ErrProtocolViolationZeroNonZeroExpiry
	}
	s.expiry = d
	return nil
}
