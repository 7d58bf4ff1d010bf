//! `netkit-cni inspect` against what independent clients see: a netdevsim NIC with 8 RX queues
//! in a throwaway node netns, two pods leasing queues through the plugin's ADD (one `single`,
//! one `pair`), a third, foreign lessee leased by hand with the kernel's ynl, and the XDP
//! dispatcher attached on the NIC through the library with one pod's queue steered to it. The
//! report must agree with ynl's `queue-get` dump (every queue's lease) and with bpftool (the XDP
//! link and program on the NIC); after DEL every queue must be free again.

mod common;

use std::path::PathBuf;

use common::*;
use netkit_cni::xdp::{Dispatcher, DispatcherOptions, PodId, QueueRanges};
use serde_json::{json, Value};

/// A leasing network with private device-info (and, for pairs, IPAM) directories.
struct Net {
    conf: Value,
    dirs: Vec<PathBuf>,
}

impl Net {
    fn new(pairing: &str, master: &str, queue_ids: &[u32], subnet: Option<&str>) -> Net {
        let info = std::env::temp_dir().join(unique("nkc-devinfo-"));
        let ipam = std::env::temp_dir().join(unique("nkc-ipam-"));
        // Every lease steers: the pool out of the default RSS context; a pair's address, a
        // single device's MAC (mode l2) to the pod's queues.
        let matching = if pairing == "pair" { "ip" } else { "mac" };
        let mut conf = json!({
            "cniVersion": "1.1.0", "name": unique("inet"), "type": "netkit-cni", "pairing": pairing,
            "lease": {"master": master, "queueIds": queue_ids, "allowedQueues": "1-6", "deviceInfoDir": info,
                      "steering": common::steering::steering(matching)},
        });
        if pairing == "single" {
            conf["mode"] = json!("l2");
        }
        if let Some(s) = subnet {
            conf["ipam"] = json!({"type": "host-local", "subnet": s, "dataDir": ipam});
        }
        Net {
            conf,
            dirs: vec![info, ipam],
        }
    }

    fn name(&self) -> &str {
        self.conf["name"].as_str().unwrap()
    }

