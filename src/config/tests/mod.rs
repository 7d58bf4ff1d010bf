//! Tests of the top-level keys and the shared readers; one file per block beside this one.

use super::*;
use serde_json::json;

fn base() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "pods",
        "type": "netkit-cni",
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}
    })
}

fn with(key: &str, v: Value) -> Value {
    let mut c = base();
    c[key] = v;
    c
}

fn parse(v: Value) -> Result<NetConf, ConfigError> {
    NetConf::parse(v.to_string().as_bytes())
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(base()).unwrap();
    assert_eq!(c.cni_version, CniVersion::V1_1_0);
    assert_eq!(c.name, "pods");
    assert_eq!(c.mode, Mode::L3);
    assert_eq!(c.pairing, Pairing::Pair);
    assert_eq!(
        (c.policy, c.peer_policy),
        (Policy::Forward, Policy::Forward)
    );
    assert_eq!((c.scrub, c.peer_scrub), (Scrub::Default, Scrub::Default));
    assert_eq!((c.mtu, c.headroom, c.tailroom), (None, None, None));
    assert_eq!(c.log_level, LogLevel::Warn);
    assert_eq!(c.log_file, None);
    assert!(!c.disable_check && !c.disable_gc && !c.ip_masq);
    assert_eq!(c.ipam.as_ref().unwrap().plugin_type, "host-local");
    assert_eq!(c.ipam.unwrap().raw["subnet"], "10.1.0.0/16");
    assert_eq!(c.raw, base());
}

#[test]
fn full_config_parses_every_key() {
    let v = json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "vm-net.1",
        "type": "netkit-cni",
        "disableCheck": true,
        "disableGC": "True",
        "args": {"labels": {"app": "x"}},
        "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]},
        "dns": {"nameservers": ["10.0.0.10", "fd00::10"], "search": ["svc.cluster.local"],
                "domain": "cluster.local", "options": ["ndots:5"]},
        "runtimeConfig": {"mac": "02:00:00:00:00:01"},
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24"}]},
        "capabilities": {"mac": true, "ips": false},
        "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}],
        "cni.dev/attachments": [{"containerID": "abc", "ifname": "eth0"}],
        "mode": "l2",
        "pairing": "single",
        "mtu": 9000,
        "headroom": 256,
        "tailroom": 0,
        "policy": "blackhole",
        "peerPolicy": "forward",
        "scrub": "none",
        "peerScrub": "default",
        "logFile": "/var/log/netkit-cni.log",
        "logLevel": "debug",
        "lease": {"master": "eth1", "queues": 2, "allowedQueues": "2-7", "maxQueuesPerPod": 4,
                  "deviceInfoDir": "/run/devinfo"}
    });
    let c = parse(v.clone()).unwrap();
    assert_eq!(c.raw, v);
    let raw_back: Value = serde_json::from_slice(&c.raw_bytes()).unwrap();
    assert_eq!(raw_back, v);
    assert_eq!(c.cni_version, CniVersion::V1_0_0);
    assert_eq!(c.name, "vm-net.1");
    assert!(c.disable_check && c.disable_gc && c.ip_masq);
    assert_eq!(c.args.unwrap()["labels"]["app"], "x");
    let dns = c.dns.unwrap();
    assert_eq!(dns.nameservers, vec!["10.0.0.10", "fd00::10"]);
    assert_eq!(dns.domain.as_deref(), Some("cluster.local"));
    assert_eq!(c.runtime_config.unwrap()["mac"], "02:00:00:00:00:01");
    assert_eq!(
        c.prev_result.unwrap().ips[0].address.to_string(),
        "10.9.0.2/24"
    );
    let caps = c.capabilities.unwrap();
    assert_eq!((caps["mac"], caps["ips"]), (true, false));
    assert_eq!(
        c.valid_attachments.unwrap(),
        vec![Attachment {
            container_id: "abc".into(),
            ifname: "eth0".into()
        }]
    );
    assert_eq!((c.mode, c.pairing), (Mode::L2, Pairing::Single));
    assert_eq!(
        (c.mtu, c.headroom, c.tailroom),
        (Some(9000), Some(256), Some(0))
    );
    assert_eq!(
        (c.policy, c.peer_policy),
        (Policy::Blackhole, Policy::Forward)
    );
    assert_eq!((c.scrub, c.peer_scrub), (Scrub::None, Scrub::Default));
    assert_eq!(c.log_file, Some(PathBuf::from("/var/log/netkit-cni.log")));
    assert_eq!(c.log_level, LogLevel::Debug);
    let lease = c.lease.unwrap();
    assert_eq!(lease.master, "eth1");
    assert_eq!(lease.queues, LeaseQueues::Count(2));
    assert_eq!(lease.allowed_queues.unwrap().to_string(), "2-7");
    assert_eq!(lease.max_queues_per_pod, Some(4));
    assert_eq!(lease.device_info_dir, PathBuf::from("/run/devinfo"));
}

