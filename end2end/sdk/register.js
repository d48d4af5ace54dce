// Registers one device with the official Azure IoT Node SDK and prints the outcome as one JSON
// line. Used by server/tests/integration/sdk_node.rs.
//
//   node register.js <http|mqtt|mqtt-ws|amqp|amqp-ws> <host> <idScope> <registrationId> <key> [payloadJson] [--group-key]
//   node register.js <http|mqtt|mqtt-ws|amqp|amqp-ws> <host> <idScope> <registrationId> <certPrefix> --x509
//
// With --x509 the device authenticates with the certificate <certPrefix>.pem (leaf first, then any
// intermediates) and its key <certPrefix>-key.pem, through azure-iot-security-x509.
//
// HTTP and both WebSocket transports always go to port 443, AMQP to 5671 (the SDK hard-codes them);
// MQTT takes `host:port`.
//
// With --group-key, <key> is the enrollment group's key and the device key is derived here
// exactly as the Azure docs show, with Node's own crypto.
'use strict';
const crypto = require('node:crypto');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-provisioning-device-amqp');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const fs = require('node:fs');

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const groupKey = process.argv.includes('--group-key');
const [transportName, host, idScope, registrationId, key, payload] = args;
const transports = {
  http: () => new Http(), mqtt: () => new Mqtt(), 'mqtt-ws': () => new MqttWs(), amqp: () => new Amqp(), 'amqp-ws': () => new AmqpWs(),
};

function deriveKey(groupKeyB64, id) {
  return crypto.createHmac('sha256', Buffer.from(groupKeyB64, 'base64')).update(id, 'utf8').digest('base64');
}

function security() {
  if (process.argv.includes('--x509')) {
    const cert = { cert: fs.readFileSync(`${key}.pem`, 'utf8'), key: fs.readFileSync(`${key}-key.pem`, 'utf8') };
    return new X509Security(registrationId, cert);
  }
  return new SymmetricKeySecurityClient(registrationId, groupKey ? deriveKey(key, registrationId) : key);
}

const client = ProvisioningDeviceClient.create(host, idScope, transports[transportName](), security());
if (payload) client.setProvisioningPayload(JSON.parse(payload));

const started = process.hrtime.bigint();
client.register((err, result) => {
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (err) {
    let body = err.responseBody ?? null;
    try { body = typeof body === 'string' ? JSON.parse(body) : body; } catch (_) { /* keep text */ }
    console.log(JSON.stringify({
      ok: false,
      name: err.name,
      message: err.message,
      statusCode: err.response?.statusCode ?? null,
      body,
      result: err.result ?? null,
      // AMQP: a Rejected outcome reaches the caller as rhea's error, condition and description.
      condition: err.condition ?? null,
      description: err.description ?? null,
      ms,
    }));
  } else {
    console.log(JSON.stringify({ ok: true, result, ms }));
  }
  // MQTT keeps its connection open: end the process once the outcome is printed.
  process.exit(0);
});
