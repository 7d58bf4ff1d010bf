//! GC: orphans only, this network only, never on what an alias claims.

use super::*;

#[test]
fn gc_removes_only_this_networks_unlisted_attachments() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    for cid in ["live", "orphan"] {
        added(&mut k, &ipam, cid, json!({}));
    }
    let other = Marker::new("othernet", "foreign", "eth0").unwrap();
    k.devices.insert(other.to_string(), other);
    ipam.calls.borrow_mut().clear();
    let gc = request(
        "GC",
        "x",
        json!({"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}),
    );
    cmd_gc(&gc, &mut k, Some(&ipam), &quiet()).unwrap();
    let mut left: Vec<String> = k.devices.keys().cloned().collect();
    left.sort();
    assert_eq!(
        left,
        [
            "netkit-cni/othernet/foreign/eth0",
            "netkit-cni/podnet/live/eth0"
        ]
    );
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
}

#[test]
fn gc_without_a_list_deletes_nothing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    added(&mut k, &ipam, "c1", json!({}));
    let err = cmd_gc(
        &request("GC", "x", json!({})),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, crate::cni::codes::INVALID_CONFIG);
    assert!(err.details.contains("valid-attachments"));
    assert_eq!(k.devices.len(), 1);
}

#[test]
fn gc_finds_orphan_single_devices_through_the_masters_leases() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let mut conf = lease_conf(&dir, "single", json!({}));
    conf["ipam"] = json!({"type": "host-local"});
    for cid in ["live", "orphan"] {
        added(&mut k, &ipam, cid, conf.clone());
    }
    // A device of another network leasing from the same NIC, and a stale file of a pod whose
    // netns died without DEL.
    let foreign = Marker::new("othernet", "f1", "eth0").unwrap();
    let fi = k.add_pod(&foreign, Path::new("/run/netns/other"), true, 2);
    k.nic().leases.insert(7, (Some(POD_NSID), fi, 1));
    std::fs::write(dir.0.join("podnet:dead:eth0-device.json"), b"{}").unwrap();
    ipam.calls.borrow_mut().clear();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, Some(&ipam), &quiet()).unwrap();
    let mut left: Vec<&String> = k.pods.keys().collect();
    left.sort();
    assert_eq!(
        left,
        ["netkit-cni/othernet/f1/eth0", "netkit-cni/podnet/live/eth0"]
    );
    assert_eq!(
        k.leased_queues(),
        [1, 7],
        "the orphan's queue 2 is free again"
    );
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
    assert_eq!(dir.files(), ["podnet:live:eth0-device.json"]);
}

#[test]
fn gc_hands_ipam_the_records_identifiers_never_a_forged_alias() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let mut conf = lease_conf(&dir, "single", json!({}));
    conf["ipam"] = json!({"type": "host-local"});
    for cid in ["live", "orphan", "norecord"] {
        added(&mut k, &ipam, cid, conf.clone());
    }
    // The live pod claims an unlisted attachment, the orphan another one; the third device's
    // record is gone, so only its (forged) alias speaks for it.
    forge(&mut k, "live", "victim1");
    forge(&mut k, "orphan", "victim2");
    forge(&mut k, "norecord", "victim3");
    std::fs::remove_file(dir.0.join("podnet:norecord:eth0-device.json")).unwrap();
    ipam.calls.borrow_mut().clear();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, Some(&ipam), &quiet()).unwrap();
    let left: Vec<&String> = k.pods.keys().collect();
    assert_eq!(
        left,
        ["netkit-cni/podnet/victim1/eth0"],
        "the live pod keeps its device"
    );
    assert_eq!(k.leased_queues(), [1], "the orphans' leases ended");
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
}

#[test]
fn an_alias_never_keeps_an_orphans_xdp_steering_from_gc() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    for cid in ["orphan", "attacker"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    // The orphan's device died with its netns, without DEL; its pin and steering stayed.
    let orphan = k.pods.remove("netkit-cni/podnet/orphan/eth0").unwrap();
    k.nic()
        .leases
        .retain(|_, (_, ifx, _)| *ifx != orphan.ifindex);
    forge_foreign(&mut k, &dir, "attacker", "orphan");
    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "attacker", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, None, &quiet()).unwrap();
    assert!(
        !k.xdp.pins.contains("orphan/eth0"),
        "GC must release the orphan's steering: {:?}",
        k.calls
    );
}

#[test]
fn gc_releases_unlisted_pods_but_not_other_networks_live_ones() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    for cid in ["live", "orphan"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    // Another network's live pod on the same NIC and dispatcher (its root-owned record
    // describes its leases: an alias alone would not keep its steering).
    let mut other = conf.clone();
    other["name"] = json!("othernet");
    other["lease"]["queueIds"] = json!([7]);
    other["lease"].as_object_mut().unwrap().remove("queues");
    cmd_add(&request("ADD", "f1", other), &mut k, None, &quiet()).unwrap();
    // A pin left by a pod whose device died with its netns without DEL.
    k.xdp.steered.insert(6, ("dead/eth0".into(), 1));
    k.xdp.pins.insert("dead/eth0".into());

    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, None, &quiet()).unwrap();
    let pins: Vec<&String> = k.xdp.pins.iter().collect();
    assert_eq!(pins, ["f1/eth0", "live/eth0"]);
    assert_eq!(k.xdp.steered.keys().copied().collect::<Vec<_>>(), [1, 7]);
    assert!(k.xdp.attached);
}

#[test]
fn gc_sweeps_host_routing_after_the_orphans_devices_are_gone() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let conf = with_host_routing(json!({}));
    for cid in ["live", "orphan"] {
        added(&mut k, &ipam, cid, conf.clone());
    }
    k.calls.clear();
    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, Some(&ipam), &quiet()).unwrap();
    // The sweep removes the entries of primaries that no longer exist: the orphan's, now.
    assert_eq!(k.calls, ["list_ours", "delete", "host_routing_gc"]);
}
