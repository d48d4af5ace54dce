// Drives the official Azure IoT Node service SDK (azure-iot-provisioning-service) through the
// service API and prints what it saw as one JSON line; server/tests/sdk_node.rs checks it.
//
//   node service.js <connectionString> <registrationIdOfARegisteredDevice>
'use strict';
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

const [connectionString, registeredId] = process.argv.slice(2);
const client = ProvisioningServiceClient.fromConnectionString(connectionString);

// Callback style throughout: the SDK's promise forms drop headers (continuation) and bulk results.
const call = (fn, ...args) => new Promise((resolve) => fn.call(client, ...args, (err, result, response) => {
  resolve({ err, result, status: err ? (err.response?.statusCode ?? err.statusCode ?? null) : response?.statusCode, body: err?.responseBody });
}));
const errorCode = (r) => { try { return JSON.parse(r.body).errorCode; } catch (_) { return null; } };

async function allPages(query) {
  const items = [];
  let pages = 0;
  while (query.hasMoreResults && pages < 100) {
    const page = await new Promise((resolve, reject) => query.next((err, result) => (err ? reject(err) : resolve(result))));
    items.push(...page);
    pages += 1;
  }
  return { items, pages };
}

(async () => {
  const out = {};
  const created = await call(client.createOrUpdateIndividualEnrollment, {
    registrationId: 'svc-dev-1', attestation: { type: 'symmetricKey' },
    initialTwin: { tags: { site: 'a' }, properties: { desired: { interval: 5 } } },
  });
  out.created = { status: created.status, keyLength: Buffer.from(created.result?.attestation?.symmetricKey?.primaryKey ?? '', 'base64').length, etag: created.result?.etag };

  const read = await call(client.getIndividualEnrollment, 'svc-dev-1');
  out.read = { status: read.status, registrationId: read.result?.registrationId, type: read.result?.attestation?.type, tags: read.result?.initialTwin?.tags };

  const updated = await call(client.createOrUpdateIndividualEnrollment, { ...read.result, provisioningStatus: 'disabled' });
  out.updated = { status: updated.status, provisioningStatus: updated.result?.provisioningStatus, etagChanged: updated.result?.etag !== read.result?.etag };

  const stale = await call(client.createOrUpdateIndividualEnrollment, { ...read.result, provisioningStatus: 'enabled' });
  out.staleUpdate = { status: stale.status, errorCode: errorCode(stale) };

  const staleDelete = await call(client.deleteIndividualEnrollment, 'svc-dev-1', read.result?.etag);
  out.staleDelete = { status: staleDelete.status };
  const deleted = await call(client.deleteIndividualEnrollment, 'svc-dev-1', updated.result?.etag);
  const gone = await call(client.getIndividualEnrollment, 'svc-dev-1');
  out.deleted = { error: deleted.err ? String(deleted.err) : null, afterwards: gone.status, errorCode: errorCode(gone) };

  const group = await call(client.createOrUpdateEnrollmentGroup, { enrollmentGroupId: 'svc-group-1', attestation: { type: 'symmetricKey' } });
  const groupRead = await call(client.getEnrollmentGroup, 'svc-group-1');
  const groupUpdated = await call(client.createOrUpdateEnrollmentGroup, { ...groupRead.result, allocationPolicy: 'hashed' });
  const groupStale = await call(client.createOrUpdateEnrollmentGroup, { ...groupRead.result, allocationPolicy: 'static' });
  const groupKeys = await call(client.getEnrollmentGroupAttestationMechanism, 'svc-group-1');
  const groupDeleteStale = await call(client.deleteEnrollmentGroup, 'svc-group-2', 'stale');
  await call(client.createOrUpdateEnrollmentGroup, { enrollmentGroupId: 'svc-group-2', attestation: { type: 'symmetricKey' } });
  const group2 = await call(client.getEnrollmentGroup, 'svc-group-2');
  const groupDeleteWrong = await call(client.deleteEnrollmentGroup, 'svc-group-2', '"wrong"');
  const groupDelete = await call(client.deleteEnrollmentGroup, 'svc-group-2', group2.result?.etag);
  const groupGone = await call(client.getEnrollmentGroup, 'svc-group-2');
  out.groupDelete = { missing: groupDeleteStale.status, wrongEtag: groupDeleteWrong.status, error: groupDelete.err ? String(groupDelete.err) : null, afterwards: groupGone.status };
  out.group = {
    created: group.status, read: groupRead.result?.enrollmentGroupId, updated: groupUpdated.result?.allocationPolicy,
    staleStatus: groupStale.status, keysFromAttestationMechanism: Boolean(groupKeys.result?.symmetricKey?.primaryKey),
    primaryKeyMatches: groupKeys.result?.symmetricKey?.primaryKey === group.result?.attestation?.symmetricKey?.primaryKey,
  };

  // 25 enrollments in bulk (10 at most per operation), then a bulk with one failing item.
  const ids = Array.from({ length: 25 }, (_, i) => `svc-bulk-${String(i).padStart(2, '0')}`);
  let bulkOk = true;
  for (let i = 0; i < ids.length; i += 10) {
    const enrollments = ids.slice(i, i + 10).map((registrationId) => ({ registrationId, attestation: { type: 'symmetricKey' } }));
    const r = await call(client.runBulkEnrollmentOperation, { mode: 'create', enrollments });
    bulkOk = bulkOk && r.result?.isSuccessful === true;
  }
  const mixed = await call(client.runBulkEnrollmentOperation, {
    mode: 'create',
    enrollments: [{ registrationId: 'svc-bulk-00', attestation: { type: 'symmetricKey' } }, { registrationId: 'svc-bulk-new', attestation: { type: 'symmetricKey' } }],
  });
  out.bulk = { allCreated: bulkOk, mixedSuccessful: mixed.result?.isSuccessful, mixedErrors: mixed.result?.errors };

  const enrollments = await allPages(client.createIndividualEnrollmentQuery({ query: '*' }, 10));
  out.query = { pages: enrollments.pages, bulkIds: enrollments.items.filter((e) => e.registrationId.startsWith('svc-bulk-')).length };
  const groups = await allPages(client.createEnrollmentGroupQuery({ query: '*' }, 1));
  out.groupQuery = { ids: groups.items.map((g) => g.enrollmentGroupId), pages: groups.pages };

  const state = await call(client.getDeviceRegistrationState, registeredId);
  out.registration = { status: state.status, assignedHub: state.result?.assignedHub, deviceStatus: state.result?.status };
  const regDeleteStale = await call(client.deleteDeviceRegistrationState, registeredId, 'IjEyMyI=');
  const regDelete = await call(client.deleteDeviceRegistrationState, registeredId, state.result?.etag);
  const regGone = await call(client.getDeviceRegistrationState, registeredId);
  out.registrationDelete = { stale: regDeleteStale.status, error: regDelete.err ? String(regDelete.err) : null, afterwards: regGone.status };

  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
