//! AF_XDP into pods through leased NIC queues, end to end: the plugin binary attaches the
//! dispatcher to a netdevsim NIC, frames sent from a second netdevsim NIC wired to it arrive on
//! an AF_XDP socket bound *inside the pod* to the pod's netkit single device and virtual queue,
//! and leave the host stack alone; other queues keep the host path. The frames reach a pod because
//! they are addressed to its MAC and the plugin's steering (an ntuple rule per pod, the pool out
//! of the default RSS context) puts them on its leased queue; the far side never picks a TX
//! queue. Every kernel-side claim is
//! read back with an independent client (bpftool, ip, the file system). The wire, the network
//! and the pod sockets are tests/common/xdp.rs (shared with vm_dpdk).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::steering::*;
use common::xdp::*;
use common::*;
use serde_json::{json, Value};

const NIC_QUEUES: u32 = 6;

#[test]
fn frames_on_a_leased_queue_reach_the_pods_socket_and_other_queues_the_host() {
    let w = wire(NIC_QUEUES);
    let net = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let (pod1, pod2) = (Netns::new("pod"), Netns::new("pod"));
    net.call(&w, "ADD", "c1", Some(&pod1), "NETKIT_LEASE_QUEUE_IDS=2")
        .ok("ADD c1");
    net.call(&w, "ADD", "c2", Some(&pod2), "NETKIT_LEASE_QUEUE_IDS=3")
        .ok("ADD c2");
    let (i1, i2) = (net.info("c1"), net.info("c2"));
    assert_eq!(i1["queues"], json!([{"physical": 2, "virtual": 1}]));
    assert_eq!(i1["xdp"]["start-queue"], 1);
    assert!(
        i1["xdp"]["xsk-map"]
            .as_str()
            .unwrap()
            .starts_with(w.bpffs.path.to_str().unwrap()),
        "{i1}"
    );
    assert_ne!(
        i1["xdp"]["xsk-map"], i2["xdp"]["xsk-map"],
        "each pod has its own map"
    );

    // One dispatcher, one pinned link, on the NIC, as bpftool sees it.
    let xdp = w.bpftool_xdp();
    assert_eq!(xdp.len(), 1, "one XDP program on the NIC: {xdp:?}");
    let links = w.bpftool_xdp_links();
    assert_eq!(
        links.len(),
        1,
        "one XDP link runs the NIC's program: {:?}",
        all_links()
    );
    let pins: Vec<&str> = links[0]["pinned"]
        .as_array()
        .map(|p| p.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let ours = w.bpffs.path.join("netkit-cni");
    assert!(
        pins.iter()
            .any(|p| Path::new(p).starts_with(&ours) && p.ends_with("/link")),
        "the link is pinned in the NIC's directory under {}: {links:?}",
        ours.display()
    );

    // Steering, as Debian's ethtool sees it: each pod's MAC to its queue, the pool out of the
    // default RSS context.
    let (s1, s2) = (PodSocket::open(&pod1, &i1), PodSocket::open(&pod2, &i2));
    let (ip1, mac1) = w.reach(&pod1, "xsk0", 1);
    let (ip2, mac2) = w.reach(&pod2, "xsk0", 2);
    assert_mac_steered(&w.node, &w.nic.ifname, &mac1, &[2]);
    assert_mac_steered(&w.node, &w.nic.ifname, &mac2, &[3]);
    assert_pool_out_of_default_rss(&w.node, &w.nic.ifname, &[1, 2, 3, 4]);
    let host_pass = host_listener(&w.node, 5001);
    let host_leased = host_listener(&w.node, 5002);
    let before: Vec<_> = (0..NIC_QUEUES).map(|q| w.queue_stats(q)).collect();
    let ynl = Ynl::new();
    let nic_rx0 = rx_packets_per_queue(&ynl, Some(&w.node), w.nic.ifindex);

    // 32 flows to each pod's address and 32 to the node's, each flow on whatever TX queue the
    // far side's stack picks: only the NIC's steering decides where they land.
    let to1 = w.send_flows(&ip1, 5002, 32, 2, "c1");
    let to2 = w.send_flows(&ip2, 5003, 32, 2, "c2");
    let to_host = w.send_flows(NODE_IP, 5001, 32, 1, "host");

    let got1 = udp_payloads(&s1.receive(to1.len(), Duration::from_secs(30)));
    let got2 = udp_payloads(&s2.receive(to2.len(), Duration::from_secs(30)));
    assert_eq!(
        got1, to1,
        "c1's socket gets exactly the frames addressed to it, payloads intact, in order"
    );
    assert_eq!(got2, to2, "c2's socket gets exactly its own frames");
    let mut host = host_received(&host_pass);
    host.sort();
    let mut want_host = to_host.clone();
    want_host.sort();
    assert_eq!(
        host, want_host,
        "the node's own traffic keeps the host path (RSS over the queues outside the pool)"
    );
    // Where each frame arrived, by the dispatcher's per-queue counters: the pods' on their
    // leased queues (redirected, none passed to the host stack), the host's on queues outside
    // the pool, and nothing on the pool's unleased queues (RSS no longer reaches them).
    let after: Vec<_> = (0..NIC_QUEUES).map(|q| w.queue_stats(q)).collect();
    let d = |q: usize, f: fn(&netkit_cni::xdp::QueueStats) -> u64| f(&after[q]) - f(&before[q]);
    assert_eq!(
        (d(2, |s| s.redirect), d(2, |s| s.pass)),
        (to1.len() as u64, 0),
        "queue 2 (c1's) redirected every frame to c1 and passed none to the host stack"
    );
    assert_eq!(
        (d(3, |s| s.redirect), d(3, |s| s.pass)),
        (to2.len() as u64, 0),
        "queue 3 (c2's) likewise"
    );
    for q in [1, 4] {
        assert_eq!(
            after[q], before[q],
            "pool queue {q}, leased by nobody, received nothing: RSS keeps off the pool"
        );
    }
    let host_queues: u64 = [0, 5].iter().map(|&q| d(q, |s| s.pass)).sum();
    assert!(
        host_queues >= to_host.len() as u64,
        "the host's {} datagrams passed on queues 0 and 5 (counted {host_queues})",
        to_host.len()
    );
    // The same from the NIC's own per-queue counters (the kernel's qstats, through ynl).
    let nic_rx = rx_packets_per_queue(&ynl, Some(&w.node), w.nic.ifindex);
    let rx = |q: u32| nic_rx[&q] - nic_rx0[&q];
    assert_eq!(
        (rx(1), rx(2), rx(3), rx(4)),
        (0, to1.len() as u64, to2.len() as u64, 0),
        "per-queue RX counters of the NIC (qstats): c1's frames on 2, c2's on 3, none on the \
         unleased pool queues: {nic_rx0:?} -> {nic_rx:?}"
    );
    assert!(
        rx(0) + rx(5) >= to_host.len() as u64,
        "the host's datagrams arrived on queues 0 and 5: {nic_rx0:?} -> {nic_rx:?}"
    );
    assert!(
        host_received(&host_leased).is_empty(),
        "nothing else reached the node's stack"
    );
    // Nothing extra trickles in afterwards (e.g. the other pod's frames).
    for (name, s) in [("c1", &s1), ("c2", &s2)] {
        let extra = s.receive(1, Duration::from_secs(1));
        assert!(
            extra.is_empty(),
            "{name}'s socket got a frame it was not sent: {:02x?}",
            extra
        );
    }

    // CHECK agrees while it all holds.
    for (cid, pod) in [("c1", &pod1), ("c2", &pod2)] {
        let mut check = net.conf.clone();
        check["prevResult"] =
            json!({"cniVersion": "1.1.0", "interfaces": [{"name": "xsk0", "sandbox": pod.path()}]});
        let r = run_plugin(
            Some(&w.node),
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", pod.path().to_str().unwrap()),
                ("CNI_IFNAME", "xsk0"),
                ("CNI_PATH", CNI_PATH),
            ],
            &check.to_string(),
        );
        r.ok(&format!("CHECK {cid}"));
    }

    net.call(&w, "DEL", "c1", Some(&pod1), "").ok("DEL c1");
    assert_eq!(
        w.bpftool_xdp().len(),
        1,
        "c2 still receives: the dispatcher stays"
    );
    let rules = w.rules();
    assert!(
        rule_for_mac(&rules, &mac1).is_none(),
        "c1's rule went with its DEL: {rules:#?}"
    );
    assert!(
        !unicast_filter(Some(&w.node.name), &w.nic.ifname).contains(&mac1),
        "c1's MAC left the NIC's unicast filter"
    );
    assert_mac_steered(&w.node, &w.nic.ifname, &mac2, &[3]);
    assert!(
        !w.bpffs
            .plugin_entries()
            .iter()
            .any(|e| e.contains("/pods/c1")),
        "c1's map is unpinned: {:?}",
        w.bpffs.plugin_entries()
    );
    net.call(&w, "DEL", "c2", Some(&pod2), "").ok("DEL c2");
    assert!(
        w.bpftool_xdp().is_empty(),
        "no XDP on the NIC after the last DEL: {:?}",
        w.bpftool_xdp()
    );
    assert!(
        !all_links().iter().any(|l| l["id"] == links[0]["id"]),
        "link {} is gone",
        links[0]["id"]
    );
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "the NIC's bpffs directory is gone: {:?}",
        w.bpffs.plugin_entries()
    );
    assert_eq!(w.rules(), vec![], "no ntuple rule after the last DEL");
    assert!(
        unicast_filter(Some(&w.node.name), &w.nic.ifname).is_empty(),
        "no unicast filter entry after the last DEL"
    );
    // After the dispatcher is gone the node's stack still gets what is addressed to it.
    w.send(5002, payloads("after", 3));
    assert_eq!(host_received(&host_leased).len(), 3);
    let _ = &w.node_mac;
}

