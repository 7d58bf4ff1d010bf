//! ADD with XDP steering, memory-provider leases or NIC steering, and their rollback.

use super::*;

#[test]
fn add_steers_the_leased_queues_after_leasing_and_hands_the_map_over() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queueIds": [3, 5]}));
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let lease_at = k.calls.iter().position(|c| c == "lease 5").unwrap();
    let steer_at = k
        .calls
        .iter()
        .position(|c| c.starts_with("xdp_steer"))
        .unwrap();
    assert!(
        lease_at < steer_at,
        "virtual ids come from queue-create: {:?}",
        k.calls
    );
    assert_eq!(k.calls[steer_at], "xdp_steer [(3, 1), (5, 2)]");
    assert_eq!(k.xdp.steered.get(&3), Some(&("c1/eth0".to_string(), 1)));
    let x = &dir.info("c1")["netkit-lease"]["xdp"];
    assert_eq!(x["xsk-map"], "/sys/fs/bpf/netkit-cni/nic/pods/c1/eth0/xsks");
    assert_eq!(
        (
            x["start-queue"].as_u64(),
            x["queue-count"].as_u64(),
            x["map-start-index"].as_u64()
        ),
        (Some(1), Some(2), Some(1))
    );

    // A second pod shares the one dispatcher.
    cmd_add(
        &request("ADD", "c2", xdp_conf(&dir, json!({"queueIds": [4]}))),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(k.xdp.attaches, 1);
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(k.xdp.attached, "c2 still has queues");
    assert!(!k.xdp.steered.values().any(|(o, _)| o == "c1/eth0"));
    cmd_del(&request("DEL", "c2", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(
        !k.xdp.attached && k.xdp.pins.is_empty() && k.xdp.steered.is_empty(),
        "the last DEL detaches"
    );
    // Idempotent: again, and with the NIC gone.
    cmd_del(&request("DEL", "c2", conf.clone()), &mut k, None, &quiet()).unwrap();
    k.nic = None;
    cmd_del(&request("DEL", "c2", conf), &mut k, None, &quiet()).unwrap();
    assert!(
        k.calls.iter().any(|c| c == "xdp_sweep"),
        "no master: the dead NIC's pins are swept: {:?}",
        k.calls
    );
}

#[test]
fn failures_after_steering_give_the_queues_back_and_leave_nothing() {
    for step in ["configure_pod", "xdp_steer"] {
        let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
        k.fail_on = Some(step);
        let err = cmd_add(
            &request("ADD", "c1", xdp_conf(&dir, json!({"queues": 2}))),
            &mut k,
            None,
            &quiet(),
        )
        .unwrap_err();
        let want = if step == "xdp_steer" {
            errcodes::XDP_FAILED
        } else {
            errcodes::KERNEL_FAILED
        };
        assert_eq!(err.code, want, "{step}: {}", err.msg);
        assert!(
            k.pods.is_empty() && k.leased_queues().is_empty(),
            "{step}: device and leases rolled back"
        );
        assert!(
            !k.xdp.attached && k.xdp.steered.is_empty() && k.xdp.pins.is_empty(),
            "{step}: dispatcher released"
        );
        assert!(dir.files().is_empty(), "{step}: {:?}", dir.files());
        assert!(
            k.calls.iter().any(|c| c == "xdp_release c1/eth0"),
            "{step}: {:?}",
            k.calls
        );
    }
}

#[test]
fn a_held_xdp_lock_is_try_again_later_naming_the_directory_and_other_xdp_errors_are_110() {
    let dir = PathBuf::from("/sys/fs/bpf/netkit-cni/netns1-if4");
    let timeout = DpError::Xdp {
        step: "steer queues",
        source: Box::new(crate::xdp::XdpError::from(
            crate::safefs::SafeFsError::LockTimeout {
                path: dir.clone(),
                waited: std::time::Duration::from_secs(20),
            },
        )),
    };
    let e = xdp_error(timeout);
    assert_eq!(e.code, crate::cni::codes::TRY_AGAIN_LATER);
    assert!(
        e.msg.contains("/sys/fs/bpf/netkit-cni/netns1-if4"),
        "{}",
        e.msg
    );
    let planted = DpError::Xdp {
        step: "sweep",
        source: Box::new(crate::xdp::XdpError::from(
            crate::safefs::SafeFsError::Untrusted {
                path: dir,
                expected: "directory",
                reason: "it is a symbolic link".into(),
            },
        )),
    };
    let e = xdp_error(planted);
    assert_eq!(e.code, errcodes::XDP_FAILED);
    assert!(
        e.msg.contains("netns1-if4") && e.msg.contains("symbolic link"),
        "{}",
        e.msg
    );
}

#[test]
fn a_memory_provider_add_is_refused_on_a_nic_with_xdp_before_ipam_naming_nic_and_owner() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let conf = lease_conf(&dir, "pair", json!({"consumer": "memory-provider"}));
    for (prog, owner) in [
        (
            NicXdpProgram {
                mode: "generic",
                id: 40,
                name: "nkc_dispatch".into(),
                ours: true,
            },
            "netkit-cni XDP dispatcher (program id 40, generic mode)",
        ),
        (
            NicXdpProgram {
                mode: "driver",
                id: 77,
                name: "xdp_fw".into(),
                ours: false,
            },
            "XDP program id 77 name \"xdp_fw\" (driver mode), not netkit-cni's",
        ),
    ] {
        k.nic_xdp = vec![prog];
        k.calls.clear();
        let e = cmd_add(
            &request("ADD", "c1", conf.clone()),
            &mut k,
            Some(&ipam),
            &quiet(),
        )
        .unwrap_err();
        assert_eq!(e.code, errcodes::MEMORY_PROVIDER_CONFLICT, "{}", e.msg);
        assert!(
            e.msg.contains("lease master nic0") && e.msg.contains(owner),
            "{}",
            e.msg
        );
        assert!(
            ipam.calls.borrow().is_empty(),
            "refused before IPAM: {:?}",
            ipam.calls
        );
        assert!(
            !k.calls
                .iter()
                .any(|c| c.starts_with("create") || c.starts_with("lease ")),
            "{:?}",
            k.calls
        );
        assert!(k.pods.is_empty() && leases_of(&k).is_empty());
        assert!(!dir.0.join("podnet:c1:eth0-device.json").exists());
    }

    // Without XDP on the NIC it goes through, under the NIC lock, and the record says what
    // the leases are for.
    k.nic_xdp.clear();
    k.calls.clear();
    cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap();
    let at = |p: &str| k.calls.iter().position(|c| c.starts_with(p));
    assert!(
        at("nic_lock /sys/fs/bpf 50").is_some()
            && at("nic_lock /sys/fs/bpf 50") < at("create_pair"),
        "{:?}",
        k.calls
    );
    assert_eq!(
        dir.info("c1")["netkit-lease"]["consumer"],
        "memory-provider"
    );
}

#[test]
fn an_af_xdp_network_records_its_consumer_and_takes_no_extra_lock() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    // A foreign XDP program does not concern an AF_XDP network's check (the dispatcher's own
    // attach meets it).
    k.nic_xdp = vec![NicXdpProgram {
        mode: "driver",
        id: 77,
        name: "xdp_fw".into(),
        ours: false,
    }];
    cmd_add(
        &request("ADD", "c1", xdp_conf(&dir, json!({}))),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert!(
        !k.calls.iter().any(|c| c.starts_with("nic_lock")),
        "{:?}",
        k.calls
    );
    assert_eq!(dir.info("c1")["netkit-lease"]["consumer"], "af-xdp");
}

#[test]
fn exclude_pool_mac_writes_rss_before_leasing_then_rule_and_unicast_and_del_removes_them() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.steer.table = Some(equal_over_all());
    let conf = steer_conf(
        &dir,
        json!({}),
        json!({"rss": "exclude-pool", "match": "mac"}),
    );
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    // The default table now spreads over 0-1 only, written before the lease.
    let t = k.steer.table.clone().unwrap();
    assert_eq!(t.len(), 16);
    assert!(
        t.iter().enumerate().all(|(i, q)| *q == (i % 2) as u32),
        "{t:?}"
    );
    assert!(pos(&k, "rss_set") < pos(&k, "lease 2"), "{:?}", k.calls);
    // One queue (2): rule at ruleBase + 4*2 = 8, to the queue, after the lease; then the MAC.
    let rule = k.steer.rules[&8];
    assert_eq!(
        rule.to_string(),
        format!("rule 8: ether dst {POD_MAC} -> queue 2")
    );
    assert!(pos(&k, "lease 2") < pos(&k, "rule_insert"));
    assert!(pos(&k, "rule_insert") < pos(&k, "unicast add"));
    assert_eq!(k.steer.unicast.len(), 1);
    let st = &dir.info("c1")["netkit-lease"]["steering"];
    assert_eq!(
        *st,
        json!({"rss": "exclude-pool", "match": "mac", "pool": "2-7", "rule-base": 0,
               "rules": [{"location": 8, "rule": format!("ether dst {POD_MAC} -> queue 2")}],
               "unicast": POD_MAC})
    );
    // A second ADD finds the table right and does not write it again.
    cmd_add(&request("ADD", "c2", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.steer.writes, 1);
    assert!(
        k.steer.rules.contains_key(&12),
        "c2 has queue 3: {:?}",
        k.steer.rules
    );

    // DEL: the unicast address and the rule go, before the device; c2's stay.
    k.calls.clear();
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(pos(&k, "unicast del") < pos(&k, "rule_delete 8"));
    assert!(pos(&k, "rule_delete 8") < pos(&k, "delete_remote"));
    assert_eq!(k.steer.rules.keys().copied().collect::<Vec<_>>(), [12]);
    // Again: already gone is success, and nothing of c2's is touched.
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.steer.rules.keys().copied().collect::<Vec<_>>(), [12]);
    cmd_del(&request("DEL", "c2", conf), &mut k, None, &quiet()).unwrap();
    assert!(k.steer.rules.is_empty() && k.steer.unicast.is_empty());
    // The shared table stays as written.
    assert_eq!(k.steer.table.as_deref(), Some(&t[..]));
}