#[test]
fn single_mode_may_omit_ipam_and_pair_mode_may_not() {
    let mut v = base();
    v.as_object_mut().unwrap().remove("ipam");
    v["pairing"] = json!("single");
    v["lease"] = json!({"master": "eth1"});
    assert!(parse(v.clone()).unwrap().ipam.is_none());

    v["pairing"] = json!("pair");
    let err = parse(v.clone()).unwrap_err();
    assert_eq!(err.code(), 7);
    let cni: CniError = err.into();
    assert!(cni.msg.contains("ipam"), "{}", cni.msg);

    v.as_object_mut().unwrap().remove("pairing");
    assert_eq!(parse(v).unwrap_err().code(), 7, "pair is the default");
}

#[test]
fn attachments_old_key_is_accepted_and_spec_key_wins() {
    let mut v = base();
    v["cni.dev/attachments"] = json!([{"containerID": "old", "ifname": "eth0"}]);
    assert_eq!(
        parse(v.clone()).unwrap().valid_attachments.unwrap()[0].container_id,
        "old"
    );
    v["cni.dev/valid-attachments"] = json!([{"containerID": "new", "ifname": "eth1"}]);
    let list = parse(v).unwrap().valid_attachments.unwrap();
    assert_eq!(
        list,
        vec![Attachment {
            container_id: "new".into(),
            ifname: "eth1".into()
        }]
    );
}

#[test]
fn null_optional_keys_count_as_absent() {
    let mut v = with("mtu", Value::Null);
    v["prevResult"] = Value::Null;
    let c = parse(v).unwrap();
    assert_eq!((c.mtu, c.prev_result), (None, None));
}

#[test]
fn boundary_values_accepted() {
    assert_eq!(parse(with("mtu", json!(68))).unwrap().mtu, Some(68));
    assert_eq!(parse(with("mtu", json!(65535))).unwrap().mtu, Some(65535));
    assert_eq!(
        parse(with("headroom", json!(65535))).unwrap().headroom,
        Some(65535)
    );
    assert!(
        !parse(with("disableCheck", json!("FALSE")))
            .unwrap()
            .disable_check
    );
}

/// (key, value, code, text the message must contain besides the field name)
fn bad_cases() -> Vec<(&'static str, Value, u32, &'static str)> {
    vec![
        ("mode", json!("l4"), 7, "\"l4\""),
        ("mode", json!("L3"), 7, "\"L3\""),
        ("mode", json!(3), 7, "3"),
        ("pairing", json!("triple"), 7, "\"triple\""),
        ("mtu", json!(67), 7, "67"),
        ("mtu", json!(65536), 7, "65536"),
        ("mtu", json!(-1), 7, "-1"),
        ("mtu", json!(1500.5), 7, "1500.5"),
        ("mtu", json!("1500"), 7, "\"1500\""),
        ("headroom", json!(65536), 7, "65536"),
        ("tailroom", json!(-5), 7, "-5"),
        ("tailroom", json!(true), 7, "true"),
        ("policy", json!("drop"), 7, "\"drop\""),
        ("peerPolicy", json!("accept"), 7, "\"accept\""),
        ("scrub", json!("all"), 7, "\"all\""),
        ("peerScrub", json!(false), 7, "false"),
        ("logFile", json!("relative/log"), 7, "\"relative/log\""),
        ("logFile", json!(""), 7, "\"\""),
        ("logFile", json!(7), 7, "7"),
        ("logLevel", json!("trace"), 7, "\"trace\""),
        ("logLevel", json!("DEBUG"), 7, "\"DEBUG\""),
        ("name", json!("bad/name"), 7, "\"bad/name\""),
        ("name", json!(".hidden"), 7, "\".hidden\""),
        ("name", json!(""), 7, "\"\""),
        ("name", json!(42), 7, "42"),
        ("name", json!("n".repeat(256)), 7, "nnnnnnnn"),
        ("type", json!("bridge"), 7, "\"bridge\""),
        ("type", json!(["netkit-cni"]), 7, "netkit-cni"),
        ("disableCheck", json!("yes"), 7, "\"yes\""),
        ("disableGC", json!(1), 7, "1"),
        ("ipMasq", json!("true"), 7, "\"true\""),
        ("args", json!("K=V"), 7, "\"K=V\""),
        ("runtimeConfig", json!([]), 7, "[]"),
        ("capabilities", json!(["mac"]), 7, "mac"),
        ("ipam", json!("host-local"), 7, "\"host-local\""),
        ("dns", json!(["10.0.0.1"]), 7, "10.0.0.1"),
        ("cniVersions", json!("1.0.0"), 7, "\"1.0.0\""),
        ("cni.dev/valid-attachments", json!({}), 7, "{}"),
        ("cni.dev/attachments", json!("abc"), 7, "\"abc\""),
    ]
}

