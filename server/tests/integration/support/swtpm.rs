//! A software TPM for the official SDK's TPM client: Debian's `swtpm` behind a small shim for the
//! Microsoft simulator protocol that tss.js speaks.
//!
//! tss.js opens a command port and the port after it (the platform port). On the command port it
//! first sends a handshake, which swtpm does not answer; the `SendCommand` frames that follow
//! swtpm takes as they are. On the platform port it signals power-on and NV-on, which swtpm
//! (started with `startup-clear`) does not need. The shim answers those itself and pipes the
//! commands to swtpm, one connection at a time as swtpm serves them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const HAND_SHAKE: u32 = 15;
/// The simulator protocol version tss.js requires.
const SERVER_VERSION: u32 = 1;

pub struct SoftwareTpm {
    swtpm: Child,
    state: tempfile::TempDir,
    /// The command port tss.js connects to (`new Tpm(true, host, port)`); the platform port is
    /// the next one.
    pub port: u16,
    /// swtpm's own data port (control: the next one), for tpm2-tools (`swtpm:port=...`).
    pub data_port: u16,
}

impl SoftwareTpm {
    /// Runs a tpm2-tools command against this TPM in its state directory; its stdout.
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(tool)
            .args(args)
            .current_dir(self.state.path())
            .env("TPM2TOOLS_TCTI", format!("swtpm:port={}", self.data_port))
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (tpm2-tools: run scripts/setup.sh --test)"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{tool} {args:?}: {stderr}");
        out.stdout
    }

    /// A file in the state directory (what the tools wrote, or what they should read).
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.state.path().join(name)
    }
}

impl SoftwareTpm {
    /// A fresh TPM (empty state: the SDK creates its EK and SRK on first use).
    pub fn start() -> SoftwareTpm {
        let state = tempfile::tempdir().unwrap();
        // Control on the port after the data port, where tpm2-tools' swtpm TCTI looks for it.
        let data_port = {
            let (data, _control) = consecutive_listeners();
            data.local_addr().unwrap().port()
        };
        let swtpm = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--server")
            .arg(format!("type=tcp,port={data_port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                data_port + 1
            ))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.path().display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("swtpm is not installed: run scripts/setup.sh --test");
        wait_listening(data_port);
        let (commands, platform) = consecutive_listeners();
        let port = commands.local_addr().unwrap().port();
        thread::spawn(move || {
            // One client at a time, as swtpm serves them; a broken one only ends its connection.
            for connection in commands.incoming().flatten() {
                let _ = relay_commands(connection, data_port);
            }
        });
        thread::spawn(move || {
            for connection in platform.incoming().flatten() {
                thread::spawn(move || acknowledge_platform(connection));
            }
        });
        SoftwareTpm {
            swtpm,
            state,
            port,
            data_port,
        }
    }
}

impl Drop for SoftwareTpm {
    fn drop(&mut self) {
        let _ = self.swtpm.kill();
        let _ = self.swtpm.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Two listeners on ports `p` and `p + 1`, as tss.js expects them.
fn consecutive_listeners() -> (TcpListener, TcpListener) {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let next = first.local_addr().unwrap().port().checked_add(1);
        if let Some(Ok(second)) = next.map(|p| TcpListener::bind(("127.0.0.1", p))) {
            return (first, second);
        }
    }
}

fn read_u32(stream: &mut TcpStream) -> io::Result<u32> {
    let mut word = [0u8; 4];
    stream.read_exact(&mut word)?;
    Ok(u32::from_be_bytes(word))
}

/// Answers the handshake, then pipes the `SendCommand` frames to swtpm and its replies back.
fn relay_commands(mut client: TcpStream, data_port: u16) -> io::Result<()> {
    let mut tpm = TcpStream::connect(("127.0.0.1", data_port))?;
    let first = read_u32(&mut client)?;
    if first == HAND_SHAKE {
        let _client_version = read_u32(&mut client)?;
        let reply: Vec<u8> = [SERVER_VERSION, 0, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        client.write_all(&reply)?;
    } else {
        tpm.write_all(&first.to_be_bytes())?;
    }
    let (mut client_rx, mut tpm_tx) = (client.try_clone()?, tpm.try_clone()?);
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut client_rx, &mut tpm_tx);
        let _ = tpm_tx.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut tpm, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}

/// Power-on, NV-on and the like: acknowledged (swtpm is already powered and started).
fn acknowledge_platform(mut client: TcpStream) {
    while read_u32(&mut client).is_ok() {
        if client.write_all(&0u32.to_be_bytes()).is_err() {
            return;
        }
    }
}
