//! Network namespace ids (nsids) via rtnetlink RTM_GETNSID / RTM_NEWNSID.
//!
//! An nsid is a small integer by which one netns refers to another; it is *local to the netns
//! that assigned it* (the same target netns can have id 3 in the pod netns and id 0 in another).
//! queue-create's `lease.netns-id` is such an id: the physical device's netns as known in the
//! virtual device's netns. So these functions answer for the **current thread's** netns (the
//! socket is created on the calling thread): call them on the thread already switched to the pod
//! netns, passing an fd of the host netns.
//!
//! Kernel facts (net/core/net_namespace.c, Linux 7.3):
//! - RTM_GETNSID answers NETNSA_NSID = -1 (NETNSA_NSID_NOT_ASSIGNED) when no id is assigned,
//!   which is also what a netns gets for itself unless someone assigned it one. Ids start at 0,
//!   so 0 is a perfectly ordinary id and never means "unset".
//! - RTM_NEWNSID with NETNSA_NSID = -1 lets the kernel pick the lowest free id; the reply is a
//!   bare ACK (the id is only multicast), so the id must be read back with RTM_GETNSID.
//! - RTM_NEWNSID answers EEXIST with "Peer netns already has a nsid assigned" if the target
//!   already has an id: the race [`NsidClient::ensure_nsid`] resolves by re-reading.
//! - RTM_NEWNSID needs CAP_NET_ADMIN over the current netns; RTM_GETNSID is unprivileged.
//! - The kernel also assigns nsids implicitly, e.g. when reporting a queue lease across netns.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use neli::consts::socket::NlFamily;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, Parseable};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use crate::kernel::netlink::{
    transact, KernelError, NetlinkError, SocketTransport, Transport, NLM_F_ACK, NLM_F_REQUEST,
};

/// `RTM_NEWNSID`: also the type of RTM_GETNSID's reply.
pub const RTM_NEWNSID: u16 = 88;
/// `RTM_GETNSID`.
pub const RTM_GETNSID: u16 = 90;
/// `NETNSA_NSID_NOT_ASSIGNED`: "no id" in replies, "pick one" in RTM_NEWNSID requests.
pub const NETNSA_NSID_NOT_ASSIGNED: i32 = -1;

/// Errors of the nsid helpers.
#[derive(Debug, thiserror::Error)]
pub enum NsidError {
    /// The kernel rejected the request (e.g. `EBADF`/`EINVAL` for an fd that is not a netns,
    /// `EPERM` for RTM_NEWNSID without CAP_NET_ADMIN).
    #[error("{op}: {kernel}")]
    Kernel {
        /// "RTM_GETNSID" or "RTM_NEWNSID".
        op: &'static str,
        /// Typed errno and extended ACK.
        kernel: KernelError,
    },
    /// Socket-level failure (including `/proc` access for [`is_current_netns`]).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The reply did not follow the rtnetlink format.
    #[error("{op}: malformed reply: {reason}")]
    Malformed {
        /// Operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// RTM_NEWNSID succeeded (or raced with another assignment) but the target still reads back
    /// as unassigned, e.g. because the target netns is being torn down.
    #[error("netns still has no nsid after RTM_NEWNSID")]
    StillUnassigned,
}

impl NsidError {
    /// The kernel errno, when the kernel rejected the request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NsidError::Kernel { kernel, .. } => Some(kernel.errno),
            _ => None,
        }
    }

    fn from_netlink(op: &'static str, e: NetlinkError) -> NsidError {
        match e {
            NetlinkError::Kernel(kernel) => NsidError::Kernel { op, kernel },
            NetlinkError::Io(source) => NsidError::Io { op, source },
            NetlinkError::Malformed(reason) => NsidError::Malformed { op, reason },
            NetlinkError::DumpInterrupted => NsidError::Malformed {
                op,
                reason: "unexpected dump interruption".into(),
            },
        }
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A BorrowedFd is never negative.
    fd.as_raw_fd() as u32
}

