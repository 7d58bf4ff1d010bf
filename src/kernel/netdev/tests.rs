//! Byte-for-byte tests of the netdev client. Every literal below is derived by hand from
//! netdev.yaml / uapi netdev.h (attribute and command numbers), `struct nlmsghdr` (u32 len, u16
//! type, u16 flags, u32 seq, u32 port id), `struct genlmsghdr` (u8 cmd, u8 version, u16
//! reserved) and `struct nlattr` (u16 len incl. 4-byte header, u16 type, payload padded to 4),
//! in host (little-endian) byte order.

use nix::errno::Errno;

use super::attrs::QueueType;
use super::dev::{decode_dev, dev_get_attrs};
use super::family::{decode_family, encode_getfamily, FamilyOp, GENL_ID_CTRL};
use super::queue::{decode_queue, queue_create_attrs, queue_dump_attrs, queue_get_attrs};
use super::wire::{decode_body, encode_request};
use super::*;
use crate::kernel::netlink::testing::{cat, Scripted};
use crate::kernel::netlink::KernelError;
use neli::consts::nl::NlmF;

/// Family id the tests pretend the kernel assigned to "netdev".
const FAM: u16 = 0x1b;

/// queue-create, seq 2: virtual ifindex 7, rx, lease { ifindex 3, queue { 5, rx }, netns-id 2 }.
const QUEUE_CREATE_REQ: [u8; 76] = [
    0x4c, 0x00, 0x00, 0x00, // nlmsg_len 76
    0x1b, 0x00, // nlmsg_type: netdev family id
    0x05, 0x00, // NLM_F_REQUEST | NLM_F_ACK
    0x02, 0x00, 0x00, 0x00, // seq 2
    0x00, 0x00, 0x00, 0x00, // port id 0 (kernel)
    0x10, 0x01, 0x00, 0x00, // NETDEV_CMD_QUEUE_CREATE (16), version 1, reserved
    0x08, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, // NETDEV_A_QUEUE_IFINDEX = 7
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // NETDEV_A_QUEUE_TYPE = rx (0)
    0x28, 0x00, 0x08, 0x80, // NETDEV_A_QUEUE_LEASE | NLA_F_NESTED, len 40
    0x08, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, //   NETDEV_A_LEASE_IFINDEX = 3
    0x14, 0x00, 0x02, 0x80, //   NETDEV_A_LEASE_QUEUE | NLA_F_NESTED, len 20
    0x08, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, //     NETDEV_A_QUEUE_ID = 5
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, //     NETDEV_A_QUEUE_TYPE = rx
    0x08, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, //   NETDEV_A_LEASE_NETNS_ID = 2
];

/// CTRL_CMD_GETFAMILY "netdev", seq 1.
const GETFAMILY_REQ: [u8; 32] = [
    0x20, 0x00, 0x00, 0x00, // len 32
    0x10, 0x00, // GENL_ID_CTRL
    0x05, 0x00, // REQUEST | ACK
    0x01, 0x00, 0x00, 0x00, // seq 1
    0x00, 0x00, 0x00, 0x00, // port id
    0x03, 0x02, 0x00, 0x00, // CTRL_CMD_GETFAMILY, version 2
    0x0b, 0x00, 0x02, 0x00, b'n', b'e', b't', b'd', b'e', b'v', 0x00,
    0x00, // CTRL_ATTR_FAMILY_NAME "netdev\0" (+1 pad)
];

