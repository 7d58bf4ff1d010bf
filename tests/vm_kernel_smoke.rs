//! Proves the test kernel has what the plugin needs, using only the kernel's own tools (ynl and
//! iproute2): netkit pair and single devices, netdevsim queue management, and `queue-create`
//! leases with `lease.netns-id`, EBUSY on a double lease, and release when the pod netns dies.
//! If this fails, every other privileged test would fail for reasons that are not ours.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Create a netkit device with ynl's rt-link family inside `ns` and return its links there.
fn ynl_newlink(ynl: &Ynl, ns: &Netns, req: Value) {
    ynl.call(
        Some(ns),
        "rt-link",
        "--do",
        "newlink",
        Some(&req),
        &["--create", "--excl"],
    )
    .unwrap_or_else(|e| panic!("rt-link newlink {req}: {e}"));
}

fn lease_req(virt_ifindex: u32, phys_ifindex: u32, phys_queue: u32, netns_id: i32) -> Value {
    json!({
        "ifindex": virt_ifindex,
        "type": "rx",
        "lease": {"ifindex": phys_ifindex, "queue": {"id": phys_queue, "type": "rx"}, "netns-id": netns_id},
    })
}

#[test]
fn kernel_leases_nic_queues_into_netkit_pair_and_single_devices() {
    require_privileged_kernel();
    let ynl = Ynl::new();
    let node = Netns::new("node");
    let pod1 = Netns::new("pod");
    let pod2 = Netns::new("pod");
    let nic = Netdevsim::new(&node, 4);

    let queues = ynl.queue_dump(&node, nic.ifindex);
    let rx: Vec<&Value> = queues.iter().filter(|q| q["type"] == "rx").collect();
    assert_eq!(
        rx.len(),
        4,
        "netdevsim should expose 4 rx queues: {queues:?}"
    );
    assert!(
        rx.iter().all(|q| q.get("lease").is_none()),
        "fresh NIC has leases: {queues:?}"
    );

    // A netkit pair in the node netns, peer then moved into pod1 (the plugin itself creates the
    // peer in place; here we only exercise the kernel). Without peer-info (opaque to ynl) the peer
    // takes the top-level attributes, num-rx-queues included, and a kernel-chosen nk%d name.
    let host_if = unique("nkh");
    ynl_newlink(
        &ynl,
        &node,
        json!({
            "ifname": host_if,
            "num-rx-queues": 4,
            "linkinfo": {"kind": "netkit", "data": {"mode": "l3", "policy": "forward", "peer-policy": "forward"}},
        }),
    );
    let links = node.links();
    let peer = links
        .iter()
        .find(|l| {
            l["ifname"] != host_if.as_str()
                && l["link"] == host_if.as_str()
                && l["linkinfo"]["info_kind"] == "netkit"
        })
        .unwrap_or_else(|| panic!("no netkit peer of {host_if} in {links:?}"));
    let peer_if = unique("nkp");
    node.ip(&[
        "link",
        "set",
        "dev",
        peer["ifname"].as_str().unwrap(),
        "name",
        &peer_if,
        "netns",
        &pod1.name,
    ]);
    let peer_idx = pod1.ifindex(&peer_if);
    let kind = &pod1
        .links()
        .into_iter()
        .find(|l| l["ifname"] == peer_if.as_str())
        .unwrap()["linkinfo"]["info_kind"];
    assert_eq!(kind, "netkit");

    // A netkit single device created directly in pod2.
    let single_if = unique("nks");
    ynl_newlink(
        &ynl,
        &pod2,
        json!({
            "ifname": single_if,
            "num-rx-queues": 3,
            "linkinfo": {"kind": "netkit", "data": {"pairing": "single", "mode": "l2"}},
        }),
    );
    let single_idx = pod2.ifindex(&single_if);

    // Lease NIC queue 1 into pod1's peer and queue 2 into pod2's single device. The request runs
    // in the pod netns; lease.netns-id names the node netns as the pod sees it.
    let nsid1 = pod1.nsid_of(&node);
    let r1 = ynl
        .call(
            Some(&pod1),
            "netdev",
            "--do",
            "queue-create",
            Some(&lease_req(peer_idx, nic.ifindex, 1, nsid1)),
            &[],
        )
        .expect("queue-create into netkit peer");
    let vq1 = r1["id"].as_u64().expect("queue-create reply has an id") as u32;
    let nsid2 = pod2.nsid_of(&node);
    let r2 = ynl
        .call(
            Some(&pod2),
            "netdev",
            "--do",
            "queue-create",
            Some(&lease_req(single_idx, nic.ifindex, 2, nsid2)),
            &[],
        )
        .expect("queue-create into netkit single");
    let vq2 = r2["id"].as_u64().unwrap() as u32;

    // The physical side shows each lease: which virtual device, which queue, which netns.
    let q1 = ynl.queue_get(&node, nic.ifindex, 1);
    assert_eq!(q1["lease"]["ifindex"], peer_idx, "queue 1 lease: {q1}");
    assert_eq!(q1["lease"]["queue"]["id"], vq1, "queue 1 lease: {q1}");
    assert_eq!(
        q1["lease"]["netns-id"],
        node.nsid_of(&pod1),
        "queue 1 lease: {q1}"
    );
    let q2 = ynl.queue_get(&node, nic.ifindex, 2);
    assert_eq!(q2["lease"]["ifindex"], single_idx, "queue 2 lease: {q2}");
    assert_eq!(q2["lease"]["queue"]["id"], vq2, "queue 2 lease: {q2}");
    assert_eq!(
        q2["lease"]["netns-id"],
        node.nsid_of(&pod2),
        "queue 2 lease: {q2}"
    );
    assert!(ynl.queue_get(&node, nic.ifindex, 3).get("lease").is_none());

    // Leasing the same physical queue twice is refused with EBUSY.
    let again = ynl.call(
        Some(&pod2),
        "netdev",
        "--do",
        "queue-create",
        Some(&lease_req(single_idx, nic.ifindex, 1, nsid2)),
        &[],
    );
    let err = again.expect_err("a second lease of queue 1 must fail");
    assert!(
        err.contains("in use")
            || err.contains("-16")
            || err.contains("EBUSY")
            || err.contains("busy"),
        "expected EBUSY for a double lease, got: {err}"
    );

    // Deleting a pod netns destroys its netkit device, which ends the lease.
    let pod1_name = pod1.name.clone();
    drop(pod1);
    eventually(
        &format!("lease of queue 1 freed after deleting {pod1_name}"),
        Duration::from_secs(10),
        || {
            ynl.queue_get(&node, nic.ifindex, 1)
                .get("lease")
                .is_none()
                .then_some(())
        },
    );
    assert!(
        ynl.queue_get(&node, nic.ifindex, 2).get("lease").is_some(),
        "pod2's lease must survive"
    );
}