#[test]
fn parallel_adds_and_dels_on_one_nic_share_exactly_one_dispatcher() {
    const PODS: usize = 16;
    let w = wire(PODS as u32 + 2);
    let net = Arc::new(XdpNet::new(&w, json!({"queues": 1})));
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("pod")).collect();
    let w = Arc::new(w);
    let call_all = |command: &'static str| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (w, net, path) = (w.clone(), net.clone(), pod.path());
                let name = pod.name.clone();
                std::thread::spawn(move || {
                    let netns = path.display().to_string();
                    let r = run_plugin(
                        Some(&w.node),
                        &[
                            ("CNI_COMMAND", command),
                            ("CNI_CONTAINERID", &format!("p{i}")),
                            ("CNI_NETNS", &netns),
                            ("CNI_IFNAME", "xsk0"),
                            ("CNI_PATH", CNI_PATH),
                        ],
                        &net.conf.to_string(),
                    );
                    (name, r)
                })
            })
            .collect();
        for h in handles {
            let (name, r) = h.join().unwrap();
            r.ok(&format!("{command} in {name}"));
        }
    };
    call_all("ADD");
    assert_eq!(
        w.bpftool_xdp().len(),
        1,
        "one dispatcher: {:?}",
        w.bpftool_xdp()
    );
    assert_eq!(w.bpftool_xdp_links().len(), 1, "{:?}", all_links());
    let mut steered = std::collections::BTreeSet::new();
    for (i, pod) in pods.iter().enumerate().take(PODS) {
        let info = net.info(&format!("p{i}"));
        let q = info["queues"][0]["physical"].as_u64().unwrap();
        assert!(steered.insert(q), "queue {q} handed out twice");
        // Each pod's MAC is steered to its own queue, as ethtool reads it back.
        assert_mac_steered(
            &w.node,
            &w.nic.ifname,
            &Wire::pod_mac(pod, "xsk0"),
            &[q as u32],
        );
        assert!(
            Path::new(info["xdp"]["xsk-map"].as_str().unwrap()).exists(),
            "{info}"
        );
    }
    let link = w.bpftool_xdp_links()[0]["id"].clone();
    assert_eq!(
        w.rules().len(),
        PODS,
        "one ntuple rule per pod: {:#?}",
        w.rules()
    );
    call_all("DEL");
    assert_eq!(w.rules(), vec![], "no ntuple rule after the DELs");
    assert!(w.bpftool_xdp().is_empty(), "{:?}", w.bpftool_xdp());
    assert!(
        !all_links().iter().any(|l| l["id"] == link),
        "link {link} is gone"
    );
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "{:?}",
        w.bpffs.plugin_entries()
    );
}

