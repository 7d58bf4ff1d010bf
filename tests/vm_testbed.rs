//! Proves the test bed itself, independent of the plugin: the test kernel's netdevsim (patched by
//! scripts/kernel/0001-netdevsim-rss-ntuple-test-bed.patch) picks the receiver's RX queue like a
//! real NIC, from its RSS tables and ntuple rules, not from the sender's TX queue. The client is
//! Debian's `ethtool`; the witness of where frames arrived is the kernel's per-queue stats
//! (netdev genl `qstats-get`, scope queue, read with the kernel's own ynl).
//!
//! Frames are UDP datagrams sent from the far netns through the normal stack, one per flow
//! (flows differ in their source port). Every assertion fails on stock netdevsim, which puts a
//! frame on the RX queue numbered after the sender's TX queue and has no ethtool RSS or ntuple.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const QUEUES: usize = 8;
const FLOWS: u16 = 32;
const NODE_IP: &str = "10.88.0.1";
const FAR_IP: &str = "10.88.0.2";
/// An address the far side sends to with another destination MAC than the NIC's own.
const OTHER_IP: &str = "10.88.0.3";
const OTHER_MAC: &str = "02:00:00:00:88:03";
/// Distance between the source ports of a test's flows. The Toeplitz hash is linear in its input
/// bits: flows whose ports differ only in their low bits could, for some keys, reach only a few
/// table entries. An odd stride varies all 16 bits.
const SPORT_STRIDE: u16 = 97;

struct Bed {
    ynl: Ynl,
    node: Netns,
    far: Netns,
    nic: Netdevsim,
    _peer: Netdevsim,
    nic_mac: String,
    /// Next UDP source port, so that no two flows in a test are the same (see SPORT_STRIDE).
    next_sport: u16,
}

fn no_ipv6(ns: &Netns) {
    // Router solicitations, DAD and MLD would arrive on the NIC's queues and spoil the counts.
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
}

