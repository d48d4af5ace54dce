// Connects to a built-in hub with the official Azure IoT Node device SDK (azure-iot-device +
// azure-iot-device-mqtt), reads the twin, reports a property and sends one telemetry message
// (`{"temperature": 21.5}` with the application property `source=node-sdk`), and prints the
// outcome as one JSON line. Used by server/tests/integration/sdk.rs after register.js has provisioned the device.
//
//   node hub-device.js <assignedHub> <deviceId> <key> <reportedJson>
//
// The SDK's MQTT transport uses port 8883; the CA is trusted through NODE_EXTRA_CA_CERTS.
'use strict';
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const [hub, deviceId, key, reported] = process.argv.slice(2);
const client = Client.fromConnectionString(`HostName=${hub};DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);

function finish(outcome) {
  console.log(JSON.stringify(outcome));
  process.exit(0);
}

client.open((err) => {
  if (err) return finish({ ok: false, name: err.name, message: err.message });
  client.getTwin((err, twin) => {
    if (err) return finish({ ok: false, name: err.name, message: err.message });
    const desired = { ...twin.properties.desired };
    twin.properties.reported.update(JSON.parse(reported), (err) => {
      if (err) return finish({ ok: false, name: err.name, message: err.message, desired });
      const message = new Message(JSON.stringify({ temperature: 21.5 }));
      message.properties.add('source', 'node-sdk');
      client.sendEvent(message, (err) => {
        if (err) return finish({ ok: false, name: err.name, message: err.message, desired });
        finish({ ok: true, desired });
      });
    });
  });
});