#[test]
fn bad_values_are_code_7_naming_field_and_value() {
    for (key, value, code, text) in bad_cases() {
        let err = parse(with(key, value.clone())).unwrap_err();
        assert_eq!(err.code(), code, "{key}={value}: {err}");
        let cni: CniError = err.into();
        assert_eq!(cni.code, code);
        assert!(
            cni.msg.contains(&format!("field {key}")),
            "{key}={value}: msg {:?}",
            cni.msg
        );
        assert!(
            cni.msg.contains(text),
            "{key}={value}: msg {:?} lacks {text}",
            cni.msg
        );
    }
}

#[test]
fn nested_bad_values_name_the_nested_field() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "ipam",
            json!({"subnet": "10.0.0.0/8"}),
            "ipam.type",
            "missing",
        ),
        ("ipam", json!({"type": 5}), "ipam.type", "5"),
        ("ipam", json!({"type": ""}), "ipam.type", "\"\""),
        (
            "ipam",
            json!({"type": "../../bin/sh"}),
            "ipam.type",
            "\"../../bin/sh\"",
        ),
        (
            "ipam",
            json!({"type": "/usr/bin/evil"}),
            "ipam.type",
            "\"/usr/bin/evil\"",
        ),
        ("ipam", json!({"type": "a..b"}), "ipam.type", "\"a..b\""),
        (
            "dns",
            json!({"nameservers": ["not-an-ip"]}),
            "dns.nameservers[0]",
            "\"not-an-ip\"",
        ),
        (
            "dns",
            json!({"nameservers": "10.0.0.1"}),
            "dns.nameservers",
            "\"10.0.0.1\"",
        ),
        ("dns", json!({"domain": 3}), "dns.domain", "3"),
        ("dns", json!({"search": [1]}), "dns.search[0]", "1"),
        (
            "capabilities",
            json!({"mac": "yes"}),
            "capabilities.mac",
            "\"yes\"",
        ),
        ("cniVersions", json!(["1.0.0", 1]), "cniVersions[1]", "1"),
        (
            "cni.dev/valid-attachments",
            json!([{"containerID": "a"}]),
            "cni.dev/valid-attachments[0].ifname",
            "missing",
        ),
        (
            "cni.dev/valid-attachments",
            json!([{"containerID": 1, "ifname": "eth0"}]),
            "cni.dev/valid-attachments[0].containerID",
            "1",
        ),
        (
            "cni.dev/valid-attachments",
            json!(["abc"]),
            "cni.dev/valid-attachments[0]",
            "\"abc\"",
        ),
    ];
    for (key, value, field, text) in cases {
        let err = parse(with(key, value.clone())).unwrap_err();
        assert_eq!(err.code(), 7, "{key}={value}: {err}");
        let cni: CniError = err.into();
        assert!(
            cni.msg.contains(&format!("field {field}")),
            "{key}={value}: msg {:?}",
            cni.msg
        );
        assert!(
            cni.msg.contains(text),
            "{key}={value}: msg {:?} lacks {text}",
            cni.msg
        );
    }
}

#[test]
fn unknown_keys_are_code_2_naming_key_and_value() {
    for (key, value) in [
        ("mtus", json!(1500)),
        ("leases", json!({"queues": 2})),
        ("Mode", json!("l3")),
        ("bogus", Value::Null),
    ] {
        let err = parse(with(key, value.clone())).unwrap_err();
        assert_eq!(err.code(), 2, "{key}");
        let cni: CniError = err.into();
        assert_eq!(cni.code, 2);
        assert!(cni.msg.contains(&format!("{key:?}")), "{}", cni.msg);
        assert!(cni.msg.contains(&render_value(&value)), "{}", cni.msg);
    }
}

