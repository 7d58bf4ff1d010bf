//! ADD: the steps, their rollback, the plan from IPAM and the leases.

use super::*;

#[test]
fn add_reports_both_interfaces_and_points_ips_at_the_pod_side() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let req = request("ADD", "c1", json!({}));
    let r = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(
        k.calls,
        [
            "observe",
            "create_pair rx=None",
            "create_pair",
            "pod_routes=3",
            "configure_pod",
            "configure_host"
        ]
    );
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(r.interfaces[0].sandbox, None, "host side has no sandbox");
    assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/pod"));
    assert_eq!(r.ips[0].interface, Some(1));
    // subnet via gateway and the default route, both reported; the gateway's link route is not.
    let dsts: Vec<String> = r
        .routes
        .iter()
        .map(|r| format!("{}/{}", r.dst.addr(), r.dst.prefix_len()))
        .collect();
    assert_eq!(dsts, ["10.1.0.0/24", "0.0.0.0/0"]);
}

#[test]
fn failure_after_device_creation_deletes_it_and_releases_ipam() {
    for failing in ["configure_pod", "configure_host"] {
        let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
        k.fail_on = Some(failing);
        let req = request("ADD", "c1", json!({}));
        let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
        assert!(err.msg.contains(failing), "{failing}: {err:?}");
        assert_eq!(
            k.calls.last().map(String::as_str),
            Some("delete"),
            "{failing}: {:?}",
            k.calls
        );
        assert!(k.devices.is_empty(), "{failing}: device left behind");
        assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"], "{failing}");
    }
}

#[test]
fn failed_create_releases_ipam_but_deletes_nothing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    k.fail_on = Some("create_pair");
    let req = request("ADD", "c1", json!({}));
    cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert!(
        !k.calls.contains(&"delete".to_string()),
        "nothing was created, nothing to delete: {:?}",
        k.calls
    );
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
}

#[test]
fn second_add_of_a_live_attachment_fails_before_touching_ipam() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let req = request("ADD", "c1", json!({}));
    cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::ALREADY_EXISTS);
    assert_eq!(
        *ipam.calls.borrow(),
        ["add"],
        "the live attachment's address must not be released"
    );
    assert_eq!(k.devices.len(), 1);
}

#[test]
fn pod_plan_uses_ipam_routes_and_adds_default_only_when_missing() {
    let ipam = CniResult {
        ips: vec![IpConfig {
            address: IpCidr::new("10.2.0.9".parse().unwrap(), 16).unwrap(),
            gateway: None,
            interface: None,
        }],
        routes: vec![Route::new(
            IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
            None,
        )],
        ..Default::default()
    };
    let (plan, reported) = pod_plan("eth0", &ipam).unwrap();
    let gw: IpAddr = "10.2.0.1".parse().unwrap();
    assert_eq!(
        plan.routes,
        [
            PlannedRoute {
                dst: IpCidr::new(gw, 32).unwrap(),
                gw: None
            },
            PlannedRoute {
                dst: IpCidr::new("10.2.0.0".parse().unwrap(), 16).unwrap(),
                gw: Some(gw)
            },
            PlannedRoute {
                dst: IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
                gw: Some(gw)
            },
        ]
    );
    assert_eq!(reported.len(), 2);
}

#[test]
fn gateway_of_a_slash_32_without_gateway_is_an_error_naming_the_address() {
    let ip = IpConfig {
        address: IpCidr::new("10.3.0.0".parse().unwrap(), 31).unwrap(),
        gateway: None,
        interface: None,
    };
    assert_eq!(
        gateway_of(&ip).unwrap(),
        "10.3.0.1".parse::<IpAddr>().unwrap()
    );
    let ip = IpConfig {
        address: IpCidr::new("10.3.0.1".parse().unwrap(), 31).unwrap(),
        gateway: None,
        interface: None,
    };
    assert!(gateway_of(&ip).unwrap_err().msg.contains("10.3.0.1/31"));
}

