//! DEL: idempotence, order, and what another network or a forged alias must not make it do.

use super::*;

#[test]
fn del_is_idempotent_and_deletes_before_releasing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    added(&mut k, &ipam, "c1", json!({}));
    k.calls.clear();
    let del = request("DEL", "c1", json!({}));
    cmd_del(&del, &mut k, Some(&ipam), &quiet()).unwrap();
    cmd_del(&del, &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(k.calls, ["delete", "delete"]);
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0", "del c1 eth0"]);
}

#[test]
fn del_of_a_single_device_with_and_without_the_netns_frees_everything() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = lease_conf(&dir, "single", json!({"queues": 2}));
    for cid in ["c1", "c2"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    assert_eq!(k.leased_queues().len(), 4);
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.leased_queues(), [3, 4]);

    // No CNI_NETNS: found through the master's leases, addressed by nsid.
    let mut del = request("DEL", "c2", conf.clone());
    del.env.netns = None;
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    assert!(
        k.calls
            .iter()
            .any(|c| c.starts_with("delete_remote Some(7)")),
        "{:?}",
        k.calls
    );
    assert!(k.leased_queues().is_empty() && k.pods.is_empty());
    assert!(dir.files().is_empty(), "{:?}", dir.files());
    // Again, and with the NIC gone: still fine.
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    k.nic = None;
    cmd_del(&request("DEL", "c2", conf), &mut k, None, &quiet()).unwrap();
}

#[test]
fn del_removes_the_device_holding_the_recorded_leases_whatever_its_name_or_alias() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = lease_conf(&dir, "single", json!({"queues": 2}));
    for cid in ["c1", "c2", "c3"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    forge(&mut k, "c1", "forged1");
    forge(&mut k, "c2", "forged2");
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut del = request("DEL", "c2", conf.clone());
    del.env.netns = None;
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    let mut left: Vec<&String> = k.pods.keys().collect();
    left.sort();
    assert_eq!(left, ["netkit-cni/podnet/c3/eth0"]);
    assert_eq!(k.leased_queues(), [5, 6], "c1's and c2's leases ended");
    // c3 claims to be c1 (whose DEL already ran, record gone): a repeated DEL of c1 found
    // through the master must not take c3's device, which c3's own record describes.
    forge(&mut k, "c3", "c1");
    let mut del = request("DEL", "c1", conf.clone());
    del.env.netns = None;
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    assert_eq!(k.leased_queues(), [5, 6], "{:?}", k.calls);
}

#[test]
fn del_for_another_network_leaves_the_owners_xdp_steering_alone() {
    // XDP pins are keyed by container id and ifname: network A's DEL after its ADD was refused
    // (network B's device has that ifname) must not reset B's queues or unpin B's map.
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let b = xdp_conf(&dir, json!({"queueIds": [3]}));
    let mut a = b.clone();
    a["name"] = json!("othernet");
    cmd_add(&request("ADD", "c1", b.clone()), &mut k, None, &quiet()).unwrap();
    // (The fake kernel does not model A's refused ADD; the VM test does. DEL is what matters.)
    cmd_del(&request("DEL", "c1", a), &mut k, None, &quiet()).unwrap();
    assert_eq!(
        k.xdp.steered.get(&3),
        Some(&("c1/eth0".to_string(), 1)),
        "B's queue still steered"
    );
    assert!(
        k.xdp.pins.contains("c1/eth0") && k.xdp.attached,
        "B's map still pinned"
    );
    assert!(
        !k.calls.iter().any(|c| c.starts_with("xdp_release")),
        "{:?}",
        k.calls
    );
    // B's own DEL releases it.
    cmd_del(&request("DEL", "c1", b), &mut k, None, &quiet()).unwrap();
    assert!(k.xdp.steered.is_empty() && !k.xdp.attached);
}

#[test]
fn an_alias_never_makes_del_skip_the_release_of_the_xdp_steering() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    for cid in ["victim", "attacker"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    forge_foreign(&mut k, &dir, "attacker", "victim");
    cmd_del(&request("DEL", "victim", conf), &mut k, None, &quiet()).unwrap();
    assert!(
        !k.xdp.pins.contains("victim/eth0")
            && !k.xdp.steered.values().any(|(o, _)| o == "victim/eth0"),
        "the victim's queue must not stay steered to its dead XSKMAP: {:?} {:?}",
        k.xdp.steered,
        k.calls
    );
    assert!(k.xdp.pins.contains("attacker/eth0"));
}

