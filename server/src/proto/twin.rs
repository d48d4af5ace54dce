//! Twin documents as IoT Hub puts them on the wire: each side's properties, then `$version` as
//! the last member. Firmware that reads members in order (the Azure SDK for Embedded C's twin
//! sample) stops at `$version`, so a property after it would never be seen.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::model::HubDevice;

/// One side of a twin (desired or reported), or a desired patch: properties, then `$version`.
#[derive(Debug, Clone, Copy)]
pub struct Properties<'a> {
    pub properties: &'a Map<String, Value>,
    pub version: i64,
}

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.properties.len() + 1))?;
        for (name, value) in self.properties {
            // Metadata is never stored; a stray `$version` would be a second one.
            if name != "$version" {
                map.serialize_entry(name, value)?;
            }
        }
        map.serialize_entry("$version", &self.version)?;
        map.end()
    }
}

/// `{"desired": {..., "$version": n}, "reported": {..., "$version": m}}`, as a device's twin GET
/// and the REST twin's `properties` carry it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Document<'a> {
    pub desired: Properties<'a>,
    pub reported: Properties<'a>,
}

/// The device's twin document. A twin never written has version 1 on both sides, as on IoT Hub.
pub fn document(device: &HubDevice) -> Document<'_> {
    Document {
        desired: Properties {
            properties: &device.desired.properties,
            version: device.desired.version.max(1),
        },
        reported: Properties {
            properties: &device.reported.properties,
            version: device.reported.version.max(1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn version_is_the_last_member_on_the_wire() {
        let properties = object(json!({"zeta": 1, "alpha": {"b": 2}, "$version": 99}));
        let side = Properties {
            properties: &properties,
            version: 3,
        };
        assert_eq!(
            serde_json::to_string(&side).unwrap(),
            r#"{"alpha":{"b":2},"zeta":1,"$version":3}"#
        );
    }

    #[test]
    fn an_unwritten_twin_has_version_one_on_both_sides() {
        let now = chrono::Utc::now();
        let device = HubDevice {
            hub: "h".into(),
            device_id: "d".into(),
            enabled: true,
            auth: crate::model::DeviceAuth::CertificateAuthority,
            iot_edge: false,
            generation_id: "1".into(),
            tags: Map::new(),
            desired: crate::model::TwinProperties {
                properties: object(json!({"interval": 30})),
                version: 3,
            },
            reported: Default::default(),
            etag: crate::model::Etag::new(),
            created: now,
            updated: now,
        };
        assert_eq!(
            serde_json::to_string(&document(&device)).unwrap(),
            r#"{"desired":{"interval":30,"$version":3},"reported":{"$version":1}}"#
        );
    }
}
