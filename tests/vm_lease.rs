//! NIC queue leasing end to end: the plugin binary driven as a runtime drives it, a NIC with 8
//! RX queues in the node netns, and every claim about leases checked with the kernel's own ynl
//! CLI (queue-get on the NIC), independently of our netdev client.
//!
//! The NIC is a netdevsim device moved into a throwaway node netns. With
//! `NKC_TEST_REAL_NIC=<ifname>` the same tests run against that real NIC instead (Linux >= 7.1
//! host, root, a NIC with queue management and at least 8 RX queues, queues 1-6 unused): the
//! node is then the netns the tests run in, and the NIC stays where it is. Only the NIC-removal
//! test always uses netdevsim, since it deletes its NIC.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::steering::*;
use common::*;
use serde_json::{json, Value};

/// Where the plugin runs and the NIC lives: a private netns, or (real NIC) the current one.
enum Node {
    Ns(Netns),
    Here,
}

impl Node {
    fn netns(&self) -> Option<&Netns> {
        match self {
            Node::Ns(ns) => Some(ns),
            Node::Here => None,
        }
    }

    fn ip(&self, args: &[&str]) -> String {
        match self {
            Node::Ns(ns) => ns.ip(args),
            Node::Here => {
                let mut v = vec!["ip"];
                v.extend_from_slice(args);
                sh(&v)
            }
        }
    }

    /// The nsid the node gives `pod`: what the NIC's queue leases report as `netns-id`.
    fn nsid_of(&self, pod: &Netns) -> i32 {
        match self {
            Node::Ns(ns) => ns.nsid_of(pod),
            Node::Here => {
                let find = || -> Option<i32> {
                    let out = sh(&["ip", "-j", "netns", "list-id"]);
                    let v: Value =
                        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
                            .unwrap();
                    v.as_array()?
                        .iter()
                        .find(|e| e["name"] == pod.name.as_str())
                        .and_then(|e| e["nsid"].as_i64())
                        .map(|n| n as i32)
                };
                find().unwrap_or_else(|| {
                    sh(&["ip", "netns", "set", &pod.name, "auto"]);
                    find().expect("nsid just assigned")
                })
            }
        }
    }

    fn netkit_links(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-d", "-j", "link", "show"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The NIC queues are leased from.
struct Nic {
    name: String,
    ifindex: u32,
    _sim: Option<Netdevsim>,
}

/// The test bed: node + NIC (netdevsim, or the real NIC named by NKC_TEST_REAL_NIC).
fn bed() -> (Node, Nic) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "privileged test run without root: run it through scripts/vm-tests"
    );
    if let Ok(name) = std::env::var("NKC_TEST_REAL_NIC") {
        let v: Value =
            serde_json::from_str(&sh(&["ip", "-j", "link", "show", "dev", &name])).unwrap();
        let ifindex = v[0]["ifindex"].as_u64().unwrap() as u32;
        let nic = Nic {
            name,
            ifindex,
            _sim: None,
        };
        let rx = rx_queues(&Node::Here, &nic);
        assert!(
            rx >= 8,
            "NKC_TEST_REAL_NIC={} has {rx} RX queues; these tests need at least 8",
            nic.name
        );
        return (Node::Here, nic);
    }
    require_privileged_kernel();
    let node = Netns::new("node");
    let sim = Netdevsim::new(&node, 8);
    let nic = Nic {
        name: sim.ifname.clone(),
        ifindex: sim.ifindex,
        _sim: Some(sim),
    };
    (Node::Ns(node), nic)
}

fn ynl_dump(ynl: &Ynl, node: &Node, nic: &Nic) -> Vec<Value> {
    let v = ynl
        .call(
            node.netns(),
            "netdev",
            "--dump",
            "queue-get",
            Some(&json!({"ifindex": nic.ifindex})),
            &[],
        )
        .unwrap_or_else(|e| panic!("ynl queue-get dump: {e}"));
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|q| q["type"] == "rx")
        .collect()
}

fn ynl_queue(ynl: &Ynl, node: &Node, nic: &Nic, id: u64) -> Value {
    ynl.call(
        node.netns(),
        "netdev",
        "--do",
        "queue-get",
        Some(&json!({"ifindex": nic.ifindex, "id": id, "type": "rx"})),
        &[],
    )
    .unwrap_or_else(|e| panic!("ynl queue-get {id}: {e}"))
}

fn rx_queues(node: &Node, nic: &Nic) -> usize {
    ynl_dump(&Ynl::new(), node, nic).len()
}

/// Physical queue id → its lease object, for every leased RX queue of the NIC (ynl's view).
fn leases(ynl: &Ynl, node: &Node, nic: &Nic) -> Vec<(u64, Value)> {
    ynl_dump(ynl, node, nic)
        .into_iter()
        .filter_map(|q| {
            q.get("lease")
                .cloned()
                .map(|l| (q["id"].as_u64().unwrap(), l))
        })
        .collect()
}

