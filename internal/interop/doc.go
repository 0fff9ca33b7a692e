// Package interop holds the MQTT interoperability test: the clients devices really use —
// mosquitto_pub and mosquitto_sub (libmosquitto), Eclipse Paho Go (paho.golang, MQTT 5) and
// Eclipse Paho Go v3 (paho.mqtt.golang, MQTT 3.1.1), Eclipse Paho Python (Debian's
// python3-paho-mqtt) and MQTT.js (npm) — run against a server in the test process, over a
// real TLS listener with a certificate per device. Its table is clients × MQTT versions ×
// cases (connect, QoS 0/1/2 batches, subscriptions, keep-alive, session takeover, persistent
// sessions); docs/protocol.md ("Client interoperability") lists what passes and the gaps.
//
// The package has no code outside its tests.
package interop
