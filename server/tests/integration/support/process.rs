//! A real `onramp` process on free ports with its own data directory, and an HTTPS client that
//! trusts the CA it generated.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub fn onramp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_onramp")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `onramp <args>` to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(onramp_bin());
    cmd.args(args).env_remove("ONRAMP_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run onramp")
}

/// A command's JSON output (`Null` when it prints nothing); a failure panics with its stderr.
pub fn json_of(args: &[&str], out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub https_port: u16,
    pub mqtt_port: u16,
    /// Plain HTTP `/metrics` (each server its own, so that tests can run side by side).
    pub metrics_port: u16,
    pub log_path: PathBuf,
    args: Vec<String>,
}

impl Server {
    /// Starts `onramp serve` on free ports in `data_dir`, with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(data_dir, free_port(), extra)
    }

    /// Starts `onramp serve` with its HTTPS listener on `https_port`.
    pub fn start_on(data_dir: &Path, https_port: u16, extra: &[&str]) -> Server {
        Server::start_on_ports(data_dir, https_port, free_port(), extra)
    }

    /// Starts `onramp serve` with its HTTPS and MQTT listeners on the given ports.
    pub fn start_on_ports(
        data_dir: &Path,
        https_port: u16,
        mqtt_port: u16,
        extra: &[&str],
    ) -> Server {
        Server::start_on_device_ports(data_dir, [https_port, mqtt_port, free_port()], extra)
    }

    /// Starts `onramp serve` with its HTTPS, MQTT and AMQP listeners on the given ports.
    pub fn start_on_device_ports(data_dir: &Path, ports: [u16; 3], extra: &[&str]) -> Server {
        let [https_port, mqtt_port, amqp_port] = ports;
        let metrics_port = free_port();
        let mut args: Vec<String> = vec![
            "--metrics-address".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--https-port".into(),
            https_port.to_string(),
            "--mqtt-port".into(),
            mqtt_port.to_string(),
            "--amqp-port".into(),
            amqp_port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            child: None,
            data_dir: data_dir.to_path_buf(),
            https_port,
            mqtt_port,
            metrics_port,
            log_path: data_dir.with_extension(format!("{https_port}.log")),
            args,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = std::fs::File::create(&self.log_path).unwrap();
        let child = Command::new(onramp_bin())
            .args(&self.args)
            .arg("serve")
            .env_remove("ONRAMP_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start onramp");
        self.child = Some(child);
    }

    /// What `onramp admin info --json` says of this server's data directory.
    pub fn admin_info(&self) -> serde_json::Value {
        let data = self.data_dir.to_str().unwrap();
        let out = run(&["--data-dir", data, "admin", "info", "--json"], &[]);
        serde_json::from_slice(&out.stdout).expect("admin info prints JSON")
    }

    /// A service API token signed with the owner policy's key, valid for `secs`.
    pub fn owner_token(&self, secs: u64) -> String {
        let info = self.admin_info();
        let connection = info["serviceConnectionString"].as_str().unwrap();
        let key = connection.rsplit("SharedAccessKey=").next().unwrap();
        let expiry = chrono::Utc::now().timestamp() as u64 + secs;
        let owner = Some("provisioningserviceowner");
        onramp::attestation::sas::sign(key, "localhost", expiry, owner).unwrap()
    }

    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An HTTPS client that trusts only the generated CA.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(self.data_dir.join("ca.pem")).expect("ca.pem written");
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(10))
            // Redirects are part of what tests check (the console's login redirect).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Waits until `/healthz` answers 200 over verified TLS; panics with the log otherwise.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("onramp exited early ({status}):\n{}", self.log());
            }
            if self.data_dir.join("ca.pem").exists() {
                let url = format!("{}/healthz", self.base_url());
                let response = self.client().get(url).send().await;
                if response.is_ok_and(|r| r.status() == 200) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "onramp never became healthy:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.stop("TERM", within)
    }

    /// Sends `SIG{signal}` (`TERM`, `INT`) and waits for the exit (at most `within`).
    pub fn stop(&mut self, signal: &str, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), signal);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "onramp did not stop within {within:?} of SIG{signal}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.terminate(Duration::from_secs(15));
        self.spawn();
    }

    /// SIGKILL, as a crash or a power cut: nothing of the shutdown runs.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the same server again after `kill` (same data directory and ports).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Signs in to the console through the login form, as a browser does, and returns the session cookie.
    pub async fn sign_in(&self, username: &str, password: &str) -> String {
        let server = self;
        let client = server.client();
        let login = client
            .get(format!("{}/login", server.base_url()))
            .send()
            .await
            .unwrap();
        let cookie = session_cookie(&login).expect("a session for the login form");
        let html = login.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF field")
            .to_string();
        let signed_in = client
            .post(format!("{}/login", server.base_url()))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", username),
                ("password", password),
                ("next", "/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303);
        assert_eq!(signed_in.headers()["location"], "/", "signed in");
        session_cookie(&signed_in).expect("a new session ID after signing in")
    }
}

pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    let set = response.headers().get("set-cookie")?.to_str().ok()?;
    Some(set.split(';').next()?.to_string())
}