/// A network as a runtime drives it, with a private device-info directory and, for pairs,
/// host-local IPAM with private state.
struct Net {
    name: String,
    dir: PathBuf,
    ipam_dir: PathBuf,
    conf: Value,
}

impl Net {
    fn new(pairing: &str, nic: &Nic, lease: Value, subnet: Option<&str>) -> Net {
        let name = unique("lnet");
        let dir = std::env::temp_dir().join(unique("nkc-devinfo-"));
        let ipam_dir = std::env::temp_dir().join(unique("nkc-ipam-"));
        // Every lease steers: the pool out of the default RSS context; a pair's address (its
        // peer has no MAC in mode l3), a single device's MAC (mode l2) to the pod's queues.
        let matching = if pairing == "pair" { "ip" } else { "mac" };
        let mut l =
            json!({"master": nic.name, "deviceInfoDir": dir, "steering": steering(matching)});
        for (k, v) in lease.as_object().unwrap() {
            l[k] = v.clone();
        }
        let mut conf = json!({"cniVersion": "1.1.0", "name": name, "type": "netkit-cni", "pairing": pairing, "lease": l});
        if pairing == "single" {
            conf["mode"] = json!("l2");
        }
        if let Some(s) = subnet {
            conf["ipam"] = json!({"type": "host-local", "subnet": s, "dataDir": ipam_dir});
        }
        Net {
            name,
            dir,
            ipam_dir,
            conf,
        }
    }

    fn call(
        &self,
        node: &Node,
        command: &str,
        cid: &str,
        netns: Option<&Path>,
        args: &str,
        conf: &Value,
    ) -> PluginRun {
        let netns = netns
            .map(|p| p.to_str().unwrap().to_string())
            .unwrap_or_default();
        run_plugin(
            node.netns(),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", &netns),
                (
                    "CNI_IFNAME",
                    if command == "GC" || command == "STATUS" {
                        ""
                    } else {
                        "eth0"
                    },
                ),
                ("CNI_PATH", CNI_PATH),
                ("CNI_ARGS", args),
            ],
            &conf.to_string(),
        )
    }

    fn add(&self, node: &Node, cid: &str, pod: &Netns, args: &str) -> PluginRun {
        self.call(node, "ADD", cid, Some(&pod.path()), args, &self.conf)
    }

    fn del(&self, node: &Node, cid: &str, pod: Option<&Netns>) -> PluginRun {
        self.call(
            node,
            "DEL",
            cid,
            pod.map(|p| p.path()).as_deref(),
            "",
            &self.conf,
        )
    }

    fn check(&self, node: &Node, cid: &str, pod: &Netns, result: &Value) -> PluginRun {
        let mut c = self.conf.clone();
        c["prevResult"] = result.clone();
        self.call(node, "CHECK", cid, Some(&pod.path()), "", &c)
    }

    fn gc(&self, node: &Node, valid: &[&str]) -> PluginRun {
        let mut c = self.conf.clone();
        c["cni.dev/valid-attachments"] = Value::Array(
            valid
                .iter()
                .map(|cid| json!({"containerID": cid, "ifname": "eth0"}))
                .collect(),
        );
        self.call(node, "GC", "", None, "", &c)
    }

    fn status(&self, node: &Node) -> PluginRun {
        self.call(node, "STATUS", "", None, "", &self.conf)
    }

    fn info_path(&self, cid: &str) -> PathBuf {
        self.dir
            .join(format!("{}:{cid}:eth0-device.json", self.name))
    }

    fn info(&self, cid: &str) -> Value {
        let p = self.info_path(cid);
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    fn files(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        rd.map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn reserved(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.ipam_dir.join(&self.name)) else {
            return vec![];
        };
        rd.map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.ipam_dir);
    }
}

/// Asserts through ynl that each physical queue in the device-info file is leased to the pod's
/// device (ifindex inside the pod, as the pod sees it), as that device's virtual queue, from
/// the pod's netns as the node names it. Returns the physical ids.
fn assert_leased_to(ynl: &Ynl, node: &Node, nic: &Nic, info: &Value, pod: &Netns) -> Vec<u64> {
    let l = &info["netkit-lease"];
    let pod_ifindex = pod.ifindex("eth0");
    assert_eq!(l["ifindex"], pod_ifindex, "{info}");
    assert_eq!(
        l["master"],
        json!({"name": nic.name, "ifindex": nic.ifindex}),
        "{info}"
    );
    let nsid = node.nsid_of(pod);
    let mut phys = vec![];
    for q in l["queues"].as_array().unwrap() {
        let id = q["physical"].as_u64().unwrap();
        let got = ynl_queue(ynl, node, nic, id);
        assert_eq!(got["lease"]["ifindex"], pod_ifindex, "queue {id}: {got}");
        assert_eq!(
            got["lease"]["queue"]["id"], q["virtual"],
            "queue {id}: {got}"
        );
        assert_eq!(
            got["lease"]["netns-id"], nsid,
            "queue {id} must name the pod's netns as the node sees it: {got}"
        );
        phys.push(id);
    }
    phys
}

