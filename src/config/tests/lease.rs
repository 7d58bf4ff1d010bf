use super::xdp::xdp_conf;
use super::*;
use crate::bpf::pins::DEFAULT_BPFFS;
use crate::config::lease::LEASE_CONSUMERS;

#[test]
fn lease_consumer_is_declared_defaulted_and_trap_combinations_refused() {
    // Default: not declared, AF_XDP once the dispatcher steers the leases.
    let c = parse(with("lease", json!({"master": "ens1f0"}))).unwrap();
    assert_eq!(
        (c.lease.as_ref().unwrap().consumer, c.lease_consumer()),
        (None, None)
    );
    let c = xdp_conf(json!({}), "single").unwrap();
    assert_eq!(c.lease_consumer(), Some(LeaseConsumer::AfXdp));
    let c = parse(with(
        "lease",
        json!({"master": "ens1f0", "consumer": "memory-provider"}),
    ))
    .unwrap();
    assert_eq!(c.lease_consumer(), Some(LeaseConsumer::MemoryProvider));
    let c = parse(with(
        "lease",
        json!({"master": "ens1f0", "consumer": "af-xdp"}),
    ))
    .unwrap();
    assert_eq!(c.lease_consumer(), Some(LeaseConsumer::AfXdp));
    assert_eq!(
        c.lease.as_ref().unwrap().bpffs,
        PathBuf::from(DEFAULT_BPFFS)
    );
    let c = parse(with(
        "lease",
        json!({"master": "ens1f0", "bpffs": "/run/bpf"}),
    ))
    .unwrap();
    assert_eq!(c.lease.unwrap().bpffs, PathBuf::from("/run/bpf"));
    let e = CniError::from(
        parse(with(
            "lease",
            json!({"master": "ens1f0", "bpffs": "run/bpf"}),
        ))
        .unwrap_err(),
    );
    assert!(
        e.code == codes::INVALID_CONFIG && e.msg.contains("lease.bpffs"),
        "{}",
        e.msg
    );
    for (s, k) in LEASE_CONSUMERS {
        assert_eq!((LeaseConsumer::parse(s), k.as_str()), (Some(*k), *s));
    }

    // An unknown kind names the field and the value.
    let e = CniError::from(
        parse(with(
            "lease",
            json!({"master": "ens1f0", "consumer": "dpdk"}),
        ))
        .unwrap_err(),
    );
    assert_eq!(e.code, codes::INVALID_CONFIG);
    assert!(
        e.msg.contains("lease.consumer") && (e.msg.contains("dpdk") || e.details.contains("dpdk")),
        "{} / {}",
        e.msg,
        e.details
    );

    // memory-provider with the dispatcher: the kernel would refuse the bind.
    let mut v = with(
        "lease",
        json!({"master": "ens1f0", "consumer": "memory-provider"}),
    );
    v["pairing"] = json!("single");
    v["xdp"] = json!({});
    let e = CniError::from(parse(v).unwrap_err());
    assert_eq!(e.code, codes::INVALID_CONFIG);
    assert!(
        e.msg.contains("lease.consumer") && e.msg.contains("memory-provider"),
        "{}",
        e.msg
    );
    assert!(e.details.contains("XDP"), "{}", e.details);

    // memory-provider on a single device: no peer to reach the socket through.
    let mut v = with(
        "lease",
        json!({"master": "ens1f0", "consumer": "memory-provider"}),
    );
    v["pairing"] = json!("single");
    let e = CniError::from(parse(v).unwrap_err());
    assert_eq!(e.code, codes::INVALID_CONFIG);
    assert!(
        e.msg.contains("lease.consumer") && e.details.contains("pair"),
        "{} / {}",
        e.msg,
        e.details
    );
}

fn lease(block: Value) -> Result<LeaseConfig, CniError> {
    parse(with("lease", block))
        .map(|c| c.lease.unwrap())
        .map_err(CniError::from)
}

#[test]
fn lease_block_defaults() {
    let l = lease(json!({"master": "ens1f0"})).unwrap();
    assert_eq!(l.queues, LeaseQueues::Count(1));
    assert_eq!(l.allowed_queues, None);
    assert_eq!(l.max_queues_per_pod, None);
    assert_eq!(l.device_info_dir, PathBuf::from(DEFAULT_DEVICE_INFO_DIR));
    assert!(!l.allows(0) && l.allows(1) && l.allows(MAX_QUEUE_ID));
    let l =
        lease(json!({"master": "ens1f0", "queueIds": [3, 1], "allowedQueues": [1, 3, 9]})).unwrap();
    assert_eq!(l.queues, LeaseQueues::Ids(vec![3, 1]), "order is kept");
    assert_eq!(l.allowed_queues.unwrap().to_string(), "1,3,9");
}