/// CTRL_CMD_NEWFAMILY reply for "netdev" (seq 1) listing dev-get, queue-get, queue-create.
const FAMILY_REPLY: [u8; 128] = [
    0x80, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x99, 0x00, 0x00,
    0x00, //
    0x01, 0x02, 0x00, 0x00, // CTRL_CMD_NEWFAMILY, version 2
    0x0b, 0x00, 0x02, 0x00, b'n', b'e', b't', b'd', b'e', b'v', 0x00, 0x00, // FAMILY_NAME
    0x06, 0x00, 0x01, 0x00, 0x1b, 0x00, 0x00, 0x00, // FAMILY_ID u16 0x1b (+2 pad)
    0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, // VERSION 1
    0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, // HDRSIZE 0
    0x08, 0x00, 0x05, 0x00, 0x08, 0x00, 0x00, 0x00, // MAXATTR 8
    0x40, 0x00, 0x06,
    0x00, // CTRL_ATTR_OPS (kernel uses nla_nest_start_noflag: no NLA_F_NESTED), len 64
    0x14, 0x00, 0x01, 0x00, //   op #1
    0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, //     OP_ID dev-get
    0x08, 0x00, 0x02, 0x00, 0x0e, 0x00, 0x00, 0x00, //     OP_FLAGS CAP_DO|CAP_DUMP|HASPOL
    0x14, 0x00, 0x02, 0x00, //   op #2
    0x08, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00, //     OP_ID queue-get
    0x08, 0x00, 0x02, 0x00, 0x0e, 0x00, 0x00, 0x00, //     OP_FLAGS CAP_DO|CAP_DUMP|HASPOL
    0x14, 0x00, 0x03, 0x00, //   op #3
    0x08, 0x00, 0x01, 0x00, 0x10, 0x00, 0x00, 0x00, //     OP_ID queue-create
    0x08, 0x00, 0x02, 0x00, 0x0b, 0x00, 0x00, 0x00, //     OP_FLAGS ADMIN_PERM|CAP_DO|HASPOL
];

/// Same family on a kernel without queue leasing: only dev-get and queue-get.
const FAMILY_REPLY_OLD: [u8; 108] = [
    0x6c, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x99, 0x00, 0x00,
    0x00, //
    0x01, 0x02, 0x00, 0x00, //
    0x0b, 0x00, 0x02, 0x00, b'n', b'e', b't', b'd', b'e', b'v', 0x00, 0x00, //
    0x06, 0x00, 0x01, 0x00, 0x1b, 0x00, 0x00, 0x00, //
    0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, //
    0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x08, 0x00, 0x05, 0x00, 0x08, 0x00, 0x00, 0x00, //
    0x2c, 0x00, 0x06, 0x00, //
    0x14, 0x00, 0x01, 0x00, //
    0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, //
    0x08, 0x00, 0x02, 0x00, 0x0e, 0x00, 0x00, 0x00, //
    0x14, 0x00, 0x02, 0x00, //
    0x08, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00, //
    0x08, 0x00, 0x02, 0x00, 0x0e, 0x00, 0x00, 0x00, //
];

/// queue-get reply (seq 2) for physical queue 5 of ifindex 3, leased by netkit ifindex 7 queue 1
/// whose netns has nsid 0 as seen from the physical device's netns. Attribute order is the
/// kernel's (netdev_nl_queue_fill_one / netdev_nl_queue_fill_lease).
const QUEUE_GET_LEASED_REPLY: [u8; 92] = [
    0x5c, 0x00, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x99, 0x00, 0x00,
    0x00, //
    0x0a, 0x01, 0x00, 0x00, // NETDEV_CMD_QUEUE_GET, version 1
    0x08, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, // ID 5
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // TYPE rx
    0x08, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, // IFINDEX 3
    0x08, 0x00, 0x04, 0x00, 0x01, 0x20, 0x00, 0x00, // NAPI_ID 8193
    0x28, 0x00, 0x08, 0x80, // LEASE | NESTED, len 40
    0x14, 0x00, 0x02, 0x80, //   LEASE_QUEUE | NESTED, len 20
    0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, //     ID 1
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, //     TYPE rx
    0x08, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00, //   LEASE_IFINDEX 7
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, //   LEASE_NETNS_ID 0
];

