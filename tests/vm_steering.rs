//! `lease.steering` against a NIC that steers as a real one does: the test bed's netdevsim
//! (scripts/kernel/, test-bed patch) picks the receiving RX queue by ntuple rules first, then
//! RSS over a flow hash, never by the sender's TX queue. The far side sends through its normal
//! stack, many flows (source ports), on whatever TX queue the stack picks; nothing here chooses
//! a queue. Debian's `ethtool -n` / `ethtool -x` and `bridge fdb` are the independent witnesses
//! of what the plugin wrote.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::xdp::*;
use common::*;
use serde_json::{json, Value};

const NIC_QUEUES: u32 = 8;
const FLOWS: u16 = 32;
const POD_MAC: &str = "02:00:00:00:aa:01";
const POD2_MAC: &str = "02:00:00:00:aa:02";

/// `ethtool <args>` in the node netns.
fn ethtool(w: &Wire, args: &[&str]) -> String {
    let mut a = vec!["ip", "netns", "exec", &w.node.name, "ethtool"];
    a.extend_from_slice(args);
    sh(&a)
}

/// The queues `ethtool -x` lists in the default indirection table.
fn rss_queues(w: &Wire) -> Vec<u32> {
    let out = ethtool(w, &["-x", &w.nic.ifname]);
    // The table comes first; the hash key after it is hex bytes joined by ':'.
    let mut q: Vec<u32> = out
        .lines()
        .take_while(|l| !l.starts_with("RSS hash key"))
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.trim().parse::<u32>().is_ok())
        .flat_map(|(_, v)| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    q.sort_unstable();
    q.dedup();
    q
}

/// `ethtool -n <nic>`: every rule's text.
fn rules(w: &Wire) -> String {
    ethtool(w, &["-n", &w.nic.ifname])
}

/// The rule locations `ethtool -n` lists.
fn rule_locations(w: &Wire) -> Vec<u32> {
    rules(w)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Filter: "))
        .map(|n| n.trim().parse().unwrap())
        .collect()
}

fn fdb_self(w: &Wire) -> String {
    sh(&[
        "ip",
        "netns",
        "exec",
        &w.node.name,
        "bridge",
        "fdb",
        "show",
        "dev",
        &w.nic.ifname,
    ])
}

/// The far side's stack resolves `ip` to `mac`, so its UDP to `ip` carries that destination MAC.
fn far_neighbour(w: &Wire, ip: &str, mac: &str) {
    w.far.ip(&[
        "neigh",
        "replace",
        ip,
        "lladdr",
        mac,
        "dev",
        &w.peer.ifname,
        "nud",
        "permanent",
    ]);
}