/// The pod device's own RX queues (ynl in the pod netns): queue 0 plus one per lease.
fn pod_rx_queues(ynl: &Ynl, pod: &Netns) -> usize {
    let v = ynl
        .call(
            Some(pod),
            "netdev",
            "--dump",
            "queue-get",
            Some(&json!({"ifindex": pod.ifindex("eth0")})),
            &[],
        )
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|q| q["type"] == "rx")
        .count()
}

fn pod_netkit(pod: &Netns) -> Vec<String> {
    pod.links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// The node netns's name for `ip netns exec` (None: the current one, with a real NIC).
fn ns_name(node: &Node) -> Option<&str> {
    node.netns().map(|n| n.name.as_str())
}

/// Asserts with Debian's ethtool that the pod's traffic is steered to exactly `phys`: a rule
/// on the pod's address (pair) or its device's MAC (single), whose action is the one queue or
/// an RSS context over exactly them; and that the default RSS context keeps off the pool.
fn assert_steered(node: &Node, nic: &Nic, result: &Value, pod: &Netns, phys: &[u64], pool: &[u32]) {
    let rules = ntuple_rules(ns_name(node), &nic.name);
    let rule = match result["ips"][0]["address"].as_str() {
        Some(a) if result["interfaces"].as_array().unwrap().len() == 2 => {
            let addr = a.split('/').next().unwrap();
            rules
                .iter()
                .find(|r| r.dst_ip.as_deref() == Some(addr))
                .cloned()
        }
        _ => rule_for_mac(&rules, &xdp::Wire::pod_mac(pod, "eth0")).cloned(),
    }
    .unwrap_or_else(|| panic!("no ntuple rule for the pod: {rules:#?}\n{result}"));
    let want: std::collections::BTreeSet<u32> = phys.iter().map(|&q| q as u32).collect();
    match rule.context {
        None => assert_eq!(
            (want.len(), rule.queue),
            (1, want.first().copied()),
            "{}",
            rule.text
        ),
        Some(c) => assert_eq!(
            rss_queues(ns_name(node), &nic.name, Some(c)),
            Some(want),
            "context {c}:\n{}",
            rule.text
        ),
    }
    let default = rss_queues(ns_name(node), &nic.name, None).expect("ethtool -x");
    assert!(
        pool.iter().all(|q| !default.contains(q)),
        "the default RSS context spreads onto the pool {pool:?}: {default:?}"
    );
}

fn lease_leaves_nothing(ynl: &Ynl, node: &Node, nic: &Nic, net: &Net) {
    assert_eq!(
        ntuple_rules(ns_name(node), &nic.name),
        vec![],
        "ntuple rules left"
    );
    assert_eq!(leases(ynl, node, nic), vec![], "queues still leased");
    assert_eq!(net.files(), Vec::<String>::new(), "device-info files left");
    assert_eq!(
        net.reserved(),
        Vec::<String>::new(),
        "addresses still reserved"
    );
}

fn add_check_gc_del(pairing: &str, subnet: Option<&str>) {
    let (node, nic) = bed();
    let ynl = Ynl::new();
    let net = Net::new(
        pairing,
        &nic,
        json!({"queues": 2, "allowedQueues": "1-6"}),
        subnet,
    );
    let (live, orphan) = (Netns::new("pod"), Netns::new("pod"));
    let (cid_live, cid_orphan) = (unique("live"), unique("orph"));

    let result = net
        .add(&node, &cid_live, &live, "")
        .ok(&format!("{pairing} ADD"))
        .json();
    let itfs = result["interfaces"].as_array().unwrap();
    let pod_itf = itfs.last().unwrap();
    assert_eq!(pod_itf["name"], "eth0");
    assert_eq!(pod_itf["sandbox"], live.path().to_str().unwrap());
    assert_eq!(
        itfs.len(),
        if pairing == "pair" { 2 } else { 1 },
        "{result}"
    );
    if subnet.is_some() {
        assert_eq!(net.reserved().len(), 1);
        let addr = result["ips"][0]["address"].as_str().unwrap();
        assert!(
            live.ip(&["-j", "addr", "show", "dev", "eth0"])
                .contains(addr.split('/').next().unwrap()),
            "address on the pod device"
        );
    }
    let info = net.info(&cid_live);
    assert_eq!(
        (info["type"].as_str(), info["version"].as_str()),
        (Some("netkit-lease"), Some("1.1.0"))
    );
    assert_eq!(info["netkit-lease"]["pairing"], pairing);
    let phys = assert_leased_to(&ynl, &node, &nic, &info, &live);
    assert_eq!(phys.len(), 2, "{info}");
    assert!(
        phys.iter().all(|q| (1..=6).contains(q)),
        "from the pool: {phys:?}"
    );
    assert_eq!(pod_rx_queues(&ynl, &live), 3, "queue 0 plus one per lease");
    assert_eq!(leases(&ynl, &node, &nic).len(), 2, "nothing else leased");
    assert_steered(&node, &nic, &result, &live, &phys, &[1, 2, 3, 4, 5, 6]);

    net.check(&node, &cid_live, &live, &result).ok("CHECK");

    // An orphan with 1 queue (the pod asks through CNI_ARGS), removed by GC.
    net.add(&node, &cid_orphan, &orphan, "NETKIT_LEASE_QUEUES=1")
        .ok("ADD orphan");
    let orphan_phys = assert_leased_to(&ynl, &node, &nic, &net.info(&cid_orphan), &orphan);
    assert_eq!(orphan_phys.len(), 1);
    assert_eq!(leases(&ynl, &node, &nic).len(), 3);
    net.gc(&node, &[&cid_live]).ok("GC");
    assert_eq!(
        pod_netkit(&orphan),
        Vec::<String>::new(),
        "orphan's device deleted"
    );
    let left: Vec<u64> = leases(&ynl, &node, &nic)
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    assert_eq!(left, phys, "only the orphan's queue is free again");
    assert_eq!(
        ntuple_rules(ns_name(&node), &nic.name).len(),
        1,
        "GC removed the orphan's rule, the live pod's stays"
    );
    assert_steered(&node, &nic, &result, &live, &phys, &[1, 2, 3, 4, 5, 6]);
    assert!(
        !net.info_path(&cid_orphan).exists(),
        "orphan's device-info file removed"
    );
    assert_eq!(
        pod_netkit(&live),
        vec!["eth0".to_string()],
        "the live pod keeps its device"
    );
    net.check(&node, &cid_live, &live, &result)
        .ok("CHECK after GC");

    net.del(&node, &cid_live, Some(&live)).ok("DEL");
    assert_eq!(pod_netkit(&live), Vec::<String>::new());
    assert_eq!(node.netkit_links(), Vec::<String>::new());
    lease_leaves_nothing(&ynl, &node, &nic, &net);
    net.del(&node, &cid_live, Some(&live)).ok("second DEL");
    net.del(&node, &cid_orphan, None)
        .ok("DEL of the GC'd orphan without CNI_NETNS");
    let gone = orphan.path();
    drop(orphan);
    net.call(&node, "DEL", &cid_orphan, Some(&gone), "", &net.conf)
        .ok("DEL with the netns already deleted");
}

#[test]
fn pair_leases_onto_the_peer_check_gc_del() {
    add_check_gc_del("pair", Some("10.70.0.0/24"));
}

#[test]
fn single_device_leases_check_gc_del() {
    add_check_gc_del("single", None);
}

#[test]
fn single_device_with_ipam_gets_its_addresses() {
    add_check_gc_del("single", Some("10.71.0.0/24"));
}

#[test]
fn eight_pods_race_for_six_queues() {
    let (node, nic) = bed();
    let ynl = Ynl::new();
    let net = Net::new(
        "single",
        &nic,
        json!({"queues": 1, "allowedQueues": "1-6"}),
        None,
    );
    let pods: Vec<(String, Netns)> = (0..8)
        .map(|_| (unique("race"), Netns::new("pod")))
        .collect();
    net.status(&node).ok("STATUS with a free pool");

    let runs: Vec<PluginRun> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(cid, pod)| s.spawn(|| net.add(&node, cid, pod, "")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<usize> = (0..8).filter(|i| runs[*i].status.success()).collect();
    let failed: Vec<usize> = (0..8).filter(|i| !runs[*i].status.success()).collect();
    for i in &failed {
        let e = runs[*i].err("racing ADD");
        assert_eq!(
            e["code"], 106,
            "the pool error, not another failure: {e}\nstderr: {}",
            runs[*i].stderr
        );
        assert!(
            e["msg"].as_str().unwrap().contains("allowedQueues 1-6"),
            "names the pool: {e}"
        );
        assert_eq!(
            pod_netkit(&pods[*i].1),
            Vec::<String>::new(),
            "a failed ADD leaves no device"
        );
        assert!(!net.info_path(&pods[*i].0).exists());
    }
    assert_eq!(
        (ok.len(), failed.len()),
        (6, 2),
        "exactly the pool's size succeeds"
    );

    // ynl: 6 queues leased, each to a different pod device, each as the pod's file says.
    let held = leases(&ynl, &node, &nic);
    assert_eq!(held.len(), 6, "{held:?}");
    let lessees: BTreeSet<(i64, u64)> = held
        .iter()
        .map(|(_, l)| {
            (
                l["netns-id"].as_i64().unwrap(),
                l["ifindex"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lessees.len(),
        6,
        "no pod holds two queues, no queue is held twice: {held:?}"
    );
    let mut claimed = BTreeSet::new();
    for i in &ok {
        for q in assert_leased_to(&ynl, &node, &nic, &net.info(&pods[*i].0), &pods[*i].1) {
            assert!(claimed.insert(q), "queue {q} claimed by two pods");
        }
    }
    let status = net.status(&node).err("STATUS with the pool used up");
    assert_eq!(status["code"], 50, "{status}");

    for (cid, pod) in &pods {
        net.del(&node, cid, Some(pod)).ok("DEL");
    }
    lease_leaves_nothing(&ynl, &node, &nic, &net);
    net.status(&node).ok("STATUS after DEL");
}

#[test]
fn requests_outside_the_pool_and_busy_queues_are_refused_cleanly() {
    let (node, nic) = bed();
    let ynl = Ynl::new();
    let net = Net::new(
        "pair",
        &nic,
        json!({"allowedQueues": "1-4", "maxQueuesPerPod": 2}),
        Some("10.72.0.0/24"),
    );
    let pod = Netns::new("pod");

    let e = net
        .add(&node, &unique("c"), &pod, "NETKIT_LEASE_QUEUE_IDS=6")
        .err("queue outside the pool");
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("queue 6")
            && e["msg"].as_str().unwrap().contains("1-4"),
        "{e}"
    );
    let e = net
        .add(&node, &unique("c"), &pod, "NETKIT_LEASE_QUEUES=3")
        .err("above the cap");
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("3")
            && e["msg"].as_str().unwrap().contains("maxQueuesPerPod 2"),
        "{e}"
    );
    assert_eq!(pod_netkit(&pod), Vec::<String>::new());
    assert_eq!(net.reserved(), Vec::<String>::new(), "refused before IPAM");

    // queueIds naming a queue another pod holds: refused, nothing left behind.
    let first = Netns::new("pod");
    let cid_first = unique("c");
    let mut conf = net.conf.clone();
    conf["lease"]["queueIds"] = json!([3]);
    net.call(&node, "ADD", &cid_first, Some(&first.path()), "", &conf)
        .ok("ADD holding queue 3");
    let cid = unique("c");
    let e = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "", &conf)
        .err("ADD of a busy queue");
    assert_eq!(e["code"], 107, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("queue 3"), "{e}");
    assert_eq!(pod_netkit(&pod), Vec::<String>::new(), "no device left");
    assert!(!net.info_path(&cid).exists());
    assert_eq!(net.reserved().len(), 1, "only the first pod's address");
    assert_eq!(
        leases(&ynl, &node, &nic)
            .iter()
            .map(|(q, _)| *q)
            .collect::<Vec<_>>(),
        [3]
    );

    // A master that does not exist.
    let mut conf = net.conf.clone();
    conf["lease"]["master"] = json!(unique("nx"));
    let e = net
        .call(&node, "ADD", &unique("c"), Some(&pod.path()), "", &conf)
        .err("missing master");
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains(conf["lease"]["master"].as_str().unwrap()),
        "{e}"
    );

    // A virtual master: a veth has no RSS to read, so the steering check refuses it (code 113,
    // naming the NIC) before any lease is asked of the kernel; the kernel would refuse it too
    // ("Lease device is a virtual device", netdev-genl.c), but steering comes first (a queue is
    // leased only once the NIC is known to keep other flows off it).
    let veth = unique("veth");
    node.ip(&[
        "link",
        "add",
        &veth,
        "type",
        "veth",
        "peer",
        "name",
        &unique("vethp"),
    ]);
    node.ip(&["link", "set", &veth, "up"]);
    let mut conf = net.conf.clone();
    conf["lease"] =
        json!({"master": veth, "queueIds": [0], "allowedQueues": "0", "deviceInfoDir": net.dir});
    let e = net
        .call(&node, "ADD", &unique("c"), Some(&pod.path()), "", &conf)
        .err("virtual master");
    node.ip(&["link", "del", &veth]);
    assert_eq!(e["code"], 113, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&veth) && msg.contains("RSS"),
        "names the NIC and what it lacks: {e}"
    );
    assert_eq!(pod_netkit(&pod), Vec::<String>::new(), "rolled back");

    net.call(&node, "DEL", &cid_first, Some(&first.path()), "", &net.conf)
        .ok("DEL");
    lease_leaves_nothing(&ynl, &node, &nic, &net);
}

