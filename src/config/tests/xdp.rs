use super::*;
use crate::xdp::{QueueRanges, XdpMode};

pub(super) fn xdp_conf(block: Value, pairing: &str) -> Result<NetConf, CniError> {
    let mut v = with("lease", json!({"master": "ens1f0"}));
    v["pairing"] = json!(pairing);
    v["xdp"] = block;
    parse(v).map_err(CniError::from)
}

#[test]
fn xdp_block_defaults_and_fields() {
    let x = xdp_conf(json!({}), "single").unwrap().xdp.unwrap();
    assert_eq!(x.bpffs, PathBuf::from("/sys/fs/bpf"));
    assert_eq!((x.mode, x.stats, x.frags), (XdpMode::Auto, false, false));
    assert_eq!(x.ranges, QueueRanges::all_pass());
    let x = xdp_conf(
        json!({"bpffs": "/run/bpf", "mode": "generic", "stats": true,
               "ranges": [{"queues": "6-7", "action": "drop"}, {"queues": "0", "action": "program", "program": "/run/bpf/fw/prog"}]}),
        "single",
    )
    .unwrap()
    .xdp
    .unwrap();
    assert_eq!((x.mode, x.stats), (XdpMode::Generic, true));
    assert_eq!(x.ranges.ranges().len(), 2);
    assert_eq!(x.options().bpffs, PathBuf::from("/run/bpf"));
    assert_eq!(x.options().pod_map_access, None);
    let x = xdp_conf(
        json!({"podMap": {"uid": 107, "gid": 108, "mode": "0660"}}),
        "single",
    )
    .unwrap()
    .xdp
    .unwrap();
    assert_eq!(
        x.options().pod_map_access,
        Some(crate::xdp::PinAccess {
            uid: 107,
            gid: 108,
            mode: 0o660
        })
    );
    let x = xdp_conf(json!({"podMap": {"uid": 0, "gid": 108}}), "single")
        .unwrap()
        .xdp
        .unwrap();
    assert_eq!(x.options().pod_map_access.unwrap().mode, 0o600);
}

#[test]
fn bad_xdp_blocks_name_the_field_and_value() {
    let cases = [
        (
            json!({"ranges": [{"queues": "0-3", "action": "drop"}, {"queues": "2", "action": "pass"}]}),
            "xdp.ranges[1]",
            "overlap",
        ),
        (
            json!({"ranges": [{"queues": "0", "action": "program", "program": "/etc/passwd"}]}),
            "xdp.ranges[0]",
            "/etc/passwd",
        ),
        (
            json!({"ranges": [{"queues": "0", "action": "program", "program": "/sys/fs/bpf/../../etc/x"}]}),
            "xdp.ranges[0]",
            "etc/x",
        ),
        (
            json!({"ranges": [{"queues": "5-2", "action": "drop"}]}),
            "xdp.ranges[0]",
            "5-2",
        ),
        (
            json!({"ranges": [{"queues": "0", "action": "redirect"}]}),
            "xdp.ranges",
            "redirect",
        ),
        (json!({"ranges": "0-3"}), "xdp.ranges", "0-3"),
        (json!({"bpffs": "sys/fs/bpf"}), "xdp.bpffs", "sys/fs/bpf"),
        (json!({"bpffs": "/sys/fs/bpf/../../tmp"}), "xdp.bpffs", ".."),
        (
            json!({"bpffs": "/sys/fs/./bpf"}),
            "xdp.bpffs",
            "/sys/fs/./bpf",
        ),
        (
            json!({"podMap": {"uid": 107, "gid": 107, "mode": "0755"}}),
            "xdp.podMap.mode",
            "0755",
        ),
        (
            json!({"podMap": {"uid": 107, "gid": 107, "mode": "4660"}}),
            "xdp.podMap.mode",
            "4660",
        ),
        (
            json!({"podMap": {"uid": 107, "gid": 107, "mode": 660}}),
            "xdp.podMap.mode",
            "660",
        ),
        (
            json!({"podMap": {"uid": -1, "gid": 107}}),
            "xdp.podMap.uid",
            "-1",
        ),
        (
            json!({"podMap": {"uid": 4294967295u64, "gid": 107}}),
            "xdp.podMap.uid",
            "4294967295",
        ),
        (
            json!({"podMap": {"gid": 107}}),
            "xdp.podMap.uid",
            "required",
        ),
        (json!({"mode": "offload"}), "xdp.mode", "offload"),
        (json!({"stats": "yes"}), "xdp.stats", "yes"),
    ];
    for (block, field, value) in cases {
        let e = xdp_conf(block.clone(), "single").unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG, "{block}: {}", e.msg);
        assert!(
            e.msg.contains(field) && (e.msg.contains(value) || e.details.contains(value)),
            "{block}: {} / {}",
            e.msg,
            e.details
        );
    }
    let e = xdp_conf(json!({"ranges": [], "colour": 1}), "single").unwrap_err();
    assert_eq!(e.code, codes::UNSUPPORTED_FIELD);
    assert!(e.msg.contains("xdp.colour"), "{}", e.msg);
}

#[test]
fn xdp_needs_a_lease_and_a_single_device() {
    let mut pair = with("lease", json!({"master": "ens1f0"}));
    pair["xdp"] = json!({});
    let e = CniError::from(parse(pair).unwrap_err());
    assert!(
        e.msg.contains("field xdp") && e.details.contains("single"),
        "{} / {}",
        e.msg,
        e.details
    );
    let e = CniError::from(parse(with("xdp", json!({}))).unwrap_err());
    assert!(
        e.msg.contains("field xdp") && e.details.contains("lease"),
        "{} / {}",
        e.msg,
        e.details
    );
}