#[test]
fn pair_leases_onto_the_peer_sized_for_the_leases_and_records_the_mapping() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let req = request("ADD", "c1", lease_conf(&dir, "pair", json!({"queues": 2})));
    let r = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    assert!(
        k.calls.contains(&"create_pair rx=Some(3)".to_string()),
        "1 own + 2 leased RX queues: {:?}",
        k.calls
    );
    let peer = k.pods["netkit-cni/podnet/c1/eth0"].ifindex;
    // Default pool: every queue but 0, lowest first.
    assert_eq!(leases_of(&k), [(1, peer, 1), (2, peer, 2)]);
    assert_eq!(r.interfaces.len(), 2);
    let info = dir.info("c1");
    assert_eq!(info["type"], "netkit-lease");
    assert_eq!(info["version"], "1.1.0");
    let l = &info["netkit-lease"];
    assert_eq!(
        (l["pairing"].as_str(), l["ifindex"].as_u64()),
        (Some("pair"), Some(peer as u64))
    );
    assert_eq!(l["master"], json!({"name": "nic0", "ifindex": 50}));
    assert_eq!(
        l["queues"],
        json!([{"physical": 1, "virtual": 1}, {"physical": 2, "virtual": 2}])
    );
}

#[test]
fn single_without_ipam_reports_only_the_pod_interface() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"queueIds": [3, 5]})),
    );
    let r = cmd_add(&req, &mut k, None, &quiet()).unwrap();
    assert!(
        k.calls.contains(&"create_single rx=3".to_string()),
        "{:?}",
        k.calls
    );
    assert!(
        !k.calls
            .iter()
            .any(|c| c == "configure_host" || c.starts_with("create_pair")),
        "no host side: {:?}",
        k.calls
    );
    assert_eq!(r.interfaces.len(), 1);
    assert_eq!(r.interfaces[0].name, "eth0");
    assert_eq!(r.interfaces[0].sandbox.as_deref(), Some("/run/netns/pod"));
    assert!(r.ips.is_empty() && r.routes.is_empty());
    assert_eq!(
        leases_of(&k).iter().map(|l| l.0).collect::<Vec<_>>(),
        [3, 5],
        "exactly the named queues"
    );
    assert_eq!(dir.info("c1")["netkit-lease"]["pairing"], "single");
}

#[test]
fn selection_skips_busy_queues_and_picks_again_when_a_racing_add_wins() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.nic().leases.insert(1, (Some(3), 77, 1)); // leased to someone else
    k.nic().xsk.push(2); // an AF_XDP socket on queue 2
    k.race = vec![3]; // another ADD takes 3 between our dump and our queue-create
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"queues": 2})),
    );
    cmd_add(&req, &mut k, None, &quiet()).unwrap();
    let tries: Vec<&String> = k
        .calls
        .iter()
        .filter(|c| c.starts_with("lease ") || *c == "dump")
        .collect();
    // prepare's dump, selection's dump, 3 refused, fresh dump, then 4 and 5.
    assert_eq!(
        tries,
        ["dump", "dump", "lease 3", "dump", "lease 4", "lease 5"]
    );
    let me = k.pods["netkit-cni/podnet/c1/eth0"].ifindex;
    let mine: Vec<u32> = leases_of(&k)
        .into_iter()
        .filter(|l| l.1 == me)
        .map(|l| l.0)
        .collect();
    assert_eq!(mine, [4, 5]);
}

#[test]
fn exhausted_pool_fails_before_ipam_and_before_any_device() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.nic().leases.insert(2, (Some(3), 77, 1));
    k.nic().leases.insert(3, (Some(3), 78, 1));
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "pair", json!({"allowedQueues": "2-3"})),
    );
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_POOL_EXHAUSTED);
    assert!(
        err.msg.contains("allowedQueues 2-3") && err.msg.contains("nic0"),
        "names the pool: {}",
        err.msg
    );
    assert!(ipam.calls.borrow().is_empty(), "IPAM untouched");
    assert!(k.pods.is_empty() && k.devices.is_empty());
}

