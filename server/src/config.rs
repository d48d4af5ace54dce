//! One validated configuration, merged from built-in defaults, a TOML file, `ONRAMP_*` environment
//! variables and command-line flags (later sources win). Validation happens once, at start, and every
//! error names the key it is about.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Environment variables that configure Onramp start with this prefix; `__` separates a section from
/// its key (`ONRAMP_LIMITS__MAX_CONNECTIONS`).
pub const ENV_PREFIX: &str = "ONRAMP_";

/// Variables with the prefix that are not configuration keys (read elsewhere, e.g. the log filter).
const ENV_NOT_CONFIG: &[&str] = &["ONRAMP_LOG"];

/// Variables for test harnesses (`ONRAMP_TEST_POSTGRES_URL`, ...), never configuration.
const ENV_TEST_PREFIX: &str = "ONRAMP_TEST_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite database, the generated CA and certificates live.
    pub data_dir: PathBuf,
    /// `sqlite:...` or `postgres://...`; unset means `sqlite://<data_dir>/onramp.db`.
    pub database_url: Option<String>,
    /// The host name devices and operators use; it goes into the server certificate and URLs.
    pub hostname: String,
    /// Address the listeners bind to. The default `::` accepts IPv6 and IPv4 (dual stack); where
    /// IPv6 is off, Onramp falls back to `0.0.0.0`.
    pub listen_address: IpAddr,
    pub https_port: u16,
    pub mqtt_port: u16,
    pub amqp_port: u16,
    /// Where `/metrics` is served in the Prometheus text format, over plain HTTP as exporters
    /// do (keep it on loopback or a monitoring network); empty turns metrics off.
    pub metrics_address: String,
    /// Human-readable (`human`) or machine-readable (`json`) logs.
    pub log_format: LogFormat,
    /// The built console (JS, wasm, CSS); see scripts/build-site.sh.
    pub site_root: PathBuf,
    pub tls: TlsConfig,
    pub limits: Limits,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM certificate chain to serve instead of the generated one (needs `key_path` too).
    pub cert_path: Option<PathBuf>,
    /// The PEM private key of `cert_path`.
    pub key_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections per listener; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Largest request body accepted (Azure DPS: 96 KB).
    pub max_body_bytes: usize,
    /// Seconds a client has to finish the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Seconds between a shutdown signal and the listeners closing, while `/readyz` already
    /// fails and everything is still served: a load balancer's health checks take the instance
    /// out of rotation before it refuses anyone (set it above their interval × fall count).
    pub drain_secs: u64,
    /// Database connections in the pool.
    pub database_max_connections: u32,
    /// Seconds a custom-allocation webhook has to answer.
    pub webhook_timeout_secs: u64,
    /// Milliseconds a register request waits for its assignment before answering `assigning`
    /// (the device then polls; the assignment goes on).
    pub inline_assignment_ms: u64,
    /// Seconds a registration operation can be polled after it was created.
    pub operation_retention_secs: u64,
    /// Seconds an MQTT client has from its TLS handshake to a complete CONNECT.
    pub mqtt_connect_timeout_secs: u64,
    /// Seconds an MQTT connection that asked for keep-alive 0 may stay idle.
    pub mqtt_idle_timeout_secs: u64,
    /// Seconds one MQTT packet may take to leave before a client that stopped reading is dropped.
    pub mqtt_write_timeout_secs: u64,
    /// Seconds an AMQP connection may go without a request before it is closed.
    pub amqp_idle_timeout_secs: u64,
    /// Concurrent AMQP connections (TLS listener), each about 100 KB while open.
    pub max_amqp_connections: usize,
    /// Failed console sign-ins of one account before it is locked for `login_lockout_secs`.
    pub login_max_failures: u32,
    /// Failed console sign-ins from one address (any accounts) before it is locked.
    pub login_max_failures_per_address: u32,
    /// Seconds a locked account or address waits after its last failure.
    pub login_lockout_secs: u64,
    /// Registrations one instance works on at once (authenticating, assigning, or assigning in
    /// the background); one more is answered 503 with `Retry-After` at once instead of queueing.
    pub max_registrations_in_flight: usize,
    /// Milliseconds the runtime may fall behind a due timer (its lag under load) before fewer
    /// TLS handshakes are let run at once; connections beyond are reset before their handshake
    /// (0: never; see `transport::load_shedding`).
    pub shed_queue_delay_ms: u64,
    /// Registrations one instance takes per second; more get 429 (0: no limit).
    pub registrations_per_second: u32,
    /// Registrations per second through one enrollment group (0: no limit).
    pub group_registrations_per_second: u32,
    /// Operation-status polls and registration-status lookups per device in
    /// `poll_window_secs` (DPS: 5 in 10 s; 0: no limit).
    pub polls_per_device: u32,
    pub poll_window_secs: u64,
    /// Service API calls per minute for each access policy (0: no limit).
    pub service_api_calls_per_minute: u32,
    /// Seconds a CRL fetched for an uploaded CA's device is used before it is fetched again.
    /// 0 (the default) checks no CRLs; certificates Onramp issued are always checked.
    pub crl_max_age_secs: u64,
    /// Seconds a CRL download may take; one that does not arrive leaves the status unknown
    /// and the device is answered 503 (it retries).
    pub crl_fetch_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            hostname: "localhost".into(),
            listen_address: IpAddr::from([0u16; 8]),
            https_port: 8443,
            mqtt_port: 8883,
            amqp_port: 5671,
            metrics_address: "127.0.0.1:9464".into(),
            log_format: LogFormat::Human,
            site_root: PathBuf::from("target/site"),
            tls: TlsConfig::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_body_bytes: 96 * 1024,
            handshake_timeout_secs: 10,
            shutdown_grace_secs: 10,
            drain_secs: 0,
            database_max_connections: 16,
            webhook_timeout_secs: 5,
            inline_assignment_ms: 1000,
            operation_retention_secs: 3600,
            mqtt_connect_timeout_secs: 10,
            mqtt_idle_timeout_secs: 300,
            mqtt_write_timeout_secs: 10,
            amqp_idle_timeout_secs: 60,
            max_amqp_connections: 2_000,
            login_max_failures: 5,
            login_max_failures_per_address: 20,
            login_lockout_secs: 900,
            // A registration holds its slot for a few milliseconds (longer only behind a slow
            // webhook or database): 512 keep both cores busy and bound the queue to ~0.2 s of work.
            max_registrations_in_flight: 512,
            // Off: refusing connections trades devices now for latency; an operator picks the
            // delay that fits (2 ms holds admitted p99 near the unloaded one, see the README).
            shed_queue_delay_ms: 0,
            // Well above what one instance sustains (about 3,300/s on 2 cores): a guard, not a quota.
            registrations_per_second: 20_000,
            group_registrations_per_second: 10_000,
            polls_per_device: 5,
            poll_window_secs: 10,
            service_api_calls_per_minute: 6_000,
            crl_max_age_secs: 0,
            crl_fetch_timeout_secs: 5,
        }
    }
}