#[test]
fn removing_the_nic_under_live_pods_leaves_del_and_gc_nothing_to_trip_on() {
    let mut w = wire(4);
    let net = XdpNet::new(&w, json!({"queues": 1}));
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "").ok("ADD");
    assert!(!w.bpffs.plugin_entries().is_empty());
    w.nic.remove();
    // The kernel deleted the lessee with its NIC; the pins are left for the plugin.
    net.call(&w, "DEL", "c1", Some(&pod), "")
        .ok("DEL after the NIC is gone");
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "DEL swept the dead NIC's pins: {:?}",
        w.bpffs.plugin_entries()
    );
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL again");
    let mut gc = net.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let r = run_plugin(
        Some(&w.node),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)],
        &gc.to_string(),
    );
    r.ok("GC");
}

/// Junk a pod planted in the plugin's bpffs directory for another NIC (a symlink where a NIC
/// directory of this netns would be) does not fail the DEL of a pod whose own NIC is gone: the
/// sweep removes the dead NIC's pins, leaves the junk (never following it) and reports it; GC
/// reports it too.
#[test]
fn a_del_whose_master_is_gone_sweeps_past_junk_in_another_nics_directory() {
    let mut w = wire(4);
    let net = XdpNet::new(&w, json!({"queues": 1}));
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "").ok("ADD");
    let cookie = w
        .node
        .run(|| netkit_cni::bpf::pins::current_netns_cookie().unwrap());
    let victim = std::env::temp_dir().join(unique("nkc-victim-"));
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let junk = w
        .bpffs
        .path
        .join("netkit-cni")
        .join(format!("netns{cookie}-if99999"));
    std::os::unix::fs::symlink(&victim, &junk).unwrap();
    w.nic.remove();
    net.call(&w, "DEL", "c1", Some(&pod), "")
        .ok("DEL after the NIC is gone, next to junk for another NIC");
    let left = w.bpffs.plugin_entries();
    assert!(
        left.contains(&format!("netns{cookie}-if99999"))
            && left
                .iter()
                .all(|e| e.starts_with(&format!("netns{cookie}-if99999"))),
        "the dead NIC's pins are swept, the junk is left as found: {left:?}"
    );
    assert!(std::fs::symlink_metadata(&junk)
        .unwrap()
        .file_type()
        .is_symlink());
    let mut gc = net.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let e = run_plugin(
        Some(&w.node),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)],
        &gc.to_string(),
    )
    .err("GC reports the junk");
    assert!(
        format!("{} {}", e["msg"], e["details"]).contains(&format!("netns{cookie}-if99999")),
        "{e}"
    );
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"keep me");
    let _ = std::fs::remove_file(&junk);
    let _ = std::fs::remove_dir_all(&victim);
}

