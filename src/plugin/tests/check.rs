//! CHECK against the fake kernel and the device-info records.

use super::*;

#[test]
fn check_passes_then_names_the_queue_whose_lease_is_gone() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = lease_conf(&dir, "single", json!({"queues": 2}));
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf.clone();
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap();

    k.nic().leases.remove(&2);
    let err = cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(err.msg.contains("queue 2 of nic0"), "{}", err.msg);

    k.nic().up = false;
    let err = cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap_err();
    assert!(err.msg.contains("down"), "{}", err.msg);

    std::fs::remove_dir_all(&dir.0).unwrap();
    let err = cmd_check(&request("CHECK", "c1", check), &mut k, None).unwrap_err();
    assert!(
        err.msg.contains("device-info file") && err.msg.contains("missing"),
        "{}",
        err.msg
    );
}

#[test]
fn check_needs_the_dispatcher_and_exactly_the_recorded_steering() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queueIds": [2, 4]}));
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf;
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap();

    // A queue steered elsewhere (e.g. by hand) is named.
    k.xdp.steered.insert(4, ("c1/eth0".into(), 7));
    let err = cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(
        err.msg.contains("(4, 7)") && err.msg.contains("(4, 2)"),
        "{}",
        err.msg
    );

    k.xdp.attached = false;
    let err = cmd_check(&request("CHECK", "c1", check), &mut k, None).unwrap_err();
    assert!(
        err.msg.contains("no XDP dispatcher is attached to nic0"),
        "{}",
        err.msg
    );
}

#[test]
fn check_names_a_changed_rule_a_changed_context_and_rss_over_the_pool() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(
        &dir,
        json!({"queues": 2}),
        json!({"rss": "exclude-pool", "match": "mac"}),
    );
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf.clone();
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    let run = |k: &mut FakeKernel| cmd_check(&request("CHECK", "c1", check.clone()), k, None);
    run(&mut k).unwrap();

    // The context now spreads elsewhere.
    k.steer.contexts.insert(1, vec![2, 4]);
    let err = run(&mut k).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(
        err.msg.contains("context 1") && err.msg.contains("[2, 4]"),
        "{}",
        err.msg
    );
    k.steer.contexts.insert(1, vec![2, 3]);

    // The rule was rewritten to a queue.
    let mut rule = k.steer.rules[&8];
    rule.action = crate::kernel::ethtool::RuleAction::Queue(5);
    k.steer.rules.insert(8, rule);
    let err = run(&mut k).unwrap_err();
    assert!(
        err.msg.contains("rule 8") && err.msg.contains("queue 5"),
        "{}",
        err.msg
    );
    k.steer.rules.remove(&8);
    let err = run(&mut k).unwrap_err();
    assert!(
        err.msg.contains("rule 8") && err.msg.contains("gone"),
        "{}",
        err.msg
    );
    k.steer.rules.clear();
    let _ = k.steer.contexts.remove(&1);

    // Someone reset the default table.
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(&dir, json!({}), json!({"rss": "exclude-pool"}));
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf.clone();
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap();
    k.steer.table = Some(equal_over_all());
    let err = cmd_check(&request("CHECK", "c1", check), &mut k, None).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(
        err.msg.contains("default RSS context") && err.msg.contains("queue 2"),
        "{}",
        err.msg
    );
}

#[test]
fn check_reports_a_missing_host_routing_entry() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let conf = with_host_routing(json!({}));
    let r = added(&mut k, &ipam, "c1", conf.clone());
    let check = request("CHECK", "c1", with_prev_result(conf, &r));
    cmd_check(&check, &mut k, Some(&ipam)).unwrap();
    assert_eq!(
        k.calls.last().map(String::as_str),
        Some("host_routing_check")
    );

    k.host_routed.clear();
    let err = cmd_check(&check, &mut k, Some(&ipam)).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(err.msg.contains("10.1.0.5"), "{err:?}");
    assert!(err.details.contains("podnet/c1/eth0"), "{err:?}");
}
