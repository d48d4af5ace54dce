//! Test mode: setting and clearing the fault an enrollment or group injects into its next
//! registrations (`model::fault`). Only for enrollments that exist; every change is audited.

use serde_json::json;

use super::enrollments::audit_target;
use super::{Admin, Change, Resource, Result, invalid};
use crate::model::*;

/// Bounds that keep a test fault a test: a long sleep holds a connection slot.
const MAX_COUNT: u32 = 10_000;
const MAX_LATENCY_MS: u32 = 60_000;
const MAX_RETRY_AFTER_SECS: u32 = 3_600;

fn validate(fault: &FaultInjection) -> Result<()> {
    if !(1..=MAX_COUNT).contains(&fault.remaining) {
        return invalid(format!("`remaining` must be 1 to {MAX_COUNT}"));
    }
    if fault.latency_ms > MAX_LATENCY_MS {
        return invalid(format!("`latencyMs` must be at most {MAX_LATENCY_MS}"));
    }
    if let Some(code) = fault.error_code {
        if !(400_000..=599_999).contains(&code) {
            return invalid("`errorCode` must be an Azure error code, 400000 to 599999");
        }
        if fault.drop_connection {
            return invalid(
                "`dropConnection` needs a registration to happen: not with `errorCode`",
            );
        }
    }
    match fault.retry_after_seconds {
        Some(secs) if secs > MAX_RETRY_AFTER_SECS => invalid(format!(
            "`retryAfterSeconds` must be at most {MAX_RETRY_AFTER_SECS}"
        )),
        Some(_)
            if !fault
                .error_code
                .is_some_and(|c| c / 1000 == 429 || c >= 500_000) =>
        {
            invalid("`retryAfterSeconds` goes with an `errorCode` of 429 or 5xx")
        }
        _ if fault.error_code.is_none() && fault.latency_ms == 0 && !fault.drop_connection => {
            invalid("a fault needs `errorCode`, `latencyMs` or `dropConnection`")
        }
        _ => Ok(()),
    }
}

impl Admin {
    /// The fault set on one, if any (spent ones too, with `remaining` 0).
    pub async fn fault<R: Resource>(&self, id: &str) -> Result<Option<FaultInjection>> {
        self.stored::<R>(id).await?;
        Ok(self.store().get_fault_injection(&R::reference(id)).await?)
    }

    /// Sets (or replaces) the fault of one that exists.
    pub async fn set_fault<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        fault: FaultInjection,
    ) -> Result<FaultInjection> {
        validate(&fault)?;
        let item = self.stored::<R>(id).await?;
        let target = R::reference(item.id());
        let before = self.store().get_fault_injection(&target).await?;
        self.store().put_fault_injection(&target, &fault).await?;
        self.invalidate();
        let change = Change::new(
            format!("{}.testFault.set", R::TARGET),
            audit_target::<R>(item.id()),
        )
        .before(before.map(|f| json!(f)))
        .after(Some(json!(fault)));
        self.audit(actor, change).await;
        Ok(fault)
    }

    /// Removes the fault of one; `Ok(false)` when it had none.
    pub async fn clear_fault<R: Resource>(&self, actor: &Actor, id: &str) -> Result<bool> {
        let item = self.stored::<R>(id).await?;
        let target = R::reference(item.id());
        let before = self.store().get_fault_injection(&target).await?;
        if !self.store().delete_fault_injection(&target).await? {
            return Ok(false);
        }
        self.invalidate();
        let change = Change::new(
            format!("{}.testFault.clear", R::TARGET),
            audit_target::<R>(item.id()),
        )
        .before(before.map(|f| json!(f)));
        self.audit(actor, change).await;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault() -> FaultInjection {
        FaultInjection {
            remaining: 3,
            error_code: Some(503_001),
            retry_after_seconds: None,
            latency_ms: 0,
            drop_connection: false,
        }
    }

    #[test]
    fn faults_are_checked() {
        assert!(validate(&fault()).is_ok());
        let bad = [
            FaultInjection {
                remaining: 0,
                ..fault()
            },
            FaultInjection {
                remaining: MAX_COUNT + 1,
                ..fault()
            },
            FaultInjection {
                error_code: Some(200_000),
                ..fault()
            },
            FaultInjection {
                drop_connection: true,
                ..fault()
            },
            FaultInjection {
                latency_ms: MAX_LATENCY_MS + 1,
                ..fault()
            },
            FaultInjection {
                error_code: Some(400_000),
                retry_after_seconds: Some(5),
                ..fault()
            },
            FaultInjection {
                error_code: None,
                ..fault()
            },
        ];
        for fault in bad {
            assert!(validate(&fault).is_err(), "{fault:?}");
        }
        let latency = FaultInjection {
            error_code: None,
            latency_ms: 200,
            ..fault()
        };
        assert!(validate(&latency).is_ok());
        let dropped = FaultInjection {
            error_code: None,
            drop_connection: true,
            ..fault()
        };
        assert!(validate(&dropped).is_ok());
        let throttled = FaultInjection {
            error_code: Some(429_001),
            retry_after_seconds: Some(7),
            ..fault()
        };
        assert!(validate(&throttled).is_ok());
    }
}