/// queue-get reply for netkit queue 1 (ifindex 7) with memory-provider info and attributes this
/// client does not know: type 2 inside io-uring, type 42 at top level.
const QUEUE_GET_UNKNOWN_REPLY: [u8; 84] = [
    0x54, 0x00, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x99, 0x00, 0x00,
    0x00, //
    0x0a, 0x01, 0x00, 0x00, //
    0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, // ID 1
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // TYPE rx
    0x08, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, // IFINDEX 7
    0x08, 0x00, 0x05, 0x00, 0x09, 0x00, 0x00, 0x00, // DMABUF 9
    0x14, 0x00, 0x06, 0x80, // IO_URING | NESTED, len 20
    0x08, 0x00, 0x01, 0x00, 0x00, 0x10, 0x00, 0x00, //   RX_BUF_LEN (uint, 4 bytes) 4096
    0x08, 0x00, 0x02, 0x00, 0xef, 0xbe, 0xad, 0xde, //   unknown type 2
    0x04, 0x00, 0x07, 0x80, // XSK | NESTED, empty
    0x07, 0x00, 0x2a, 0x00, 0x01, 0x02, 0x03, 0x00, // unknown type 42, 3 bytes + 1 pad
];

/// Capped ACK (NLM_F_CAPPED) for `seq`: error 0 + the echoed request header.
fn ack(seq: u8, msg_type: u16) -> Vec<u8> {
    let t = msg_type.to_le_bytes();
    vec![
        0x24, 0, 0, 0, 0x02, 0, 0x00, 0x01, seq, 0, 0, 0, 0x99, 0, 0, 0, //
        0, 0, 0, 0, //
        0x14, 0, 0, 0, t[0], t[1], 0x05, 0, seq, 0, 0, 0, 0, 0, 0, 0,
    ]
}

const BUSY_MSG: &[u8] = b"Device queue in use due to queue leasing\0"; // 41 bytes

/// NLMSG_ERROR for the queue-create above, as sent to a NETLINK_CAP_ACK socket: -EBUSY,
/// NLM_F_CAPPED | NLM_F_ACK_TLVS, the echoed header only, then NLMSGERR_ATTR_MSG.
fn ebusy_capped() -> Vec<u8> {
    cat(&[
        &[
            0x54, 0, 0, 0, 0x02, 0, 0x00, 0x03, 0x02, 0, 0, 0, 0x99, 0, 0, 0,
        ],
        &[0xf0, 0xff, 0xff, 0xff], // -16
        &QUEUE_CREATE_REQ[..16],
        &[0x2d, 0x00, 0x01, 0x00], // NLMSGERR_ATTR_MSG, len 45
        BUSY_MSG,
        &[0, 0, 0], // pad 45 -> 48
    ])
}

fn client(replies: Vec<Vec<u8>>) -> NetdevClient<Scripted> {
    let mut all = vec![cat(&[&FAMILY_REPLY, &ack(1, GENL_ID_CTRL)])];
    all.extend(replies);
    NetdevClient::with_transport(Scripted::new(all)).unwrap()
}

fn lease_3_5_ns2() -> Lease {
    Lease {
        ifindex: 3,
        queue: QueueId::rx(5),
        netns_id: Some(2),
    }
}

// ---- encoding ----

#[test]
fn queue_create_request_bytes() {
    let attrs = queue_create_attrs(7, QueueType::Rx, &lease_3_5_ns2()).unwrap();
    let req = encode_request(
        "t",
        FAM,
        NlmF::REQUEST | NlmF::ACK,
        2,
        NetdevCmd::QueueCreate,
        1,
        attrs,
    )
    .unwrap();
    assert_eq!(req, QUEUE_CREATE_REQ);
}

#[test]
fn queue_create_same_netns_omits_netns_id() {
    let lease = Lease {
        netns_id: None,
        ..lease_3_5_ns2()
    };
    let attrs = queue_create_attrs(7, QueueType::Rx, &lease).unwrap();
    let req = encode_request(
        "t",
        FAM,
        NlmF::REQUEST | NlmF::ACK,
        2,
        NetdevCmd::QueueCreate,
        1,
        attrs,
    )
    .unwrap();
    // 8 bytes shorter overall and in the lease nest; everything else identical.
    let mut expected = QUEUE_CREATE_REQ[..68].to_vec();
    expected[0] = 0x44;
    expected[36] = 0x20;
    assert_eq!(req, expected);
}

