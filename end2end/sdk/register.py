# Registers one device with the official Azure IoT Python SDK (azure-iot-device) and prints the
# outcome as one JSON line, in the shape register.js prints. Used by server/tests/integration/sdk_node.rs.
#
#   python register.py <py-mqtt|py-ws> <host> <idScope> <registrationId> <key> [payloadJson] [--group-key]
#   python register.py <py-mqtt|py-ws> <host> <idScope> <registrationId> <certPrefix> --x509
#
# With --x509 the device authenticates with <certPrefix>.pem (leaf first, then any intermediates)
# and <certPrefix>-key.pem.
#
# The SDK hard-codes its ports: 8883 for MQTT, 443 for MQTT over WebSocket. The generated CA is
# trusted through server_verification_cert, read from the file named by SDK_CA_FILE.
import base64
import hashlib
import hmac
import json
import os
import sys
import time

from azure.iot.device import X509, ProvisioningDeviceClient

flags = [a for a in sys.argv[1:] if a.startswith("--")]
args = [a for a in sys.argv[1:] if not a.startswith("--")]
transport, host, id_scope, registration_id, key = args[:5]
payload = json.loads(args[5]) if len(args) > 5 else None


def derive_key(group_key, device_id):
    digest = hmac.new(base64.b64decode(group_key), device_id.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def causes(error):
    """The messages of an exception and of everything it was raised from."""
    messages = []
    while error is not None:
        messages.append(f"{type(error).__name__}: {error}")
        error = error.__cause__
    return " <- ".join(messages)


with open(os.environ["SDK_CA_FILE"]) as ca:
    common = dict(
        provisioning_host=host,
        registration_id=registration_id,
        id_scope=id_scope,
        websockets=(transport == "py-ws"),
        server_verification_cert=ca.read(),
    )
if "--x509" in flags:
    certificate = X509(cert_file=f"{key}.pem", key_file=f"{key}-key.pem")
    client = ProvisioningDeviceClient.create_from_x509_certificate(x509=certificate, **common)
else:
    device_key = derive_key(key, registration_id) if "--group-key" in flags else key
    client = ProvisioningDeviceClient.create_from_symmetric_key(symmetric_key=device_key, **common)
if payload is not None:
    client.provisioning_payload = payload

started = time.monotonic()
try:
    result = client.register()
    state = result.registration_state
    print(json.dumps({
        "ok": True,
        "ms": (time.monotonic() - started) * 1000,
        "result": {
            "status": result.status,
            "assignedHub": state.assigned_hub,
            "deviceId": state.device_id,
            "substatus": state.sub_status,
            "payload": json.loads(state.response_payload),
        },
    }))
except Exception as error:  # the outcome is the test's to judge
    print(json.dumps({
        "ok": False,
        "ms": (time.monotonic() - started) * 1000,
        "name": type(error).__name__,
        "message": causes(error),
    }))
sys.stdout.flush()
# The SDK's pipeline threads keep the process alive: end it once the outcome is printed.
os._exit(0)