#[test]
fn losing_the_last_queue_to_a_race_rolls_back_device_leases_ipam_and_file() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.race = vec![2];
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "pair", json!({"allowedQueues": "1-2", "queues": 2})),
    );
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_POOL_EXHAUSTED, "{err:?}");
    assert!(k.calls.contains(&"delete".to_string()), "{:?}", k.calls);
    assert!(k.pods.is_empty() && k.devices.is_empty());
    assert_eq!(
        k.leased_queues(),
        [2],
        "our lease of queue 1 ended with the device; the racer keeps 2"
    );
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn pod_requests_must_stay_within_the_pool_the_cap_and_the_nic() {
    let dir = DevDir::new();
    let conf = lease_conf(
        &dir,
        "single",
        json!({"maxQueuesPerPod": 2, "allowedQueues": "1-15"}),
    );
    let cases: Vec<(&str, serde_json::Value, &str, &[&str])> = vec![
        (
            "NETKIT_LEASE_QUEUES=5",
            json!(null),
            "",
            &["5", "maxQueuesPerPod 2"],
        ),
        ("NETKIT_LEASE_QUEUES=0", json!(null), "", &["at least 1"]),
        ("NETKIT_LEASE_QUEUES=two", json!(null), "", &["\"two\""]),
        (
            "NETKIT_LEASE_QUEUE_IDS=0",
            json!(null),
            "",
            &["queue 0", "outside the lease pool", "1-15"],
        ),
        (
            "NETKIT_LEASE_QUEUE_IDS=9",
            json!(null),
            "",
            &["queue 9", "out of range", "8 RX queues"],
        ),
        (
            "NETKIT_LEASE_QUEUES=1;NETKIT_LEASE_QUEUE_IDS=2",
            json!(null),
            "",
            &["both"],
        ),
        (
            "",
            json!({"netkitLeaseQueueIds": [16]}),
            "",
            &["queue 16", "outside"],
        ),
        (
            "",
            json!({"netkitLeaseQueues": 3}),
            "",
            &["3", "maxQueuesPerPod 2"],
        ),
    ];
    for (args, rc, _, texts) in cases {
        let mut k = FakeKernel::with_nic();
        let mut c = conf.clone();
        c["runtimeConfig"] = rc.clone();
        let err = cmd_add(&request_with("ADD", "c1", c, args), &mut k, None, &quiet()).unwrap_err();
        assert_eq!(err.code, 7, "{args} {rc}: {err:?}");
        for t in texts {
            assert!(err.msg.contains(t), "{args} {rc}: {:?} lacks {t}", err.msg);
        }
        assert!(k.pods.is_empty(), "{args}: nothing created");
    }
    // Within limits: runtimeConfig wins over CNI_ARGS.
    let mut k = FakeKernel::with_nic();
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({"netkitLeaseQueueIds": [6, 4]});
    cmd_add(
        &request_with("ADD", "c1", c, "NETKIT_LEASE_QUEUES=1"),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(k.leased_queues(), [4, 6]);
}

#[test]
fn a_busy_explicit_queue_fails_cleanly() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.nic().xsk.push(4);
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "pair", json!({"queueIds": [3, 4]})),
    );
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_QUEUE_BUSY);
    assert!(
        err.msg.contains("queue 4 of nic0") && err.msg.contains("AF_XDP"),
        "{}",
        err.msg
    );
    assert!(k.pods.is_empty() && k.leased_queues().is_empty() && ipam.calls.borrow().is_empty());

    // Taken between the check and the lease: queue 3 is leased, then 4 is refused → rollback.
    k.nic().xsk.clear();
    k.race = vec![4];
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_QUEUE_BUSY, "{err:?}");
    assert!(err.msg.contains("queue 4"), "{}", err.msg);
    assert!(k.pods.is_empty() && k.devices.is_empty());
    assert_eq!(
        k.leased_queues(),
        [4],
        "queue 3 was given back with the device"
    );
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
    assert!(dir.files().is_empty());
}