#[test]
fn removing_the_nic_under_leasing_pods_leaves_del_and_gc_working() {
    // Deletes its NIC, so always on netdevsim, never on a real NIC.
    require_privileged_kernel();
    let node = Node::Ns(Netns::new("node"));
    let mut sim = Netdevsim::new(node.netns().unwrap(), 8);
    let nic = Nic {
        name: sim.ifname.clone(),
        ifindex: sim.ifindex,
        _sim: None,
    };
    let ynl = Ynl::new();
    let pair = Net::new("pair", &nic, json!({"queues": 2}), Some("10.73.0.0/24"));
    let single = Net::new("single", &nic, json!({"queues": 2}), None);
    let (pod_a, pod_b) = (Netns::new("pod"), Netns::new("pod"));
    let (cid_a, cid_b) = (unique("a"), unique("b"));
    pair.add(&node, &cid_a, &pod_a, "").ok("ADD pair");
    single.add(&node, &cid_b, &pod_b, "").ok("ADD single");
    assert_eq!(leases(&ynl, &node, &nic).len(), 4);

    sim.remove();
    // The kernel deletes every device leasing from a NIC that goes away, within the NIC's own
    // unregister (netkit_check_lease_unregister). Once in a loaded CI run they were still listed
    // 10 s later: wait longer, and if they stay, say which and what the kernel logged.
    let left = || (pod_netkit(&pod_a), pod_netkit(&pod_b), node.netkit_links());
    eventually_explained(
        "lessees deleted with their NIC",
        Duration::from_secs(30),
        || {
            let (a, b, n) = left();
            (a.is_empty() && b.is_empty() && n.is_empty()).then_some(())
        },
        || {
            let (a, b, n) = left();
            format!(
                ": pair's pod {a:?}, single's pod {b:?}, node {n:?}; kernel log tail:\n{}",
                String::from_utf8_lossy(&run(&["sh", "-c", "dmesg | tail -n 30"]).stdout)
            )
        },
    );
    pair.del(&node, &cid_a, Some(&pod_a))
        .ok("DEL pair without its NIC");
    single
        .del(&node, &cid_b, None)
        .ok("DEL single without its NIC or netns");
    single.gc(&node, &[]).ok("GC without the NIC");
    pair.gc(&node, &[]).ok("GC without the NIC");
    assert_eq!(pair.files(), Vec::<String>::new());
    assert_eq!(single.files(), Vec::<String>::new());
    assert_eq!(
        pair.reserved(),
        Vec::<String>::new(),
        "the pair's address is released"
    );

    // GC alone also clears a pod that never got its DEL.
    let mut sim2 = Netdevsim::new(node.netns().unwrap(), 8);
    let nic2 = Nic {
        name: sim2.ifname.clone(),
        ifindex: sim2.ifindex,
        _sim: None,
    };
    let single2 = Net::new("single", &nic2, json!({}), None);
    let pod_c = Netns::new("pod");
    let cid_c = unique("c");
    single2
        .add(&node, &cid_c, &pod_c, "")
        .ok("ADD on the second NIC");
    sim2.remove();
    eventually("lessee deleted", Duration::from_secs(10), || {
        pod_netkit(&pod_c).is_empty().then_some(())
    });
    assert!(single2.info_path(&cid_c).exists());
    single2.gc(&node, &[]).ok("GC of a pod whose NIC vanished");
    assert_eq!(
        single2.files(),
        Vec::<String>::new(),
        "stale device-info file removed by GC"
    );
}

