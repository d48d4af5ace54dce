//! Weighted rendezvous (highest-random-weight) hashing. Each hub scores
//! `weight / -ln(u)` with `u` a uniform hash of (hub, registration ID); the highest score wins. A
//! device's hub changes only when the new winner is a hub that was added (or its old hub left), and
//! shares follow the weights. The hash must never change: it decides where existing devices live.

use crate::model::{LinkedHub, key_of};

pub fn pick<'a>(hubs: &[&'a LinkedHub], registration_id: &str) -> Option<&'a LinkedHub> {
    let id = key_of(registration_id);
    hubs.iter()
        .map(|hub| {
            (
                score(&key_of(&hub.host_name), &id, hub.allocation_weight),
                *hub,
            )
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, hub)| hub)
}

fn score(hub: &str, id: &str, weight: u32) -> f64 {
    let h = mix(fnv1a(
        hub.as_bytes(),
        fnv1a(&[0], fnv1a(id.as_bytes(), FNV_OFFSET)),
    ));
    // 53 bits into (0, 1): never 0, so ln is finite.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finalizer: FNV alone is too weak in its high bits for uniform scores.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{ConnectorKind, Etag};

    pub fn hub(name: &str, weight: u32) -> LinkedHub {
        LinkedHub {
            host_name: name.into(),
            connector: ConnectorKind::BuiltIn,
            region: None,
            allocation_weight: weight,
            apply_allocation_policy: true,
            settings: serde_json::json!({}),
            etag: Etag::new(),
            created: chrono::Utc::now(),
            updated: chrono::Utc::now(),
        }
    }

    const DEVICES: usize = 100_000;

    fn assign(hubs: &[&LinkedHub]) -> Vec<String> {
        (0..DEVICES)
            .map(|i| {
                pick(hubs, &format!("device-{i}"))
                    .unwrap()
                    .host_name
                    .clone()
            })
            .collect()
    }

    #[test]
    fn shares_follow_the_weights_within_two_percent() {
        let (a, b, c) = (hub("a.hub", 1), hub("b.hub", 2), hub("c.hub", 1));
        let assigned = assign(&[&a, &b, &c]);
        for (name, weight) in [("a.hub", 1.0), ("b.hub", 2.0), ("c.hub", 1.0)] {
            let share = assigned.iter().filter(|h| *h == name).count() as f64 / DEVICES as f64;
            let expected = weight / 4.0;
            assert!(
                (share - expected).abs() <= expected * 0.02,
                "{name}: share {share:.4}, expected {expected} ± 2%"
            );
        }
    }

    #[test]
    fn adding_a_hub_moves_devices_only_to_the_new_hub() {
        let (a, b, c, d) = (
            hub("a.hub", 1),
            hub("b.hub", 2),
            hub("c.hub", 1),
            hub("d.hub", 1),
        );
        let before = assign(&[&a, &b, &c]);
        let after = assign(&[&a, &b, &c, &d]);
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            if old != new {
                assert_eq!(new, "d.hub", "a device moved from {old} to {new}");
                moved += 1;
            }
        }
        let share = moved as f64 / DEVICES as f64;
        assert!(
            (share - 0.2).abs() < 0.01,
            "the new hub (weight 1 of 5) took {share:.3}"
        );
    }

    #[test]
    fn assignment_is_stable_and_case_insensitive() {
        let (a, b) = (hub("a.hub", 1), hub("B.HUB", 1));
        let first = pick(&[&a, &b], "Device-7").unwrap().host_name.clone();
        assert_eq!(
            pick(&[&b, &a], "device-7").unwrap().host_name,
            first,
            "order and case do not matter"
        );
        assert!(pick(&[], "x").is_none());
    }
}