/// A pod that can write bpffs leaves, in the directory of a NIC that has no dispatcher yet, a
/// 3000-deep tree under `pods/` and a subdirectory owned by uid 1000. The next ADD on that NIC
/// clears the directory before attaching: what cannot be removed is moved whole into
/// `<bpffs>/netkit-cni/attic/`, and ADD and DEL work (the clear used to fail, with EMFILE or on
/// the foreign owner, and every later ADD on the NIC with it).
#[test]
fn junk_a_pod_left_in_a_nics_directory_never_stops_its_adds() {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    use std::os::fd::AsFd;
    let w = wire(4);
    let net = XdpNet::new(&w, json!({"queues": 1}));
    let cookie = w
        .node
        .run(|| netkit_cni::bpf::pins::current_netns_cookie().unwrap());
    let plugin_dir = w.bpffs.path.join("netkit-cni");
    let nic_dir = plugin_dir.join(format!("netns{cookie}-if{}", w.nic.ifindex));
    std::fs::create_dir_all(nic_dir.join("pods/ghost/eth0")).unwrap();
    let mut fd = open(
        &nic_dir.join("pods/ghost/eth0"),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..3000 {
        mkdirat(fd.as_fd(), "d", Mode::from_bits_truncate(0o700)).unwrap();
        fd = openat(
            fd.as_fd(),
            "d",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    drop(fd);
    std::fs::create_dir(nic_dir.join("foreign")).unwrap();
    std::os::unix::fs::chown(nic_dir.join("foreign"), Some(1000), Some(1000)).unwrap();
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "")
        .ok("ADD on a NIC whose directory holds a pod's junk");
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL");
    let top: Vec<String> = std::fs::read_dir(&plugin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        top,
        ["attic"],
        "the NIC's directory is gone, the junk moved aside"
    );
    assert_eq!(
        std::fs::read_dir(plugin_dir.join("attic")).unwrap().count(),
        2,
        "the deep tree and the foreign directory, each moved whole"
    );
    assert!(w.bpftool_xdp().is_empty(), "the dispatcher is detached");
    assert!(
        run(&["rm", "-rf", plugin_dir.join("attic").to_str().unwrap()])
            .status
            .success()
    );
}

#[test]
fn bad_xdp_config_and_a_missing_bpffs_leave_nothing_behind() {
    let w = wire(4);
    let pod = Netns::new("pod");
    // A program pin outside bpffs: config error before anything is created.
    let mut net = XdpNet::new(&w, json!({"queues": 1}));
    net.conf["xdp"]["ranges"] =
        json!([{"queues": "0", "action": "program", "program": "/etc/passwd"}]);
    let e = net
        .call(&w, "ADD", "c1", Some(&pod), "")
        .err("program outside bpffs");
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("xdp.ranges[0]"), "{e}");
    // bpffs not mounted where the config says: the XDP step fails, and everything is undone.
    let mut net = XdpNet::new(&w, json!({"queues": 1}));
    let plain = std::env::temp_dir().join(unique("nkc-notbpf-"));
    std::fs::create_dir(&plain).unwrap();
    net.conf["xdp"]["bpffs"] = json!(plain);
    net.conf["xdp"]["ranges"] = json!([]);
    let e = net
        .call(&w, "ADD", "c1", Some(&pod), "")
        .err("bpffs not mounted");
    assert_eq!(e["code"], 110, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("not a bpf file system"),
        "{e}"
    );
    let netkit: Vec<Value> = pod
        .links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .collect();
    assert!(
        netkit.is_empty(),
        "the pod device was rolled back: {netkit:?}"
    );
    let leased = Ynl::new()
        .queue_dump(&w.node, w.nic.ifindex)
        .into_iter()
        .filter(|q| q.get("lease").is_some())
        .count();
    assert_eq!(leased, 0, "no lease left");
    assert_eq!(w.rules(), vec![], "no ntuple rule left");
    assert!(
        std::fs::read_dir(&plain).unwrap().next().is_none(),
        "nothing written into the non-bpffs directory"
    );
    assert!(w.bpftool_xdp().is_empty());
    let _ = std::fs::remove_dir_all(&plain);
}

/// A pod that can write to bpffs plants a symlink where a NIC directory of this node's netns
/// would be, pointing at a host directory. GC (which sweeps dead NICs' directories) must refuse
/// the entry with an error naming it (code 110 for XDP steps; GC reports its failures), and
/// delete nothing through it.
#[test]
fn a_symlink_planted_in_the_plugins_bpffs_directory_is_refused_and_its_target_survives() {
    let w = wire(2);
    let net = XdpNet::new(&w, json!({"queues": 1}));
    let victim = std::env::temp_dir().join(unique("nkc-victim-"));
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let cookie = w
        .node
        .run(|| netkit_cni::bpf::pins::current_netns_cookie().unwrap());
    let plugin_dir = w.bpffs.path.join("netkit-cni");
    std::fs::create_dir(&plugin_dir).unwrap();
    let planted = plugin_dir.join(format!("netns{cookie}-if999"));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let mut gc = net.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let r = run_plugin(
        Some(&w.node),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)],
        &gc.to_string(),
    );
    let e = r.err("GC over a planted symlink");
    let msg = format!("{} {}", e["msg"], e["details"]);
    assert!(
        msg.contains(&format!("netns{cookie}-if999")) && msg.contains("symbolic link"),
        "the error names the entry: {e}"
    );
    assert_eq!(
        std::fs::read(victim.join("precious")).unwrap(),
        b"keep me",
        "nothing deleted through the link"
    );
    assert!(
        std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the entry is left as found"
    );
    // An ADD on the same node still works: the planted entry is not a directory ADD needs.
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "")
        .ok("ADD next to a planted symlink");
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL");
    assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"keep me");
    let _ = std::fs::remove_file(&planted);
    let _ = std::fs::remove_dir_all(&victim);
}