// ---------------------------------------------------------------------------------------------
// A single device lives in the pod netns, where a pod with CAP_NET_ADMIN can rename it and
// rewrite its alias. DEL, GC and inspect must go by facts the pod cannot change: the master's
// leases (nsid + ifindex, dumped in the node netns) and the attachment's device-info record.

/// What a pod with CAP_NET_ADMIN can do to its own device: a new name (the kernel renames only a
/// device that is down) and/or a new alias.
fn tamper(pod: &Netns, name: Option<&str>, alias: Option<&str>) {
    let mut dev = "eth0";
    if let Some(n) = name {
        pod.ip(&["link", "set", "dev", "eth0", "down"]);
        pod.ip(&["link", "set", "dev", "eth0", "name", n]);
        pod.ip(&["link", "set", "dev", n, "up"]);
        dev = n;
    }
    if let Some(a) = alias {
        pod.ip(&["link", "set", "dev", dev, "alias", a]);
    }
}

/// Container ids host-local holds an address for (its files in dataDir/<network>/ hold
/// "<container id>\r\n<ifname>").
fn reserved_for(net: &Net) -> Vec<String> {
    let mut v: Vec<String> = net
        .reserved()
        .iter()
        .map(|ip| {
            let body = std::fs::read_to_string(net.ipam_dir.join(&net.name).join(ip)).unwrap();
            body.lines().next().unwrap_or_default().trim().to_string()
        })
        .collect();
    v.sort();
    v
}