/// A configuration problem, phrased for the operator; always names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl Config {
    /// Merges `file` (if any), the environment and `overrides` (flags, as a TOML table) over the
    /// defaults, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Table,
    ) -> Result<Config, ConfigError> {
        let mut merged = Table::try_from(Config::default()).expect("defaults serialize");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            let table: Table = text
                .parse()
                .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
            merge(&mut merged, table);
        }
        merge(&mut merged, env_table(env)?);
        merge(&mut merged, overrides);
        let config: Config = serde_path_to_error::deserialize(Value::Table(merged))
            .map_err(|e| ConfigError(describe_serde_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        for (key, port) in [
            ("https_port", self.https_port),
            ("mqtt_port", self.mqtt_port),
            ("amqp_port", self.amqp_port),
        ] {
            if port == 0 {
                return fail(format!("`{key}` must be between 1 and 65535, got 0"));
            }
        }
        if self.https_port == self.mqtt_port
            || self.https_port == self.amqp_port
            || self.mqtt_port == self.amqp_port
        {
            return fail(
                "`https_port`, `mqtt_port` and `amqp_port` must be three different ports".into(),
            );
        }
        if !self.metrics_address.is_empty()
            && self
                .metrics_address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return fail(format!(
                "`metrics_address` must be an address and port such as 127.0.0.1:9464, or empty \
                 to turn metrics off; got {:?}",
                self.metrics_address
            ));
        }
        if !is_valid_hostname(&self.hostname) {
            return fail(format!(
                "`hostname` {:?} is not a valid DNS name or IP address",
                self.hostname
            ));
        }
        self.database_kind()?;
        match (&self.tls.cert_path, &self.tls.key_path) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                check_readable("tls.cert_path", cert)?;
                check_readable("tls.key_path", key)?;
            }
            _ => return fail("`tls.cert_path` and `tls.key_path` must be given together".into()),
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            ("limits.handshake_timeout_secs", l.handshake_timeout_secs),
            (
                "limits.mqtt_connect_timeout_secs",
                l.mqtt_connect_timeout_secs,
            ),
            ("limits.mqtt_idle_timeout_secs", l.mqtt_idle_timeout_secs),
            ("limits.mqtt_write_timeout_secs", l.mqtt_write_timeout_secs),
            ("limits.amqp_idle_timeout_secs", l.amqp_idle_timeout_secs),
            ("limits.max_amqp_connections", l.max_amqp_connections as u64),
            (
                "limits.max_registrations_in_flight",
                l.max_registrations_in_flight as u64,
            ),
            ("limits.login_max_failures", l.login_max_failures.into()),
            (
                "limits.login_max_failures_per_address",
                l.login_max_failures_per_address.into(),
            ),
            ("limits.login_lockout_secs", l.login_lockout_secs),
            ("limits.poll_window_secs", l.poll_window_secs),
            ("limits.crl_fetch_timeout_secs", l.crl_fetch_timeout_secs),
            (
                "limits.database_max_connections",
                l.database_max_connections as u64,
            ),
        ] {
            if value == 0 {
                return fail(format!("`{key}` must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The database URL in force: the configured one, or the SQLite file in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("onramp.db").display()),
        }
    }

    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        database_kind(&self.effective_database_url())
    }

    /// Where metrics are served; None when they are off.
    pub fn metrics_socket(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address.parse().ok()
    }

    pub fn https_url(&self) -> String {
        url_for("https", &self.hostname, self.https_port)
    }

    pub fn mqtt_url(&self) -> String {
        url_for("mqtts", &self.hostname, self.mqtt_port)
    }

    pub fn amqp_url(&self) -> String {
        url_for("amqps", &self.hostname, self.amqp_port)
    }

    /// The configuration as TOML, with secrets (a database password) replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = Some(redact_url_password(&self.effective_database_url()));
        toml::to_string_pretty(&shown).expect("config serializes")
    }
}

