//! The DPS MQTT names: CONNECT usernames and request/response topics. Parsing never panics.

use percent_encoding::percent_decode_str;

/// `{idScope}/registrations/{registrationId}/api-version=...&ClientVersion=...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpsUsername {
    pub id_scope: String,
    pub registration_id: String,
}

pub fn parse_username(username: &str) -> Option<DpsUsername> {
    let mut parts = username.splitn(4, '/');
    let (scope, keyword, id) = (parts.next()?, parts.next()?, parts.next()?);
    (keyword == "registrations" && !scope.is_empty() && !id.is_empty()).then(|| DpsUsername {
        id_scope: scope.into(),
        registration_id: id.into(),
    })
}

pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
const REGISTER: &str = "$dps/registrations/PUT/iotdps-register/";
const STATUS: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register { rid: String },
    OperationStatus { rid: String, operation_id: String },
}

/// Reads a request topic; None for anything else.
pub fn parse_request(topic: &str) -> Option<Request> {
    let (path, query) = topic.split_once('?').unwrap_or((topic, ""));
    let param = |name: &str| query_param(query, name);
    match path {
        REGISTER => Some(Request::Register {
            rid: param("$rid")?,
        }),
        STATUS => Some(Request::OperationStatus {
            rid: param("$rid")?,
            operation_id: param("operationId")?,
        }),
        _ => None,
    }
}

/// A percent-decoded parameter of a topic's `?a=b&c=d` part.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// `$rid` comes first: Python splits on `$`, C# expects `/?$rid=` right after the status.
pub fn response_topic(status: u16, rid: &str, retry_after: Option<u32>) -> String {
    let mut topic = format!("$dps/registrations/res/{status}/?$rid={rid}");
    if let Some(secs) = retry_after {
        topic.push_str(&format!("&retry-after={secs}"));
    }
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        let u = parse_username(
            "0ne0000A0A/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot%2F1.0",
        )
        .unwrap();
        assert_eq!(
            (u.id_scope.as_str(), u.registration_id.as_str()),
            ("0ne0000A0A", "dev-1")
        );
        assert!(
            parse_username("0ne0000A0A/registrations/dev-1").is_some(),
            "no api-version part"
        );
        for bad in [
            "",
            "x",
            "0ne/devices/dev",
            "hub.localhost/dev-1/?api-version=x",
            "/registrations/x",
            "s/registrations/",
        ] {
            assert!(parse_username(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn request_topics() {
        assert_eq!(
            parse_request("$dps/registrations/PUT/iotdps-register/?$rid=42"),
            Some(Request::Register { rid: "42".into() })
        );
        assert_eq!(
            parse_request(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=a%2Db&operationId=4.x.y"
            ),
            Some(Request::OperationStatus {
                rid: "a-b".into(),
                operation_id: "4.x.y".into()
            })
        );
        for bad in [
            "$dps/registrations/PUT/iotdps-register/",
            "$dps/other/?$rid=1",
            "devices/x/messages/events/",
            "",
            "?",
        ] {
            assert_eq!(parse_request(bad), None, "{bad}");
        }
        assert_eq!(
            response_topic(202, "7", Some(1)),
            "$dps/registrations/res/202/?$rid=7&retry-after=1"
        );
        assert_eq!(
            response_topic(200, "7", None),
            "$dps/registrations/res/200/?$rid=7"
        );
    }
}
