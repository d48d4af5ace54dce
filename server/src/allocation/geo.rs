//! Lowest latency, approximated by geography: the client's address is looked up in the operator's
//! CIDR→region map (longest prefix wins) and the hubs of that region are preferred. An unknown
//! client or a region without hubs falls back to all candidates; ties are broken by weighted hashing.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::LinkedHub;

/// The region of `client` by longest-prefix match; entries that are not valid CIDRs never match
/// (the service API validates them on the way in).
pub fn region_of(client: IpAddr, map: &[(String, String)]) -> Option<&str> {
    let client = canonical(client);
    map.iter()
        .filter_map(|(cidr, region)| cidr.parse::<IpNet>().ok().map(|net| (net, region)))
        .filter(|(net, _)| net.contains(&client))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, region)| region.as_str())
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

pub fn nearest<'a>(
    candidates: &[&'a LinkedHub],
    client: Option<IpAddr>,
    map: &[(String, String)],
) -> Vec<&'a LinkedHub> {
    let Some(region) = client.and_then(|ip| region_of(ip, map)) else {
        return candidates.to_vec();
    };
    let local: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|h| {
            h.region
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(region))
        })
        .collect();
    if local.is_empty() {
        candidates.to_vec()
    } else {
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::hashed::tests::hub;

    fn map() -> Vec<(String, String)> {
        vec![
            ("10.0.0.0/8".into(), "eu".into()),
            ("10.1.0.0/16".into(), "us".into()),
            ("fd00::/8".into(), "asia".into()),
            ("not a cidr".into(), "nowhere".into()),
        ]
    }

    #[test]
    fn longest_prefix_wins() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(region_of(ip("10.2.3.4"), &map()), Some("eu"));
        assert_eq!(region_of(ip("10.1.3.4"), &map()), Some("us"));
        assert_eq!(
            region_of(ip("::ffff:10.1.3.4"), &map()),
            Some("us"),
            "mapped IPv4"
        );
        assert_eq!(region_of(ip("fd00::1"), &map()), Some("asia"));
        assert_eq!(region_of(ip("192.0.2.1"), &map()), None);
    }

    #[test]
    fn hubs_of_the_client_region_are_preferred() {
        let mut eu = hub("eu.hub", 1);
        eu.region = Some("EU".into());
        let mut us = hub("us.hub", 1);
        us.region = Some("us".into());
        let any = hub("any.hub", 1);
        let all = [&eu, &us, &any];
        let names =
            |hubs: Vec<&LinkedHub>| hubs.iter().map(|h| h.host_name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(nearest(&all, Some("10.9.9.9".parse().unwrap()), &map())),
            ["eu.hub"]
        );
        assert_eq!(
            names(nearest(&all, Some("10.1.9.9".parse().unwrap()), &map())),
            ["us.hub"]
        );
        assert_eq!(
            nearest(&all, Some("fd00::2".parse().unwrap()), &map()).len(),
            3,
            "no hub in asia"
        );
        assert_eq!(nearest(&all, None, &map()).len(), 3);
    }
}
