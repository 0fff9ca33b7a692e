package gateway

import "github.com/millwright/millwright/internal/optcheck"

// Validate refuses MQTT bounds and deadlines that are zero or negative — zero would fall back
// to a default the operator did not choose — and a negative handshake bound per source (zero
// there means half of MaxConcurrentHandshakes). NewMQTT still fills zero fields with their
// defaults for callers that build MQTTOptions by hand. The error is an *optcheck.Error keyed
// by the option's YAML key.
func (o MQTTOptions) Validate() error {
	if o.MaxHandshakesPerSource < 0 {
		return optcheck.Invalid("max_handshakes_per_source", o.MaxHandshakesPerSource,
			"must not be negative (0 is half the handshake slots)")
	}
	return optcheck.First(
		optcheck.Positive("max_inflight", o.MaxInflight),
		optcheck.Positive("max_session_expiry", o.MaxSessionExpiry),
		optcheck.Positive("max_packet_size", o.MaxPacketSize),
		optcheck.Positive("max_connect_size", o.MaxConnectSize),
		optcheck.Positive("hello_timeout", o.HelloTimeout),
		optcheck.Positive("handshake_timeout", o.HandshakeTimeout),
		optcheck.Positive("connect_timeout", o.ConnectTimeout),
		optcheck.Positive("max_concurrent_handshakes", o.MaxConcurrentHandshakes),
		optcheck.Positive("receive_maximum", o.ReceiveMaximum),
		optcheck.Positive("max_keepalive", o.MaxKeepAlive),
		optcheck.Positive("write_timeout", o.WriteTimeout),
		optcheck.Positive("disconnect_timeout", o.DisconnectTimeout),
		optcheck.Positive("authorize_timeout", o.AuthorizeTimeout),
	)
}
