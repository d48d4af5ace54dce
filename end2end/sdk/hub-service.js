// Manages devices and twins of a built-in hub with the official Azure IoT Hub service SDK
// (azure-iothub's Registry), as an operator's script would, and prints what it saw as one JSON
// line. Used by server/tests/integration/sdk.rs.
//
//   node hub-service.js <hubConnectionString> <deviceId>
//
// The connection string is the instance's (HostName=<built-in hub>;SharedAccessKeyName=...);
// the SDK talks HTTPS to port 443; the CA is trusted through NODE_EXTRA_CA_CERTS.
'use strict';
const { Registry } = require('azure-iothub');

const [connectionString, deviceId] = process.argv.slice(2);
const registry = Registry.fromConnectionString(connectionString);
const outcome = {};

function statusOf(err) {
  return err?.response?.statusCode ?? err?.responseBody ?? String(err);
}

async function main() {
  const primaryKey = Buffer.alloc(32, 7).toString('base64');
  const secondaryKey = Buffer.alloc(32, 9).toString('base64');
  const created = await registry.create({
    deviceId,
    status: 'enabled',
    authentication: { symmetricKey: { primaryKey, secondaryKey } },
  });
  outcome.created = { deviceId: created.responseBody.deviceId, status: created.httpResponse.statusCode };
  const got = await registry.get(deviceId);
  outcome.read = {
    deviceId: got.responseBody.deviceId,
    primaryKeyMatches: got.responseBody.authentication.symmetricKey.primaryKey === primaryKey,
  };
  const twin = (await registry.getTwin(deviceId)).responseBody;
  outcome.twinBefore = { desiredVersion: twin.properties.desired.$version };
  const patch = { tags: { building: 'b7' }, properties: { desired: { telemetryInterval: 12 } } };
  const updated = (await registry.updateTwin(deviceId, patch, twin.etag)).responseBody;
  outcome.twinAfter = {
    tags: updated.tags,
    interval: updated.properties.desired.telemetryInterval,
    desiredVersion: updated.properties.desired.$version,
  };
  try {
    await registry.updateTwin(deviceId, { tags: { stale: true } }, twin.etag);
    outcome.staleUpdate = 'accepted';
  } catch (err) {
    outcome.staleUpdate = statusOf(err);
  }
  await registry.delete(deviceId);
  try {
    await registry.get(deviceId);
    outcome.afterDelete = 'still there';
  } catch (err) {
    outcome.afterDelete = statusOf(err);
  }
  outcome.ok = true;
}

main()
  .catch((err) => Object.assign(outcome, { ok: false, name: err.name, message: err.message, status: statusOf(err) }))
  .finally(() => {
    console.log(JSON.stringify(outcome));
    process.exit(0);
  });
