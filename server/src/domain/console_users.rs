//! Console users: creation with argon2id password hashes, and login checks that take the same
//! time whether or not the user exists.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::Utc;

use crate::model::{ConsoleUser, Role};
use crate::store::{Store, StoreError};

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; operators get 10).
pub const MIN_PASSWORD_LEN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// argon2id with OWASP's second recommended setting (19 MiB, 2 passes): about 20 ms here, which
/// makes guessing slow without making login slow.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing cannot fail with valid parameters")
        .to_string()
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| hasher().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

/// A password for a user created without one: 20 random URL-safe characters (120 bits).
pub fn generate_password() -> String {
    use base64::Engine;
    let bytes: [u8; 15] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The first console user, when there is none: `admin` with a generated password written to
/// `path` (readable by the owner only) rather than to the log. Returns whether it created one.
pub async fn ensure_first_admin(store: &dyn Store, path: &std::path::Path) -> anyhow::Result<bool> {
    if !store.list_users().await?.is_empty() {
        return Ok(false);
    }
    let password = generate_password();
    write_private(path, &format!("{password}\n"))?;
    put_user(store, "admin", &password, Role::Admin).await?;
    Ok(true)
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Usernames: 1-64 letters, digits, `-`, `_`, `.` or `@`; kept as typed, matched without case.
pub fn check_username(username: &str) -> Result<(), UserError> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if valid {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "invalid username {username:?}: 1-64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

pub fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(UserError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// Creates a user or replaces its password and role.
pub(in crate::domain) async fn put_user(
    store: &dyn Store,
    username: &str,
    password: &str,
    role: Role,
) -> Result<ConsoleUser, UserError> {
    check_username(username)?;
    check_password(password)?;
    let now = Utc::now();
    let created = store
        .get_user(username)
        .await?
        .map_or(now, |existing| existing.created);
    Ok(store
        .put_user(ConsoleUser {
            username: username.to_string(),
            password_hash: hash_password(password),
            role,
            disabled: false,
            created,
            updated: now,
        })
        .await?)
}

/// Disables or re-enables a user; a disabled user's sessions stop working at their next request.
pub(in crate::domain) async fn set_disabled(
    store: &dyn Store,
    username: &str,
    disabled: bool,
) -> Result<ConsoleUser, UserError> {
    let mut user = store
        .get_user(username)
        .await?
        .ok_or_else(|| UserError::Invalid(format!("no user {username:?}")))?;
    user.disabled = disabled;
    user.updated = Utc::now();
    Ok(store.put_user(user).await?)
}

/// The enabled user these credentials belong to. An unknown user costs one hash too, so response
/// times do not tell which usernames exist.
pub(in crate::domain) async fn authenticate(
    store: &dyn Store,
    username: &str,
    password: &str,
) -> Result<Option<ConsoleUser>, StoreError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    let user = match check_username(username) {
        Ok(()) => store.get_user(username).await?,
        Err(_) => None,
    };
    let phc = match &user {
        Some(u) => u.password_hash.clone(),
        None => DECOY
            .get_or_init(|| hash_password("decoy password, never matches"))
            .clone(),
    };
    let password_ok = verify_off_runtime(password.to_string(), phc).await;
    Ok(user.filter(|u| password_ok && !u.disabled))
}

/// Hashing takes tens of milliseconds of CPU and 19 MiB: it runs on the blocking pool, a few at a
/// time, so a burst of logins neither stalls the async workers nor exhausts memory.
async fn verify_off_runtime(password: String, phc: String) -> bool {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
    let Ok(_slot) = SLOTS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let a = hash_password("correct horse battery");
        let b = hash_password("correct horse battery");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterY", &a));
        assert!(!verify_password("anything", "not a PHC string"));
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        assert!(check_username("ops.team@example").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("bad name").is_err());
        assert!(check_username(&"x".repeat(65)).is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough!").is_ok());
    }
}
