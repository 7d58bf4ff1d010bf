//! The real binary driven the way a runtime drives it, against the real kernel (in the VM) and
//! Debian's host-local IPAM: every spec version end to end, and the edge cases of DEL, CHECK,
//! GC and rollback. Each test owns its node netns, pod netns and IPAM data directory.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Netkit devices in a netns.
fn netkit_links(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn ping(from: &Netns, to: &str) -> bool {
    from.cmd("ping")
        .args(["-c", "1", "-W", "3", to])
        .output()
        .unwrap()
        .status
        .success()
}

/// The pod's first IPv4 address and its gateway, from an ADD result.
fn pod_ip(result: &Value) -> (String, String) {
    let ip = &result["ips"][0];
    let addr = ip["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    (addr, ip["gateway"].as_str().unwrap().to_string())
}

fn assert_nothing_left(node: &Netns, pod: Option<&Netns>, net: &CniNet, pod_addr: &str) {
    assert_eq!(
        netkit_links(node),
        Vec::<String>::new(),
        "netkit devices left in the node netns"
    );
    if let Some(pod) = pod {
        assert_eq!(
            netkit_links(pod),
            Vec::<String>::new(),
            "netkit devices left in the pod netns"
        );
    }
    let routes = node.ip(&["route", "show", pod_addr]);
    assert!(
        routes.trim().is_empty(),
        "host route to {pod_addr} left: {routes}"
    );
    assert_eq!(
        net.reserved(),
        Vec::<String>::new(),
        "host-local still holds addresses"
    );
}

#[test]
fn add_ping_check_del_for_every_spec_version() {
    require_privileged_kernel();
    for (i, version) in VERSIONS.iter().enumerate() {
        let node = Netns::new("node");
        let pod = Netns::new("pod");
        let net = CniNet::new(&format!("10.{}.0.0/24", 40 + i));
        let conf = net.conf(version, json!({}));
        let cid = unique("c");

        let add = net
            .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
            .ok(&format!("ADD {version}"));
        let result = add.json();
        assert_eq!(
            result["cniVersion"], *version,
            "result must be in the caller's version: {result}"
        );
        let itfs = result["interfaces"].as_array().unwrap();
        assert_eq!(itfs.len(), 2, "{result}");
        assert!(
            itfs[0].get("sandbox").is_none(),
            "host side has no sandbox: {result}"
        );
        assert_eq!(itfs[1]["name"], "eth0");
        assert_eq!(itfs[1]["sandbox"], pod.path().to_str().unwrap());
        let has_version_field = result["ips"][0].get("version").is_some();
        assert_eq!(
            has_version_field,
            version.starts_with("0."),
            "ips[].version only before 1.0.0: {result}"
        );
        let host_dev = itfs[0]["name"].as_str().unwrap();
        assert_eq!(netkit_links(&node), vec![host_dev.to_string()]);
        assert_eq!(netkit_links(&pod), vec!["eth0".to_string()]);

        let (addr, gw) = pod_ip(&result);
        assert_eq!(net.reserved(), vec![addr.clone()]);
        assert!(
            ping(&node, &addr),
            "{version}: node cannot ping the pod at {addr}"
        );
        assert!(
            ping(&pod, &gw),
            "{version}: pod cannot ping its gateway {gw} on the host side"
        );

        if *version != "0.3.0" && *version != "0.3.1" {
            let mut check = conf.clone();
            check["prevResult"] = result.clone();
            net.call(&node, "CHECK", &cid, Some(&pod.path()), "eth0", &check)
                .ok(&format!("CHECK {version}"));
        }

        net.call(&node, "DEL", &cid, Some(&pod.path()), "eth0", &conf)
            .ok(&format!("DEL {version}"));
        assert_nothing_left(&node, Some(&pod), &net, &addr);
        // DEL again: idempotent.
        net.call(&node, "DEL", &cid, Some(&pod.path()), "eth0", &conf)
            .ok(&format!("second DEL {version}"));
    }
}

#[test]
fn del_succeeds_when_the_netns_is_already_gone() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let net = CniNet::new("10.50.0.0/24");
    let conf = net.conf("1.0.0", json!({}));
    let cid = unique("c");
    let result = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
        .ok("ADD")
        .json();
    let (addr, _) = pod_ip(&result);
    let path = pod.path();
    drop(pod);
    // Deleting the netns takes the peer and, with it, the host side.
    net.call(&node, "DEL", &cid, Some(&path), "eth0", &conf)
        .ok("DEL with the netns gone");
    net.call(&node, "DEL", &cid, None, "eth0", &conf)
        .ok("DEL with CNI_NETNS unset");
    assert_nothing_left(&node, None, &net, &addr);
}

#[test]
fn second_add_on_the_same_ifname_fails_and_keeps_the_first() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let net = CniNet::new("10.51.0.0/24");
    let conf = net.conf("1.0.0", json!({}));
    let cid = unique("c");
    let result = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
        .ok("ADD")
        .json();
    let (addr, _) = pod_ip(&result);
    let err = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
        .err("second ADD");
    assert!(err["code"].as_u64().unwrap() >= 100, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("already exists"),
        "{err}"
    );
    assert_eq!(
        net.reserved(),
        vec![addr.clone()],
        "the first attachment's address must stay reserved"
    );
    assert!(ping(&node, &addr), "the first attachment must still work");
    net.call(&node, "DEL", &cid, Some(&pod.path()), "eth0", &conf)
        .ok("DEL");
    assert_nothing_left(&node, Some(&pod), &net, &addr);
}

