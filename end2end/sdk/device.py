# The whole seed flow with the official Azure IoT Python SDK (azure-iot-device): provision with
# ProvisioningDeviceClient, connect IoTHubDeviceClient to the returned assignedHub with the same
# key, read the twin, report a property, then change a desired property through the built-in hub's
# REST subset (as an operator's script would, with the instance's service connection string) and
# receive it on the device. Prints one JSON line. Used by server/tests/integration/sdk.rs.
#
#   python device.py <py-mqtt|py-ws> <host> <idScope> <registrationId> <key> <reportedJson> <serviceConnectionString> [--x509] [--hub-only]
#
# With --x509, <key> is a certificate prefix: both clients authenticate with <key>.pem (leaf first,
# then any intermediates) and <key>-key.pem instead of a symmetric key. With --hub-only the device
# was provisioned already (a certificate issued for its CSR): <host> is its hub, the device ID its
# registration ID, and only the hub client runs.
#
# Ports are the SDK's own (8883, or 443 over WebSocket); the CA comes from SDK_CA_FILE.
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote_plus

import requests

from azure.iot.device import X509, IoTHubDeviceClient, ProvisioningDeviceClient

transport, host, id_scope, registration_id, key, reported, service = sys.argv[1:8]
use_x509 = "--x509" in sys.argv[8:]
hub_only = "--hub-only" in sys.argv[8:]
websockets = transport == "py-ws"
with open(os.environ["SDK_CA_FILE"]) as ca:
    ca_pem = ca.read()


def service_token(connection_string, resource):
    """A service SAS token for `resource`, signed with the connection string's policy key."""
    parts = dict(part.split("=", 1) for part in connection_string.split(";"))
    expiry = int(time.time()) + 300
    to_sign = f"{quote_plus(resource)}\n{expiry}".encode()
    key = base64.b64decode(parts["SharedAccessKey"])
    sig = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    return (f"SharedAccessSignature sr={quote_plus(resource)}&sig={quote_plus(sig)}"
            f"&se={expiry}&skn={parts['SharedAccessKeyName']}")


outcome = {}
try:
    certificate = X509(cert_file=f"{key}.pem", key_file=f"{key}-key.pem") if use_x509 else None
    common = dict(websockets=websockets, server_verification_cert=ca_pem)
    if hub_only:
        state = SimpleNamespace(assigned_hub=host, device_id=registration_id)
    else:
        if use_x509:
            provisioning = ProvisioningDeviceClient.create_from_x509_certificate(
                provisioning_host=host, registration_id=registration_id, id_scope=id_scope,
                x509=certificate, **common)
        else:
            provisioning = ProvisioningDeviceClient.create_from_symmetric_key(
                provisioning_host=host, registration_id=registration_id, id_scope=id_scope,
                symmetric_key=key, **common)
        state = provisioning.register().registration_state
    outcome["assignedHub"] = state.assigned_hub
    if use_x509:
        device = IoTHubDeviceClient.create_from_x509_certificate(
            x509=certificate, hostname=state.assigned_hub, device_id=state.device_id, **common)
    else:
        device = IoTHubDeviceClient.create_from_symmetric_key(
            symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id, **common)
    device.connect()
    outcome["twin"] = device.get_twin()
    device.patch_twin_reported_properties(json.loads(reported))
    outcome["twinAfterPatch"] = device.get_twin()

    pushed = threading.Event()
    def on_desired(patch):
        outcome["desiredPush"] = patch
        pushed.set()
    device.on_twin_desired_properties_patch_received = on_desired
    response = requests.patch(
        f"https://{state.assigned_hub}/twins/{state.device_id}?api-version=2021-04-12",
        json={"tags": {"room": "lab"}, "properties": {"desired": {"telemetryInterval": 5}}},
        headers={"Authorization": service_token(service, state.assigned_hub)},
        verify=os.environ["SDK_CA_FILE"],
        timeout=10,
    )
    outcome["servicePatch"] = {"status": response.status_code, "body": response.json()}
    outcome["pushReceived"] = pushed.wait(10)
    device.shutdown()
    outcome["ok"] = True
except Exception as error:  # the outcome is the test's to judge
    outcome.update(ok=False, name=type(error).__name__, message=repr(error))
print(json.dumps(outcome))
sys.stdout.flush()
os._exit(0)