#[test]
fn steering_block_defaults_values_and_refusals() {
    // No block, an empty block and a block with one key: every missing key takes its default.
    let d = Steering {
        rss: RssPolicy::Admin,
        match_on: SteerMatch::None,
        rule_base: DEFAULT_RULE_BASE,
    };
    assert_eq!(lease(json!({"master": "ens1f0"})).unwrap().steering, d);
    assert_eq!(
        lease(json!({"master": "ens1f0", "steering": {}}))
            .unwrap()
            .steering,
        d
    );
    let s = lease(json!({"master": "ens1f0", "steering": {"match": "mac"}}))
        .unwrap()
        .steering;
    assert_eq!((s.rss, s.match_on), (RssPolicy::Admin, SteerMatch::Mac));
    let s = lease(json!({"master": "ens1f0", "allowedQueues": "2-7",
        "steering": {"rss": "exclude-pool", "match": "ip", "ruleBase": 64}}))
    .unwrap()
    .steering;
    assert_eq!(
        (s.rss, s.match_on, s.rule_base),
        (RssPolicy::ExcludePool, SteerMatch::Ip, 64)
    );
    assert_eq!(
        (RssPolicy::ExcludePool.as_str(), SteerMatch::Ip.as_str()),
        ("exclude-pool", "ip")
    );
    // Unknown keys and values: code 7, naming the field and the value.
    for (block, field, value) in [
        (
            json!({"rss": "exclude"}),
            "lease.steering.rss",
            "\"exclude\"",
        ),
        (json!({"match": "vlan"}), "lease.steering.match", "\"vlan\""),
        (json!({"match": 1}), "lease.steering.match", "1"),
        (json!({"rsss": "admin"}), "lease.steering.rsss", "\"admin\""),
        (json!({"ruleBase": -1}), "lease.steering.ruleBase", "-1"),
        (json!("mac"), "lease.steering", "\"mac\""),
    ] {
        let e = lease(json!({"master": "ens1f0", "steering": block.clone()})).unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG, "{block}: {e:?}");
        assert!(
            e.msg.contains(field) && e.msg.contains(value),
            "{block}: {}",
            e.msg
        );
    }
}

#[test]
fn single_pairing_needs_a_lease_block() {
    let mut v = with("pairing", json!("single"));
    let err: CniError = parse(v.clone()).unwrap_err().into();
    assert_eq!(err.code, 7);
    assert!(err.msg.contains("field lease is missing"), "{}", err.msg);
    v["lease"] = json!({"master": "eth1"});
    assert!(parse(v).is_ok());
}

#[test]
fn queue_sets_parse_and_render_as_ranges() {
    for (text, ids, shown) in [
        ("2-7", vec![2, 3, 4, 5, 6, 7], "2-7"),
        ("1,3-5", vec![1, 3, 4, 5], "1,3-5"),
        (" 4 , 0 ", vec![0, 4], "0,4"),
        ("5-5,1", vec![1, 5], "1,5"),
    ] {
        let set = QueueSet::parse(text).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), ids, "{text}");
        assert_eq!(set.to_string(), shown, "{text}");
    }
    for bad in [
        "",
        "1,,2",
        "7-2",
        "a",
        "-3",
        "1-",
        "+4",
        "70000",
        "0-4294967295",
    ] {
        assert!(QueueSet::parse(bad).is_err(), "{bad:?} must be refused");
    }
    assert_eq!(QueueSet::default().to_string(), "(none)");
    assert_eq!(QueueSet::parse("0-9").unwrap().below(4).to_string(), "0-3");
}

#[test]
fn bad_lease_blocks_are_code_7_naming_the_nested_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "lease.master", "missing"),
        (json!({"master": ""}), "lease.master", "\"\""),
        (json!({"master": "a/b"}), "lease.master", "\"a/b\""),
        (
            json!({"master": "averyveryverylongname"}),
            "lease.master",
            "15 bytes",
        ),
        (json!({"master": 3}), "lease.master", "3"),
        (json!({"master": "e", "queues": 0}), "lease.queues", "0"),
        (
            json!({"master": "e", "queues": 1024}),
            "lease.queues",
            "1024",
        ),
        (
            json!({"master": "e", "queues": 2, "queueIds": [1]}),
            "lease.queueIds",
            "not both",
        ),
        (
            json!({"master": "e", "queueIds": []}),
            "lease.queueIds",
            "empty",
        ),
        (
            json!({"master": "e", "queueIds": [1, 1]}),
            "lease.queueIds",
            "twice",
        ),
        (
            json!({"master": "e", "queueIds": [-1]}),
            "lease.queueIds[0]",
            "-1",
        ),
        (
            json!({"master": "e", "queueIds": [0]}),
            "lease.queueIds",
            "queue 0 is outside the pool",
        ),
        (
            json!({"master": "e", "queueIds": [5], "allowedQueues": "1-4"}),
            "lease.queueIds",
            "queue 5",
        ),
        (
            json!({"master": "e", "allowedQueues": "7-2"}),
            "lease.allowedQueues",
            "reversed",
        ),
        (
            json!({"master": "e", "allowedQueues": 3}),
            "lease.allowedQueues",
            "3",
        ),
        (
            json!({"master": "e", "allowedQueues": []}),
            "lease.allowedQueues",
            "empty",
        ),
        (
            json!({"master": "e", "queues": 3, "allowedQueues": "1-2"}),
            "lease.queues",
            "allowedQueues 1-2",
        ),
        (
            json!({"master": "e", "queues": 3, "maxQueuesPerPod": 2}),
            "lease.queues",
            "maxQueuesPerPod 2",
        ),
        (
            json!({"master": "e", "queueIds": [1, 2], "maxQueuesPerPod": 1}),
            "lease.queueIds",
            "maxQueuesPerPod 1",
        ),
        (
            json!({"master": "e", "maxQueuesPerPod": 0}),
            "lease.maxQueuesPerPod",
            "0",
        ),
        (
            json!({"master": "e", "deviceInfoDir": "rel/dir"}),
            "lease.deviceInfoDir",
            "absolute",
        ),
        (json!("eth1"), "lease", "\"eth1\""),
    ];
    for (block, field, text) in cases {
        let err = lease(block.clone()).unwrap_err();
        assert_eq!(err.code, 7, "{block}: {err:?}");
        assert!(
            err.msg.contains(&format!("field {field}")),
            "{block}: {:?}",
            err.msg
        );
        assert!(
            err.msg.contains(text) || err.details.contains(text),
            "{block}: {err:?} lacks {text}"
        );
    }
    let err = lease(json!({"master": "e", "queus": 2})).unwrap_err();
    assert_eq!(err.code, 2, "a typo inside the block is an unknown field");
    assert!(err.msg.contains("lease.queus"), "{}", err.msg);
}