/// Every URL carries its port, default or not: an operator reading `mqtts://host` would have to
/// know MQTT's TLS port to use it.
fn url_for(scheme: &str, host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

pub fn database_kind(url: &str) -> Result<DatabaseKind, ConfigError> {
    let bad = |why: &str| {
        ConfigError(format!(
            "`database_url` {:?} {why}",
            redact_url_password(url)
        ))
    };
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.trim_start_matches('/').is_empty() {
            return Err(bad("names no database file"));
        }
        return Ok(DatabaseKind::Sqlite);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let parsed = url::Url::parse(url).map_err(|e| bad(&format!("is not a valid URL: {e}")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("names no host"));
        }
        return Ok(DatabaseKind::Postgres);
    }
    Err(bad("must start with `sqlite:` or `postgres://`"))
}

fn redact_url_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn check_readable(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError(format!("`{key}` {}: {e}", path.display())))
}

fn is_valid_hostname(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `ONRAMP_HTTPS_PORT=9443` → `https_port = 9443`; `ONRAMP_TLS__CERT_PATH=x` → `[tls] cert_path = "x"`.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<Table, ConfigError> {
    let mut table = Table::new();
    for (name, raw) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_CONFIG.contains(&name.as_str()) || name.starts_with(ENV_TEST_PREFIX) {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError(format!(
                "environment variable `{name}` names no configuration key"
            )));
        }
        let mut node = &mut table;
        for section in &path[..path.len() - 1] {
            node = node
                .entry(section.clone())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError(format!("environment variable `{name}` conflicts")))?;
        }
        node.insert(path[path.len() - 1].clone(), env_value(&raw));
    }
    Ok(table)
}

