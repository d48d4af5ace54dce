//! The console's defences as a browser meets them, against the real binary: the security
//! headers and the per-response script nonce, and sign-in lockout per account and per address.

use std::time::Duration;

use crate::support::process::{Server, session_cookie};

/// The CSRF field and session cookie of a fresh login page.
async fn login_form(server: &Server) -> (String, String) {
    let page = server
        .client()
        .get(format!("{}/login", server.base_url()))
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&page).expect("a session for the login form");
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string();
    (cookie, csrf)
}

/// Posts the login form; the redirect's target says how it ended.
async fn attempt(server: &Server, username: &str, password: &str) -> String {
    let (cookie, csrf) = login_form(server).await;
    let answer = server
        .client()
        .post(format!("{}/login", server.base_url()))
        .header("cookie", cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", password),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    answer.headers()["location"].to_str().unwrap().to_string()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn pages_allow_only_their_own_nonce_and_every_response_forbids_framing_and_sniffing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    server.wait_healthy().await;
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let page = server
            .client()
            .get(format!("{}/login", server.base_url()))
            .send()
            .await
            .unwrap();
        let policy = header(&page, "content-security-policy");
        let nonce = policy
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_else(|| panic!("no nonce in {policy}"))
            .to_string();
        for directive in [
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "'wasm-unsafe-eval'",
        ] {
            assert!(
                policy.contains(directive),
                "{directive} missing in {policy}"
            );
        }
        assert!(
            !policy.contains("script-src 'self' 'unsafe-inline'"),
            "{policy}"
        );
        assert_eq!(header(&page, "x-frame-options"), "DENY");
        assert_eq!(header(&page, "x-content-type-options"), "nosniff");
        assert!(header(&page, "strict-transport-security").starts_with("max-age=31536000"));
        let html = page.text().await.unwrap();
        let inline_scripts: Vec<&str> = html.split("<script").skip(1).collect();
        assert!(!inline_scripts.is_empty(), "{html}");
        for script in inline_scripts {
            assert!(
                script.starts_with(&format!(" type=\"module\" nonce=\"{nonce}\""))
                    || script.contains(&format!("nonce=\"{nonce}\"")),
                "an inline script without the page's nonce: <script{script}"
            );
        }
        nonces.push(nonce);
    }
    assert_ne!(nonces[0], nonces[1], "a nonce is drawn per response");

    // Not a page: no script may run, and the rest holds.
    let signed_out = server
        .client()
        .get(format!("{}/api/whoami", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&signed_out, "content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(header(&signed_out, "x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn sign_in_locks_an_account_then_an_address_and_each_lock_expires() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("onramp.toml");
    std::fs::write(
        &config,
        "[limits]\nlogin_max_failures = 3\nlogin_max_failures_per_address = 5\nlogin_lockout_secs = 2\n",
    )
    .unwrap();
    let mut server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    server.wait_healthy().await;
    let password = std::fs::read_to_string(data.join("initial-admin-password")).unwrap();
    let password = password.trim();
    let wrong = "/login?error=1&next=%2F";

    // The account: three wrong passwords, then even the right one is refused, until the lockout
    // has passed since the last failure.
    for _ in 0..3 {
        assert_eq!(attempt(&server, "admin", "not the password").await, wrong);
    }
    let locked = attempt(&server, "ADMIN", password).await;
    assert!(locked.starts_with("/login?error=locked&retry="), "{locked}");
    let retry: u64 = locked
        .split("retry=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!((1..=2).contains(&retry), "{locked}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(attempt(&server, "admin", password).await, "/");

    // The address: five failures across names this address tried lock it for every account.
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        assert_eq!(attempt(&server, name, "guess").await, wrong);
    }
    let locked = attempt(&server, "admin", password).await;
    assert!(locked.starts_with("/login?error=locked"), "{locked}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(attempt(&server, "admin", password).await, "/");

    // The lock is on the page in words, and every attempt is in the log, the password in none.
    let page = server
        .client()
        .get(format!("{}{locked}", server.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Too many failed sign-ins"), "{page}");
    let log = server.log();
    assert!(log.contains("console sign-in locked"), "{log}");
    assert!(!log.contains(password), "the password is in the log");
}