/// XDP pins are keyed by container id and ifname: network A's ADD is refused with 103 because
/// network B's device holds that ifname in the pod, and A's DEL (which the runtime sends after a
/// failed ADD) must leave B's steering and map alone.
#[test]
fn a_del_for_another_network_leaves_the_owners_steering_alone() {
    use netkit_cni::xdp::{Dispatcher, DispatcherOptions, QueueAction};
    let w = wire(4);
    let b = XdpNet::new(&w, json!({"queues": 1}));
    let a = XdpNet::new(&w, json!({"queues": 1}));
    let pod = Netns::new("pod");
    b.call(&w, "ADD", "c1", Some(&pod), "")
        .ok("ADD for network B");
    let e = a
        .call(&w, "ADD", "c1", Some(&pod), "")
        .err("ADD for network A, same ifname");
    assert_eq!(e["code"], 103, "{e}");
    a.call(&w, "DEL", "c1", Some(&pod), "")
        .ok("DEL for network A");
    let info = b.info("c1");
    let q = info["queues"][0]["physical"].as_u64().unwrap() as u32;
    let map = PathBuf::from(info["xdp"]["xsk-map"].as_str().unwrap());
    assert!(
        map.exists(),
        "B's XSKMAP pin {} survived A's DEL",
        map.display()
    );
    let (bpffs, ifindex) = (w.bpffs.path.clone(), w.nic.ifindex);
    let action = w.node.run(move || {
        let opts = DispatcherOptions {
            bpffs,
            ..Default::default()
        };
        let d = Dispatcher::open(&opts, ifindex)
            .unwrap()
            .expect("the dispatcher is still attached");
        d.queue_status(q).unwrap().action
    });
    assert_eq!(
        action,
        QueueAction::Pod,
        "B's queue {q} is still steered to its pod"
    );
    // And the NIC still steers B's MAC to that queue.
    assert_mac_steered(&w.node, &w.nic.ifname, &Wire::pod_mac(&pod, "xsk0"), &[q]);
    b.call(&w, "DEL", "c1", Some(&pod), "")
        .ok("DEL for network B");
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "{:?}",
        w.bpffs.plugin_entries()
    );
}

