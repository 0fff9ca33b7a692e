package protocol

import "time"

// BatchPath is where a device POSTs a telemetry batch on the HTTPS transport,
// with its client certificate: https://<device-id>.<zone>:8443/ingest/v1/batch.
const BatchPath = "/ingest/v1/batch"

// MQTT 5 CONNECT user properties (MQTT 5.0 §3.1.2.11.8) in which a device
// reports what it is. Each is optional; the server keeps the latest value of
// each per device in its registry.
const (
	// PropHardwareModel is the device's hardware model, such as "gw-200".
	PropHardwareModel = "hw_model"
	// PropNetworkOperator is the mobile or fixed network the device uses,
	// such as "Telia".
	PropNetworkOperator = "net_operator"
	// PropFirmwareVersion is the running firmware's version, such as "2.1.0".
	PropFirmwareVersion = "fw_version"
	// PropSendInterval is the longest time the device waits between two sends, as a Go
	// duration ("75s", "6h"): the server judges the device silent after a multiple of it,
	// not after a fixed timeout. At most MaxSendInterval; a value it cannot parse is ignored.
	PropSendInterval = "send_interval"
)

// MaxSendInterval is the longest PropSendInterval the server takes: 30 days.
const MaxSendInterval = 30 * 24 * time.Hour

// MQTT 5 reason codes (MQTT 5.0 §2.4) that this contract gives a meaning: the
// PUBACK codes that carry a Reason (Reason.MQTTCode), and the CONNACK and
// DISCONNECT codes the server sends and a device acts on (docs/protocol.md,
// "Transports: MQTT"). Codes below 0x80 are successes.
const (
	MQTTSuccess               byte = 0x00
	MQTTNoMatchingSubscribers byte = 0x10 // PUBACK: a success; no subscription took the message
	MQTTUnspecifiedError      byte = 0x80 // PUBACK: ReasonUnavailable, retry
	MQTTMalformedPacket       byte = 0x81
	MQTTProtocolError         byte = 0x82
	// MQTTImplementationSpecificError is the PUBACK of ReasonTooOld, ReasonTooNew,
	// ReasonSeriesLimit and ReasonEventQuota: drop the batch.
	MQTTImplementationSpecificError byte = 0x83
	MQTTClientIdentifierNotValid    byte = 0x85 // CONNACK
	MQTTBadUserNameOrPassword       byte = 0x86 // CONNACK
	MQTTNotAuthorized               byte = 0x87 // CONNACK, PUBACK (ReasonNotAuthorized), SUBACK, DISCONNECT (revoked)
	MQTTServerUnavailable           byte = 0x88 // CONNACK: the registry could not answer; come back later
	MQTTServerBusy                  byte = 0x89 // CONNACK, DISCONNECT
	MQTTBanned                      byte = 0x8A // CONNACK
	MQTTServerShuttingDown          byte = 0x8B // DISCONNECT
	MQTTBadAuthenticationMethod     byte = 0x8C // CONNACK: enhanced authentication is refused
	MQTTKeepAliveTimeout            byte = 0x8D // DISCONNECT: silent for 1.5× the keep-alive
	MQTTSessionTakenOver            byte = 0x8E // DISCONNECT: the device connected again
	MQTTReceiveMaximumExceeded      byte = 0x93 // DISCONNECT
	MQTTTopicAliasInvalid           byte = 0x94 // DISCONNECT
	MQTTPacketTooLarge              byte = 0x95 // DISCONNECT
	MQTTQuotaExceeded               byte = 0x97 // PUBACK: ReasonBusy, retry; CONNACK and DISCONNECT: busy
	MQTTPayloadFormatInvalid        byte = 0x99 // PUBACK: ReasonMalformed, ReasonInvalid, ReasonTooLarge, ReasonTooManyRecords; drop
	MQTTUseAnotherServer            byte = 0x9C // CONNACK, DISCONNECT
	MQTTServerMoved                 byte = 0x9D // CONNACK, DISCONNECT
)

// MQTT 3.1.1 CONNACK return codes (MQTT 3.1.1 §3.2.2.3), which the server
// answers an MQTT 3.1.1 device with instead of the MQTT 5 reason codes.
const (
	MQTT3Accepted              byte = 0x00
	MQTT3UnacceptableVersion   byte = 0x01 // MQTT 3.1 and unknown protocol levels
	MQTT3IdentifierRejected    byte = 0x02
	MQTT3ServerUnavailable     byte = 0x03 // the registry could not answer, the server is busy or shutting down
	MQTT3BadUserNameOrPassword byte = 0x04
	MQTT3NotAuthorized         byte = 0x05
)