#[test]
fn check_fails_naming_a_removed_route_and_a_removed_address() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let net = CniNet::new("10.52.0.0/24");
    let conf = net.conf("1.0.0", json!({}));
    let cid = unique("c");
    let result = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
        .ok("ADD")
        .json();
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    net.call(&node, "CHECK", &cid, Some(&pod.path()), "eth0", &check)
        .ok("CHECK before");

    pod.ip(&["route", "del", "default"]);
    let err = net
        .call(&node, "CHECK", &cid, Some(&pod.path()), "eth0", &check)
        .err("CHECK without the default route");
    assert!(
        err["msg"].as_str().unwrap().contains("0.0.0.0/0"),
        "must name the missing route: {err}"
    );

    let (addr, _) = pod_ip(&result);
    pod.ip(&["addr", "del", &format!("{addr}/24"), "dev", "eth0"]);
    let err = net
        .call(&node, "CHECK", &cid, Some(&pod.path()), "eth0", &check)
        .err("CHECK without the address");
    assert!(
        err["msg"].as_str().unwrap().contains(&addr),
        "must name the missing address: {err}"
    );
    net.call(&node, "DEL", &cid, Some(&pod.path()), "eth0", &conf)
        .ok("DEL");
}

#[test]
fn gc_removes_an_orphan_and_keeps_a_live_pod() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let live = Netns::new("pod");
    let orphan = Netns::new("pod");
    let net = CniNet::new("10.53.0.0/24");
    let conf = net.conf("1.1.0", json!({}));
    let (cid_live, cid_orphan) = (unique("live"), unique("orphan"));
    let r_live = net
        .call(&node, "ADD", &cid_live, Some(&live.path()), "eth0", &conf)
        .ok("ADD live")
        .json();
    let r_orphan = net
        .call(
            &node,
            "ADD",
            &cid_orphan,
            Some(&orphan.path()),
            "eth0",
            &conf,
        )
        .ok("ADD orphan")
        .json();
    let (live_addr, _) = pod_ip(&r_live);
    let (orphan_addr, _) = pod_ip(&r_orphan);
    assert_eq!(net.reserved().len(), 2);

    let gc = net.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": cid_live, "ifname": "eth0"}]}),
    );
    net.call(&node, "GC", "", None, "", &gc).ok("GC");
    assert_eq!(
        netkit_links(&orphan),
        Vec::<String>::new(),
        "orphan's device must be gone"
    );
    assert_eq!(
        netkit_links(&live),
        vec!["eth0".to_string()],
        "live pod must keep its device"
    );
    assert_eq!(
        net.reserved(),
        vec![live_addr.clone()],
        "only the orphan's address is released"
    );
    assert!(!net.reserved().contains(&orphan_addr));
    assert!(ping(&node, &live_addr), "live pod still reachable after GC");
    net.call(&node, "DEL", &cid_live, Some(&live.path()), "eth0", &conf)
        .ok("DEL live");
    assert_nothing_left(&node, Some(&live), &net, &live_addr);
}