/// `xdp.podMap` gives the pod's XSKMAP pin (only it) an owner, group and mode, so a launcher
/// that is not root can open `map-path`; the directories on the way become searchable (0711),
/// the dispatcher's own pins stay root 0600.
#[test]
fn pod_map_owner_group_and_mode_apply_to_the_pods_pin_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = wire(4);
    let mut net = XdpNet::new(&w, json!({"queues": 1}));
    net.conf["xdp"]["podMap"] = json!({"uid": 107, "gid": 108, "mode": "0640"});
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "")
        .ok("ADD with podMap");
    let map = PathBuf::from(net.info("c1")["xdp"]["xsk-map"].as_str().unwrap());
    let md = std::fs::metadata(&map).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (107, 108, 0o640),
        "{}",
        map.display()
    );
    let mut dir = map.parent().unwrap();
    while dir != w.bpffs.path {
        let md = std::fs::metadata(dir).unwrap();
        assert_eq!(
            (md.uid(), md.permissions().mode() & 0o777),
            (0, 0o711),
            "{}",
            dir.display()
        );
        dir = dir.parent().unwrap();
    }
    let nic_dir = map.ancestors().nth(4).unwrap().to_path_buf();
    for own in ["link", "queues", "pod_xsks", "programs", "stats"] {
        let md = std::fs::metadata(nic_dir.join(own)).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.permissions().mode() & 0o777),
            (0, 0, 0o600),
            "{own}"
        );
    }
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL");
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "{:?}",
        w.bpffs.plugin_entries()
    );
}
