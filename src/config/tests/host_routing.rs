use super::*;

fn hr_conf(block: Value) -> Result<NetConf, CniError> {
    parse(with("hostRouting", block)).map_err(CniError::from)
}

#[test]
fn host_routing_defaults_to_kernel_routing() {
    assert_eq!(parse(base()).unwrap().host_routing, None);
    assert_eq!(hr_conf(json!({})).unwrap().host_routing, None);
    assert_eq!(
        hr_conf(json!({"mode": "kernel"})).unwrap().host_routing,
        None
    );
    assert_eq!(hr_conf(Value::Null).unwrap().host_routing, None);
}

#[test]
fn host_routing_bpf_block_parses() {
    let h = hr_conf(json!({"mode": "bpf", "uplink": "ens1f0"}))
        .unwrap()
        .host_routing
        .unwrap();
    assert_eq!(h.uplink, "ens1f0");
    assert!(h.bypass.is_empty(), "nothing bypasses unless named");
    assert_eq!(h.bpffs, PathBuf::from("/sys/fs/bpf"));
    let h = hr_conf(
        json!({"mode": "bpf", "uplink": "ens1f0", "bpffs": "/run/bpf",
                           "bypass": ["10.0.0.0/8", "fd00:1::/64", "192.0.2.7/32", "0.0.0.0/0"]}),
    )
    .unwrap()
    .host_routing
    .unwrap();
    let shown: Vec<String> = h.bypass.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        ["10.0.0.0/8", "fd00:1::/64", "192.0.2.7/32", "0.0.0.0/0"]
    );
    assert_eq!(h.bpffs, PathBuf::from("/run/bpf"));
}

#[test]
fn host_routing_bad_values_name_field_and_value() {
    let cases: Vec<(Value, u32, &str)> = vec![
        (json!("bpf"), 7, "hostRouting"),
        (json!({"mode": "ebpf"}), 7, "field hostRouting.mode"),
        (
            json!({"mode": "bpf"}),
            7,
            "field hostRouting.uplink is missing",
        ),
        (
            json!({"mode": "bpf", "uplink": "a/b"}),
            7,
            "\"a/b\" for field hostRouting.uplink",
        ),
        (
            json!({"mode": "bpf", "uplink": "averyveryverylongname"}),
            7,
            "hostRouting.uplink",
        ),
        (json!({"mode": "bpf", "uplink": 3}), 7, "hostRouting.uplink"),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypass": "10.0.0.0/8"}),
            7,
            "field hostRouting.bypass",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.0"]}),
            7,
            "\"10.0.0.0\" for field hostRouting.bypass[0]",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.0/8", "10.1.0.0/33"]}),
            7,
            "hostRouting.bypass[1]",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.1/8"]}),
            7,
            "host bits set; the prefix is 10.0.0.0/8",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypass": ["fd00::1/64"]}),
            7,
            "fd00::/64",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.0/8", "10.0.0.0/8"]}),
            7,
            "listed twice",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bpffs": "relative"}),
            7,
            "hostRouting.bpffs",
        ),
        (
            json!({"mode": "kernel", "uplink": "e0"}),
            7,
            "only meaningful with hostRouting.mode",
        ),
        (
            json!({"mode": "bpf", "uplink": "e0", "bypas": []}),
            2,
            "hostRouting.bypas",
        ),
    ];
    for (block, code, needle) in cases {
        let e = hr_conf(block.clone()).unwrap_err();
        assert_eq!(e.code, code, "{block}: {e:?}");
        let text = format!("{} {}", e.msg, e.details);
        assert!(text.contains(needle), "{block}: {text:?} lacks {needle:?}");
    }
    let many: Vec<String> = (0..=MAX_BYPASS_PREFIXES)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let e = hr_conf(json!({"mode": "bpf", "uplink": "e0", "bypass": many})).unwrap_err();
    assert!(e.details.contains("at most 256"), "{e:?}");
}

#[test]
fn host_routing_needs_a_pair() {
    let mut v = with("hostRouting", json!({"mode": "bpf", "uplink": "ens1f0"}));
    v["pairing"] = json!("single");
    v["lease"] = json!({"master": "ens1f0"});
    let e = CniError::from(parse(v.clone()).unwrap_err());
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("field hostRouting"), "{e:?}");
    assert!(e.details.contains("pairing \"pair\""), "{e:?}");
    let mut b = with("hostRouting", json!({"mode": "bpf", "uplink": "ens1f0"}));
    b["peerPolicy"] = json!("blackhole");
    let e = CniError::from(parse(b).unwrap_err());
    assert_eq!(e.code, 7);
    assert!(e.details.contains("peerPolicy"), "{e:?}");
    // mode kernel changes nothing, so it is accepted with any pairing.
    v["hostRouting"] = json!({"mode": "kernel"});
    assert_eq!(parse(v).unwrap().host_routing, None);
}