#[test]
fn missing_required_keys_are_code_7() {
    for key in ["name", "type"] {
        let mut v = base();
        v.as_object_mut().unwrap().remove(key);
        let cni: CniError = parse(v).unwrap_err().into();
        assert_eq!(cni.code, 7, "{key}");
        assert!(
            cni.msg.contains(&format!("field {key} is missing")),
            "{}",
            cni.msg
        );
    }
    let cni: CniError = parse(with("type", Value::Null)).unwrap_err().into();
    assert!(cni.msg.contains("field type"), "{}", cni.msg);
}

#[test]
fn version_errors() {
    let cni: CniError = parse(with("cniVersion", json!("0.2.0")))
        .unwrap_err()
        .into();
    assert_eq!(cni.code, 1);
    assert!(cni.msg.contains("\"0.2.0\""), "{}", cni.msg);

    let mut v = base();
    v.as_object_mut().unwrap().remove("cniVersion");
    let cni: CniError = parse(v).unwrap_err().into();
    assert_eq!(cni.code, 7);
    assert!(cni.msg.contains("cniVersion"), "{}", cni.msg);

    // An unsupported version wins over keys it may have introduced.
    let mut v = with("cniVersion", json!("2.0.0"));
    v["newKey"] = json!(1);
    assert_eq!(parse(v).unwrap_err().code(), 1);
}

#[test]
fn malformed_json_is_code_6() {
    for bad in [&b"{"[..], b"", b"{\"name\": }", b"nul"] {
        let err = NetConf::parse(bad).unwrap_err();
        assert_eq!(err.code(), 6, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(CniError::from(err).code, 6);
    }
    for not_obj in ["[]", "\"conf\"", "42", "null"] {
        let err = NetConf::parse(not_obj.as_bytes()).unwrap_err();
        assert_eq!(err.code(), 6, "{not_obj}");
        assert!(CniError::from(err).msg.contains(not_obj), "{not_obj}");
    }
}

#[test]
fn prev_result_is_parsed_under_the_config_version() {
    let prev = json!({"ips": [{"version": "4", "address": "10.1.0.5/16"}]});
    let mut v = with("prevResult", prev.clone());
    v["cniVersion"] = json!("0.4.0");
    assert_eq!(parse(v).unwrap().prev_result.unwrap().ips.len(), 1);

    // The same 0.4.0-shaped result under a 1.0.0 config is rejected, naming the field.
    let mut v = with("prevResult", prev);
    v["cniVersion"] = json!("1.0.0");
    let cni: CniError = parse(v).unwrap_err().into();
    assert_eq!(cni.code, 6);
    assert!(cni.msg.contains("prevResult.ips[0].version"), "{}", cni.msg);

    let cni: CniError = parse(with("prevResult", json!({"cniVersion": "1.0.0"})))
        .unwrap_err()
        .into();
    assert!(
        cni.msg.contains("prevResult.cniVersion") && cni.msg.contains("\"1.0.0\""),
        "{}",
        cni.msg
    );
}

#[test]
fn raw_bytes_parse_back_to_the_same_config() {
    // Found by fuzzing (fuzz/fuzz_targets/config.rs): with serde_json's default, not
    // correctly rounded, float parsing, 99999999999199999990999 read as one f64 and its
    // re-serialization as another, so a delegate got numbers we never validated.
    let input = br#"{"cniVersion":"1.1.0","name":"n","type":"netkit-cni",
            "ipam":{"type":"host-local","x":99999999999199999990999,
                    "y":9.99999999992e22,"z":0.1,"w":-1.7976931348623157e308}}"#;
    let c = NetConf::parse(input).unwrap();
    let again = NetConf::parse(&c.raw_bytes()).unwrap();
    assert_eq!(again, c);
    assert_eq!(again.raw_bytes(), c.raw_bytes());
}

#[test]
fn key_table_has_no_duplicates() {
    let mut keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
}

#[test]
fn log_level_choices_match_the_logger() {
    assert_eq!(LOG_LEVELS.len(), LogLevel::ALL.len());
    for (name, level) in LOG_LEVELS {
        assert_eq!(LogLevel::parse(name), Some(*level));
        assert_eq!(
            parse(with("logLevel", json!(name))).unwrap().log_level,
            *level
        );
    }
}

mod host_routing;
mod lease;
mod request;
mod xdp;
