# The whole seed flow with the official Azure IoT Python SDK (azure-iot-device): provision with
# ProvisioningDeviceClient, connect IoTHubDeviceClient to the returned assignedHub with the same
# key, read the twin, report a property. Prints one JSON line. Used by server/tests/integration/sdk.rs.
#
#   python device.py <py-mqtt|py-ws> <host> <idScope> <registrationId> <key> <reportedJson>
#
# Ports are the SDK's own (8883, or 443 over WebSocket); the CA comes from SDK_CA_FILE.
import json
import os
import sys

from azure.iot.device import IoTHubDeviceClient, ProvisioningDeviceClient

transport, host, id_scope, registration_id, key, reported = sys.argv[1:7]
websockets = transport == "py-ws"
with open(os.environ["SDK_CA_FILE"]) as ca:
    ca_pem = ca.read()

outcome = {}
try:
    provisioning = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id=registration_id,
        id_scope=id_scope,
        symmetric_key=key,
        websockets=websockets,
        server_verification_cert=ca_pem,
    )
    state = provisioning.register().registration_state
    outcome["assignedHub"] = state.assigned_hub
    device = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key,
        hostname=state.assigned_hub,
        device_id=state.device_id,
        websockets=websockets,
        server_verification_cert=ca_pem,
    )
    device.connect()
    outcome["twin"] = device.get_twin()
    device.patch_twin_reported_properties(json.loads(reported))
    outcome["twinAfterPatch"] = device.get_twin()
    device.shutdown()
    outcome["ok"] = True
except Exception as error:  # the outcome is the test's to judge
    outcome.update(ok=False, name=type(error).__name__, message=repr(error))
print(json.dumps(outcome))
sys.stdout.flush()
os._exit(0)
