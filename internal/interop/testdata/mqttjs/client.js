// Drives an MQTT.js client for the interop test, with the line protocol of ../paho_client.py:
// JSON commands on standard input (connect, publish, subscribe, disconnect), JSON events on
// standard output (connack, published, subscribed, closed, message, lost, log). The mqtt
// package comes from NODE_PATH (scripts/test installs it with npm ci from package-lock.json).
'use strict';

const fs = require('fs');
const readline = require('readline');
const mqtt = require('mqtt');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
const version = Number(args.version);

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

let client = null;
let closing = false;
let lost = false;

function connect(cmd) {
  const opts = {
    protocol: 'mqtts',
    host: args.host,
    port: Number(args.port),
    ca: fs.readFileSync(args.ca),
    cert: fs.readFileSync(args.cert),
    key: fs.readFileSync(args.key),
    rejectUnauthorized: true,
    clientId: args.id,
    protocolVersion: version,
    clean: cmd.clean,
    keepalive: cmd.keepalive,
    reconnectPeriod: 0, // no automatic reconnection: a session taken over stays taken
    connectTimeout: 10000,
  };
  if (version === 5 && cmd.expiry) {
    opts.properties = { sessionExpiryInterval: cmd.expiry };
  }
  client = mqtt.connect(opts);
  client.on('connect', (ack) => {
    emit({ ev: 'connack', code: ack.reasonCode ?? ack.returnCode ?? 0, session_present: !!ack.sessionPresent });
  });
  client.on('message', (topic, payload, packet) => {
    emit({ ev: 'message', topic, payload: payload.toString(), qos: packet.qos });
  });
  client.on('disconnect', (packet) => {
    // The server's DISCONNECT (MQTT 5).
    lost = true;
    emit({ ev: 'lost', code: packet.reasonCode ?? 0 });
  });
  client.on('close', () => {
    if (closing) {
      emit({ ev: 'closed' });
    } else if (!lost) {
      lost = true;
      emit({ ev: 'lost', code: -1 });
    }
  });
  client.on('error', (err) => emit({ ev: 'log', text: 'error: ' + err.message }));
  client.on('packetsend', (p) => emit({ ev: 'log', text: 'sent ' + describe(p) }));
  client.on('packetreceive', (p) => emit({ ev: 'log', text: 'received ' + describe(p) }));
}

function describe(p) {
  const parts = [p.cmd];
  for (const k of ['messageId', 'qos', 'reasonCode', 'returnCode', 'sessionPresent', 'topic']) {
    if (p[k] !== undefined && p[k] !== '') parts.push(k + '=' + p[k]);
  }
  return parts.join(' ');
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case 'connect':
      connect(cmd);
      break;
    case 'publish':
      client.publish(cmd.topic, cmd.payload, { qos: cmd.qos }, (err, packet) => {
        if (err) {
          emit({ ev: 'log', text: 'publish: ' + err.message });
          emit({ ev: 'published', code: err.code ?? 0x80 });
        } else {
          emit({ ev: 'published', code: (packet && packet.reasonCode) || 0 });
        }
      });
      break;
    case 'subscribe':
      client.subscribe(cmd.topic, { qos: cmd.qos }, (err, granted) => {
        if (err) {
          emit({ ev: 'log', text: 'subscribe: ' + err.message });
        }
        emit({ ev: 'subscribed', codes: (granted || []).map((g) => g.qos) });
      });
      break;
    case 'disconnect':
      closing = true;
      client.end(false, {}, () => {});
      break;
  }
});
rl.on('close', () => {
  if (client) client.end(true);
});