#[test]
fn failures_after_ipam_leave_nothing_behind() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let net = CniNet::new("10.54.0.0/24");
    let cid = unique("c");

    // 1. The device cannot be created: the pod already has an eth0 (after IPAM allocated).
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ]);
    let conf = net.conf("1.0.0", json!({}));
    let err = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
        .err("ADD onto an existing eth0");
    assert!(err["msg"].as_str().unwrap().contains("eth0"), "{err}");
    assert_eq!(netkit_links(&node), Vec::<String>::new());
    assert_eq!(
        net.reserved(),
        Vec::<String>::new(),
        "IPAM reservation must be rolled back"
    );
    pod.ip(&["link", "del", "eth0"]);

    // 2. The device exists, then the pod's routes cannot be installed (a route via an
    //    unreachable gateway): the device and the reservation must both go.
    let mut conf = net.conf("1.0.0", json!({}));
    conf["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "192.0.2.1"}]);
    let err = net
        .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
        .err("ADD with an unreachable route");
    assert!(err["msg"].as_str().unwrap().contains("route"), "{err}");
    assert_eq!(
        netkit_links(&node),
        Vec::<String>::new(),
        "host device must be rolled back"
    );
    assert_eq!(
        netkit_links(&pod),
        Vec::<String>::new(),
        "pod device must be rolled back"
    );
    assert_eq!(
        net.reserved(),
        Vec::<String>::new(),
        "IPAM reservation must be rolled back"
    );
    // A following DEL and GC succeed.
    net.call(&node, "DEL", &cid, Some(&pod.path()), "eth0", &conf)
        .ok("DEL after failed ADD");
    let gc = net.conf("1.1.0", json!({"cni.dev/valid-attachments": []}));
    net.call(&node, "GC", "", None, "", &gc)
        .ok("GC after failed ADD");
}

#[test]
fn twenty_add_del_cycles_leave_no_device_and_no_reservation() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let net = CniNet::new("10.55.0.0/24");
    let conf = net.conf("1.0.0", json!({}));
    for i in 0..20 {
        let cid = unique("cycle");
        let r = net
            .call(&node, "ADD", &cid, Some(&pod.path()), "eth0", &conf)
            .ok(&format!("ADD #{i}"))
            .json();
        assert!(r["ips"][0]["address"].is_string());
        net.call(&node, "DEL", &cid, Some(&pod.path()), "eth0", &conf)
            .ok(&format!("DEL #{i}"));
    }
    assert_eq!(netkit_links(&node), Vec::<String>::new());
    assert_eq!(netkit_links(&pod), Vec::<String>::new());
    assert_eq!(net.reserved(), Vec::<String>::new());
}

#[test]
fn status_reports_netkit_available() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let net = CniNet::new("10.56.0.0/24");
    let conf = net.conf("1.1.0", json!({}));
    net.call(&node, "STATUS", "", None, "", &conf).ok("STATUS");
    assert_eq!(
        netkit_links(&node),
        Vec::<String>::new(),
        "the probe must not leave a device"
    );
}

#[test]
fn netns_that_is_a_regular_file_is_code_4_and_leaves_nothing() {
    require_privileged_kernel();
    let node = Netns::new("node");
    let net = CniNet::new("10.57.0.0/24");
    let conf = net.conf("1.0.0", json!({}));
    let file = std::env::temp_dir().join(unique("notns"));
    std::fs::write(&file, b"").unwrap();
    let err = net
        .call(
            &node,
            "ADD",
            &unique("c"),
            Some(Path::new(&file)),
            "eth0",
            &conf,
        )
        .err("ADD into a regular file");
    assert_eq!(err["code"], 4, "{err}");
    assert_eq!(netkit_links(&node), Vec::<String>::new());
    assert_eq!(net.reserved(), Vec::<String>::new());
    std::fs::remove_file(file).unwrap();
}