/// Reserves an address in the network's host-local state for `cid` directly, as an attachment
/// whose ADD is under way (IPAM done, not yet in the runtime's list of valid attachments) has.
fn reserve_directly(node: &Node, net: &Net, cid: &str, pod: &Netns) {
    let mut c = net.conf.clone();
    c["cniVersion"] = json!("1.0.0");
    c["type"] = json!("host-local");
    let path = pod.path().to_str().unwrap().to_string();
    run_plugin_bin(
        &Path::new(CNI_PATH).join("host-local"),
        node.netns(),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", &path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
        ],
        &c.to_string(),
    )
    .ok("host-local ADD");
}

/// The pod renames its device, rewrites its alias, or both: DEL (with CNI_NETNS, and without it
/// through the master) still removes the device holding the attachment's leases, and the queues
/// are free again. Before DEL went by the recorded leases, the renamed device was "already
/// gone" and the re-aliased one "someone else's": both kept their leases, and the pool drained
/// over unplug/plug cycles.
#[test]
fn del_removes_a_renamed_or_realiased_single_device_and_frees_its_leases() {
    let (node, nic) = bed();
    let ynl = Ynl::new();
    let net = Net::new(
        "single",
        &nic,
        json!({"queues": 2, "allowedQueues": "1-6"}),
        Some("10.74.0.0/24"),
    );
    let pods = [Netns::new("pod"), Netns::new("pod"), Netns::new("pod")];
    let cids: Vec<String> = (0..3).map(|_| unique("tamper")).collect();
    for (pod, cid) in pods.iter().zip(&cids) {
        net.add(&node, cid, pod, "").ok("ADD");
    }
    assert_eq!(leases(&ynl, &node, &nic).len(), 6);
    let forged = format!("netkit-cni/{}/someone-else/eth0", net.name);
    tamper(&pods[0], Some("renamed0"), None);
    tamper(&pods[1], None, Some(&forged));
    tamper(&pods[2], Some("renamed2"), Some(&forged));

    net.del(&node, &cids[0], Some(&pods[0]))
        .ok("DEL of the renamed device");
    assert_eq!(
        pod_netkit(&pods[0]),
        Vec::<String>::new(),
        "renamed device deleted"
    );
    net.del(&node, &cids[1], Some(&pods[1]))
        .ok("DEL of the re-aliased device");
    assert_eq!(
        pod_netkit(&pods[1]),
        Vec::<String>::new(),
        "re-aliased device deleted"
    );
    net.del(&node, &cids[2], None)
        .ok("DEL of the renamed and re-aliased device without CNI_NETNS");
    assert_eq!(
        pod_netkit(&pods[2]),
        Vec::<String>::new(),
        "third device deleted"
    );
    lease_leaves_nothing(&ynl, &node, &nic, &net);
}

