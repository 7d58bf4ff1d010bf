//! Byte-for-byte tests of the ethtool encoders and decoders, with no kernel. Expected bytes are
//! written out from the uapi structs (include/uapi/linux/ethtool.h, neighbour.h) and
//! ethtool_netlink_generated.h of Linux 7.3, not produced by the code under test.

use std::net::{Ipv4Addr, Ipv6Addr};

use neli::consts::nl::NlmF;

use super::attrs::*;
use super::fdb;
use super::ntuple::*;
use super::rss::*;
use crate::kernel::netdev::wire::{decode_body, encode_request};

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

#[test]
fn rss_get_request_bytes() {
    let attrs = rss_get_attrs(7, 0).unwrap();
    let req = encode_request(
        "rss-get",
        0x15,
        NlmF::REQUEST | NlmF::ACK,
        3,
        EthtoolCmd::RssGet,
        FAMILY_VERSION,
        attrs,
    )
    .unwrap();
    let mut want = Vec::new();
    want.extend(le32(16 + 4 + 12)); // nlmsg_len
    want.extend(0x15u16.to_le_bytes()); // family id
    want.extend(0x0005u16.to_le_bytes()); // REQUEST | ACK
    want.extend(le32(3)); // seq
    want.extend(le32(0)); // pid
    want.extend([38, 1, 0, 0]); // cmd RSS_GET, version 1
                                // ETHTOOL_A_RSS_HEADER | NLA_F_NESTED, len 12, holding ETHTOOL_A_HEADER_DEV_INDEX = 7.
    want.extend(12u16.to_le_bytes());
    want.extend((1u16 | 0x8000).to_le_bytes());
    want.extend(8u16.to_le_bytes());
    want.extend(1u16.to_le_bytes());
    want.extend(le32(7));
    assert_eq!(req, want);

    // A context adds ETHTOOL_A_RSS_CONTEXT (2).
    let attrs = rss_get_attrs(7, 3).unwrap();
    let req = encode_request(
        "rss-get",
        0x15,
        NlmF::REQUEST | NlmF::ACK,
        3,
        EthtoolCmd::RssGet,
        FAMILY_VERSION,
        attrs,
    )
    .unwrap();
    assert_eq!(&req[32..], &[8, 0, 2, 0, 3, 0, 0, 0]);
    assert_eq!(req[0], 40);
}

#[test]
fn rss_set_create_delete_attribute_bytes() {
    let enc = |cmd: EthtoolCmd, attrs| {
        encode_request(
            "t",
            0x15,
            NlmF::REQUEST | NlmF::ACK,
            1,
            cmd,
            FAMILY_VERSION,
            attrs,
        )
        .unwrap()
    };
    // rss-set of the default context: header, then ETHTOOL_A_RSS_INDIR (4) as u32s.
    let req = enc(
        EthtoolCmd::RssSet,
        rss_set_attrs(2, 0, &[0, 1, 0, 1]).unwrap(),
    );
    assert_eq!(req[16], 48);
    let mut tail = Vec::new();
    tail.extend(20u16.to_le_bytes());
    tail.extend(4u16.to_le_bytes());
    for q in [0u32, 1, 0, 1] {
        tail.extend(le32(q));
    }
    assert_eq!(&req[20 + 12..], &tail[..]);
    // rss-create-act: no context attribute (the kernel allocates), the table.
    let req = enc(
        EthtoolCmd::RssCreateAct,
        rss_create_attrs(2, &[5, 6]).unwrap(),
    );
    assert_eq!(req[16], 49);
    assert_eq!(&req[32..], &[12, 0, 4, 0, 5, 0, 0, 0, 6, 0, 0, 0]);
    // rss-delete-act: the context.
    let req = enc(EthtoolCmd::RssDeleteAct, rss_delete_attrs(2, 9).unwrap());
    assert_eq!(req[16], 50);
    assert_eq!(&req[32..], &[8, 0, 2, 0, 9, 0, 0, 0]);
    // Refused before the kernel: an empty table (would reset), context 0.
    assert!(rss_set_attrs(2, 0, &[]).is_err());
    assert!(rss_create_attrs(2, &[]).is_err());
    assert!(rss_delete_attrs(2, 0).is_err());
}