/// Environment values are untyped: read them as a TOML literal (number, boolean) when they are one,
/// as a string otherwise.
fn env_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn describe_serde_error(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let key = e.path().to_string();
    let inner = e.inner().message().trim_end().to_string();
    if key == "." || key.is_empty() {
        inner
    } else {
        format!("`{key}`: {inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file_text: Option<&str>, env: &[(&str, &str)], flags: Table) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onramp.toml");
        if let Some(text) = file_text {
            std::fs::write(&path, text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(file_text.map(|_| path.as_path()), env, flags).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_documented_values() {
        let c = load(None, &[], Table::new()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!((c.https_port, c.mqtt_port, c.amqp_port), (8443, 8883, 5671));
        assert_eq!(c.hostname, "localhost");
        assert_eq!(c.effective_database_url(), "sqlite://./data/onramp.db");
        assert_eq!(c.database_kind().unwrap(), DatabaseKind::Sqlite);
        assert_eq!(c.limits.max_body_bytes, 96 * 1024);
        assert_eq!(c.metrics_socket(), Some(([127, 0, 0, 1], 9464).into()));
    }

    #[test]
    fn metrics_are_off_with_an_empty_address_and_a_bad_one_is_named() {
        let off = load(None, &[("ONRAMP_METRICS_ADDRESS", "")], Table::new()).unwrap();
        assert_eq!(off.metrics_socket(), None);
        let err = load(Some("metrics_address = \"localhost\"\n"), &[], Table::new()).unwrap_err();
        assert!(err.contains("metrics_address"), "{err}");
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let file = "https_port = 1001\nmqtt_port = 1002\namqp_port = 1003\n[limits]\nmax_connections = 5\n";
        let env = [("ONRAMP_MQTT_PORT", "2002"), ("ONRAMP_AMQP_PORT", "2003")];
        let mut flags = Table::new();
        flags.insert("amqp_port".into(), Value::Integer(3003));
        let c = load(Some(file), &env, flags).unwrap();
        assert_eq!((c.https_port, c.mqtt_port, c.amqp_port), (1001, 2002, 3003));
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(
            c.limits.max_body_bytes,
            96 * 1024,
            "sections merge key by key"
        );
    }

    #[test]
    fn environment_reaches_nested_sections() {
        let c = load(
            None,
            &[("ONRAMP_LIMITS__MAX_CONNECTIONS", "7")],
            Table::new(),
        )
        .unwrap();
        assert_eq!(c.limits.max_connections, 7);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load(Some("htps_port = 1\n"), &[], Table::new()).unwrap_err();
        assert!(err.contains("htps_port"), "{err}");
        let err = load(Some("[limits]\nmax_conections = 1\n"), &[], Table::new()).unwrap_err();
        assert!(err.contains("max_conections"), "{err}");
        let err = load(None, &[("ONRAMP_BOGUS", "1")], Table::new()).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(
            load(
                None,
                &[("ONRAMP_TEST_POSTGRES_URL", "x"), ("ONRAMP_LOG", "debug")],
                Table::new()
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_values_are_named() {
        let err = load(Some("https_port = 70000\n"), &[], Table::new()).unwrap_err();
        assert!(err.contains("https_port"), "{err}");
        let err = load(None, &[("ONRAMP_MQTT_PORT", "0")], Table::new()).unwrap_err();
        assert!(err.contains("mqtt_port"), "{err}");
        let err = load(Some("hostname = \"bad host\"\n"), &[], Table::new()).unwrap_err();
        assert!(err.contains("hostname"), "{err}");
        let err = load(Some("log_format = \"xml\"\n"), &[], Table::new()).unwrap_err();
        assert!(err.contains("log_format"), "{err}");
        let err = load(
            Some("https_port = 9000\nmqtt_port = 9000\n"),
            &[],
            Table::new(),
        )
        .unwrap_err();
        assert!(err.contains("different ports"), "{err}");
    }

    #[test]
    fn database_urls_are_checked() {
        for bad in ["mysql://x/y", "postgres://", "sqlite:", "nonsense"] {
            let err = load(None, &[("ONRAMP_DATABASE_URL", bad)], Table::new()).unwrap_err();
            assert!(err.contains("database_url"), "{bad}: {err}");
        }
        let c = load(
            None,
            &[("ONRAMP_DATABASE_URL", "postgres://u:pw@127.0.0.1/test")],
            Table::new(),
        )
        .unwrap();
        assert_eq!(c.database_kind().unwrap(), DatabaseKind::Postgres);
    }

    #[test]
    fn unreadable_certificate_paths_are_named() {
        let file =
            "[tls]\ncert_path = \"/nonexistent/cert.pem\"\nkey_path = \"/nonexistent/key.pem\"\n";
        let err = load(Some(file), &[], Table::new()).unwrap_err();
        assert!(
            err.contains("tls.cert_path") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
        let err = load(
            Some("[tls]\ncert_path = \"/etc/hostname\"\n"),
            &[],
            Table::new(),
        )
        .unwrap_err();
        assert!(err.contains("together"), "{err}");
    }

    #[test]
    fn show_redacts_the_database_password() {
        let c = load(
            None,
            &[(
                "ONRAMP_DATABASE_URL",
                "postgres://onramp:s3cret@db.example/onramp",
            )],
            Table::new(),
        )
        .unwrap();
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("onramp:***@db.example"), "{shown}");
    }

    #[test]
    fn urls_carry_their_port_even_the_default_one() {
        let mut c = Config {
            https_port: 443,
            ..Config::default()
        };
        assert_eq!(c.https_url(), "https://localhost:443");
        assert_eq!(c.mqtt_url(), "mqtts://localhost:8883");
        c.hostname = "::1".into();
        assert_eq!(c.amqp_url(), "amqps://[::1]:5671");
    }
}
