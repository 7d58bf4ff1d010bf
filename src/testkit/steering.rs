//! The NIC's steering state as independent tools see it: Debian's `ethtool` (ntuple rules with
//! `-n`, indirection tables with `-x` / `--show-rxfh … context N`), the kernel's own ynl for the
//! list of RSS contexts (ethtool 6.1 cannot list them), and iproute2's `bridge fdb show dev`
//! for the NIC's unicast address filter. Read in the netns that holds the NIC (`ip netns exec`),
//! never through the plugin's own ethtool client.
//!
//! The test kernel's netdevsim behaves like a real NIC here (a labelled test-bed patch under
//! scripts/kernel/): a frame is matched against the ntuple rules first (ether dst; ip4/ip6 dst,
//! optionally with a tcp/udp dst port), then the RSS context (the default one, or the rule's)
//! spreads it over its indirection table by a Toeplitz hash of the flow. The sender's TX queue
//! does not matter, so a test reaches a pod only by addressing it.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::*;

/// The `lease.steering` block most test networks use: the plugin keeps the pool out of the
/// default RSS context and steers `matching` ("mac", "ip" or "none") to each pod's queues.
pub fn steering(matching: &str) -> Value {
    json!({"rss": "exclude-pool", "match": matching})
}

/// `ip netns exec <ns> <args…>`, or the command itself when `ns` is None.
fn in_ns(ns: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut v = Vec::new();
    if let Some(ns) = ns {
        v.extend_from_slice(&["ip", "netns", "exec", ns]);
    }
    v.extend_from_slice(args);
    try_sh(&v)
}

/// One ntuple rule, as `ethtool -n <nic>` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `Filter: N`, the rule's location.
    pub location: u32,
    /// `Rule Type: …` ("Raw Ethernet", "UDP over IPv4", "Raw IPv6", …).
    pub kind: String,
    /// `Dest MAC addr` when matched exactly (lower case), for ether rules and `m` extensions.
    pub dst_mac: Option<String>,
    /// `Dest IP addr` when matched exactly.
    pub dst_ip: Option<String>,
    /// `Dest port` when matched.
    pub dst_port: Option<u16>,
    /// `RSS Context ID`, when the rule spreads over a context.
    pub context: Option<u32>,
    /// `Action: Direct to queue N` (with a context: the offset into it); None for Drop.
    pub queue: Option<u32>,
    /// Every line of the rule, for messages.
    pub text: String,
}

/// Every ntuple rule of `nic` (`ethtool -n`), in the order ethtool lists them.
pub fn ntuple_rules(ns: Option<&str>, nic: &str) -> Vec<Rule> {
    let out = in_ns(ns, &["ethtool", "-n", nic]).unwrap_or_else(|e| panic!("{e}"));
    parse_rules(&out)
}

/// `ethtool -n` output → rules. Masks are printed inverted (`mask: 00…` = every bit matched).
pub fn parse_rules(out: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut cur: Option<Rule> = None;
    let exact = |mask: &str| mask.chars().all(|c| matches!(c, '0' | ':' | '.'));
    for line in out.lines() {
        let t = line.trim();
        if let Some(loc) = t.strip_prefix("Filter:") {
            rules.extend(cur.take());
            cur = Some(Rule {
                location: loc.trim().parse().unwrap_or(u32::MAX),
                kind: String::new(),
                dst_mac: None,
                dst_ip: None,
                dst_port: None,
                context: None,
                queue: None,
                text: String::new(),
            });
            continue;
        }
        let Some(r) = cur.as_mut() else { continue };
        r.text.push_str(t);
        r.text.push('\n');
        let (key, val) = match t.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        // "value mask: m"
        let (value, mask) = match val.split_once(" mask: ") {
            Some((v, m)) => (v.trim(), Some(m.trim())),
            None => (val, None),
        };
        match key {
            "Rule Type" => r.kind = value.to_string(),
            "Dest MAC addr" if mask.is_some_and(exact) => {
                r.dst_mac = Some(value.to_ascii_lowercase())
            }
            "Dest IP addr" if mask.is_some_and(exact) => r.dst_ip = Some(value.to_string()),
            "Dest port" if mask.is_some_and(|m| m == "0x0") => r.dst_port = value.parse().ok(),
            "RSS Context ID" => r.context = value.parse().ok(),
            "Action" => {
                r.queue = value
                    .strip_prefix("Direct to queue ")
                    .and_then(|q| q.trim().parse().ok())
            }
            _ => {}
        }
    }
    rules.extend(cur);
    rules
}

/// The queues an indirection table spreads over (`ethtool -x <nic>`, or of `context`): the set
/// of its entries. None when ethtool cannot read it (no such context).
pub fn rss_queues(ns: Option<&str>, nic: &str, context: Option<u32>) -> Option<BTreeSet<u32>> {
    let ctx = context.map(|c| c.to_string());
    let mut args = vec!["ethtool", "--show-rxfh", nic];
    if let Some(c) = &ctx {
        args.extend_from_slice(&["context", c]);
    }
    let out = in_ns(ns, &args).ok()?;
    Some(parse_indir(&out))
}