fn encode(seq: u32, message: RouteNetlinkMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// RTM_GETNSID for the netns behind `fd` (the fd number is resolved in the sending process).
pub(crate) fn encode_getnsid(seq: u32, fd: u32) -> Vec<u8> {
    let mut m = NsidMessage::default();
    m.attributes.push(NsidAttribute::Fd(fd));
    encode(seq, RouteNetlinkMessage::GetNsId(m))
}

/// RTM_NEWNSID assigning `nsid` (or [`NETNSA_NSID_NOT_ASSIGNED`]: kernel picks) to the netns
/// behind `fd`. Attribute order follows iproute2 (`ip netns set`): FD, then NSID.
pub(crate) fn encode_newnsid(seq: u32, fd: u32, nsid: i32) -> Vec<u8> {
    let mut m = NsidMessage::default();
    m.attributes.push(NsidAttribute::Fd(fd));
    m.attributes.push(NsidAttribute::Id(nsid));
    encode(seq, RouteNetlinkMessage::NewNsId(m))
}

/// Decode the payload (after the nlmsghdr) of RTM_GETNSID's RTM_NEWNSID reply.
pub(crate) fn decode_nsid_reply(payload: &[u8]) -> Result<Option<i32>, NsidError> {
    const OP: &str = "RTM_GETNSID";
    let msg = NsidMessage::parse(payload).map_err(|e| NsidError::Malformed {
        op: OP,
        reason: e.to_string(),
    })?;
    let id = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            NsidAttribute::Id(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| NsidError::Malformed {
            op: OP,
            reason: "reply lacks NETNSA_NSID".into(),
        })?;
    match id {
        NETNSA_NSID_NOT_ASSIGNED => Ok(None),
        id if id >= 0 => Ok(Some(id)),
        id => Err(NsidError::Malformed {
            op: OP,
            reason: format!("NETNSA_NSID {id}"),
        }),
    }
}

/// rtnetlink client for nsids, bound to the netns its socket was created in.
pub struct NsidClient<T: Transport = SocketTransport> {
    transport: T,
    seq: u32,
}

impl NsidClient<SocketTransport> {
    /// Open an rtnetlink socket in the current thread's netns.
    pub fn open() -> Result<Self, NsidError> {
        let transport = SocketTransport::open(NlFamily::Route).map_err(|source| NsidError::Io {
            op: "open rtnetlink socket",
            source,
        })?;
        // Strict checking makes the kernel reject attributes RTM_GETNSID does not expect
        // instead of ignoring them.
        transport
            .enable_strict_checking()
            .map_err(|source| NsidError::Io {
                op: "NETLINK_GET_STRICT_CHK",
                source,
            })?;
        Ok(Self::with_transport(transport))
    }
}

impl<T: Transport> NsidClient<T> {
    /// Use an existing transport (a NETLINK_ROUTE connection).
    pub fn with_transport(transport: T) -> Self {
        NsidClient { transport, seq: 1 }
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// The nsid of `target` as assigned in this client's netns, `None` if it has none.
    pub fn get_nsid(&mut self, target: BorrowedFd<'_>) -> Result<Option<i32>, NsidError> {
        const OP: &str = "RTM_GETNSID";
        let seq = self.next_seq();
        let req = encode_getnsid(seq, fd_u32(target));
        let replies =
            transact(&mut self.transport, &req).map_err(|e| NsidError::from_netlink(OP, e))?;
        match replies.as_slice() {
            [one] if one.msg_type == RTM_NEWNSID => decode_nsid_reply(&one.payload),
            [one] => Err(NsidError::Malformed {
                op: OP,
                reason: format!("reply type {}", one.msg_type),
            }),
            _ => Err(NsidError::Malformed {
                op: OP,
                reason: format!("{} replies", replies.len()),
            }),
        }
    }

    /// The nsid of `target` in this client's netns, assigning one (kernel's choice) if it has
    /// none. If another process assigns one concurrently (EEXIST), that id is returned.
    pub fn ensure_nsid(&mut self, target: BorrowedFd<'_>) -> Result<i32, NsidError> {
        const OP: &str = "RTM_NEWNSID";
        if let Some(id) = self.get_nsid(target)? {
            return Ok(id);
        }
        let seq = self.next_seq();
        let req = encode_newnsid(seq, fd_u32(target), NETNSA_NSID_NOT_ASSIGNED);
        match transact(&mut self.transport, &req) {
            Ok(_) => {}
            // Someone assigned an id between our read and our write: theirs is as good.
            Err(NetlinkError::Kernel(KernelError {
                errno: Errno::EEXIST,
                ..
            })) => {}
            Err(e) => return Err(NsidError::from_netlink(OP, e)),
        }
        self.get_nsid(target)?.ok_or(NsidError::StillUnassigned)
    }
}

/// [`NsidClient::get_nsid`] on a fresh socket in the current thread's netns.
pub fn get_nsid(target_netns: impl AsFd) -> Result<Option<i32>, NsidError> {
    NsidClient::open()?.get_nsid(target_netns.as_fd())
}

/// [`NsidClient::ensure_nsid`] on a fresh socket in the current thread's netns.
pub fn ensure_nsid(target_netns: impl AsFd) -> Result<i32, NsidError> {
    NsidClient::open()?.ensure_nsid(target_netns.as_fd())
}

/// Whether `netns` is the current thread's netns (same nsfs inode), in which case a lease needs
/// no netns-id at all.
pub fn is_current_netns(netns: impl AsFd) -> Result<bool, NsidError> {
    const OP: &str = "stat netns";
    let io = |e: Errno| NsidError::Io {
        op: OP,
        source: io::Error::from(e),
    };
    let target = nix::sys::stat::fstat(netns.as_fd()).map_err(io)?;
    // thread-self, not self: netns membership is per thread.
    let current = nix::sys::stat::stat("/proc/thread-self/ns/net").map_err(io)?;
    Ok(target.st_dev == current.st_dev && target.st_ino == current.st_ino)
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::kernel::netlink::testing::{cat, Scripted};

    #[test]
    fn getnsid_request_bytes() {
        let expected: [u8; 28] = [
            0x1c, 0x00, 0x00, 0x00, // nlmsg_len 28
            0x5a, 0x00, // RTM_GETNSID (90)
            0x05, 0x00, // NLM_F_REQUEST | NLM_F_ACK
            0x07, 0x00, 0x00, 0x00, // seq 7
            0x00, 0x00, 0x00, 0x00, // port id 0 (kernel)
            0x00, 0x00, 0x00, 0x00, // struct rtgenmsg { AF_UNSPEC } + 3 bytes pad
            0x08, 0x00, 0x03, 0x00, // nla_len 8, NETNSA_FD (3)
            0x05, 0x00, 0x00, 0x00, // fd 5
        ];
        assert_eq!(encode_getnsid(7, 5), expected);
    }

    #[test]
    fn newnsid_request_bytes() {
        let expected: [u8; 36] = [
            0x24, 0x00, 0x00, 0x00, // nlmsg_len 36
            0x58, 0x00, // RTM_NEWNSID (88)
            0x05, 0x00, // NLM_F_REQUEST | NLM_F_ACK
            0x02, 0x00, 0x00, 0x00, // seq 2
            0x00, 0x00, 0x00, 0x00, // port id 0
            0x00, 0x00, 0x00, 0x00, // rtgenmsg
            0x08, 0x00, 0x03, 0x00, // NETNSA_FD
            0x09, 0x00, 0x00, 0x00, // fd 9
            0x08, 0x00, 0x01, 0x00, // NETNSA_NSID
            0xff, 0xff, 0xff, 0xff, // -1: let the kernel pick
        ];
        assert_eq!(encode_newnsid(2, 9, NETNSA_NSID_NOT_ASSIGNED), expected);
    }

    fn nsid_reply(seq: u8, nsid: i32) -> Vec<u8> {
        cat(&[
            &[0x1c, 0, 0, 0, 0x58, 0, 0, 0, seq, 0, 0, 0, 0x99, 0, 0, 0],
            &[0, 0, 0, 0, 0x08, 0, 0x01, 0],
            &nsid.to_ne_bytes(),
        ])
    }

    fn ack(seq: u8) -> Vec<u8> {
        // capped ACK: error 0 + echoed header only
        cat(&[
            &[
                0x24, 0, 0, 0, 0x02, 0, 0x00, 0x01, seq, 0, 0, 0, 0x99, 0, 0, 0,
            ],
            &[0, 0, 0, 0],
            &[0x1c, 0, 0, 0, 0x5a, 0, 0x05, 0, seq, 0, 0, 0, 0, 0, 0, 0],
        ])
    }

    fn eexist(seq: u8) -> Vec<u8> {
        let msg = b"Peer netns already has a nsid assigned\0";
        let nla_len = 4 + msg.len(); // 43
        let mut m = cat(&[
            &[0, 0, 0, 0, 0x02, 0, 0x00, 0x03, seq, 0, 0, 0, 0x99, 0, 0, 0],
            &(-17i32).to_ne_bytes(),
            &[0x24, 0, 0, 0, 0x58, 0, 0x05, 0, seq, 0, 0, 0, 0, 0, 0, 0],
            &[nla_len as u8, 0, 0x01, 0],
            msg,
            &[0], // pad 43 -> 44
        ]);
        m[0] = m.len() as u8;
        m
    }

    #[test]
    fn decode_assigned_zero_and_unassigned() {
        assert_eq!(decode_nsid_reply(&nsid_reply(1, 0)[16..]).unwrap(), Some(0));
        assert_eq!(
            decode_nsid_reply(&nsid_reply(1, 42)[16..]).unwrap(),
            Some(42)
        );
        assert_eq!(decode_nsid_reply(&nsid_reply(1, -1)[16..]).unwrap(), None);
        assert!(matches!(
            decode_nsid_reply(&nsid_reply(1, -7)[16..]),
            Err(NsidError::Malformed { .. })
        ));
    }

    #[test]
    fn ensure_returns_existing_id_without_assigning() {
        let mut t = Scripted::new([cat(&[&nsid_reply(1, 0), &ack(1)])]);
        let fd = std::fs::File::open("/dev/null").unwrap();
        let id = NsidClient::with_transport(&mut t)
            .ensure_nsid(fd.as_fd())
            .unwrap();
        assert_eq!(id, 0);
        assert_eq!(t.sent.len(), 1);
        assert_eq!(t.sent[0][4], 0x5a);
    }

    #[test]
    fn ensure_assigns_then_rereads() {
        let mut t = Scripted::new([
            cat(&[&nsid_reply(1, -1), &ack(1)]),
            ack(2),
            cat(&[&nsid_reply(3, 4), &ack(3)]),
        ]);
        let fd = std::fs::File::open("/dev/null").unwrap();
        let raw = fd.as_raw_fd() as u32;
        let id = NsidClient::with_transport(&mut t)
            .ensure_nsid(fd.as_fd())
            .unwrap();
        assert_eq!(id, 4);
        assert_eq!(
            t.sent,
            vec![
                encode_getnsid(1, raw),
                encode_newnsid(2, raw, -1),
                encode_getnsid(3, raw)
            ]
        );
    }

    #[test]
    fn ensure_handles_concurrent_assignment() {
        let mut t = Scripted::new([
            cat(&[&nsid_reply(1, -1), &ack(1)]),
            eexist(2),
            cat(&[&nsid_reply(3, 2), &ack(3)]),
        ]);
        let fd = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            NsidClient::with_transport(&mut t)
                .ensure_nsid(fd.as_fd())
                .unwrap(),
            2
        );
        assert_eq!(t.sent.len(), 3);
    }

    #[test]
    fn ensure_reports_other_errors_with_extack() {
        let mut err = eexist(2);
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes()); // -EPERM instead of -EEXIST
        let mut t = Scripted::new([cat(&[&nsid_reply(1, -1), &ack(1)]), err]);
        let fd = std::fs::File::open("/dev/null").unwrap();
        match NsidClient::with_transport(&mut t).ensure_nsid(fd.as_fd()) {
            Err(NsidError::Kernel {
                op: "RTM_NEWNSID",
                kernel:
                    KernelError {
                        errno: Errno::EPERM,
                        extack,
                    },
            }) => {
                assert_eq!(
                    extack.msg.as_deref(),
                    Some("Peer netns already has a nsid assigned")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ensure_fails_if_still_unassigned() {
        let mut t = Scripted::new([
            cat(&[&nsid_reply(1, -1), &ack(1)]),
            ack(2),
            cat(&[&nsid_reply(3, -1), &ack(3)]),
        ]);
        let fd = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            NsidClient::with_transport(&mut t).ensure_nsid(fd.as_fd()),
            Err(NsidError::StillUnassigned)
        ));
    }

    #[test]
    fn current_netns_detection() {
        let own = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        assert!(is_current_netns(&own).unwrap());
        let other = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_current_netns(&other).unwrap());
    }
}