/// GC never hands IPAM an identifier read from an alias. A live pod re-aliases its device to an
/// attachment whose ADD is under way (IPAM reserved, not yet listed); an orphan pod to another
/// one. GC must keep the live pod's device (its record says it is listed), remove the orphan's
/// device and release the orphan's own address (from its record), and leave both victims'
/// reservations alone. Before, GC deleted the live pod's device and released the victims'
/// addresses, keeping the orphan's.
#[test]
fn gc_never_hands_identifiers_from_a_forged_alias_to_ipam() {
    let (node, nic) = bed();
    let ynl = Ynl::new();
    let net = Net::new(
        "single",
        &nic,
        json!({"queues": 1, "allowedQueues": "1-6"}),
        Some("10.75.0.0/24"),
    );
    let (live, orphan, elsewhere) = (Netns::new("pod"), Netns::new("pod"), Netns::new("pod"));
    let (cid_live, cid_orphan) = (unique("live"), unique("orph"));
    let (victim1, victim2) = (unique("victim"), unique("victim"));
    net.add(&node, &cid_live, &live, "").ok("ADD live");
    net.add(&node, &cid_orphan, &orphan, "").ok("ADD orphan");
    reserve_directly(&node, &net, &victim1, &elsewhere);
    reserve_directly(&node, &net, &victim2, &elsewhere);
    let mut all = vec![
        cid_live.clone(),
        cid_orphan.clone(),
        victim1.clone(),
        victim2.clone(),
    ];
    all.sort();
    assert_eq!(reserved_for(&net), all);
    let live_queues: Vec<u64> = leases(&ynl, &node, &nic)
        .into_iter()
        .filter(|(_, l)| {
            l["ifindex"] == live.ifindex("eth0") && l["netns-id"] == node.nsid_of(&live)
        })
        .map(|(q, _)| q)
        .collect();
    assert_eq!(live_queues.len(), 1);

    tamper(
        &live,
        None,
        Some(&format!("netkit-cni/{}/{victim1}/eth0", net.name)),
    );
    tamper(
        &orphan,
        Some("x0"),
        Some(&format!("netkit-cni/{}/{victim2}/eth0", net.name)),
    );
    net.gc(&node, &[&cid_live]).ok("GC");

    let mut left = vec![cid_live.clone(), victim1.clone(), victim2.clone()];
    left.sort();
    assert_eq!(
        reserved_for(&net),
        left,
        "only the orphan's own address is released; the forged identifiers never reach IPAM"
    );
    assert_eq!(
        pod_netkit(&live),
        vec!["eth0".to_string()],
        "the live pod keeps its device"
    );
    assert_eq!(
        pod_netkit(&orphan),
        Vec::<String>::new(),
        "the orphan's device is gone"
    );
    let left_queues: Vec<u64> = leases(&ynl, &node, &nic)
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    assert_eq!(
        left_queues, live_queues,
        "only the live pod's lease remains"
    );
    assert!(!net.info_path(&cid_orphan).exists());
    assert!(net.info_path(&cid_live).exists());
}