#[test]
fn missing_master_unsupported_kernel_and_refused_leases_have_their_codes() {
    let dir = DevDir::new();
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"master": "ens9"})),
    );
    let err = cmd_add(&req, &mut FakeKernel::with_nic(), None, &quiet()).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(err.msg.contains("\"ens9\""), "{}", err.msg);

    let mut k = FakeKernel::with_nic();
    k.lease_ok = false;
    let err = cmd_add(
        &request("ADD", "c1", lease_conf(&dir, "single", json!({}))),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_UNSUPPORTED);
    assert!(
        err.code >= 100 && err.msg.contains("queue-create"),
        "{}",
        err.msg
    );

    // A master the kernel cannot lease from (here: a virtual device): the kernel says why.
    let (mut k, ipam) = (FakeKernel::with_nic(), FakeIpam::default());
    k.lease_refusal = Some((Errno::EINVAL, "Lease device is a virtual device"));
    let err = cmd_add(
        &request("ADD", "c1", lease_conf(&dir, "pair", json!({}))),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_FAILED);
    assert!(
        err.msg.contains("Lease device is a virtual device"),
        "{}",
        err.msg
    );
    assert!(k.pods.is_empty() && k.devices.is_empty(), "rolled back");
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
}

#[test]
fn a_down_nic_dumps_nothing_so_the_kernel_decides_occupancy_and_range() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.nic().up = false;
    k.nic().rx = 3; // real queues; the fake's master() reports the same as allocated
    k.nic().leases.insert(1, (Some(3), 77, 1));
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"queues": 1})),
    );
    cmd_add(&req, &mut k, None, &quiet()).unwrap();
    let tries: Vec<&String> = k.calls.iter().filter(|c| c.starts_with("lease ")).collect();
    assert_eq!(
        tries,
        ["lease 1", "lease 2"],
        "1 was busy, learnt from EBUSY"
    );
}

#[test]
fn host_routing_comes_after_the_host_side_and_a_later_failure_undoes_it_before_the_device() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    // The device-info file, the step after host routing, cannot be written: its directory is a
    // regular file.
    std::fs::write(&dir.0, b"").unwrap();
    let conf = with_host_routing(lease_conf(&dir, "pair", json!({"queues": 1})));
    let err = cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap_err();
    std::fs::remove_file(&dir.0).unwrap();
    assert_eq!(err.code, errcodes::DEVICE_INFO_FAILED, "{err:?}");
    assert!(
        pos(&k, "configure_host") < pos(&k, "host_routing_add 10"),
        "{:?}",
        k.calls
    );
    // Before the device goes, so no map entry ever names a deleted primary.
    assert!(
        pos(&k, "host_routing_release Some(10)") < pos(&k, "delete"),
        "{:?}",
        k.calls
    );
    assert!(k.host_routed.is_empty(), "{:?}", k.host_routed);
    assert!(k.devices.is_empty() && leases_of(&k).is_empty());
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
}

#[test]
fn host_routing_refusals_surface_with_their_codes_and_roll_back() {
    let taken = || HostRoutingError::AddressTaken {
        ip: "10.1.0.5".parse().unwrap(),
        ifindex: 99,
        path: "/sys/fs/bpf/netkit-cni/host-up0/pods".into(),
    };
    let cases: Vec<(HostRoutingError, u32, &str)> = vec![
        (taken(), 111, "BPF host routing failed"),
        (
            HostRoutingError::NoUplink { name: "up0".into() },
            111,
            "field hostRouting.uplink",
        ),
        (
            HostRoutingError::BypassConflict {
                uplink: "up0".into(),
                have: "10.9.0.0/16".into(),
                want: "".into(),
            },
            7,
            "field hostRouting.bypass",
        ),
        (
            HostRoutingError::Fs(crate::safefs::SafeFsError::LockTimeout {
                path: "/sys/fs/bpf/netkit-cni/host-up0".into(),
                waited: std::time::Duration::from_secs(5),
            }),
            11,
            "BPF host routing failed",
        ),
    ];
    for (refusal, code, msg) in cases {
        let details = refusal.to_string();
        let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
        k.host_routing_refusal = Some(refusal);
        let req = request("ADD", "c1", with_host_routing(json!({})));
        let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
        assert_eq!(err.code, code, "{err:?}");
        assert!(err.msg.contains(msg), "{err:?}");
        assert_eq!(err.details, details);
        // The refused call may have half-happened: it is released, before the device goes.
        assert!(
            pos(&k, "host_routing_release Some(10)") < pos(&k, "delete"),
            "{:?}",
            k.calls
        );
        assert!(k.devices.is_empty());
        assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"], "{err:?}");
    }
    assert_eq!(errcodes::HOST_ROUTING_FAILED, 111);
}