/// Another network's DEL or GC for the same container id and ifname (its ADD was refused with
/// 103) leaves the owner's XDP steering alone, although the owner's record is in another
/// directory: a live device leases the steered queue and no record of that network describes it.
#[test]
fn another_networks_del_and_gc_leave_the_owners_xdp_steering_alone() {
    let (mut k, owner_dir, other_dir) = (FakeKernel::with_nic(), DevDir::new(), DevDir::new());
    let owner = xdp_conf(&owner_dir, json!({"queues": 1}));
    let mut other = xdp_conf(&other_dir, json!({"queues": 1}));
    other["name"] = json!("othernet");
    cmd_add(&request("ADD", "c1", owner.clone()), &mut k, None, &quiet()).unwrap();
    // (The fake keeps devices per network, so the other network's ADD is not refused here as
    // the kernel refuses it, with 103, for the name clash in the pod; tests/vm_xdp.rs has that.)
    cmd_del(&request("DEL", "c1", other.clone()), &mut k, None, &quiet()).unwrap();
    let mut gc = other;
    gc["cni.dev/valid-attachments"] = json!([]);
    cmd_gc(&request("GC", "x", gc), &mut k, None, &quiet()).unwrap();
    assert!(
        k.xdp.pins.contains("c1/eth0") && k.xdp.steered.values().any(|(o, _)| o == "c1/eth0"),
        "the owner's steering must survive: {:?} {:?}",
        k.xdp.steered,
        k.calls
    );
    cmd_del(&request("DEL", "c1", owner), &mut k, None, &quiet()).unwrap();
    assert!(!k.xdp.pins.contains("c1/eth0"), "{:?}", k.calls);
}

#[test]
fn del_releases_the_queues_only_after_the_device_and_its_leases_are_gone() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    k.calls.clear();
    cmd_del(&request("DEL", "c1", conf), &mut k, None, &quiet()).unwrap();
    // The device goes by the leases its record names (delete_remote), or by name.
    let del_at = k
        .calls
        .iter()
        .position(|c| c == "delete_single" || c.starts_with("delete_remote"))
        .unwrap();
    let rel_at = k
        .calls
        .iter()
        .position(|c| c.starts_with("xdp_release"))
        .unwrap();
    assert!(del_at < rel_at, "{:?}", k.calls);
}

#[test]
fn del_and_gc_sweep_what_a_killed_add_left_and_keep_live_pods_steering() {
    use crate::kernel::ethtool::{FlowMatch, FlowRule, RuleAction};
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(&dir, json!({}), json!({"match": "mac"}));
    // A live pod on queue 2.
    cmd_add(
        &request("ADD", "live", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    // A killed ADD left: a rule for queue 5 (unleased) with its unicast address, and a
    // context over 6-7 nothing points at. And an admin's rule in the range, to another queue.
    let mac = [2, 0, 0, 0, 0, 9];
    k.steer.rules.insert(
        20,
        FlowRule {
            location: 20,
            matches: FlowMatch::EtherDst(mac),
            action: RuleAction::Queue(5),
        },
    );
    k.steer.unicast.insert(mac);
    k.steer.contexts.insert(7, vec![6, 7]);
    k.steer.rules.insert(
        24,
        FlowRule {
            location: 24,
            matches: FlowMatch::EtherDst([2, 0, 0, 0, 0, 0x10]),
            action: RuleAction::Queue(1),
        },
    );
    // DEL of an attachment that never got a record: its sweep cleans up.
    cmd_del(
        &request("DEL", "killed", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(
        k.steer.rules.keys().copied().collect::<Vec<_>>(),
        [8, 24],
        "the live pod's and the admin's rules stay"
    );
    assert!(!k.steer.unicast.contains(&mac) && k.steer.unicast.len() == 1);
    assert!(k.steer.contexts.is_empty());

    // A stale rule left at the live ADD's own location is replaced by the next ADD there.
    cmd_del(
        &request("DEL", "live", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    k.steer.rules.insert(
        8,
        FlowRule {
            location: 8,
            matches: FlowMatch::EtherDst(mac),
            action: RuleAction::Queue(2),
        },
    );
    cmd_add(
        &request("ADD", "next", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(
        k.steer.rules[&8].to_string(),
        format!("rule 8: ether dst {POD_MAC} -> queue 2")
    );

    // GC: the orphan's device goes, then its rule and address; the address also when its
    // rule was deleted by hand (the record names it).
    k.steer.rules.remove(&8);
    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([]);
    cmd_gc(&request("GC", "", gc), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.steer.rules.keys().copied().collect::<Vec<_>>(), [24]);
    assert!(k.steer.unicast.is_empty(), "{:?}", k.steer.unicast);
    assert!(dir.files().is_empty());
}

#[test]
fn del_releases_host_routing_before_the_device_and_only_its_own_primarys_entries() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let conf = with_host_routing(json!({}));
    added(&mut k, &ipam, "c1", conf.clone());
    assert_eq!(k.host_routed.len(), 1);

    // Another network's DEL of the same container id and ifname (its ADD was refused with 103):
    // the primary at the derived name is not its own, so no entry routed to it is released.
    let mut other = conf.clone();
    other["name"] = json!("othernet");
    k.calls.clear();
    cmd_del(&request("DEL", "c1", other), &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(k.calls, ["observe", "host_routing_release None", "delete"]);
    assert_eq!(k.host_routed.len(), 1, "podnet's pod is still routed");
    assert_eq!(k.devices.len(), 1);

    k.calls.clear();
    cmd_del(&request("DEL", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(
        k.calls,
        ["observe", "host_routing_release Some(10)", "delete"]
    );
    assert!(k.host_routed.is_empty() && k.devices.is_empty());
}
