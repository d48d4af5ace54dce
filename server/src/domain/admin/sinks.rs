//! Event sinks: where lifecycle events go (a webhook, a NATS subject, an MQTT topic). The
//! delivery itself is `crate::sinks`; this is the validated, audited change.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::settings::check_name;
use super::{Admin, AdminError, Change, Result, invalid};
use crate::model::{Actor, EventSink, SinkTarget};

/// A sink as the service API and the console send it. `secret` (webhook) may be left out of a
/// change to keep the stored one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkInput {
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// The sinks and the newest event's sequence number (a sink's lag is the difference).
pub struct SinkOverview {
    pub sinks: Vec<EventSink>,
    pub last_seq: i64,
}

/// What the trail keeps of a sink: never its secret.
fn summary(sink: &EventSink) -> serde_json::Value {
    json!({
        "kind": sink.target.kind(),
        "url": sink.target.url(),
        "channel": sink.target.channel(),
        "enabled": sink.enabled,
    })
}

fn check_url(url: &str, schemes: &[&str]) -> Result<()> {
    let Ok(parsed) = url::Url::parse(url) else {
        return invalid(format!("`url` {url:?} is not a URL"));
    };
    if !schemes.contains(&parsed.scheme()) {
        return invalid(format!(
            "`url` must start with {}://",
            schemes.join(":// or ")
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return invalid("`url` has no host");
    }
    // The URL is shown in the console and the API; a password in it would be too.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return invalid("`url` must not carry credentials");
    }
    Ok(())
}

/// A NATS subject to publish under: dot-separated tokens, no wildcards.
fn check_subject(subject: &str) -> Result<()> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    };
    if subject.len() > 200 || !subject.split('.').all(token_ok) {
        return invalid(format!(
            "`subject` {subject:?} must be dot-separated tokens of letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// An MQTT topic to publish under: no wildcards, not a `$` system topic.
fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty()
        || topic.len() > 200
        || topic.starts_with('$')
        || topic.ends_with('/')
        || topic.contains(['+', '#', '\0'])
    {
        return invalid(format!(
            "`topic` {topic:?} must be a topic without wildcards, not starting with '$'"
        ));
    }
    Ok(())
}

fn required(value: Option<String>, field: &str) -> Result<String> {
    match value.map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => invalid(format!("`{field}` is required")),
    }
}

/// The target `input` describes; `stored` gives the secret a webhook change leaves out.
pub fn target_of(input: SinkInput, stored: Option<&SinkTarget>) -> Result<SinkTarget> {
    let url = input.url.trim().to_string();
    match input.kind.as_str() {
        "webhook" => {
            check_url(&url, &["https", "http"])?;
            let secret = match (input.secret, stored) {
                (Some(secret), _) => secret,
                (None, Some(SinkTarget::Webhook { secret, .. })) => secret.clone(),
                (None, _) => return invalid("`secret` is required for a new webhook"),
            };
            if secret.len() < 16 {
                return invalid("`secret` must be at least 16 characters");
            }
            Ok(SinkTarget::Webhook { url, secret })
        }
        "nats" => {
            check_url(&url, &["nats"])?;
            let subject = required(input.subject, "subject")?;
            check_subject(&subject)?;
            Ok(SinkTarget::Nats { url, subject })
        }
        "mqtt" => {
            check_url(&url, &["mqtt"])?;
            let topic = required(input.topic, "topic")?;
            check_topic(&topic)?;
            Ok(SinkTarget::Mqtt { url, topic })
        }
        other => invalid(format!(
            "unknown sink kind {other:?}; known: webhook, nats, mqtt"
        )),
    }
}

impl Admin {
    pub async fn event_sinks(&self) -> Result<SinkOverview> {
        Ok(SinkOverview {
            sinks: self.store.list_event_sinks().await?,
            last_seq: self.store.last_event_seq().await?,
        })
    }

    pub async fn event_sink(&self, name: &str) -> Result<EventSink> {
        self.store
            .get_event_sink(name)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("event sink {name:?}")))
    }

    /// Creates a sink (it receives the events from now on) or changes one (it keeps its place).
    pub async fn put_event_sink(
        &self,
        actor: &Actor,
        name: &str,
        input: SinkInput,
    ) -> Result<EventSink> {
        check_name("event sink", name)?;
        let before = self.store.get_event_sink(name).await?;
        let enabled = input.enabled;
        let target = target_of(input, before.as_ref().map(|s| &s.target))?;
        let stored = self.store.put_event_sink(name, &target, enabled).await?;
        let action = match before {
            Some(_) => "eventSink.update",
            None => "eventSink.create",
        };
        let change = Change::new(action, format!("eventSink/{name}"))
            .before(before.as_ref().map(summary))
            .after(Some(summary(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    /// `Ok(false)` when there was none.
    pub async fn delete_event_sink(&self, actor: &Actor, name: &str) -> Result<bool> {
        let Some(before) = self.store.get_event_sink(name).await? else {
            return Ok(false);
        };
        if !self.store.delete_event_sink(name).await? {
            return Ok(false);
        }
        let change = Change::new("eventSink.delete", format!("eventSink/{name}"))
            .before(Some(summary(&before)));
        self.audit(actor, change).await;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str, url: &str) -> SinkInput {
        SinkInput {
            kind: kind.into(),
            url: url.into(),
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn targets_are_checked_before_they_are_stored() {
        let nats = SinkInput {
            subject: Some("onramp.events".into()),
            ..input("nats", "nats://127.0.0.1:4222")
        };
        assert!(matches!(
            target_of(nats.clone(), None),
            Ok(SinkTarget::Nats { .. })
        ));
        for subject in ["onramp.>", "a..b", "with space", ""] {
            let bad = SinkInput {
                subject: Some(subject.into()),
                ..nats.clone()
            };
            assert!(target_of(bad, None).is_err(), "{subject:?}");
        }
        let mqtt = SinkInput {
            topic: Some("onramp/events".into()),
            ..input("mqtt", "mqtt://h")
        };
        assert!(target_of(mqtt.clone(), None).is_ok());
        for topic in ["a/#", "+/x", "$SYS/x", "a/"] {
            let bad = SinkInput {
                topic: Some(topic.into()),
                ..mqtt.clone()
            };
            assert!(target_of(bad, None).is_err(), "{topic:?}");
        }
        let creds = SinkInput {
            topic: Some("t".into()),
            ..input("mqtt", "mqtt://u:p@h")
        };
        assert!(target_of(creds, None).is_err());
        assert!(target_of(input("kafka", "kafka://h"), None).is_err());
    }

    #[test]
    fn a_webhook_change_without_a_secret_keeps_the_stored_one() {
        let hook = input("webhook", "https://example.test/hook");
        assert!(
            target_of(hook.clone(), None).is_err(),
            "a new webhook needs a secret"
        );
        let short = SinkInput {
            secret: Some("short".into()),
            ..hook.clone()
        };
        assert!(target_of(short, None).is_err());
        let stored = SinkTarget::Webhook {
            url: "https://old.test/".into(),
            secret: "0123456789abcdef0123".into(),
        };
        let kept = target_of(hook, Some(&stored)).unwrap();
        assert_eq!(
            kept,
            SinkTarget::Webhook {
                url: "https://example.test/hook".into(),
                secret: "0123456789abcdef0123".into()
            }
        );
    }
}
