"""Drives an Eclipse Paho Python client (Debian's python3-paho-mqtt) for the interop test.

Commands arrive on standard input and events leave on standard output, one JSON object a line:

  {"op": "connect", "clean": true, "keepalive": 2, "expiry": 0}  -> {"ev": "connack", ...}
  {"op": "publish", "topic": "...", "payload": "...", "qos": 1}  -> {"ev": "published"}
  {"op": "subscribe", "topic": "...", "qos": 1}                  -> {"ev": "subscribed", "codes": [...]}
  {"op": "disconnect"}                                           -> {"ev": "closed"}

and at any time {"ev": "message", ...}, {"ev": "lost", "code": n} (the connection ended
without our asking; code is the server's DISCONNECT reason, or -1) and {"ev": "log", ...}
(Paho's own packet log, the trace a failing test prints).

The client is driven by the application's own loop calling loop(), as firmware does: no
automatic reconnection, so that a session taken over stays with the connection that took it.
"""

import argparse
import json
import queue
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

out_lock = threading.Lock()


def emit(**event):
    with out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    for flag in ("host", "ca", "cert", "key", "id"):
        ap.add_argument("--" + flag, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", type=int, choices=(4, 5), required=True)
    args = ap.parse_args()
    v5 = args.version == 5

    state = {"closing": False}
    client = None

    def on_connect(c, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else int(rc)
        emit(ev="connack", code=code, session_present=bool(flags.get("session present")))

    def on_disconnect(c, userdata, rc, properties=None):
        if state["closing"]:
            emit(ev="closed")
            return
        code = -1
        if v5 and hasattr(rc, "value") and rc.value >= 0x80:
            code = rc.value  # the reason of the server's DISCONNECT
        emit(ev="lost", code=code, detail=str(rc))

    def on_message(c, userdata, msg):
        emit(ev="message", topic=msg.topic, payload=msg.payload.decode(), qos=msg.qos)

    def on_publish(c, userdata, mid):
        emit(ev="published", mid=mid)

    def on_subscribe(c, userdata, mid, granted, properties=None):
        codes = [g.value if hasattr(g, "value") else int(g) for g in granted]
        emit(ev="subscribed", codes=codes)

    def on_log(c, userdata, level, buf):
        emit(ev="log", text=buf)

    # One thread owns the client, as firmware's main loop does: it runs each command between
    # calls of loop(), which Paho 1.6 does not guard against writes from other threads.
    commands = queue.Queue()

    def run():
        nonlocal client
        looping = False
        while True:
            try:
                cmd = commands.get(timeout=0.05) if looping else commands.get()
            except queue.Empty:
                cmd = None
            if cmd is not None:
                if cmd["op"] == "eof":
                    return
                if cmd["op"] == "connect":
                    try:
                        client = new_client(cmd)
                    except Exception as e:  # refused by TLS, or no server
                        emit(ev="lost", code=-1, detail=repr(e))
                        continue
                    looping = True
                elif cmd["op"] == "publish":
                    client.publish(cmd["topic"], cmd["payload"], qos=cmd["qos"])
                elif cmd["op"] == "subscribe":
                    client.subscribe(cmd["topic"], qos=cmd["qos"])
                elif cmd["op"] == "disconnect":
                    state["closing"] = True
                    client.disconnect()
            if looping and client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                looping = False  # no automatic reconnection

    def new_client(cmd):
        if v5:
            c = mqtt.Client(client_id=args.id, protocol=mqtt.MQTTv5)
        else:
            c = mqtt.Client(client_id=args.id, clean_session=cmd["clean"], protocol=mqtt.MQTTv311)
        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        c.on_message = on_message
        c.on_publish = on_publish
        c.on_subscribe = on_subscribe
        c.on_log = on_log
        c.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key)
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if cmd.get("expiry"):
                props.SessionExpiryInterval = cmd["expiry"]
            c.connect(args.host, args.port, keepalive=cmd["keepalive"],
                      clean_start=cmd["clean"], properties=props)
        else:
            c.connect(args.host, args.port, keepalive=cmd["keepalive"])
        return c

    worker = threading.Thread(target=run)
    worker.start()
    for line in sys.stdin:
        commands.put(json.loads(line))
    commands.put({"op": "eof"})
    worker.join()


if __name__ == "__main__":
    main()