#[test]
fn admin_refuses_a_pool_queue_in_rss_before_ipam_naming_queue_nic_and_fix() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.steer.table = Some(equal_over_all());
    let mut conf = steer_conf(&dir, json!({}), json!({"match": "mac"}));
    conf["ipam"] = json!({"type": "host-local"});
    let err = cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.msg.contains("queue 2") && err.msg.contains("nic0"),
        "{}",
        err.msg
    );
    assert!(
        err.details.contains("ethtool -X nic0 equal 2"),
        "{}",
        err.details
    );
    // Nothing left: no IPAM, no device, no lease, no rule, no RSS write.
    assert!(ipam.calls.borrow().is_empty());
    assert!(k.pods.is_empty() && k.leased_queues().is_empty());
    assert!(k.steer.rules.is_empty() && k.steer.unicast.is_empty() && k.steer.writes == 0);
    assert!(dir.files().is_empty());

    // An unreadable RSS is refused the same way, with how to restore it.
    k.steer.table = None;
    let err = cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.details.contains("ethtool -X nic0 default"),
        "{}",
        err.details
    );

    // So is a driver that reports no table at all.
    k.steer.table = Some(vec![]);
    let err = cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(err.msg.contains("no RSS indirection table"), "{}", err.msg);
    assert!(ipam.calls.borrow().is_empty() && k.pods.is_empty());

    // After `ethtool -X nic0 equal 2`: passes.
    k.steer.table = Some((0..16).map(|i| i % 2).collect());
    cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(k.steer.writes, 0, "admin never writes RSS");
    assert_eq!(k.steer.rules.len(), 1);

    // A pool in the middle gets the weight form.
    let pool = crate::config::QueueSet::parse("2-3").unwrap();
    assert_eq!(
        steer::fix_command("nic0", &pool, 6),
        "ethtool -X nic0 weight 1 1 0 0 1 1"
    );
}

