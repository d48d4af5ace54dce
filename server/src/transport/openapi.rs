//! The OpenAPI 3 document of the service API, served at `/openapi.json`. `OPERATIONS` is the one
//! list of what the service API offers; a test holds it to the routes both ways (every documented
//! operation is routed, every route is documented).

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::http_util::json_response;

/// (method, path, right needed, summary, request schema, response schema)
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
);

pub const OPERATIONS: &[Operation] = &[
    (
        "get",
        "/enrollments/{id}/testFault",
        "EnrollmentRead",
        "Test mode: the fault set on an individual enrollment and what is left of it",
        None,
        "TestFault",
    ),
    (
        "put",
        "/enrollments/{id}/testFault",
        "EnrollmentWrite",
        "Test mode: answer an individual enrollment's next registrations with an error, a delay or a dropped connection",
        Some("TestFault"),
        "TestFault",
    ),
    (
        "delete",
        "/enrollments/{id}/testFault",
        "EnrollmentWrite",
        "Test mode: end the fault set on an individual enrollment",
        None,
        "Empty",
    ),
    (
        "get",
        "/enrollmentGroups/{id}/testFault",
        "EnrollmentRead",
        "Test mode: the fault set on a group and what is left of it",
        None,
        "TestFault",
    ),
    (
        "put",
        "/enrollmentGroups/{id}/testFault",
        "EnrollmentWrite",
        "Test mode: answer a group's next registrations with an error, a delay or a dropped connection",
        Some("TestFault"),
        "TestFault",
    ),
    (
        "delete",
        "/enrollmentGroups/{id}/testFault",
        "EnrollmentWrite",
        "Test mode: end the fault set on a group",
        None,
        "Empty",
    ),
    (
        "get",
        "/enrollments/{id}",
        "EnrollmentRead",
        "Get an individual enrollment (keys left out)",
        None,
        "IndividualEnrollment",
    ),
    (
        "put",
        "/enrollments/{id}",
        "EnrollmentWrite",
        "Create or replace an individual enrollment (If-Match)",
        Some("IndividualEnrollment"),
        "IndividualEnrollment",
    ),
    (
        "delete",
        "/enrollments/{id}",
        "EnrollmentWrite",
        "Delete an individual enrollment (If-Match)",
        None,
        "Empty",
    ),
    (
        "post",
        "/enrollments/{id}/attestationmechanism",
        "EnrollmentRead",
        "Get an enrollment's attestation, keys included",
        None,
        "AttestationMechanism",
    ),
    (
        "post",
        "/enrollments/query",
        "EnrollmentRead",
        "Page through individual enrollments",
        Some("QuerySpecification"),
        "IndividualEnrollmentList",
    ),
    (
        "post",
        "/enrollments",
        "EnrollmentWrite",
        "Bulk operation on up to 10 individual enrollments",
        Some("BulkEnrollmentOperation"),
        "BulkEnrollmentOperationResult",
    ),
    (
        "get",
        "/enrollmentGroups/{id}",
        "EnrollmentRead",
        "Get an enrollment group (keys left out)",
        None,
        "EnrollmentGroup",
    ),
    (
        "put",
        "/enrollmentGroups/{id}",
        "EnrollmentWrite",
        "Create or replace an enrollment group (If-Match)",
        Some("EnrollmentGroup"),
        "EnrollmentGroup",
    ),
    (
        "delete",
        "/enrollmentGroups/{id}",
        "EnrollmentWrite",
        "Delete an enrollment group (If-Match)",
        None,
        "Empty",
    ),
    (
        "post",
        "/enrollmentGroups/{id}/attestationmechanism",
        "EnrollmentRead",
        "Get a group's attestation, keys included",
        None,
        "AttestationMechanism",
    ),
    (
        "post",
        "/enrollmentGroups/query",
        "EnrollmentRead",
        "Page through enrollment groups",
        Some("QuerySpecification"),
        "EnrollmentGroupList",
    ),
    (
        "post",
        "/enrollmentGroups",
        "EnrollmentWrite",
        "Bulk operation on up to 10 enrollment groups",
        Some("BulkEnrollmentGroupOperation"),
        "BulkEnrollmentOperationResult",
    ),
    (
        "get",
        "/registrations/{id}",
        "RegistrationStatusRead",
        "Get a device's registration record",
        None,
        "DeviceRegistrationState",
    ),
    (
        "delete",
        "/registrations/{id}",
        "RegistrationStatusWrite",
        "Delete a registration record (If-Match)",
        None,
        "Empty",
    ),
    (
        "post",
        "/registrations/{id}/query",
        "RegistrationStatusRead",
        "Page through the registration records of a group",
        Some("QuerySpecification"),
        "DeviceRegistrationStateList",
    ),
    (
        "get",
        "/linkedHubs",
        "ServiceConfig",
        "List linked hubs with their device counts",
        None,
        "LinkedHubList",
    ),
    (
        "get",
        "/linkedHubs/{host}",
        "ServiceConfig",
        "Get a linked hub",
        None,
        "LinkedHub",
    ),
    (
        "put",
        "/linkedHubs/{host}",
        "ServiceConfig",
        "Link a hub or change its settings",
        Some("LinkedHubSettings"),
        "LinkedHub",
    ),
    (
        "delete",
        "/linkedHubs/{host}",
        "ServiceConfig",
        "Unlink a hub",
        None,
        "Empty",
    ),
    (
        "get",
        "/allocationSettings",
        "ServiceConfig",
        "Get the default allocation policy and CIDR-to-region map",
        None,
        "AllocationSettings",
    ),
    (
        "put",
        "/allocationSettings",
        "ServiceConfig",
        "Set the default allocation policy and CIDR-to-region map",
        Some("AllocationSettings"),
        "AllocationSettings",
    ),
    (
        "get",
        "/accessPolicies",
        "ServiceConfig",
        "List shared access policies (keys left out)",
        None,
        "AccessPolicyList",
    ),
    (
        "get",
        "/accessPolicies/{name}",
        "ServiceConfig",
        "Get a shared access policy with its keys",
        None,
        "AccessPolicy",
    ),
    (
        "put",
        "/accessPolicies/{name}",
        "ServiceConfig",
        "Create a policy or change its rights",
        Some("AccessPolicyRights"),
        "AccessPolicy",
    ),
    (
        "delete",
        "/accessPolicies/{name}",
        "ServiceConfig",
        "Delete a policy (not the last with ServiceConfig)",
        None,
        "Empty",
    ),
    (
        "post",
        "/accessPolicies/{name}/regenerateKey",
        "ServiceConfig",
        "Replace a policy's primary or secondary key",
        Some("RegenerateKey"),
        "AccessPolicy",
    ),
    (
        "get",
        "/certificates",
        "ServiceConfig",
        "List the CA certificates registered on the instance",
        None,
        "CaCertificateList",
    ),
    (
        "get",
        "/certificates/{name}",
        "ServiceConfig",
        "Get a CA certificate",
        None,
        "CaCertificate",
    ),
    (
        "put",
        "/certificates/{name}",
        "ServiceConfig",
        "Upload a CA certificate (unverified unless isVerified)",
        Some("CertificateUpload"),
        "CaCertificate",
    ),
    (
        "delete",
        "/certificates/{name}",
        "ServiceConfig",
        "Remove a CA certificate",
        None,
        "Empty",
    ),
    (
        "post",
        "/certificates/{name}/generateVerificationCode",
        "ServiceConfig",
        "Issue a proof-of-possession code (the CN the verification certificate must carry)",
        None,
        "CaCertificate",
    ),
    (
        "post",
        "/certificates/{name}/verify",
        "ServiceConfig",
        "Verify the CA with a certificate for the code, signed by the CA's key",
        Some("CertificateUpload"),
        "CaCertificate",
    ),
    (
        "get",
        "/credentialPolicies",
        "ServiceConfig",
        "List credential policies (how certificates are issued for devices' CSRs)",
        None,
        "CredentialPolicyList",
    ),
    (
        "get",
        "/credentialPolicies/{name}",
        "ServiceConfig",
        "Get a credential policy",
        None,
        "CredentialPolicy",
    ),
    (
        "put",
        "/credentialPolicies/{name}",
        "ServiceConfig",
        "Create or replace a credential policy (its issuer must exist)",
        Some("CredentialPolicySettings"),
        "CredentialPolicy",
    ),
    (
        "delete",
        "/credentialPolicies/{name}",
        "ServiceConfig",
        "Remove a credential policy (CSRs of enrollments naming it are refused)",
        None,
        "Empty",
    ),
    (
        "get",
        "/certificateIssuers",
        "ServiceConfig",
        "List the CAs that sign device certificates (keys never returned)",
        None,
        "CertificateIssuerList",
    ),
    (
        "get",
        "/certificateIssuers/{name}",
        "ServiceConfig",
        "Get an issuer's certificate chain",
        None,
        "CertificateIssuer",
    ),
    (
        "put",
        "/certificateIssuers/{name}",
        "ServiceConfig",
        "Upload an intermediate CA with its key as an issuer (trusted as a verified CA)",
        Some("CertificateIssuerUpload"),
        "CertificateIssuer",
    ),
    (
        "delete",
        "/certificateIssuers/{name}",
        "ServiceConfig",
        "Remove an uploaded issuer no policy uses",
        None,
        "Empty",
    ),
    (
        "get",
        "/registrations/{id}/certificates",
        "RegistrationStatusRead",
        "The certificates issued to a device, newest first",
        None,
        "IssuedCertificateList",
    ),
    (
        "post",
        "/registrations/{id}/certificates/revoke",
        "RegistrationStatusWrite",
        "Revoke one of a device's certificates (serialNumber) or all of them; they join the issuer's CRL at /crl/{issuer}.crl",
        Some("Revocation"),
        "IssuedCertificateList",
    ),
    (
        "get",
        "/eventSinks",
        "ServiceConfig",
        "List lifecycle event sinks with their delivery status and lag",
        None,
        "EventSinkList",
    ),
    (
        "get",
        "/eventSinks/{name}",
        "ServiceConfig",
        "Get an event sink with its delivery status",
        None,
        "EventSink",
    ),
    (
        "put",
        "/eventSinks/{name}",
        "ServiceConfig",
        "Add a sink (it receives events from now on) or change one (a webhook's secret left out is kept)",
        Some("EventSinkSettings"),
        "EventSink",
    ),
    (
        "delete",
        "/eventSinks/{name}",
        "ServiceConfig",
        "Remove an event sink",
        None,
        "Empty",
    ),
    (
        "get",
        "/devices/{id}",
        "RegistrationStatusRead",
        "Built-in hub (Host: the hub's name): get a device identity",
        None,
        "HubDevice",
    ),
    (
        "put",
        "/devices/{id}",
        "RegistrationStatusWrite",
        "Built-in hub (Host: the hub's name): create or update a device identity (keys generated when left out)",
        Some("HubDevice"),
        "HubDevice",
    ),
    (
        "delete",
        "/devices/{id}",
        "RegistrationStatusWrite",
        "Built-in hub (Host: the hub's name): delete a device identity",
        None,
        "HubDevice",
    ),
    (
        "get",
        "/devices/{id}/recentMessages",
        "RegistrationStatusRead",
        "Built-in hub (Host: the hub's name): the device's most recent telemetry (Onramp's own; newest 10, 4 KB each)",
        None,
        "RecentMessageList",
    ),
    (
        "get",
        "/twins/{id}",
        "RegistrationStatusRead",
        "Built-in hub (Host: the hub's name): get a device twin",
        None,
        "Twin",
    ),
    (
        "patch",
        "/twins/{id}",
        "RegistrationStatusWrite",
        "Built-in hub (Host: the hub's name): merge tags and desired properties; pushed to a connected device",
        Some("Twin"),
        "Twin",
    ),
];