/// inspect names a single device's owner from the record describing its leases, not from the
/// alias the pod rewrote; a lessee no record describes is shown with its alias's claim marked
/// unverified. Before, inspect showed the forged owner as the owner.
#[test]
fn inspect_takes_single_owners_from_records_and_marks_an_alias_only_owner_unverified() {
    let (node, nic) = bed();
    let net = Net::new(
        "single",
        &nic,
        json!({"queues": 1, "allowedQueues": "1-6"}),
        None,
    );
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    let (cid_a, cid_b) = (unique("insa"), unique("insb"));
    net.add(&node, &cid_a, &a, "").ok("ADD a");
    net.add(&node, &cid_b, &b, "").ok("ADD b");
    let qa = net.info(&cid_a)["netkit-lease"]["queues"][0]["physical"]
        .as_u64()
        .unwrap();
    let qb = net.info(&cid_b)["netkit-lease"]["queues"][0]["physical"]
        .as_u64()
        .unwrap();
    tamper(
        &a,
        None,
        Some(&format!("netkit-cni/{}/forged-a/eth0", net.name)),
    );
    // b's record is gone (removed by whoever may write the device-info directory): only the
    // alias speaks for b's device.
    std::fs::remove_file(net.info_path(&cid_b)).unwrap();
    tamper(
        &b,
        None,
        Some(&format!("netkit-cni/{}/forged-b/eth0", net.name)),
    );

    let inspect = |json: bool| {
        let mut c = match node.netns() {
            Some(ns) => ns.cmd(plugin_bin().to_str().unwrap()),
            None => std::process::Command::new(plugin_bin()),
        };
        c.args(["inspect", "--master", &nic.name, "--device-info-dir"])
            .arg(&net.dir);
        if json {
            c.arg("--json");
        }
        let out = c.output().expect("run netkit-cni inspect");
        assert!(
            out.status.success(),
            "inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: Value = serde_json::from_str(&inspect(true)).unwrap();
    let queue = |id: u64| -> Value {
        report["nics"][0]["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["id"] == id)
            .unwrap_or_else(|| panic!("queue {id}: {report:#}"))
            .clone()
    };
    let la = &queue(qa)["lease"];
    assert_eq!(la["container_id"], cid_a.as_str(), "{la}");
    assert_eq!(la["network"], net.name.as_str(), "{la}");
    assert_eq!(la["owner_verified"], true, "{la}");
    let lb = &queue(qb)["lease"];
    assert_eq!(lb["container_id"], "forged-b", "{lb}");
    assert_eq!(lb["owner_verified"], false, "{lb}");
    let warnings = report["nics"][0]["warnings"].to_string();
    assert!(
        warnings.contains("forged-a") && warnings.contains("forged-b"),
        "{warnings}"
    );
    let text = inspect(false);
    let row = |id: u64| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("queue {id}:\n{text}"))
            .to_string()
    };
    assert!(row(qb).contains("leased (owner unverified)"), "{text}");
    assert!(
        !row(qa).contains("unverified") && row(qa).contains(&cid_a),
        "{text}"
    );
    net.del(&node, &cid_a, Some(&a)).ok("DEL a");
    net.del(&node, &cid_b, Some(&b)).ok("DEL b");
}