/// `ethtool -x` output → the set of queues in its indirection table.
pub fn parse_indir(out: &str) -> BTreeSet<u32> {
    let mut set = BTreeSet::new();
    let mut in_table = false;
    for line in out.lines() {
        if line.starts_with("RX flow hash indirection table") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let t = line.trim();
        let Some((idx, rest)) = t.split_once(':') else {
            break;
        };
        if idx.trim().parse::<u32>().is_err() {
            break;
        }
        set.extend(
            rest.split_whitespace()
                .filter_map(|q| q.parse::<u32>().ok()),
        );
    }
    set
}

/// The additional RSS contexts of `ifindex` (ids other than 0), from the kernel's own ynl
/// (`ethtool` family, `rss-get` dump): Debian's ethtool 6.1 cannot list them.
pub fn rss_contexts(ynl: &Ynl, ns: Option<&Netns>, ifindex: u32) -> Vec<u32> {
    let v = ynl
        .call(
            ns,
            "ethtool",
            "--dump",
            "rss-get",
            Some(&json!({"header": {"dev-index": ifindex}})),
            &[],
        )
        .unwrap_or_else(|e| panic!("ynl ethtool rss-get dump of ifindex {ifindex}: {e}"));
    let mut ids: Vec<u32> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| {
            // `Option::is_none_or` needs Rust 1.82; the crate's MSRV is 1.80.
            c["header"]["dev-index"]
                .as_u64()
                .map_or(true, |i| i == ifindex as u64)
        })
        .filter_map(|c| c["context"].as_u64().map(|n| n as u32))
        .filter(|&c| c != 0)
        .collect();
    ids.sort();
    ids
}