pub fn router() -> Router {
    Router::new().route("/openapi.json", get(serve))
}

async fn serve() -> Response {
    json_response(StatusCode::OK, &document())
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn schemas() -> Value {
    let twin = json!({"type": "object", "additionalProperties": true});
    let enrollment_fields = json!({
        "attestation": {"$ref": "#/components/schemas/AttestationMechanism"},
        "capabilities": object(json!({"iotEdge": {"type": "boolean"}})),
        "initialTwin": object(json!({"tags": twin, "properties": object(json!({"desired": twin}))})),
        "provisioningStatus": {"type": "string", "enum": ["enabled", "disabled"]},
        "reprovisionPolicy": object(json!({"updateHubAssignment": {"type": "boolean"}, "migrateDeviceData": {"type": "boolean"}})),
        "allocationPolicy": {"type": "string", "enum": ["hashed", "geoLatency", "static", "custom"]},
        "iotHubs": {"type": "array", "items": {"type": "string"}},
        "customAllocationDefinition": object(json!({"webhookUrl": {"type": "string"}, "apiVersion": {"type": "string"}})),
        "credentialPolicyName": {"type": "string", "description": "The credential policy that signs the devices' CSRs"},
        "etag": {"type": "string"},
        "createdDateTimeUtc": {"type": "string", "format": "date-time", "readOnly": true},
        "lastUpdatedDateTimeUtc": {"type": "string", "format": "date-time", "readOnly": true},
    });
    let with = |extra: Value| {
        let mut fields = enrollment_fields.as_object().cloned().unwrap_or_default();
        fields.extend(extra.as_object().cloned().unwrap_or_default());
        object(Value::Object(fields))
    };
    let list = |item: &str| json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}});
    json!({
        "Empty": {"type": "object"},
        "TestFault": {"type": "object", "required": ["remaining"], "properties": {
            "remaining": {"type": "integer", "minimum": 0},
            "errorCode": {"type": "integer", "minimum": 400000, "maximum": 599999},
            "retryAfterSeconds": {"type": "integer", "minimum": 0},
            "latencyMs": {"type": "integer", "minimum": 0},
            "dropConnection": {"type": "boolean"}
        }},
        "ErrorDetails": object(json!({
            "errorCode": {"type": "integer"}, "trackingId": {"type": "string"},
            "message": {"type": "string"}, "timestampUtc": {"type": "string", "format": "date-time"},
        })),
        "AttestationMechanism": object(json!({
            "type": {"type": "string", "enum": ["symmetricKey", "x509", "tpm"]},
            "symmetricKey": object(json!({"primaryKey": {"type": "string"}, "secondaryKey": {"type": "string"}})),
            "x509": {"type": "object"},
            "tpm": object(json!({"endorsementKey": {"type": "string"}, "storageRootKey": {"type": "string"}})),
        })),
        "IndividualEnrollment": with(json!({
            "registrationId": {"type": "string"}, "deviceId": {"type": "string"},
            "optionalDeviceInformation": twin,
            "registrationState": {"$ref": "#/components/schemas/DeviceRegistrationState"},
        })),
        "EnrollmentGroup": with(json!({"enrollmentGroupId": {"type": "string"}})),
        "IndividualEnrollmentList": list("IndividualEnrollment"),
        "EnrollmentGroupList": list("EnrollmentGroup"),
        "DeviceRegistrationState": object(json!({
            "registrationId": {"type": "string"}, "assignedHub": {"type": "string"}, "deviceId": {"type": "string"},
            "status": {"type": "string", "enum": ["unassigned", "assigning", "assigned", "failed", "disabled"]},
            "substatus": {"type": "string"}, "errorCode": {"type": "integer"}, "errorMessage": {"type": "string"},
            "createdDateTimeUtc": {"type": "string"}, "lastUpdatedDateTimeUtc": {"type": "string"},
            "etag": {"type": "string"}, "payload": {},
        })),
        "DeviceRegistrationStateList": list("DeviceRegistrationState"),
        "QuerySpecification": object(json!({"query": {"type": "string"}})),
        "BulkEnrollmentOperation": object(json!({
            "mode": {"type": "string", "enum": ["create", "update", "updateIfMatchETag", "delete"]},
            "enrollments": list("IndividualEnrollment"),
        })),
        "BulkEnrollmentGroupOperation": object(json!({
            "mode": {"type": "string", "enum": ["create", "update", "updateIfMatchETag", "delete"]},
            "enrollmentGroups": list("EnrollmentGroup"),
        })),
        "BulkEnrollmentOperationResult": object(json!({
            "isSuccessful": {"type": "boolean"},
            "errors": {"type": "array", "items": object(json!({
                "registrationId": {"type": "string"}, "enrollmentGroupId": {"type": "string"},
                "errorCode": {"type": "integer"}, "errorStatus": {"type": "string"},
            }))},
        })),
        "LinkedHubSettings": object(json!({
            "connector": {"type": "string", "enum": ["builtIn"]}, "region": {"type": "string"},
            "allocationWeight": {"type": "integer", "minimum": 1, "maximum": 1000},
            "applyAllocationPolicy": {"type": "boolean"},
        })),
        "LinkedHub": object(json!({
            "hostName": {"type": "string"}, "connector": {"type": "string"}, "region": {"type": "string"},
            "allocationWeight": {"type": "integer"}, "applyAllocationPolicy": {"type": "boolean"},
            "devices": {"type": "integer", "readOnly": true},
        })),
        "LinkedHubList": list("LinkedHub"),
        "EventSinkSettings": object(json!({
            "kind": {"type": "string", "enum": ["webhook", "nats", "mqtt"]},
            "url": {"type": "string"}, "subject": {"type": "string"}, "topic": {"type": "string"},
            "secret": {"type": "string", "writeOnly": true, "minLength": 16},
            "enabled": {"type": "boolean"},
        })),
        "EventSink": object(json!({
            "name": {"type": "string"}, "kind": {"type": "string"}, "url": {"type": "string"},
            "subject": {"type": "string"}, "topic": {"type": "string"}, "enabled": {"type": "boolean"},
            "status": object(json!({
                "deliveredSequence": {"type": "integer"}, "lastSequence": {"type": "integer"},
                "lag": {"type": "integer"}, "lastDeliveredDateTimeUtc": {"type": "string"},
                "lastError": {"type": "string"}, "failingSinceDateTimeUtc": {"type": "string"},
                "failures": {"type": "integer"},
            })),
        })),
        "EventSinkList": list("EventSink"),
        "CredentialPolicySettings": object(json!({
            "issuer": {"type": "string"}, "validityDays": {"type": "integer", "minimum": 1, "maximum": 3650},
            "keyTypes": {"type": "array", "items": {"type": "string", "enum": ["ecP256", "ecP384", "rsa2048", "rsa3072", "ed25519"]}},
            "renewalWindowDays": {"type": "integer", "minimum": 0},
        })),
        "CredentialPolicy": object(json!({
            "name": {"type": "string"}, "issuer": {"type": "string"}, "validityDays": {"type": "integer"},
            "keyTypes": {"type": "array", "items": {"type": "string"}}, "renewalWindowDays": {"type": "integer"},
            "etag": {"type": "string"},
        })),
        "CredentialPolicyList": list("CredentialPolicy"),
        "CertificateIssuerUpload": object(json!({
            "certificates": {"type": "string", "description": "PEM: the issuing CA first, then those above it"},
            "key": {"type": "string", "description": "PEM PKCS#8 key of the issuing CA (write-only)"},
        })),
        "CertificateIssuer": object(json!({"name": {"type": "string"}, "certificates": {"type": "string"}, "etag": {"type": "string"}})),
        "CertificateIssuerList": list("CertificateIssuer"),
        "Revocation": object(json!({"serialNumber": {"type": "string", "description": "hex; absent: every certificate of the device"}})),
        "IssuedCertificate": object(json!({
            "serialNumber": {"type": "string"}, "registrationId": {"type": "string"}, "issuer": {"type": "string"},
            "credentialPolicyName": {"type": "string"}, "keyType": {"type": "string"},
            "notBefore": {"type": "string", "format": "date-time"}, "notAfter": {"type": "string", "format": "date-time"},
            "revoked": {"type": "string", "format": "date-time", "nullable": true},
        })),
        "IssuedCertificateList": list("IssuedCertificate"),
        "AllocationSettings": object(json!({
            "defaultPolicy": {"type": "string", "enum": ["hashed", "geoLatency", "static"]},
            "regionMap": {"type": "array", "items": object(json!({"cidr": {"type": "string"}, "region": {"type": "string"}}))},
        })),
        "AccessPolicyRights": object(json!({"rights": {"type": "array", "items": {"type": "string", "enum": [
            "ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite"]}}})),
        "AccessPolicy": object(json!({
            "name": {"type": "string"}, "rights": {"type": "array", "items": {"type": "string"}},
            "primaryKey": {"type": "string"}, "secondaryKey": {"type": "string"}, "connectionString": {"type": "string"},
        })),
        "AccessPolicyList": list("AccessPolicy"),
        "RegenerateKey": object(json!({"key": {"type": "string", "enum": ["primary", "secondary"]}})),
        "CertificateUpload": object(json!({"certificate": {"type": "string"}, "isVerified": {"type": "boolean"}})),
        "CaCertificate": object(json!({
            "name": {"type": "string"}, "etag": {"type": "string"},
            "properties": object(json!({
                "subject": {"type": "string"}, "expiry": {"type": "string"}, "thumbprint": {"type": "string"},
                "sha256Thumbprint": {"type": "string"}, "isVerified": {"type": "boolean"},
                "verificationCode": {"type": "string"}, "certificate": {"type": "string"},
                "created": {"type": "string"}, "updated": {"type": "string"},
            })),
        })),
        "CaCertificateList": object(json!({"value": {"type": "array", "items": {"$ref": "#/components/schemas/CaCertificate"}}})),
        "HubDevice": object(json!({
            "deviceId": {"type": "string"}, "generationId": {"type": "string"}, "etag": {"type": "string"},
            "status": {"type": "string", "enum": ["enabled", "disabled"]},
            "connectionState": {"type": "string", "enum": ["Connected", "Disconnected"]},
            "authentication": {"type": "object"}, "capabilities": {"type": "object"},
        })),
        "RecentMessageList": {"type": "array", "items": object(json!({
            "received": {"type": "string"}, "properties": {"type": "string"},
            "body": {"type": "string"}, "truncated": {"type": "boolean"},
        }))},
        "Twin": object(json!({
            "deviceId": {"type": "string"}, "etag": {"type": "string"}, "version": {"type": "integer"},
            "tags": {"type": "object"},
            "properties": object(json!({"desired": {"type": "object"}, "reported": {"type": "object"}})),
        })),
    })
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (method, path, right, summary, request, response) in OPERATIONS {
        let mut operation = json!({
            "summary": summary,
            "description": format!("Needs a shared access policy with the {right} right."),
            "parameters": [{"name": "api-version", "in": "query", "required": false, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetails"}}}},
            },
        });
        if *method == "delete" {
            operation["responses"]["204"] = json!({"description": "Deleted"});
        }
        if let Some(request) = request {
            operation["requestBody"] = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{request}")}}}});
        }
        for param in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            operation["parameters"].as_array_mut().unwrap().push(json!({"name": param, "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Onramp service API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Azure IoT Hub DPS-compatible service API (enrollments, groups, registration records) plus Onramp's linked hubs, allocation settings and access policies. Authorization: `SharedAccessSignature sr=<host>&sig=...&se=...&skn=<policy>`.",
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"sas": {"type": "apiKey", "in": "header", "name": "Authorization"}},
        },
        "security": [{"sas": []}],
        "paths": paths,
    })
}