    fn call(&self, node: &Netns, command: &str, cid: &str, pod: &Netns) -> PluginRun {
        let netns = pod.path();
        run_plugin(
            Some(node),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns.to_str().unwrap()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", CNI_PATH),
            ],
            &self.conf.to_string(),
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The one NIC of the report, by name.
fn nic_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    let nics = report["nics"].as_array().unwrap();
    assert_eq!(
        nics.len(),
        1,
        "only the netdevsim NIC has leases or a dispatcher: {report:#}"
    );
    assert_eq!(nics[0]["name"], name, "{report:#}");
    &nics[0]
}

/// Every RX queue of the NIC in the report agrees with ynl's queue-get dump: same ids, and each
/// lease (lessee ifindex, netns-id, virtual queue) or its absence.
fn assert_agrees_with_ynl(ynl: &Ynl, node: &Netns, nic: &Value, ifindex: u32) -> Vec<Value> {
    let dump: Vec<Value> = ynl
        .queue_dump(node, ifindex)
        .into_iter()
        .filter(|q| q["type"] == "rx")
        .collect();
    let queues = nic["queues"].as_array().unwrap();
    assert_eq!(nic["rx_queues"], dump.len(), "{nic:#}");
    assert_eq!(
        queues.len(),
        dump.len(),
        "one entry per real RX queue: {nic:#}"
    );
    for k in &dump {
        let id = k["id"].as_u64().unwrap();
        let q = queues
            .iter()
            .find(|q| q["id"] == id)
            .unwrap_or_else(|| panic!("queue {id} missing: {nic:#}"));
        match k.get("lease") {
            None => {
                assert_eq!(q["state"], "free", "queue {id}: ynl {k}, inspect {q}");
                assert_eq!(q["lease"], Value::Null, "queue {id}");
            }
            Some(l) => {
                assert_ne!(q["state"], "free", "queue {id}: ynl {k}, inspect {q}");
                assert_eq!(
                    q["lease"]["ifindex"], l["ifindex"],
                    "queue {id}: ynl {k}, inspect {q}"
                );
                assert_eq!(
                    q["lease"]["netns_id"],
                    l.get("netns-id").cloned().unwrap_or(Value::Null),
                    "queue {id}: ynl {k}, inspect {q}"
                );
                assert_eq!(
                    q["lease"]["vqueue"], l["queue"]["id"],
                    "queue {id}: ynl {k}, inspect {q}"
                );
            }
        }
    }
    dump
}

fn queue(nic: &Value, id: u32) -> &Value {
    nic["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id)
        .unwrap_or_else(|| panic!("no queue {id}: {nic:#}"))
}

#[test]
fn inspect_agrees_with_ynl_and_bpftool_then_shows_everything_free_after_del() {
    require_privileged_kernel();
    let ynl = Ynl::new();
    let node = Netns::new("node");
    let sim = Netdevsim::new(&node, 8);
    let bpffs = Bpffs::new();
    let (pod_a, pod_b, other) = (Netns::new("pod"), Netns::new("pod"), Netns::new("oth"));
    let (cid_a, cid_b) = (unique("inspa"), unique("inspb"));

    // Nothing leased, no dispatcher: the NIC is not even listed, unless asked for by name.
    let empty = inspect_json(&node, &["--bpffs", bpffs.path.to_str().unwrap()]);
    assert_eq!(empty["nics"], json!([]), "{empty:#}");
    assert_eq!(empty["bpffs_mounted"], true);
    let one = inspect(
        &node,
        &[
            "--json",
            "--master",
            &sim.ifname,
            "--bpffs",
            bpffs.path.to_str().unwrap(),
        ],
    );
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    let nic = nic_of(&one, &sim.ifname);
    assert_eq!(nic["dispatcher"], Value::Null);
    assert_agrees_with_ynl(&ynl, &node, nic, sim.ifindex);
    let missing = unique("nx");
    let out = inspect(&node, &["--master", &missing]);
    assert_eq!(out.status.code(), Some(1), "a missing --master is an error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&missing),
        "the error names it: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pod A: a single device leasing queues 2 and 3; pod B: a pair leasing queue 5.
    let net_a = Net::new("single", &sim.ifname, &[2, 3], None);
    let net_b = Net::new("pair", &sim.ifname, &[5], Some("10.74.0.0/24"));
    net_a.call(&node, "ADD", &cid_a, &pod_a).ok("ADD single");
    net_b.call(&node, "ADD", &cid_b, &pod_b).ok("ADD pair");
    // A foreign lessee: an unmarked netkit single device in another netns, leased queue 7 by hand.
    let foreign = unique("nkf");
    ynl.call(
        Some(&other),
        "rt-link",
        "--do",
        "newlink",
        Some(&json!({"ifname": foreign, "num-rx-queues": 2, "linkinfo": {"kind": "netkit", "data": {"pairing": "single", "mode": "l3"}}})),
        &["--create", "--excl"],
    )
    .unwrap_or_else(|e| panic!("create the foreign netkit device: {e}"));
    let foreign_idx = other.ifindex(&foreign);
    let lease = json!({"ifindex": foreign_idx, "type": "rx",
        "lease": {"ifindex": sim.ifindex, "queue": {"id": 7, "type": "rx"}, "netns-id": other.nsid_of(&node)}});
    ynl.call(
        Some(&other),
        "netdev",
        "--do",
        "queue-create",
        Some(&lease),
        &[],
    )
    .unwrap_or_else(|e| panic!("foreign queue-create: {e}"));

    // The dispatcher, attached through the library inside the node netns, steering queue 2 to
    // pod A at the virtual queue its lease has.
    let vq2 = ynl.queue_get(&node, sim.ifindex, 2)["lease"]["queue"]["id"]
        .as_u64()
        .unwrap() as u32;
    let (bpffs_path, ifindex, pod) = (
        bpffs.path.clone(),
        sim.ifindex,
        PodId::new(&cid_a, "eth0").unwrap(),
    );
    let (link_id, prog_id) = node.run(move || {
        let opts = DispatcherOptions {
            bpffs: bpffs_path,
            ..DispatcherOptions::default()
        };
        let (d, _) = Dispatcher::attach_or_open(&opts, ifindex, &QueueRanges::all_pass())
            .expect("attach the dispatcher");
        d.set_queue_pod(2, &pod, vq2)
            .expect("steer queue 2 to pod A");
        (d.link_id().unwrap(), d.program_id().unwrap())
        // Dropped here: inspect takes the NIC lock itself.
    });

    let report = inspect_json(&node, &["--bpffs", bpffs.path.to_str().unwrap()]);
    let nic = nic_of(&report, &sim.ifname);
    assert_eq!(nic["ifindex"], sim.ifindex);
    assert_eq!(nic["rx_queues"], 8, "{nic:#}");
    let dump = assert_agrees_with_ynl(&ynl, &node, nic, sim.ifindex);
    let leased: Vec<u64> = dump
        .iter()
        .filter(|q| q.get("lease").is_some())
        .map(|q| q["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leased, [2, 3, 5, 7], "ynl: {dump:?}");

    for id in [2, 3] {
        let l = &queue(nic, id)["lease"];
        assert_eq!(queue(nic, id)["state"], "leased", "{nic:#}");
        assert_eq!(l["container_id"], cid_a.as_str(), "{l}");
        assert_eq!(l["network"], net_a.name(), "{l}");
        assert_eq!(
            (&l["ifname"], &l["pairing"], &l["host_ifname"]),
            (&json!("eth0"), &json!("single"), &Value::Null),
            "{l}"
        );
        assert_eq!(l["ifindex"], pod_a.ifindex("eth0"), "{l}");
        assert_eq!(l["netns_id"], node.nsid_of(&pod_a), "{l}");
    }
    let l = &queue(nic, 5)["lease"];
    assert_eq!(queue(nic, 5)["state"], "leased", "{nic:#}");
    assert_eq!(
        (&l["container_id"], &l["network"]),
        (&json!(cid_b), &json!(net_b.name())),
        "{l}"
    );
    assert_eq!(
        (&l["ifname"], &l["pairing"]),
        (&json!("eth0"), &json!("pair")),
        "{l}"
    );
    let host_side = node
        .links()
        .into_iter()
        .find(|x| x["ifalias"].as_str().is_some_and(|a| a.contains(&cid_b)))
        .expect("pod B's host device");
    assert_eq!(l["host_ifname"], host_side["ifname"], "{l}");
    assert_eq!(l["ifindex"], pod_b.ifindex("eth0"), "{l}");
    let f = queue(nic, 7);
    assert_eq!(f["state"], "foreign", "{f}");
    assert_eq!(
        (&f["lease"]["ifname"], &f["lease"]["container_id"]),
        (&json!(foreign), &Value::Null),
        "{f}"
    );

    // The dispatcher against bpftool: the XDP program on the NIC (netlink) and the link.
    let d = &nic["dispatcher"];
    assert_eq!(
        (&d["link_id"], &d["program_id"]),
        (&json!(link_id), &json!(prog_id)),
        "{d:#}"
    );
    let net: Value = serde_json::from_slice(
        &node
            .cmd("bpftool")
            .args(["-j", "net", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let xdp = net[0]["xdp"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["devname"] == sim.ifname.as_str())
        .unwrap_or_else(|| panic!("bpftool net show has no XDP on the NIC: {net}"))
        .clone();
    assert_eq!(xdp["id"], d["program_id"], "bpftool net show: {xdp}");
    let mode = match xdp["mode"].as_str() {
        Some("driver") => "native",
        Some("generic") => "generic",
        Some("offload") => "offload",
        other => panic!("bpftool mode {other:?}: {xdp}"),
    };
    assert_eq!(
        (&d["mode"], &nic["xdp"]["mode"]),
        (&json!(mode), &json!(mode)),
        "{nic:#}"
    );
    assert_eq!(nic["xdp"]["prog_id"], d["program_id"]);
    let links: Value = serde_json::from_str(&sh(&["bpftool", "-j", "link", "show"])).unwrap();
    let link = links
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == d["link_id"])
        .unwrap_or_else(|| panic!("bpftool link show lacks link {}: {links}", d["link_id"]));
    assert_eq!(
        (&link["type"], &link["prog_id"]),
        (&json!("xdp"), &d["program_id"]),
        "bpftool link show: {link}"
    );
    // Debian bookworm's bpftool does not print an XDP link's device; newer ones do.
    if let Some(i) = link.get("ifindex") {
        assert_eq!(i, &json!(sim.ifindex), "bpftool link show: {link}");
    }

    // Pins, and the dispatcher's view of each queue.
    let pins = d["pins"].as_array().unwrap();
    let pin = |p: &str| {
        pins.iter()
            .find(|x| x["path"] == p)
            .unwrap_or_else(|| panic!("no pin {p}: {pins:?}"))
    };
    assert_eq!(
        (&pin("link")["kind"], &pin("link")["id"]),
        (&json!("link"), &json!(link_id))
    );
    for m in ["queues", "pod_xsks", "programs", "stats"] {
        assert_eq!(pin(m)["kind"], "map");
    }
    let xsks = pin(&format!("pods/{cid_a}/eth0/xsks"));
    assert_eq!(xsks["kind"], "map");
    assert!(xsks["id"].is_u64(), "{xsks}");
    assert_eq!(
        queue(nic, 2)["dispatch"],
        json!({"action": "pod", "range_action": "pass", "vqueue": vq2, "xskmap_id": xsks["id"], "pod": format!("{cid_a}/eth0")})
    );
    for id in [0, 1, 3, 4, 5, 6, 7] {
        assert_eq!(
            queue(nic, id)["dispatch"]["action"],
            "pass",
            "queue {id}: {nic:#}"
        );
    }

    // The table names both containers, the foreign lessee and the dispatcher.
    let out = inspect(&node, &["--bpffs", bpffs.path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    for want in [
        cid_a.as_str(),
        cid_b.as_str(),
        sim.ifname.as_str(),
        foreign.as_str(),
        "leased (not netkit-cni)",
        &format!("XDP link {link_id}, program {prog_id}"),
    ] {
        assert!(text.contains(want), "human output lacks {want:?}:\n{text}");
    }

    // DEL both pods and drop the foreign lessee: every queue is free again.
    net_a.call(&node, "DEL", &cid_a, &pod_a).ok("DEL single");
    net_b.call(&node, "DEL", &cid_b, &pod_b).ok("DEL pair");
    other.ip(&["link", "del", &foreign]);
    let (bpffs_path, pod) = (bpffs.path.clone(), PodId::new(&cid_a, "eth0").unwrap());
    node.run(move || {
        let opts = DispatcherOptions {
            bpffs: bpffs_path,
            ..DispatcherOptions::default()
        };
        let d = Dispatcher::open(&opts, ifindex)
            .unwrap()
            .expect("still attached");
        assert_eq!(d.release_pod(&pod).unwrap(), [2]);
    });
    let after = inspect_json(&node, &["--bpffs", bpffs.path.to_str().unwrap()]);
    let nic = nic_of(&after, &sim.ifname);
    let dump = assert_agrees_with_ynl(&ynl, &node, nic, sim.ifindex);
    assert!(
        dump.iter().all(|q| q.get("lease").is_none()),
        "ynl: {dump:?}"
    );
    for q in nic["queues"].as_array().unwrap() {
        assert_eq!(
            (&q["state"], &q["lease"], &q["dispatch"]["action"]),
            (&json!("free"), &Value::Null, &json!("pass")),
            "{q}"
        );
    }
    assert!(
        !nic["dispatcher"]["pins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"].as_str().unwrap().starts_with("pods/")),
        "{nic:#}"
    );
    let text = String::from_utf8(inspect(&node, &["--bpffs", bpffs.path.to_str().unwrap()]).stdout)
        .unwrap();
    println!("{text}");
    assert!(!text.contains(&cid_a) && !text.contains(&cid_b), "{text}");

    let bpffs_path = bpffs.path.clone();
    node.run(move || {
        let opts = DispatcherOptions {
            bpffs: bpffs_path,
            ..DispatcherOptions::default()
        };
        let d = Dispatcher::open(&opts, ifindex)
            .unwrap()
            .expect("still attached");
        assert!(matches!(
            d.detach_if_unused().unwrap(),
            netkit_cni::xdp::DetachOutcome::Detached
        ));
    });
}