#[test]
fn several_queues_get_a_context_and_a_failure_rolls_back_unicast_rules_context_in_order() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(&dir, json!({"queues": 2}), json!({"match": "mac"}));
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(
        k.steer.contexts[&1],
        [2, 3].repeat(8),
        "a context over exactly 2-3"
    );
    assert_eq!(
        k.steer.rules[&8].action,
        crate::kernel::ethtool::RuleAction::Context(1)
    );
    let st = &dir.info("c1")["netkit-lease"]["steering"];
    assert_eq!(st["context"], 1);
    assert_eq!(
        st["rules"][0]["rule"],
        format!("ether dst {POD_MAC} -> context 1")
    );
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(k.steer.contexts.is_empty() && k.steer.rules.is_empty());

    // configure_pod fails after the steering: everything it did is undone, in reverse.
    k.calls.clear();
    k.fail_on = Some("configure_pod");
    cmd_add(&request("ADD", "c2", conf), &mut k, None, &quiet()).unwrap_err();
    let (u, r, c, d) = (
        pos(&k, "unicast del"),
        pos(&k, "rule_delete"),
        pos(&k, "rss_delete"),
        pos(&k, "delete_single"),
    );
    assert!(u < r && r < c && c < d, "{:?}", k.calls);
    assert!(k.steer.contexts.is_empty() && k.steer.rules.is_empty() && k.steer.unicast.is_empty());
    assert!(k.pods.is_empty() && dir.files().is_empty());
}