impl Bed {
    fn new() -> Self {
        require_privileged_kernel();
        let node = Netns::new("node");
        let far = Netns::new("far");
        no_ipv6(&node);
        no_ipv6(&far);
        let nic = Netdevsim::new(&node, QUEUES as u32);
        let peer = Netdevsim::new(&far, QUEUES as u32);
        nic.link_to(&node, &peer, &far);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", &nic.ifname]);
        far.ip(&["addr", "add", &format!("{FAR_IP}/24"), "dev", &peer.ifname]);
        let v: Value =
            serde_json::from_str(&node.ip(&["-j", "link", "show", "dev", &nic.ifname])).unwrap();
        let nic_mac = v[0]["address"].as_str().unwrap().to_string();
        // No ARP on the wire: only the test's datagrams reach the NIC. The node answers each
        // datagram with an ICMP port unreachable; without a static entry it would ARP for the far
        // side first, and the ARP reply would arrive on the NIC.
        let v: Value =
            serde_json::from_str(&far.ip(&["-j", "link", "show", "dev", &peer.ifname])).unwrap();
        let peer_mac = v[0]["address"].as_str().unwrap().to_string();
        node.ip(&[
            "neigh",
            "replace",
            FAR_IP,
            "lladdr",
            &peer_mac,
            "dev",
            &nic.ifname,
            "nud",
            "permanent",
        ]);
        for (ip, mac) in [(NODE_IP, nic_mac.as_str()), (OTHER_IP, OTHER_MAC)] {
            far.ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                &peer.ifname,
                "nud",
                "permanent",
            ]);
        }
        let bed = Bed {
            ynl: Ynl::new(),
            node,
            far,
            nic,
            _peer: peer,
            nic_mac,
            next_sport: 10000,
        };
        bed.settle();
        bed
    }

    /// Wait until nothing arrives on the NIC for a while: what the far side's stack sends when
    /// its link comes up must not count against the first test's frames.
    fn settle(&self) {
        let first = self.rx_counts();
        let mut last = first.clone();
        let mut quiet_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while quiet_since.elapsed() < Duration::from_secs(2) {
            assert!(
                Instant::now() < deadline,
                "frames keep arriving on an idle wire: {first:?} -> {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            let now = self.rx_counts();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        if last != first {
            eprintln!("settled: frames arrived after link-up: {first:?} -> {last:?}");
        }
    }

    /// `ethtool ARGS...` on the NIC's netns: stdout, or the failure with its output.
    fn try_ethtool(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.node.name, "ethtool"];
        full.extend_from_slice(args);
        try_sh(&full)
    }

    fn ethtool(&self, args: &[&str]) -> String {
        self.try_ethtool(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// RX packets per RX queue of the NIC, from qstats-get (scope queue).
    fn rx_counts(&self) -> Vec<u64> {
        let v = self
            .ynl
            .call(
                Some(&self.node),
                "netdev",
                "--dump",
                "qstats-get",
                Some(&json!({"ifindex": self.nic.ifindex, "scope": "queue"})),
                &[],
            )
            .unwrap_or_else(|e| panic!("qstats-get: {e}"));
        let mut counts = vec![0u64; QUEUES];
        for q in v.as_array().expect("qstats-get dump is a list") {
            if q["queue-type"] != "rx" {
                continue;
            }
            let id = q["queue-id"].as_u64().expect("queue-id") as usize;
            assert!(id < QUEUES, "qstats for rx queue {id} of {QUEUES}: {v}");
            counts[id] = q["rx-packets"].as_u64().unwrap_or(0);
        }
        counts
    }

    /// Send one UDP datagram per flow from the far side to `dst`:`dport`, each flow from its own
    /// source port, and return how many landed on each RX queue of the NIC (once `expect` frames
    /// in total have arrived, or after a grace period when fewer are expected to arrive).
    fn send(&mut self, dst: &str, dport: u16, flows: u16, expect: u64) -> Vec<u64> {
        let before = self.rx_counts();
        let first = self.next_sport;
        self.next_sport += flows * SPORT_STRIDE;
        let dst = dst.to_string();
        self.far.run(move || {
            for i in 0..flows {
                let sport = first + i * SPORT_STRIDE;
                let s = UdpSocket::bind((FAR_IP, sport)).expect("bind far udp socket");
                s.send_to(b"test-bed flow", (dst.as_str(), dport))
                    .expect("send datagram");
            }
        });
        let start = Instant::now();
        let deadline = start + Duration::from_secs(20);
        // When nothing should arrive, give the frames time to arrive anyway.
        let settle = start + Duration::from_secs(if expect == 0 { 2 } else { 0 });
        loop {
            let now = self.rx_counts();
            let delta: Vec<u64> = now.iter().zip(&before).map(|(a, b)| a - b).collect();
            let total: u64 = delta.iter().sum();
            if total > expect {
                panic!("{total} frames arrived, only {expect} sent: {delta:?}");
            }
            if total == expect && Instant::now() >= settle {
                return delta;
            }
            if Instant::now() > deadline {
                panic!("only {total} of {expect} frames arrived within 20 s: per queue {delta:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The queue numbers `ethtool -x [context N]` prints in the indirection table.
    fn indir(&self, ctx: Option<&str>) -> Vec<u32> {
        let mut args = vec!["-x", self.nic.ifname.as_str()];
        if let Some(c) = ctx {
            args.extend(["context", c]);
        }
        let out = self.ethtool(&args);
        let mut table = Vec::new();
        // The table comes first; the hash key after it is hex bytes joined by ':'.
        for line in out.lines().take_while(|l| !l.starts_with("RSS hash key")) {
            let Some((idx, rest)) = line.trim().split_once(':') else {
                continue;
            };
            if idx.parse::<u32>().is_err() {
                continue;
            }
            table.extend(rest.split_whitespace().map(|q| {
                q.parse::<u32>()
                    .unwrap_or_else(|_| panic!("bad entry {q:?} in ethtool -x: {out}"))
            }));
        }
        table
    }

    /// Rule locations `ethtool -n` lists.
    fn rules(&self) -> Vec<u32> {
        let out = self.ethtool(&["-n", &self.nic.ifname]);
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Filter: "))
            .map(|n| n.trim().parse().unwrap())
            .collect()
    }

    /// `ethtool -N NIC SPEC...`. Debian's ethtool (6.1) exits 0 when the kernel refuses a rule
    /// (rxclass_rule_ins only prints "rmgr: Cannot insert RX class rule"), so stderr decides.
    fn try_rule(&self, spec: &[&str]) -> Result<String, String> {
        let mut args = vec!["ip", "netns", "exec", &self.node.name, "ethtool", "-N"];
        args.push(&self.nic.ifname);
        args.extend_from_slice(spec);
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() || stderr.contains("Cannot insert") {
            return Err(format!("ethtool -N {spec:?} ({}): {stderr}", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn add_rule(&self, spec: &[&str]) -> u32 {
        let out = self.try_rule(spec).unwrap_or_else(|e| panic!("{e}"));
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Added rule with ID "))
            .unwrap_or_else(|| panic!("ethtool -N {spec:?} printed no rule ID: {out:?}"))
            .trim()
            .parse()
            .unwrap()
    }
}

fn queues_used(delta: &[u64]) -> BTreeMap<usize, u64> {
    delta
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(q, n)| (q, *n))
        .collect()
}

#[test]
fn netdevsim_steers_like_a_nic_with_rss_and_ntuple() {
    let mut bed = Bed::new();
    let nic = bed.nic.ifname.clone();
    let mac = bed.nic_mac.clone();

    // ntuple is on by default, as on the NICs the plugin targets.
    let features = bed.ethtool(&["-k", &nic]);
    assert!(
        features.contains("ntuple-filters: on"),
        "ntuple should be on by default: {features}"
    );

    // The default context: equal over all 8 queues, a 128-entry table.
    let table = bed.indir(None);
    assert_eq!(table.len(), 128, "indirection table: {table:?}");
    assert!(
        table.iter().enumerate().all(|(i, q)| *q == i as u32 % 8),
        "default table is not equal over 8 queues: {table:?}"
    );

    // 1. RSS spreads flows over the queues: 32 flows over 8 queues land on at least 4.
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    let used = queues_used(&delta);
    assert!(
        used.len() >= 4,
        "32 flows should spread over the default table's 8 queues: {used:?}"
    );

    // The sender's TX queue does not matter: pinned to TX queue 0, the flows still spread.
    let far = bed.far.name.clone();
    let peer = bed._peer.ifname.clone();
    sh(&[
        "ip", "netns", "exec", &far, "tc", "qdisc", "add", "dev", &peer, "clsact",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &far,
        "tc",
        "filter",
        "add",
        "dev",
        &peer,
        "egress",
        "protocol",
        "all",
        "prio",
        "1",
        "matchall",
        "action",
        "skbedit",
        "queue_mapping",
        "0",
    ]);
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    let used = queues_used(&delta);
    assert!(
        used.len() >= 4,
        "flows sent on TX queue 0 alone should still spread by RSS: {used:?}"
    );

    // One flow, many frames: always the same queue.
    let before = bed.rx_counts();
    let sport = bed.next_sport;
    bed.next_sport += 1;
    bed.far.run(move || {
        let s = UdpSocket::bind((FAR_IP, sport)).unwrap();
        for _ in 0..8 {
            s.send_to(b"same flow", (NODE_IP, 7001)).unwrap();
        }
    });
    let delta = eventually("8 frames of one flow", Duration::from_secs(20), || {
        let d: Vec<u64> = bed
            .rx_counts()
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        (d.iter().sum::<u64>() == 8).then_some(d)
    });
    assert_eq!(
        queues_used(&delta).len(),
        1,
        "one flow should stay on one queue: {delta:?}"
    );

    // 2. `ethtool -X equal 2`: no flow lands on queues 2..7.
    bed.ethtool(&["-X", &nic, "equal", "2"]);
    let table = bed.indir(None);
    assert!(
        table.len() == 128 && table.iter().all(|q| *q < 2),
        "table after equal 2: {table:?}"
    );
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    assert!(
        delta[2..].iter().all(|n| *n == 0) && delta[0] > 0 && delta[1] > 0,
        "with `equal 2` flows must spread over queues 0-1 only: {delta:?}"
    );
    // A user-set table pins the queue count: the core refuses to remove a queue it uses.
    let err = bed.try_ethtool(&["-L", &nic, "combined", "1"]);
    assert!(
        err.is_err(),
        "ethtool -L combined 1 must fail under a table using queue 1"
    );

    // 3. An ether dst rule puts every frame to the NIC's MAC on queue 5, and nothing else.
    let ether = bed.add_rule(&["flow-type", "ether", "dst", &mac, "action", "5"]);
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    assert_eq!(
        queues_used(&delta),
        BTreeMap::from([(5, FLOWS as u64)]),
        "ether dst {mac} action 5"
    );
    let delta = bed.send(OTHER_IP, 7000, FLOWS, FLOWS as u64);
    assert!(
        delta[2..].iter().all(|n| *n == 0),
        "frames to another MAC must follow the default table (0-1), not the rule: {delta:?}"
    );
    assert_eq!(bed.rules(), vec![ether], "ethtool -n after one rule");

    // 4. ip4 dst rules, and the lowest location wins: udp4 dst-port 7777 at 5 over ip4 at 10.
    bed.ethtool(&["-N", &nic, "delete", &ether.to_string()]);
    assert!(
        bed.try_ethtool(&["-N", &nic, "delete", &ether.to_string()])
            .is_err(),
        "deleting a deleted rule must fail"
    );
    assert_eq!(bed.rules(), Vec::<u32>::new(), "ethtool -n after delete");
    bed.ethtool(&[
        "-N",
        &nic,
        "flow-type",
        "ip4",
        "dst-ip",
        NODE_IP,
        "action",
        "3",
        "loc",
        "10",
    ]);
    bed.ethtool(&[
        "-N",
        &nic,
        "flow-type",
        "udp4",
        "dst-ip",
        NODE_IP,
        "dst-port",
        "7777",
        "action",
        "4",
        "loc",
        "5",
    ]);
    assert_eq!(bed.rules(), vec![5, 10], "ethtool -n lists both rules");
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    assert_eq!(
        queues_used(&delta),
        BTreeMap::from([(3, FLOWS as u64)]),
        "ip4 dst {NODE_IP} action 3"
    );
    let delta = bed.send(NODE_IP, 7777, FLOWS, FLOWS as u64);
    assert_eq!(
        queues_used(&delta),
        BTreeMap::from([(4, FLOWS as u64)]),
        "udp4 dst-port 7777 action 4 at loc 5 comes before the ip4 rule at loc 10"
    );
    let delta = bed.send(OTHER_IP, 7000, FLOWS, FLOWS as u64);
    assert!(
        delta[3] == 0 && delta[4] == 0,
        "frames to another address must not match the ip4 rules: {delta:?}"
    );
    // A source field cannot be matched: refused like on a NIC that keys on the destination.
    let refused = bed.try_rule(&["flow-type", "udp4", "src-ip", FAR_IP, "action", "2"]);
    assert!(
        refused.is_err(),
        "a src-ip rule must be refused: {refused:?}"
    );
    assert_eq!(
        bed.rules(),
        vec![5, 10],
        "a refused rule must not be listed"
    );
    bed.ethtool(&["-N", &nic, "delete", "5"]);
    bed.ethtool(&["-N", &nic, "delete", "10"]);

    // 5. An RSS context over queues 6-7, and a rule into it.
    let out = bed.ethtool(&["-X", &nic, "context", "new", "start", "6", "equal", "2"]);
    let ctx = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("New RSS context is "))
        .unwrap_or_else(|| panic!("no context id in {out:?}"))
        .trim()
        .to_string();
    let table = bed.indir(Some(&ctx));
    assert!(
        table.len() == 128 && table.iter().all(|q| *q == 6 || *q == 7),
        "context {ctx} table: {table:?}"
    );
    let rule = bed.add_rule(&["flow-type", "ip4", "dst-ip", NODE_IP, "context", &ctx]);
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    assert!(
        delta[..6].iter().all(|n| *n == 0) && delta[6] > 0 && delta[7] > 0,
        "a rule into context {ctx} (start 6 equal 2) must spread over queues 6-7 only: {delta:?}"
    );
    // The core refuses to delete a context a rule points at.
    assert!(
        bed.try_ethtool(&["-X", &nic, "context", &ctx, "delete"])
            .is_err(),
        "deleting context {ctx} while rule {rule} uses it must fail"
    );

    // 6. A drop rule: nothing arrives on any queue.
    bed.ethtool(&["-N", &nic, "delete", &rule.to_string()]);
    let drop = bed.add_rule(&["flow-type", "ip4", "dst-ip", NODE_IP, "action", "-1"]);
    let delta = bed.send(NODE_IP, 7000, FLOWS, 0);
    assert!(
        delta.iter().all(|n| *n == 0),
        "a drop rule must drop: {delta:?}"
    );
    bed.ethtool(&["-N", &nic, "delete", &drop.to_string()]);

    // 7. ntuple off: rules are gone and cannot be added; traffic follows the default table.
    bed.add_rule(&["flow-type", "ether", "dst", &mac, "action", "5"]);
    bed.ethtool(&["-K", &nic, "ntuple", "off"]);
    assert_eq!(bed.rules(), Vec::<u32>::new(), "rules after ntuple off");
    assert!(
        bed.try_rule(&["flow-type", "ether", "dst", &mac, "action", "5"])
            .is_err(),
        "ethtool -N must fail with ntuple off"
    );
    assert_eq!(
        bed.rules(),
        Vec::<u32>::new(),
        "a rule refused with ntuple off is listed"
    );
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    assert!(
        delta[2..].iter().all(|n| *n == 0),
        "with ntuple off, frames follow the default table (0-1): {delta:?}"
    );
    bed.ethtool(&["-K", &nic, "ntuple", "on"]);
    let again = bed.add_rule(&["flow-type", "ether", "dst", &mac, "action", "5"]);
    bed.ethtool(&["-N", &nic, "delete", &again.to_string()]);
    bed.ethtool(&["-X", &nic, "context", &ctx, "delete"]);

    // 8. The default table follows `ethtool -L` once it is the default again.
    bed.ethtool(&["-X", &nic, "default"]);
    bed.ethtool(&["-L", &nic, "combined", "4"]);
    let table = bed.indir(None);
    assert!(
        table.iter().enumerate().all(|(i, q)| *q == i as u32 % 4),
        "default table after -L combined 4: {table:?}"
    );
    let delta = bed.send(NODE_IP, 7000, FLOWS, FLOWS as u64);
    let used = queues_used(&delta);
    assert!(
        delta[4..].iter().all(|n| *n == 0) && used.len() >= 2,
        "with 4 queues, flows spread over queues 0-3 only: {delta:?}"
    );
}
