//! The IoT Hub device MQTT names the built-in hub answers: CONNECT usernames, twin request and
//! response topics, telemetry. Parsing never panics.

use percent_encoding::percent_decode_str;

use super::topics::query_param;

/// `{hubHostName}/{deviceId}/?api-version=...` (older C SDKs leave out the `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUsername {
    pub hub: String,
    pub device_id: String,
}

pub fn parse_username(username: &str) -> Option<HubUsername> {
    let mut parts = username.splitn(3, '/');
    let (hub, device) = (parts.next()?, parts.next()?);
    let device_id = percent_decode_str(device).decode_utf8().ok()?;
    (!hub.is_empty() && !device_id.is_empty()).then(|| HubUsername {
        hub: hub.into(),
        device_id: device_id.into_owned(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubRequest {
    TwinGet { rid: String },
    ReportedPatch { rid: String },
    Telemetry,
}

/// Reads a device's PUBLISH topic; None for anything the built-in hub does not serve.
pub fn parse_request(topic: &str, device_id: &str) -> Option<HubRequest> {
    let (path, query) = topic.split_once('?').unwrap_or((topic, ""));
    match path {
        "$iothub/twin/GET/" => Some(HubRequest::TwinGet {
            rid: query_param(query, "$rid")?,
        }),
        "$iothub/twin/PATCH/properties/reported/" => Some(HubRequest::ReportedPatch {
            rid: query_param(query, "$rid")?,
        }),
        _ => {
            // devices/{id}/messages/events/{property bag}: only the device's own.
            let rest = topic.strip_prefix("devices/")?;
            let (id, rest) = rest.split_once('/')?;
            let own = percent_decode_str(id).decode_utf8().ok()? == device_id;
            (own && rest.starts_with("messages/events/")).then_some(HubRequest::Telemetry)
        }
    }
}

/// The subscriptions a device may hold (IoT Hub grants them at most QoS 1).
pub fn may_subscribe(filter: &str, device_id: &str) -> bool {
    matches!(
        filter,
        "$iothub/twin/res/#" | "$iothub/twin/PATCH/properties/desired/#" | "$iothub/methods/POST/#"
    ) || filter == format!("devices/{device_id}/messages/devicebound/#")
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`
pub fn twin_response_topic(status: u16, rid: &str, version: Option<i64>) -> String {
    let mut topic = format!("$iothub/twin/res/{status}/?$rid={rid}");
    if let Some(version) = version {
        topic.push_str(&format!("&$version={version}"));
    }
    topic
}

/// `$iothub/twin/PATCH/properties/desired/?$version={v}`
pub fn desired_push_topic(version: i64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_from_each_sdk() {
        for (username, device) in [
            ("hub.localhost/dev-1/?api-version=2021-04-12", "dev-1"),
            (
                "localhost/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0",
                "dev1",
            ),
            (
                "hub/dev%3A2/api-version=2016-11-14&DeviceClientType=c",
                "dev:2",
            ),
        ] {
            assert_eq!(
                parse_username(username).unwrap().device_id,
                device,
                "{username}"
            );
        }
        for bad in ["", "hub", "hub/", "/dev"] {
            assert_eq!(parse_username(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_topics() {
        assert_eq!(
            parse_request("$iothub/twin/GET/?$rid=7e1b", "d"),
            Some(HubRequest::TwinGet { rid: "7e1b".into() })
        );
        assert_eq!(
            parse_request(
                "$iothub/twin/PATCH/properties/reported/?$rid=2&$version=3",
                "d"
            ),
            Some(HubRequest::ReportedPatch { rid: "2".into() })
        );
        assert_eq!(
            parse_request("devices/d/messages/events/%24.ct=application%2Fjson", "d"),
            Some(HubRequest::Telemetry)
        );
        for bad in [
            "devices/other/messages/events/",
            "devices/d/messages/devicebound/",
            "$iothub/twin/GET/",
            "$dps/registrations/PUT/iotdps-register/?$rid=1",
            "",
        ] {
            assert_eq!(parse_request(bad, "d"), None, "{bad}");
        }
        assert!(may_subscribe("devices/d/messages/devicebound/#", "d"));
        assert!(!may_subscribe("devices/e/messages/devicebound/#", "d"));
        assert!(!may_subscribe("#", "d"));
        assert_eq!(
            twin_response_topic(204, "2", Some(5)),
            "$iothub/twin/res/204/?$rid=2&$version=5"
        );
    }
}
