//! Who may call the service API: a SAS token signed with a shared access policy's key, over the
//! instance's host name (or a path below it), unexpired, from a policy holding the operation's right.

use chrono::Utc;

use crate::attestation::sas;
use crate::domain::throttle::RateLimit;
use crate::model::{AccessPolicy, Right, decode_key};
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The reason is for logs; callers are told only "Unauthorized" (or that the token expired).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("the policy {policy:?} lacks the {} right", right.as_str())]
    MissingRight { policy: String, right: Right },
    #[error("store: {0}")]
    Store(String),
    /// The policy's calls are over `limits.service_api_calls_per_minute`.
    #[error("too many calls, retry after {retry_after} s")]
    Throttled { retry_after: u32 },
}

/// Checks an `Authorization` header for `right` on `host`; returns the policy that signed it.
pub async fn authorize(
    store: &dyn Store,
    header: Option<&str>,
    host: &str,
    right: Right,
) -> Result<AccessPolicy, AccessError> {
    let unauthorized = |why: &str| AccessError::Unauthorized(why.to_string());
    let token = sas::parse(header.ok_or_else(|| unauthorized("no Authorization header"))?)
        .map_err(|e| AccessError::Unauthorized(e.to_string()))?;
    let name = token
        .skn
        .as_deref()
        .ok_or_else(|| unauthorized("the token names no policy (skn)"))?;
    let policy = store
        .get_policy(name)
        .await
        .map_err(|e| AccessError::Store(e.to_string()))?
        .ok_or_else(|| unauthorized("unknown policy"))?;
    // The resource is a prefix by segment: the host itself covers everything below it.
    let resource = token.sr.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if resource != host && !resource.starts_with(&format!("{host}/")) {
        return Err(unauthorized("the token is for another host"));
    }
    let keys = [
        decode_key(&policy.primary_key),
        decode_key(&policy.secondary_key),
    ];
    let now = Utc::now().timestamp().max(0) as u64;
    token
        .verify(&token.sr, &[&keys[0], &keys[1]], now)
        .map_err(|e| match e {
            sas::SasError::Expired => unauthorized(EXPIRED),
            other => AccessError::Unauthorized(other.to_string()),
        })?;
    if !policy.rights.contains(&right) {
        return Err(AccessError::MissingRight {
            policy: policy.name.clone(),
            right,
        });
    }
    Ok(policy)
}

/// `authorize`, then the call counted against the signing policy's allowance in `limit`
/// (after the check, so nobody can use up another policy's allowance).
pub async fn authorize_call(
    store: &dyn Store,
    limit: &RateLimit,
    header: Option<&str>,
    host: &str,
    right: Right,
) -> Result<AccessPolicy, AccessError> {
    let policy = authorize(store, header, host, right).await?;
    limit
        .admit(&policy.name)
        .map_err(|retry_after| AccessError::Throttled { retry_after })?;
    Ok(policy)
}

pub const EXPIRED: &str = "the SAS token has expired";