/// `n` payloads to `ip:port`, each from its own source port: `n` flows, which RSS spreads.
fn send_flows(w: &Wire, ip: &'static str, port: u16, payloads: Vec<String>) {
    w.far.run(move || {
        for p in payloads {
            let s = UdpSocket::bind((FAR_IP, 0)).unwrap();
            s.send_to(p.as_bytes(), (ip, port)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

fn steering_net(w: &Wire, steering: Value, lease: Value) -> XdpNet {
    let mut l = json!({"allowedQueues": "2-7", "steering": steering});
    for (k, v) in lease.as_object().unwrap() {
        l[k] = v.clone();
    }
    XdpNet::new(w, l)
}

fn with_mac(net: &XdpNet, mac: &str) -> XdpNet {
    let mut conf = net.conf.clone();
    conf["runtimeConfig"] = json!({"mac": mac});
    XdpNet {
        name: net.name.clone(),
        dir: net.dir.clone(),
        conf,
    }
}

#[test]
fn a_pod_gets_its_frames_and_only_its_frames_over_many_flows_and_two_pods_their_own() {
    let w = wire(NIC_QUEUES);
    // Before: the driver's default table spreads over every queue.
    assert_eq!(rss_queues(&w), (0..NIC_QUEUES).collect::<Vec<_>>());
    let base = steering_net(
        &w,
        json!({"rss": "exclude-pool", "match": "mac"}),
        json!({}),
    );
    let (n1, n2) = (with_mac(&base, POD_MAC), with_mac(&base, POD2_MAC));
    let (pod1, pod2) = (Netns::new("pod"), Netns::new("pod"));
    n1.call(&w, "ADD", "c1", Some(&pod1), "").ok("ADD c1");
    n2.call(&w, "ADD", "c2", Some(&pod2), "").ok("ADD c2");
    let (i1, i2) = (n1.info("c1"), n2.info("c2"));
    assert_eq!(i1["queues"][0]["physical"], 2);
    assert_eq!(i2["queues"][0]["physical"], 3);

    // The witnesses: RSS only on 0-1, one rule per pod to its queue, the MACs in the filter.
    assert_eq!(
        rss_queues(&w),
        [0, 1],
        "{}",
        ethtool(&w, &["-x", &w.nic.ifname])
    );
    let r = rules(&w);
    for (mac, q) in [(POD_MAC, 2), (POD2_MAC, 3)] {
        let block = r
            .split("Filter:")
            .find(|b| b.to_lowercase().contains(mac))
            .unwrap_or_else(|| panic!("no rule for {mac}:\n{r}"));
        assert!(
            block.contains(&format!("Action: Direct to queue {q}")),
            "{block}"
        );
    }
    let fdb = fdb_self(&w);
    assert!(fdb.contains(POD_MAC) && fdb.contains(POD2_MAC), "{fdb}");

    let (s1, s2) = (PodSocket::open(&pod1, &i1), PodSocket::open(&pod2, &i2));
    let host = host_listener(&w.node, 5001);
    far_neighbour(&w, "10.77.0.101", POD_MAC);
    far_neighbour(&w, "10.77.0.102", POD2_MAC);
    let (to1, to2, to_host) = (
        payloads("c1", FLOWS as usize),
        payloads("c2", FLOWS as usize),
        payloads("host", FLOWS as usize),
    );
    send_flows(&w, "10.77.0.101", 7001, to1.clone());
    send_flows(&w, "10.77.0.102", 7002, to2.clone());
    send_flows(&w, NODE_IP, 5001, to_host.clone());

    let got1 = udp_payloads(&s1.receive(to1.len() + 1, Duration::from_secs(20)));
    let got2 = udp_payloads(&s2.receive(to2.len() + 1, Duration::from_secs(20)));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(got1),
        to1,
        "c1 gets every frame to its MAC and nothing else"
    );
    assert_eq!(sorted(got2), to2, "c2 likewise");
    let mut h = host_received(&host);
    h.sort();
    assert_eq!(h, to_host, "host flows keep flowing on the non-pool queues");

    // DEL: no rule, no context, no unicast address; the table stays.
    n1.call(&w, "DEL", "c1", Some(&pod1), "").ok("DEL c1");
    n2.call(&w, "DEL", "c2", Some(&pod2), "").ok("DEL c2");
    let r = rules(&w);
    assert_eq!(rule_locations(&w), Vec::<u32>::new(), "{r}");
    let fdb = fdb_self(&w);
    assert!(!fdb.contains(POD_MAC) && !fdb.contains(POD2_MAC), "{fdb}");
    assert_eq!(rss_queues(&w), [0, 1]);
}

#[test]
fn a_two_queue_lease_spreads_over_its_context_and_check_and_gc_see_it() {
    let w = wire(NIC_QUEUES);
    let net = with_mac(
        &steering_net(
            &w,
            json!({"rss": "exclude-pool", "match": "mac"}),
            json!({"queues": 2}),
        ),
        POD_MAC,
    );
    let pod = Netns::new("pod");
    let r = net.call(&w, "ADD", "c1", Some(&pod), "").ok("ADD c1");
    let info = net.info("c1");
    let ctx = info["steering"]["context"].as_u64().expect("a context") as u32;
    let x = ethtool(&w, &["-x", &w.nic.ifname, "context", &ctx.to_string()]);
    for q in [2, 3] {
        assert!(x.contains(&format!(" {q}")), "context {ctx} over 2-3:\n{x}");
    }
    let rl = rules(&w);
    assert!(rl.contains(&format!("RSS Context ID: {ctx}")), "{rl}");

    // Frames of many flows to the pod's MAC spread over both leased queues and no other: the
    // NIC's per-queue RX counters (netdev qstats-get, scope queue) are the witness.
    far_neighbour(&w, "10.77.0.101", POD_MAC);
    let before = qstats_rx(&w);
    send_flows(&w, "10.77.0.101", 7001, payloads("c1", 64));
    let after = eventually("64 frames counted", Duration::from_secs(20), || {
        let a = qstats_rx(&w);
        (delta(&before, &a, &[2, 3]) >= 64).then_some(a)
    });
    assert!(
        after[2] > before[2] && after[3] > before[3],
        "both queues of the context: {before:?} -> {after:?}"
    );
    assert_eq!(
        delta(&before, &after, &[4, 5, 6, 7]),
        0,
        "no other pool queue"
    );

    // CHECK passes; after the rule is removed behind the plugin's back it names it.
    let mut check = net.conf.clone();
    check["prevResult"] = r.json();
    let check_net = XdpNet {
        name: net.name.clone(),
        dir: net.dir.clone(),
        conf: check,
    };
    check_net
        .call(&w, "CHECK", "c1", Some(&pod), "")
        .ok("CHECK");
    let loc = info["steering"]["rules"][0]["location"]
        .as_u64()
        .unwrap()
        .to_string();
    ethtool(&w, &["-N", &w.nic.ifname, "delete", &loc]);
    let e = check_net
        .call(&w, "CHECK", "c1", Some(&pod), "")
        .err("CHECK after ethtool -N delete");
    assert_eq!(e["code"], 104, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains(&format!("rule {loc}")),
        "{e}"
    );
    std::mem::forget(check_net);

    // GC with an empty list: the device goes, then the context and the address.
    let mut gc = net.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let gc_net = XdpNet {
        name: net.name.clone(),
        dir: net.dir.clone(),
        conf: gc,
    };
    gc_net.call(&w, "GC", "", None, "").ok("GC");
    std::mem::forget(gc_net);
    assert_eq!(rule_locations(&w), Vec::<u32>::new());
    let gone = try_sh(&[
        "ip",
        "netns",
        "exec",
        &w.node.name,
        "ethtool",
        "-x",
        &w.nic.ifname,
        "context",
        &ctx.to_string(),
    ]);
    assert!(gone.is_err(), "context {ctx} is gone: {gone:?}");
    assert!(!fdb_self(&w).contains(POD_MAC));
}

#[test]
fn rss_admin_refuses_while_the_default_table_covers_the_pool_then_passes() {
    let w = wire(NIC_QUEUES);
    let net = with_mac(
        &steering_net(&w, json!({"match": "mac"}), json!({})),
        POD_MAC,
    );
    let pod = Netns::new("pod");
    let e = net
        .call(&w, "ADD", "c1", Some(&pod), "")
        .err("ADD with the default table");
    assert_eq!(e["code"], 113, "{e}");
    let msg = format!("{} {}", e["msg"], e["details"]);
    assert!(
        msg.contains("queue 2") && msg.contains(&w.nic.ifname),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("ethtool -X {} equal 2", w.nic.ifname)),
        "{msg}"
    );
    // Nothing left behind.
    assert_eq!(rule_locations(&w), Vec::<u32>::new());
    assert!(pod
        .links()
        .iter()
        .all(|l| l["linkinfo"]["info_kind"] != "netkit"));
    assert!(!fdb_self(&w).contains(POD_MAC));
    assert_eq!(
        rss_queues(&w),
        (0..NIC_QUEUES).collect::<Vec<_>>(),
        "admin never writes RSS"
    );

    ethtool(&w, &["-X", &w.nic.ifname, "equal", "2"]);
    net.call(&w, "ADD", "c1", Some(&pod), "")
        .ok("ADD after ethtool -X equal 2");
    assert_eq!(rule_locations(&w).len(), 1);
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL");
    assert_eq!(rule_locations(&w), Vec::<u32>::new());
}

/// Per-queue RX packets of the node's NIC (netdev qstats-get, scope queue), by queue id.
fn qstats_rx(w: &Wire) -> Vec<u64> {
    let out = Ynl::new()
        .call(
            Some(&w.node),
            "netdev",
            "--dump",
            "qstats-get",
            Some(&json!({"ifindex": w.nic.ifindex, "scope": "queue"})),
            &[],
        )
        .unwrap_or_else(|e| panic!("qstats-get: {e}"));
    let mut v = vec![0u64; NIC_QUEUES as usize];
    for q in out.as_array().cloned().unwrap_or_default() {
        if q["queue-type"] == "rx" {
            let id = q["queue-id"].as_u64().unwrap() as usize;
            v[id] = q["rx-packets"].as_u64().unwrap_or(0);
        }
    }
    v
}

fn delta(a: &[u64], b: &[u64], queues: &[usize]) -> u64 {
    queues.iter().map(|q| b[*q] - a[*q]).sum()
}

#[test]
fn match_ip_with_a_pair_and_host_routing_delivers_flows_through_the_leased_queue() {
    let w = wire(NIC_QUEUES);
    let cni = CniNet::new("10.79.0.0/24");
    let dir = std::env::temp_dir().join(unique("nkc-devinfo-"));
    let conf = cni.conf(
        "1.1.0",
        json!({
            "pairing": "pair",
            "lease": {"master": w.nic.ifname, "allowedQueues": "2-7", "deviceInfoDir": dir,
                      "steering": {"rss": "exclude-pool", "match": "ip"}},
            "hostRouting": {"mode": "bpf", "uplink": w.nic.ifname, "bypass": ["10.77.0.0/24"],
                            "bpffs": w.bpffs.path},
        }),
    );
    let pod = Netns::new("pod");
    let r = cni
        .call(&w.node, "ADD", "c1", Some(&pod.path()), "eth0", &conf)
        .ok("ADD")
        .json();
    let ip: std::net::Ipv4Addr = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rl = rules(&w);
    let block = rl
        .split("Filter:")
        .find(|b| b.contains(&ip.to_string()))
        .unwrap_or_else(|| panic!("no rule for {ip}:\n{rl}"));
    assert!(block.contains("Action: Direct to queue 2"), "{block}");

    w.far.ip(&["route", "add", "10.79.0.0/24", "via", NODE_IP]);
    let listener = pod.run(move || UdpSocket::bind((ip, 6000)).unwrap());
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let before = qstats_rx(&w);
    let sent = payloads("pair", FLOWS as usize);
    let target: &'static str = Box::leak(ip.to_string().into_boxed_str());
    send_flows(&w, target, 6000, sent.clone());
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = listener.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    got.sort();
    assert_eq!(got, sent, "every flow reaches the pod");
    let after = qstats_rx(&w);
    assert!(
        delta(&before, &after, &[2]) >= u64::from(FLOWS),
        "they arrived on the leased queue 2: {before:?} -> {after:?}"
    );
    assert_eq!(
        delta(&before, &after, &[3, 4, 5, 6, 7]),
        0,
        "{before:?} -> {after:?}"
    );

    cni.call(&w.node, "DEL", "c1", Some(&pod.path()), "eth0", &conf)
        .ok("DEL");
    assert_eq!(rule_locations(&w), Vec::<u32>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