#[test]
fn match_ip_steers_each_ipam_address_and_a_failed_rule_leaves_nothing() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let mut conf = lease_conf(
        &dir,
        "pair",
        json!({"allowedQueues": "2-7", "steering": {"match": "ip"}}),
    );
    conf["ipam"] = json!({"type": "host-local"});
    added(&mut k, &ipam, "c1", conf.clone());
    assert_eq!(
        k.steer.rules[&8].to_string(),
        "rule 8: ip4 dst 10.1.0.5 -> queue 2"
    );
    assert!(k.steer.unicast.is_empty(), "no MAC for match ip");
    cmd_del(
        &request("DEL", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap();
    assert!(k.steer.rules.is_empty());

    k.fail_on = Some("rule_insert");
    let err = cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(k.steer.rules.is_empty() && k.pods.is_empty() && k.devices.is_empty());
    assert!(k.leased_queues().is_empty());
}

#[test]
fn a_nic_without_ntuple_or_contexts_is_113_naming_the_nic_and_the_feature() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.steer.ntuple = false;
    let conf = steer_conf(&dir, json!({"queues": 2}), json!({"match": "mac"}));
    let err = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.msg.contains("nic0") && err.msg.contains("ntuple"),
        "{}",
        err.msg
    );
    assert!(
        err.details.contains("ethtool -K nic0 ntuple on"),
        "{}",
        err.details
    );
    assert!(k.pods.is_empty(), "refused before any device");

    k.steer.ntuple = true;
    k.steer.contexts_supported = false;
    let err = cmd_add(&request("ADD", "c1", conf), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.msg.contains("nic0")
            && err.msg.contains("RSS contexts")
            && err.msg.contains("EOPNOTSUPP"),
        "{}",
        err.msg
    );
    assert!(k.pods.is_empty() && k.steer.rules.is_empty() && dir.files().is_empty());
}

#[test]
fn networks_steering_one_nic_must_name_the_same_pool_and_rule_base() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let a = steer_conf(
        &dir,
        json!({}),
        json!({"rss": "exclude-pool", "match": "mac"}),
    );
    cmd_add(&request("ADD", "c1", a), &mut k, None, &quiet()).unwrap();
    let mut b = steer_conf(
        &dir,
        json!({"allowedQueues": "4-7"}),
        json!({"rss": "exclude-pool"}),
    );
    b["name"] = json!("othernet");
    let err = cmd_add(&request("ADD", "c2", b.clone()), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(
        err.msg.contains("lease.allowedQueues")
            && err.msg.contains("4-7")
            && err.msg.contains("2-7"),
        "{}",
        err.msg
    );
    b["lease"]["allowedQueues"] = json!("2-7");
    b["lease"]["steering"]["match"] = json!("mac");
    b["lease"]["steering"]["ruleBase"] = json!(100);
    let err = cmd_add(&request("ADD", "c2", b.clone()), &mut k, None, &quiet()).unwrap_err();
    assert!(err.msg.contains("lease.steering.ruleBase"), "{}", err.msg);
    b["lease"]["steering"]["ruleBase"] = json!(0);
    cmd_add(&request("ADD", "c2", b), &mut k, None, &quiet()).unwrap();
}

#[test]
fn a_failure_after_every_undoable_step_undoes_them_in_dels_order() {
    // XDP steering needs a single device and host routing a pair: one ADD of each, both with
    // NIC steering, each failing after its last step.
    let dir = DevDir::new();
    let steering = steer_conf(&dir, json!({"queues": 1}), json!({"match": "mac"}));
    let mut single = steering.clone();
    single["xdp"] = xdp_conf(&dir, json!({}))["xdp"].clone();
    let mut pair = with_host_routing(steering);
    pair["pairing"] = json!("pair");
    pair["ipam"] = json!({"type": "host-local"});
    let cases = [
        // The XDP steering only once the device, and so its leases, are gone.
        (
            single,
            ["xdp_steer", "rule_insert"],
            ["rule_delete", "delete_single", "xdp_release"],
        ),
        // Host routing and the NIC's steering before the device, as in DEL.
        (
            pair,
            ["rule_insert", "host_routing_add"],
            ["host_routing_release", "rule_delete", "delete"],
        ),
    ];
    for (conf, taken, undone) in cases {
        let (mut k, ipam) = (FakeKernel::with_nic(), FakeIpam::default());
        if conf["pairing"] == "pair" {
            k.host_routing_refusal = Some(HostRoutingError::NoUplink { name: "up0".into() });
        } else {
            k.fail_on = Some("configure_pod");
        }
        cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap_err();
        let at = |calls: [&str; 3]| calls.map(|c| pos(&k, c));
        assert!(taken.map(|c| pos(&k, c)).is_sorted(), "{:?}", k.calls);
        assert!(at(undone).is_sorted(), "{:?}", k.calls);
        assert!(k.host_routed.is_empty() && k.steer.rules.is_empty() && k.xdp.steered.is_empty());
        assert!(k.pods.is_empty() && leases_of(&k).is_empty() && dir.files().is_empty());
        assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
    }
}
