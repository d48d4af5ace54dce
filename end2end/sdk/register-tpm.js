// A TPM device with the official Azure IoT Node SDK (azure-iot-security-tpm on tss.js), its TPM a
// software one (swtpm behind the test's simulator-protocol shim, see
// server/tests/integration/support/swtpm.rs). Prints the outcome as one JSON line. Used by
// server/tests/integration/sdk_tpm.rs.
//
//   node register-tpm.js ek <tpmPort>
//       the TPM's endorsement key (base64 TPM2B_PUBLIC) and the registration ID the SDK derives from it
//   node register-tpm.js <http|amqp|amqp-ws> <host> <idScope> <tpmPort> [--hub]
//       registers with the SDK's default registration ID; with --hub the device then connects to
//       its assigned hub over MQTT with the SDK's TpmAuthenticationProvider (hub SAS tokens signed
//       inside the TPM with the key the final result delivered) and sends one telemetry message.
//
// HTTP and AMQP over WebSocket go to port 443, AMQP to 5671 (the SDK hard-codes them).
'use strict';
const { Tpm } = require('tss.js');
const { TpmSecurityClient, TpmAuthenticationProvider } = require('azure-iot-security-tpm');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Amqp, AmqpWs } = require('azure-iot-provisioning-device-amqp');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const transports = { http: () => new Http(), amqp: () => new Amqp(), 'amqp-ws': () => new AmqpWs() };

function finish(outcome) {
  console.log(JSON.stringify(outcome));
  process.exit(0);
}

function failure(err, extra = {}) {
  let body = err.responseBody ?? null;
  try { body = typeof body === 'string' ? JSON.parse(body) : body; } catch (_) { /* keep text */ }
  return {
    ok: false,
    ...extra,
    name: err.name,
    message: err.message,
    statusCode: err.response?.statusCode ?? null,
    body,
    condition: err.condition ?? null,
    description: err.description ?? null,
  };
}

// `new Tpm(true, host, port)`: tss.js's simulator transport, the SDK's documented custom TPM.
function securityClient(port) {
  return new TpmSecurityClient(undefined, new Tpm(true, '127.0.0.1', Number(port)));
}

function endorsementKey(port) {
  const security = securityClient(port);
  security.getEndorsementKey((err, ek) => {
    if (err) return finish(failure(err));
    security.getRegistrationId((err, registrationId) => {
      if (err) return finish(failure(err));
      finish({ ok: true, endorsementKey: ek.toString('base64'), registrationId });
    });
  });
}

function meetHub(security, result, started) {
  const auth = TpmAuthenticationProvider.fromTpmSecurityClient(result.deviceId, result.assignedHub, security);
  const client = Client.fromAuthenticationProvider(auth, Mqtt);
  client.open((err) => {
    if (err) return finish(failure(err, { registered: result, stage: 'hub-open' }));
    const message = new Message(JSON.stringify({ temperature: 19.5 }));
    message.properties.add('source', 'node-tpm');
    client.sendEvent(message, (err) => {
      if (err) return finish(failure(err, { registered: result, stage: 'hub-send' }));
      finish({ ok: true, result, hub: 'sent', ms: elapsed(started) });
    });
  });
}

function elapsed(started) {
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function register(transportName, host, idScope, port) {
  const security = securityClient(port);
  const client = ProvisioningDeviceClient.create(host, idScope, transports[transportName](), security);
  const started = process.hrtime.bigint();
  client.register((err, result) => {
    if (err) return finish({ ...failure(err), result: err.result ?? null, ms: elapsed(started) });
    // Unlike the other attestations, TPM registration hands back the whole operation.
    const state = result.registrationState;
    if (process.argv.includes('--hub')) return meetHub(security, state, started);
    finish({ ok: true, result: state, ms: elapsed(started) });
  });
}

if (args[0] === 'ek') endorsementKey(args[1]);
else register(args[0], args[1], args[2], args[3]);