/// Frames each RX queue of `ifindex` received (netdev genl `qstats-get`, scope queue, from the
/// kernel's own ynl): the test bed's netdevsim counts them as they leave the RX ring, XDP
/// verdicts included, so this says on which queue the NIC put a frame.
pub fn rx_packets_per_queue(
    ynl: &Ynl,
    ns: Option<&Netns>,
    ifindex: u32,
) -> std::collections::BTreeMap<u32, u64> {
    let v = ynl
        .call(
            ns,
            "netdev",
            "--dump",
            "qstats-get",
            Some(&json!({"ifindex": ifindex, "scope": "queue"})),
            &[],
        )
        .unwrap_or_else(|e| panic!("ynl qstats-get of ifindex {ifindex}: {e}"));
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|q| q["queue-type"] == "rx" && q["ifindex"].as_u64() == Some(ifindex as u64))
        .filter_map(|q| {
            Some((
                q["queue-id"].as_u64()? as u32,
                q["rx-packets"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

/// The unicast addresses in `nic`'s address filter (`bridge -j fdb show dev <nic>`: for a
/// device that is no bridge port, its uc and mc lists, `ndo_dflt_fdb_dump`), lower case.
pub fn unicast_filter(ns: Option<&str>, nic: &str) -> Vec<String> {
    let out =
        in_ns(ns, &["bridge", "-j", "fdb", "show", "dev", nic]).unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
        .unwrap_or_else(|e| panic!("bridge -j fdb show: {e}: {out}"));
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["mac"].as_str().map(|m| m.to_ascii_lowercase()))
        .filter(|m| u8::from_str_radix(m.get(..2).unwrap_or("01"), 16).is_ok_and(|b| b & 1 == 0))
        .collect()
}

/// A snapshot of everything steering can leave on a NIC: rules, additional RSS contexts and
/// unicast filter entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeringState {
    pub rules: Vec<Rule>,
    pub contexts: Vec<u32>,
    pub unicast: Vec<String>,
}

impl SteeringState {
    pub fn read(ynl: &Ynl, ns: &Netns, nic: &str, ifindex: u32) -> SteeringState {
        SteeringState {
            rules: ntuple_rules(Some(&ns.name), nic),
            contexts: rss_contexts(ynl, Some(ns), ifindex),
            unicast: unicast_filter(Some(&ns.name), nic),
        }
    }

    /// What is in `self` but not in `baseline`, one line each; empty when nothing is.
    pub fn leftovers(&self, baseline: &SteeringState) -> Vec<String> {
        let mut left = Vec::new();
        for r in self.rules.iter().filter(|r| !baseline.rules.contains(r)) {
            left.push(format!("ntuple rule (ethtool -n):\n{}", r.text));
        }
        for c in self
            .contexts
            .iter()
            .filter(|c| !baseline.contexts.contains(c))
        {
            left.push(format!("RSS context {c} (ynl rss-get)"));
        }
        for m in self
            .unicast
            .iter()
            .filter(|m| !baseline.unicast.contains(m))
        {
            left.push(format!("unicast filter entry {m} (bridge fdb)"));
        }
        left
    }
}

/// The rule steering `mac` on `nic`, if there is one.
pub fn rule_for_mac<'a>(rules: &'a [Rule], mac: &str) -> Option<&'a Rule> {
    let mac = mac.to_ascii_lowercase();
    rules.iter().find(|r| r.dst_mac.as_deref() == Some(&mac))
}

/// Asserts with ethtool that frames to `mac` go to exactly `queues` of `nic`: one queue, a rule
/// whose action is it; several, a rule naming an RSS context whose table is exactly them. The
/// MAC is in the NIC's unicast filter. Returns the rule.
pub fn assert_mac_steered(ns: &Netns, nic: &str, mac: &str, queues: &[u32]) -> Rule {
    let rules = ntuple_rules(Some(&ns.name), nic);
    let rule = rule_for_mac(&rules, mac)
        .unwrap_or_else(|| panic!("no ntuple rule for dst MAC {mac} on {nic}: {rules:#?}"))
        .clone();
    assert_steers(ns, nic, &rule, queues);
    assert!(
        unicast_filter(Some(&ns.name), nic).contains(&mac.to_ascii_lowercase()),
        "{mac} is not in {nic}'s unicast filter (bridge fdb show dev {nic})"
    );
    rule
}

/// Asserts with ethtool that `rule` sends its frames to exactly `queues`.
pub fn assert_steers(ns: &Netns, nic: &str, rule: &Rule, queues: &[u32]) {
    let want: BTreeSet<u32> = queues.iter().copied().collect();
    match rule.context {
        None => assert_eq!(
            (queues.len(), rule.queue),
            (1, queues.first().copied()),
            "the rule's action is the one leased queue:\n{}",
            rule.text
        ),
        Some(c) => {
            let got = rss_queues(Some(&ns.name), nic, Some(c))
                .unwrap_or_else(|| panic!("ethtool cannot read context {c} of {nic}"));
            assert_eq!(
                got, want,
                "context {c} spreads over exactly the leased queues:\n{}",
                rule.text
            );
        }
    }
}

/// Asserts that the default RSS context spreads over none of `pool` (`ethtool -x`).
pub fn assert_pool_out_of_default_rss(ns: &Netns, nic: &str, pool: &[u32]) {
    let got =
        rss_queues(Some(&ns.name), nic, None).unwrap_or_else(|| panic!("ethtool -x {nic} failed"));
    assert!(!got.is_empty(), "{nic}: an empty default indirection table");
    let overlap: Vec<u32> = pool.iter().copied().filter(|q| got.contains(q)).collect();
    assert!(
        overlap.is_empty(),
        "{nic}'s default RSS context still spreads onto pool queues {overlap:?} (table: {got:?})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_rules_parse() {
        let out = "4 RX rings available\nTotal 2 rules\n\nFilter: 1023\n\tRule Type: Raw Ethernet\n\tSrc MAC addr: 00:00:00:00:00:00 mask: FF:FF:FF:FF:FF:FF\n\tDest MAC addr: 02:AB:00:00:00:01 mask: 00:00:00:00:00:00\n\tEthertype: 0x0 mask: 0xFFFF\n\tAction: Direct to queue 2\n\nFilter: 1022\n\tRule Type: UDP over IPv4\n\tSrc IP addr: 0.0.0.0 mask: 255.255.255.255\n\tDest IP addr: 10.77.0.101 mask: 0.0.0.0\n\tTOS: 0x0 mask: 0xff\n\tSrc port: 0 mask: 0xffff\n\tDest port: 5001 mask: 0x0\n\tRSS Context ID: 1\n\tAction: Direct to queue 0\n\n";
        let r = parse_rules(out);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].location,
                r[0].kind.as_str(),
                r[0].dst_mac.as_deref(),
                r[0].queue,
                r[0].context
            ),
            (
                1023,
                "Raw Ethernet",
                Some("02:ab:00:00:00:01"),
                Some(2),
                None
            )
        );
        assert_eq!(
            (
                r[1].dst_ip.as_deref(),
                r[1].dst_port,
                r[1].context,
                r[1].queue,
                r[1].dst_mac.as_deref()
            ),
            (Some("10.77.0.101"), Some(5001), Some(1), Some(0), None)
        );
    }

    #[test]
    fn ethtool_indirection_table_parses() {
        let out = "RX flow hash indirection table for nic0 with 6 RX ring(s):\n    0:      0     5     0     5     0     5     0     5\n    8:      0     5     0     5     0     5     0     5\nRSS hash key:\n6d:5a:56\nRSS hash function:\n    toeplitz: on\n";
        assert_eq!(parse_indir(out), BTreeSet::from([0, 5]));
    }
}
