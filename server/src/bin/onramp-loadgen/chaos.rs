//! Crash consistency: devices that retry until they are told `assigned` (the server may be killed
//! and restarted meanwhile), the acknowledgements they got written to a file, and the check of
//! that file against the store afterwards: every acknowledged registration is there with the
//! same hub and device ID, no device has two hub identities, every device completed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use onramp::model::ListQuery;
use onramp::store::Store;

/// What a device was told: its hub and device ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub hub: String,
    pub device_id: String,
}

/// The final `assigned` state in a register reply (the JSON operation).
pub fn assigned(id: &str, reply: &str) -> anyhow::Result<Assigned> {
    let operation: serde_json::Value =
        serde_json::from_str(reply).with_context(|| format!("{id}: no JSON in {reply:?}"))?;
    let state = &operation["registrationState"];
    match (
        operation["status"].as_str(),
        state["assignedHub"].as_str(),
        state["deviceId"].as_str(),
    ) {
        (Some("assigned"), Some(hub), Some(device_id)) => Ok(Assigned {
            hub: hub.into(),
            device_id: device_id.into(),
        }),
        _ => bail!("{id}: not assigned: {reply}"),
    }
}

/// Runs `register(i)` for every device on `concurrency` workers, each device again after every
/// failure (connection refused or reset, a 5xx, a timeout) until `within` has passed; returns the
/// acknowledgements and how many attempts failed.
pub async fn until_acknowledged<F, Fut>(
    count: usize,
    concurrency: usize,
    within: Duration,
    register: F,
) -> anyhow::Result<(Vec<(String, Assigned)>, usize)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(String, Assigned)>> + Send,
{
    let deadline = Instant::now() + within;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, register) = (next.clone(), register.clone());
            let (acknowledged, failures) = (acknowledged.clone(), failures.clone());
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(());
                    }
                    loop {
                        let attempt = tokio::time::timeout(Duration::from_secs(10), register(i));
                        match attempt.await {
                            Ok(Ok(ack)) => {
                                acknowledged.lock().unwrap().push(ack);
                                break;
                            }
                            Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                                failures.fetch_add(1, Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok(Err(e)) => return Err(e.context("still failing at the deadline")),
                            Err(_) => bail!("device {i} still timing out at the deadline"),
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    Ok((
        acknowledged,
        failures.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// One line per acknowledgement: `registrationId hub deviceId`.
pub fn write(path: &Path, acknowledged: &[(String, Assigned)]) -> anyhow::Result<()> {
    let lines: String = acknowledged
        .iter()
        .map(|(id, a)| format!("{id} {} {}\n", a.hub, a.device_id))
        .collect();
    std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))
}

/// Reads the acknowledgements back and compares them with the store; prints the counts and fails
/// when one was lost or changed, or a device has more than one hub identity.
pub async fn verify(store: &dyn Store, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut acknowledged = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(' ');
        let (Some(id), Some(hub), Some(device_id)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!("malformed line {line:?}");
        };
        let assigned = Assigned {
            hub: hub.into(),
            device_id: device_id.into(),
        };
        if acknowledged.insert(id.to_string(), assigned).is_some() {
            bail!("{id} was acknowledged twice");
        }
    }
    let (mut found, mut lost, mut changed) = (0, 0, 0);
    for (id, expected) in &acknowledged {
        let record = store.get_registration(id).await?;
        match record
            .as_ref()
            .map(|r| (r.assigned_hub.as_deref(), r.device_id.as_deref()))
        {
            Some((Some(hub), Some(device)))
                if hub == expected.hub && device == expected.device_id =>
            {
                found += 1
            }
            Some(_) => changed += 1,
            None => lost += 1,
        }
    }
    // One hub identity per device: every identity on a hub belongs to one record assigned there.
    let mut records = HashSet::new();
    let mut query = ListQuery {
        limit: 1000,
        ..Default::default()
    };
    loop {
        let page = store.list_registrations(&query).await?;
        for record in page.items {
            if let (Some(hub), Some(device)) = (record.assigned_hub, record.device_id) {
                records.insert((hub, device));
            }
        }
        match page.next {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    let hubs: HashSet<&String> = records.iter().map(|(hub, _)| hub).collect();
    let mut identities = 0;
    for hub in hubs {
        identities += store.count_hub_devices(hub).await?;
    }
    let duplicated = identities.saturating_sub(records.len() as u64);
    println!(
        "acknowledged {}, found {found}, lost {lost}, changed {changed}, duplicated {duplicated} \
         ({identities} hub identities for {} assigned records)",
        acknowledged.len(),
        records.len()
    );
    if lost + changed > 0 || duplicated > 0 {
        bail!("the store does not hold what the devices were told");
    }
    Ok(())
}