#[test]
fn queue_create_with_netns_id_zero_keeps_it() {
    // nsid 0 is an ordinary id, not "unset".
    let lease = Lease {
        netns_id: Some(0),
        ..lease_3_5_ns2()
    };
    let attrs = queue_create_attrs(7, QueueType::Rx, &lease).unwrap();
    let req = encode_request(
        "t",
        FAM,
        NlmF::REQUEST | NlmF::ACK,
        2,
        NetdevCmd::QueueCreate,
        1,
        attrs,
    )
    .unwrap();
    assert_eq!(req.len(), 76);
    assert_eq!(
        &req[68..],
        &[0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00]
    );
}

#[test]
fn queue_get_request_bytes() {
    let attrs = queue_get_attrs(3, QueueId::rx(5)).unwrap();
    let req = encode_request(
        "t",
        FAM,
        NlmF::REQUEST | NlmF::ACK,
        3,
        NetdevCmd::QueueGet,
        1,
        attrs,
    )
    .unwrap();
    let expected: [u8; 44] = [
        0x2c, 0x00, 0x00, 0x00, 0x1b, 0x00, 0x05, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x0a, 0x01, 0x00, 0x00, // NETDEV_CMD_QUEUE_GET (10), version 1
        0x08, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, // IFINDEX 3
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // TYPE rx
        0x08, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, // ID 5
    ];
    assert_eq!(req, expected);
}

#[test]
fn queue_dump_request_bytes() {
    let attrs = queue_dump_attrs(3).unwrap();
    let req = encode_request(
        "t",
        FAM,
        NlmF::REQUEST | NlmF::DUMP,
        4,
        NetdevCmd::QueueGet,
        1,
        attrs,
    )
    .unwrap();
    let expected: [u8; 28] = [
        0x1c, 0x00, 0x00, 0x00, 0x1b, 0x00, //
        0x01, 0x03, // NLM_F_REQUEST | NLM_F_DUMP (0x300), no ACK
        0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x0a, 0x01, 0x00, 0x00, //
        0x08, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, // IFINDEX 3
    ];
    assert_eq!(req, expected);
}

#[test]
fn dev_get_request_bytes() {
    let attrs = dev_get_attrs(3).unwrap();
    let req = encode_request(
        "t",
        FAM,
        NlmF::REQUEST | NlmF::ACK,
        5,
        NetdevCmd::DevGet,
        1,
        attrs,
    )
    .unwrap();
    let expected: [u8; 28] = [
        0x1c, 0x00, 0x00, 0x00, 0x1b, 0x00, 0x05, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x01, 0x01, 0x00, 0x00, // NETDEV_CMD_DEV_GET (1), version 1
        0x08, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, // NETDEV_A_DEV_IFINDEX 3
    ];
    assert_eq!(req, expected);
}

#[test]
fn getfamily_request_bytes() {
    assert_eq!(encode_getfamily("netdev", 1).unwrap(), GETFAMILY_REQ);
}