#[test]
fn rss_reply_decodes_table_context_key_and_keeps_unknown() {
    // A create-act reply: header nest, context 4, hfunc 1, indir [2,3,2,3], hkey 4 bytes,
    // input-xfrm (6) = 0 kept as unknown.
    let mut p = vec![51u8, 1, 0, 0];
    p.extend([12, 0, 0x01, 0x80, 8, 0, 1, 0, 2, 0, 0, 0]);
    p.extend([8, 0, 2, 0, 4, 0, 0, 0]);
    p.extend([8, 0, 3, 0, 1, 0, 0, 0]);
    p.extend([20, 0, 4, 0]);
    for q in [2u32, 3, 2, 3] {
        p.extend(le32(q));
    }
    p.extend([8, 0, 5, 0, 0xde, 0xad, 0xbe, 0xef]);
    p.extend([8, 0, 6, 0, 0, 0, 0, 0]);
    let body = decode_body("t", &p).unwrap();
    assert_eq!(body.cmd, 51);
    let r = decode_rss("t", &body.attrs).unwrap();
    assert_eq!(r.context, 4);
    assert_eq!(r.hfunc, 1);
    assert_eq!(r.indir, vec![2, 3, 2, 3]);
    assert_eq!(r.queues(), vec![2, 3]);
    assert_eq!(r.hkey, vec![0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(r.unknown.len(), 1);
    assert_eq!(r.unknown[0].kind(), 6);
    // A table of a length that is no u32 array is malformed.
    let mut p = vec![38u8, 1, 0, 0];
    p.extend([7, 0, 4, 0, 1, 0, 0, 0]);
    let body = decode_body("t", &p).unwrap();
    assert!(decode_rss("t", &body.attrs).is_err());
}

#[test]
fn default_table_excludes_the_pool_round_robin() {
    // 8 queues, pool 2-7, 128 entries: 0,1,0,1,… as `ethtool -X equal 2` writes.
    let t = table_excluding(128, 8, &[2, 3, 4, 5, 6, 7]).unwrap();
    assert_eq!(t.len(), 128);
    assert!(t.iter().enumerate().all(|(i, q)| *q == (i % 2) as u32));
    // A pool in the middle: the queues on both sides share the table.
    let t = table_excluding(8, 6, &[2, 3]).unwrap();
    assert_eq!(t, vec![0, 1, 4, 5, 0, 1, 4, 5]);
    // A table size that the outside set does not divide still fills every entry.
    let t = table_excluding(5, 4, &[3]).unwrap();
    assert_eq!(t, vec![0, 1, 2, 0, 1]);
    // A pool covering every queue leaves nothing for RSS.
    assert_eq!(table_excluding(16, 2, &[0, 1]), None);
    // A context over exactly the leased queues.
    assert_eq!(table_over(6, &[4, 5]), vec![4, 5, 4, 5, 4, 5]);
    assert_eq!(table_over(4, &[3, 5, 7]), vec![3, 5, 7, 3]);
}

fn rxnfc_header(cmd: u32) -> Vec<u8> {
    let mut b = vec![0u8; 192];
    b[..4].copy_from_slice(&le32(cmd));
    b
}

#[test]
fn ntuple_insert_ether_dst_to_a_queue_bytes() {
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let rule = FlowRule {
        location: 12,
        matches: FlowMatch::EtherDst(mac),
        action: RuleAction::Queue(3),
    };
    let b = rxnfc_insert(&rule);
    let mut want = rxnfc_header(0x32);
    // fs at 16: flow_type ETHER_FLOW (0x12).
    want[16..20].copy_from_slice(&le32(0x12));
    // h_u (fs+4): ethhdr.h_dest.
    want[20..26].copy_from_slice(&mac);
    // m_u (fs+76): h_dest all ones.
    want[92..98].copy_from_slice(&[0xff; 6]);
    // ring_cookie (fs+152) = 3, location (fs+160) = 12.
    want[168..176].copy_from_slice(&3u64.to_le_bytes());
    want[176..180].copy_from_slice(&le32(12));
    assert_eq!(b, want);
    assert_eq!(decode_rule(&b).unwrap(), Some(rule));
}

#[test]
fn ntuple_insert_ip_dst_to_a_context_bytes() {
    let rule = FlowRule {
        location: 9,
        matches: FlowMatch::Ip4Dst(Ipv4Addr::new(10, 1, 2, 3)),
        action: RuleAction::Context(5),
    };
    let b = rxnfc_insert(&rule);
    let mut want = rxnfc_header(0x32);
    want[16..20].copy_from_slice(&le32(0x0d | 0x2000_0000)); // IP_USER_FLOW | FLOW_RSS
    want[24..28].copy_from_slice(&[10, 1, 2, 3]); // ip4dst
    want[33] = 1; // ip_ver = ETH_RX_NFC_IP4
    want[96..100].copy_from_slice(&[0xff; 4]);
    want[176..180].copy_from_slice(&le32(9));
    want[184..188].copy_from_slice(&le32(5)); // rss_context
    assert_eq!(b, want);
    assert_eq!(decode_rule(&b).unwrap(), Some(rule));

    let a6: Ipv6Addr = "fd00::1:2".parse().unwrap();
    let rule = FlowRule {
        location: 10,
        matches: FlowMatch::Ip6Dst(a6),
        action: RuleAction::Queue(4),
    };
    let b = rxnfc_insert(&rule);
    let mut want = rxnfc_header(0x32);
    want[16..20].copy_from_slice(&le32(0x0e));
    want[36..52].copy_from_slice(&a6.octets()); // ip6dst at h_u + 16
    want[108..124].copy_from_slice(&[0xff; 16]);
    want[168..176].copy_from_slice(&4u64.to_le_bytes());
    want[176..180].copy_from_slice(&le32(10));
    assert_eq!(b, want);
    assert_eq!(decode_rule(&b).unwrap(), Some(rule));
}

#[test]
fn ntuple_decodes_foreign_shapes_as_not_ours_and_tables() {
    // A rule that also masks the source MAC is not one the plugin writes.
    let mut b = rxnfc_insert(&FlowRule {
        location: 1,
        matches: FlowMatch::EtherDst([2, 0, 0, 0, 0, 1]),
        action: RuleAction::Queue(1),
    });
    b[98] = 0xff;
    assert_eq!(decode_rule(&b).unwrap(), None);
    // TCP_V4_FLOW (1) is not decoded.
    let mut b = rxnfc_header(0x2f);
    b[16..20].copy_from_slice(&le32(1));
    assert_eq!(decode_rule(&b).unwrap(), None);
    // Drop.
    let mut b = rxnfc_insert(&FlowRule {
        location: 1,
        matches: FlowMatch::EtherDst([2, 0, 0, 0, 0, 1]),
        action: RuleAction::Drop,
    });
    assert_eq!(decode_rule(&b).unwrap().unwrap().action, RuleAction::Drop);
    b.truncate(100);
    assert!(decode_rule(&b).is_err());

    // GRXCLSRLCNT: data = size | RX_CLS_LOC_SPECIAL, rule_cnt.
    let mut b = rxnfc_cmd(0x2e);
    assert_eq!(b, rxnfc_header(0x2e));
    b[8..12].copy_from_slice(&le32(256 | 0x8000_0000));
    b[184..188].copy_from_slice(&le32(2));
    assert_eq!(decode_count(&b).unwrap(), (256, 2));
    // GRXCLSRLALL request and answer.
    let mut b = rxnfc_all(2, 256);
    assert_eq!(b.len(), 196);
    assert_eq!(&b[..4], &le32(0x30));
    assert_eq!(&b[184..188], &le32(2));
    b[188..192].copy_from_slice(&le32(8));
    b[192..196].copy_from_slice(&le32(12));
    assert_eq!(
        decode_all(&b).unwrap(),
        RuleTable {
            size: 256,
            locations: vec![8, 12]
        }
    );
    b[184..188].copy_from_slice(&le32(3));
    assert!(decode_all(&b).is_err(), "a count beyond the buffer");
    // GRXCLSRULE / SRXCLSRLDEL name only the location.
    let b = rxnfc_at(0x31, 77);
    let mut want = rxnfc_header(0x31);
    want[176..180].copy_from_slice(&le32(77));
    assert_eq!(b, want);
}

#[test]
fn mac_text_round_trips() {
    assert_eq!(
        parse_mac("02:AB:cd:00:01:ff"),
        Some([2, 0xab, 0xcd, 0, 1, 0xff])
    );
    assert_eq!(
        mac_string(&[2, 0xab, 0xcd, 0, 1, 0xff]),
        "02:ab:cd:00:01:ff"
    );
    for bad in [
        "02:ab:cd:00:01",
        "02:ab:cd:00:01:ff:00",
        "2:ab:cd:00:01:ff",
        "zz:ab:cd:00:01:ff",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn fdb_add_and_del_bytes() {
    let mac = [0x02, 0, 0, 0, 0, 0x07];
    let b = fdb::encode(true, 4, &mac, 9);
    let mut want = Vec::new();
    want.extend(le32(40));
    want.extend(28u16.to_le_bytes()); // RTM_NEWNEIGH
    want.extend(0x0605u16.to_le_bytes()); // REQUEST | ACK | EXCL | CREATE
    want.extend(le32(9));
    want.extend(le32(0));
    want.extend([7, 0, 0, 0]); // AF_BRIDGE
    want.extend(le32(4)); // ifindex
    want.extend(0x80u16.to_le_bytes()); // NUD_PERMANENT
    want.extend([0x02, 0]); // NTF_SELF, type
    want.extend(10u16.to_le_bytes());
    want.extend(2u16.to_le_bytes()); // NDA_LLADDR
    want.extend(mac);
    want.extend([0, 0]);
    assert_eq!(b, want);
    let d = fdb::encode(false, 4, &mac, 9);
    assert_eq!(&d[4..8], &[29, 0, 0x05, 0]);
    assert_eq!(&d[8..], &want[8..]);
}
