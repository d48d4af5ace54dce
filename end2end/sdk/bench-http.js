// Benchmark: end-to-end time of one registration with the official Node SDK over HTTPS, the process
// already started. Registers <count> distinct devices of one enrollment group, one after another,
// each with a new client (as a device would), and prints the median and spread.
//
//   node bench-http.js <host> <idScope> <groupKey> [count=20] [prefix]
'use strict';
const crypto = require('node:crypto');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const [host, idScope, groupKey, countArg, prefixArg] = process.argv.slice(2);
const count = Number(countArg ?? 20);
const prefix = prefixArg ?? `bench-${Date.now()}`;

function register(id) {
  const key = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(id, 'utf8').digest('base64');
  const client = ProvisioningDeviceClient.create(host, idScope, new Http(), new SymmetricKeySecurityClient(id, key));
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => client.register((err, result) => {
    if (err) return reject(err);
    if (result.status !== 'assigned') return reject(new Error(`status ${result.status}`));
    resolve(Number(process.hrtime.bigint() - started) / 1e6);
  }));
}

(async () => {
  await register(`${prefix}-warmup`);
  const times = [];
  for (let i = 0; i < count; i++) times.push(await register(`${prefix}-${i}`));
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  const figures = { registrations: count, median_ms: at(0.5), p90_ms: at(0.9), min_ms: times[0], max_ms: times[times.length - 1] };
  console.log(`node-sdk-http registration: median ${figures.median_ms.toFixed(1)} ms (p90 ${figures.p90_ms.toFixed(1)}, min ${figures.min_ms.toFixed(1)}, max ${figures.max_ms.toFixed(1)}) over ${count}`);
  console.log(JSON.stringify(figures));
})().catch((e) => { console.error(e); process.exit(1); });