#[test]
fn policy_violations_are_refused_before_sending() {
    let neg = Lease {
        netns_id: Some(-1),
        ..lease_3_5_ns2()
    };
    let zero_if = Lease {
        ifindex: 0,
        ..lease_3_5_ns2()
    };
    for (ifindex, lease) in [(7, neg), (7, zero_if), (0, lease_3_5_ns2())] {
        let mut c = client(vec![]);
        let err = c.queue_create(ifindex, QueueType::Rx, &lease).unwrap_err();
        assert!(
            matches!(
                err,
                NetdevError::InvalidRequest {
                    op: "queue-create",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            c.transport().sent.len(),
            1,
            "only the family lookup went out"
        );
    }
}

// ---- decoding ----

#[test]
fn decode_family_reply() {
    let fam = decode_family(&FAMILY_REPLY[16..]).unwrap();
    assert_eq!(fam.id, 0x1b);
    assert_eq!(fam.version, 1);
    assert_eq!(
        fam.ops,
        vec![
            FamilyOp {
                cmd: 1,
                flags: 0x0e
            },
            FamilyOp {
                cmd: 10,
                flags: 0x0e
            },
            FamilyOp {
                cmd: 16,
                flags: 0x0b
            }
        ]
    );
    assert!(fam.supports(NetdevCmd::QueueCreate, false));
    assert!(!fam.supports(NetdevCmd::QueueCreate, true));
    assert!(fam.supports(NetdevCmd::QueueGet, true));
}

#[test]
fn decode_queue_with_lease() {
    let body = decode_body("t", &QUEUE_GET_LEASED_REPLY[16..]).unwrap();
    assert_eq!(body.cmd, 10);
    let q = decode_queue(&body.attrs).unwrap();
    assert_eq!(
        q,
        Queue {
            id: 5,
            queue_type: QueueType::Rx,
            ifindex: 3,
            napi_id: Some(8193),
            dmabuf: None,
            io_uring: None,
            xsk: false,
            lease: Some(Lease {
                ifindex: 7,
                queue: QueueId::rx(1),
                netns_id: Some(0)
            }),
            unknown: vec![],
        }
    );
}

#[test]
fn decode_queue_keeps_unknown_attributes() {
    let body = decode_body("t", &QUEUE_GET_UNKNOWN_REPLY[16..]).unwrap();
    let q = decode_queue(&body.attrs).unwrap();
    assert_eq!(q.queue_id(), QueueId::rx(1));
    assert_eq!(q.ifindex, 7);
    assert_eq!(q.dmabuf, Some(9));
    assert_eq!(
        q.io_uring,
        Some(IoUringInfo {
            rx_buf_len: Some(4096)
        })
    );
    assert!(q.xsk);
    assert_eq!(q.lease, None);
    assert_eq!(
        q.unknown,
        vec![
            RawAttr {
                nest: AttrNest::QueueIoUring,
                nla_type: 2,
                payload: vec![0xef, 0xbe, 0xad, 0xde]
            },
            RawAttr {
                nest: AttrNest::Queue,
                nla_type: 42,
                payload: vec![1, 2, 3]
            },
        ]
    );
}

#[test]
fn decode_queue_unknown_inside_lease_and_u64_uint() {
    let body: [u8; 84] = [
        0x0a, 0x01, 0x00, 0x00, // QUEUE_GET
        0x08, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // ID 2
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // TYPE rx
        0x08, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, // IFINDEX 3
        0x28, 0x00, 0x08, 0x80, // LEASE, len 40, no netns-id (same netns)
        0x08, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00, //   LEASE_IFINDEX 7
        0x08, 0x00, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, //   unknown type 9
        0x14, 0x00, 0x02, 0x80, //   LEASE_QUEUE, len 20
        0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, //     ID 1
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, //     TYPE rx
        0x10, 0x00, 0x06, 0x80, // IO_URING, len 16
        0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, //   RX_BUF_LEN as 8-byte uint: 1 << 32
    ];
    let q = decode_queue(&decode_body("t", &body).unwrap().attrs).unwrap();
    assert_eq!(
        q.lease,
        Some(Lease {
            ifindex: 7,
            queue: QueueId::rx(1),
            netns_id: None
        })
    );
    assert_eq!(
        q.io_uring,
        Some(IoUringInfo {
            rx_buf_len: Some(1 << 32)
        })
    );
    assert_eq!(
        q.unknown,
        vec![RawAttr {
            nest: AttrNest::QueueLease,
            nla_type: 9,
            payload: vec![1, 0, 0, 0]
        }]
    );
}

#[test]
fn decode_queue_rejects_lease_queue_without_id() {
    let body: [u8; 44] = [
        0x0a, 0x01, 0x00, 0x00, //
        0x08, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // ID 2
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // TYPE rx
        0x08, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, // IFINDEX 3
        0x10, 0x00, 0x08, 0x80, // LEASE, len 16
        0x08, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00, //   LEASE_IFINDEX 7
        0x04, 0x00, 0x02, 0x80, //   LEASE_QUEUE, empty
    ];
    let parsed = decode_body("t", &body).unwrap();
    assert!(matches!(
        decode_queue(&parsed.attrs),
        Err(NetdevError::Malformed { .. })
    ));
}

#[test]
fn decode_queue_rejects_wrong_width() {
    // ID with a 2-byte payload.
    let body = [
        0x0a, 0x01, 0, 0, 0x06, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00,
    ];
    let parsed = decode_body("t", &body).unwrap();
    assert!(matches!(
        decode_queue(&parsed.attrs),
        Err(NetdevError::Malformed { .. })
    ));
}

#[test]
fn decode_dev_reply() {
    let body: [u8; 56] = [
        0x01, 0x01, 0x00, 0x00, // NETDEV_CMD_DEV_GET
        0x08, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, // IFINDEX 3
        0x0c, 0x00, 0x03, 0x00, 0x2f, 0, 0, 0, 0, 0, 0,
        0, // XDP_FEATURES basic|redirect|ndo-xmit|xsk-zc|rx-sg
        0x0c, 0x00, 0x05, 0x00, 0x03, 0, 0, 0, 0, 0, 0,
        0, // XDP_RX_METADATA_FEATURES timestamp|hash
        0x0c, 0x00, 0x06, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, // XSK_FEATURES 0
        0x08, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // XDP_ZC_MAX_SEGS 1
    ];
    let dev = decode_dev(&decode_body("t", &body).unwrap().attrs).unwrap();
    assert_eq!(dev.ifindex, 3);
    assert_eq!(dev.xdp_features, 0x2f);
    assert!(dev.is_redirect_target());
    assert!(dev.supports_xsk_zerocopy());
    assert_eq!(dev.xdp_rx_metadata_features, 3);
    assert_eq!(dev.xsk_features, 0);
    assert_eq!(dev.xdp_zc_max_segs, Some(1));
    assert!(dev.unknown.is_empty());
}

// ---- client flows over a scripted transport ----

#[test]
fn client_resolves_family_then_creates_queue() {
    let reply: [u8; 28] = [
        0x1c, 0x00, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x99, 0x00, 0x00,
        0x00, //
        0x10, 0x01, 0x00, 0x00, // QUEUE_CREATE
        0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, // ID 1: the new netkit queue
    ];
    let mut c = client(vec![cat(&[&reply, &ack(2, FAM)])]);
    assert_eq!(c.family().id, FAM);
    assert_eq!(
        c.queue_create(7, QueueType::Rx, &lease_3_5_ns2()).unwrap(),
        1
    );
    assert_eq!(
        c.transport().sent,
        vec![GETFAMILY_REQ.to_vec(), QUEUE_CREATE_REQ.to_vec()]
    );
}

#[test]
fn client_reports_ebusy_with_extack() {
    let mut c = client(vec![ebusy_capped()]);
    let err = c
        .queue_create(7, QueueType::Rx, &lease_3_5_ns2())
        .unwrap_err();
    assert_eq!(err.errno(), Some(Errno::EBUSY));
    assert_eq!(
        err.extack_msg(),
        Some("Device queue in use due to queue leasing")
    );
    assert!(!err.is_kernel_unsupported());
    let text = err.to_string();
    assert!(
        text.contains("queue-create") && text.contains("EBUSY") && text.contains("queue leasing"),
        "{text}"
    );
}

#[test]
fn ebusy_with_full_echo_decodes_the_same() {
    // Without NETLINK_CAP_ACK the kernel echoes the whole 76-byte request.
    let full = cat(&[
        &[
            0x90, 0, 0, 0, 0x02, 0, 0x00, 0x02, 0x02, 0, 0, 0, 0x99, 0, 0, 0,
        ],
        &[0xf0, 0xff, 0xff, 0xff],
        &QUEUE_CREATE_REQ,
        &[0x2d, 0x00, 0x01, 0x00],
        BUSY_MSG,
        &[0, 0, 0],
    ]);
    assert_eq!(full.len(), 0x90);
    let mut c = client(vec![full]);
    let err = c
        .queue_create(7, QueueType::Rx, &lease_3_5_ns2())
        .unwrap_err();
    match err {
        NetdevError::Kernel {
            op: "queue-create",
            kernel:
                KernelError {
                    errno: Errno::EBUSY,
                    extack,
                },
        } => {
            assert_eq!(
                extack.msg.as_deref(),
                Some("Device queue in use due to queue leasing")
            );
            assert_eq!(extack.bad_attr_offset, None);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_family_is_family_not_found() {
    // ctrl answers -ENOENT (capped, no TLVs).
    let enoent = cat(&[
        &[
            0x24, 0, 0, 0, 0x02, 0, 0x00, 0x01, 0x01, 0, 0, 0, 0x99, 0, 0, 0,
        ],
        &(-2i32).to_le_bytes(),
        &GETFAMILY_REQ[..16],
    ]);
    let err = NetdevClient::with_transport(Scripted::new([enoent]))
        .err()
        .unwrap();
    assert!(matches!(err, NetdevError::FamilyNotFound));
    assert!(err.is_kernel_unsupported());
}

#[test]
fn kernel_without_queue_create_is_detected_without_sending() {
    let mut c = NetdevClient::with_transport(Scripted::new([cat(&[
        &FAMILY_REPLY_OLD,
        &ack(1, GENL_ID_CTRL),
    ])]))
    .unwrap();
    let err = c
        .queue_create(7, QueueType::Rx, &lease_3_5_ns2())
        .unwrap_err();
    assert!(matches!(
        err,
        NetdevError::OperationNotSupported { op: "queue-create" }
    ));
    assert!(err.is_kernel_unsupported());
    assert_eq!(c.transport().sent.len(), 1);
}

#[test]
fn client_queue_get_roundtrip() {
    let mut c = client(vec![cat(&[&QUEUE_GET_LEASED_REPLY, &ack(2, FAM)])]);
    let q = c.queue_get(3, 5, QueueType::Rx).unwrap();
    assert_eq!(q.lease.unwrap().netns_id, Some(0));
    // The second request is the queue-get with seq 2.
    assert_eq!(c.transport().sent[1][8], 2);
    assert_eq!(c.transport().sent[1][16], 10);
}

#[test]
fn client_rejects_reply_for_another_command() {
    // A dev-get body answering a queue-get request.
    let mut reply = QUEUE_GET_LEASED_REPLY;
    reply[16] = 1;
    let mut c = client(vec![cat(&[&reply, &ack(2, FAM)])]);
    assert!(matches!(
        c.queue_get(3, 5, QueueType::Rx),
        Err(NetdevError::Malformed { .. })
    ));
}

#[test]
fn client_queue_dump_collects_until_done() {
    fn q(id: u8) -> [u8; 44] {
        [
            0x2c, 0, 0, 0, 0x1b, 0, 0x02, 0, 0x02, 0, 0, 0, 0x99, 0, 0,
            0, // NLM_F_MULTI, seq 2
            0x0a, 0x01, 0, 0, //
            0x08, 0, 0x01, 0, id, 0, 0, 0, // ID
            0x08, 0, 0x03, 0, 0, 0, 0, 0, // TYPE rx
            0x08, 0, 0x02, 0, 0x03, 0, 0, 0, // IFINDEX 3
        ]
    }
    let done = [
        0x14, 0, 0, 0, 0x03, 0, 0x02, 0, 0x02, 0, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0,
    ];
    // Split over two datagrams, as a dump may be.
    let mut c = client(vec![q(0).to_vec(), cat(&[&q(1), &done])]);
    let qs = c.queue_dump(3).unwrap();
    assert_eq!(qs.iter().map(|q| q.id).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(c.transport().sent[1][6..8], [0x01, 0x03]);
}

#[test]
fn client_queue_dump_error_in_done() {
    let done = [
        0x14, 0, 0, 0, 0x03, 0, 0x02, 0, 0x02, 0, 0, 0, 0x99, 0, 0, 0, 0xed, 0xff, 0xff, 0xff,
    ]; // -ENODEV
    let mut c = client(vec![done.to_vec()]);
    let err = c.queue_dump(42).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::ENODEV));
    assert!(matches!(
        err,
        NetdevError::Kernel {
            op: "queue-get",
            ..
        }
    ));
}
