//! rtnetlink plumbing for the `link`, `addr` and `route` modules, built on the `rtnetlink`
//! crate (the generic-netlink client has its own in [`crate::kernel::netlink`]): a connection that
//! reports the kernel's extended ack, a request helper that turns `NLMSG_ERROR`/`NLMSG_DONE`
//! into a typed [`KernelError`], and the [`Deletion`] outcome of every idempotent delete.
//!
//! The per-object modules build messages and classify [`KernelError::errno`] into their own
//! error enums; this module only moves bytes.

use std::os::fd::IntoRawFd;

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use std::os::fd::FromRawFd;

/// The future that drives an [`Rtnl`] connection. Spawn it on the runtime that owns the
/// [`Rtnl`]; it finishes once every [`Rtnl`] clone is dropped.
pub type RtnlConnection = rtnetlink::proto::Connection<RouteNetlinkMessage>;

/// Size of `struct nlmsghdr`; with `NETLINK_CAP_ACK` the error payload echoes only this much
/// of the request before the extack TLVs.
const NLMSG_HDR_LEN: usize = 16;

/// Errors of the netlink transport itself (not of the object being manipulated).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtnlError {
    /// The kernel answered the request with a negative errno.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Creating or configuring the netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// [`Rtnl::connect`]/[`Rtnl::from_socket`] was called outside a Tokio runtime.
    #[error("an rtnetlink connection needs a Tokio runtime with IO enabled")]
    NoRuntime,
    /// The connection task is gone, or the kernel's answer ended before the ACK.
    #[error("netlink connection closed before the kernel acknowledged the request")]
    ConnectionClosed,
    /// The socket receive buffer overflowed during a dump; the result would be incomplete.
    #[error("netlink receive buffer overrun: reply is incomplete")]
    Overrun,
    /// The dump kept being interrupted by concurrent changes (`NLM_F_DUMP_INTR`), so its result
    /// may be inconsistent; retrying later is safe.
    #[error("netlink dump interrupted by concurrent changes {0} times in a row")]
    DumpInterrupted(u32),
    /// The kernel replied with a message of a type the request cannot produce.
    #[error("unexpected netlink reply: {0}")]
    UnexpectedReply(String),
}

pub use crate::kernel::netlink::KernelError;

impl KernelError {
    /// Decodes the payload of an `NLMSG_ERROR` that follows the 4-byte error code: the echoed
    /// request header (only the header, as [`Rtnl`] always sets `NETLINK_CAP_ACK`) followed by
    /// the extack TLVs.
    pub fn from_error_payload(code: i32, payload: &[u8]) -> Self {
        let tlvs = payload.get(NLMSG_HDR_LEN..).unwrap_or_default();
        Self::from_tlvs(code, tlvs)
    }
}

/// Outcome of an idempotent delete: DEL must succeed when the object is already gone, but
/// callers (and logs) still want to know which case happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    AlreadyGone,
}

/// An rtnetlink connection bound to the network namespace it was created in.
///
/// A netlink socket keeps the netns of the thread that created it for its whole life, so an
/// [`Rtnl`] made by [`crate::kernel::netns::NetNs::connect_rtnl`] operates on that namespace from any
/// thread. The socket always has `NETLINK_EXT_ACK` (extack strings in errors),
/// `NETLINK_CAP_ACK` (errors echo only the request header, so TLVs sit at a fixed offset) and
/// `NETLINK_GET_STRICT_CHK` (the kernel honours dump filters such as link kind, address ifindex
/// and route oif instead of silently dumping everything).
#[derive(Clone, Debug)]
pub struct Rtnl {
    handle: rtnetlink::Handle,
}

impl Rtnl {
    /// Opens a connection in the calling thread's network namespace. Must run inside a Tokio
    /// runtime with IO enabled; spawn the returned [`RtnlConnection`] on it.
    pub fn connect() -> Result<(Rtnl, RtnlConnection), RtnlError> {
        let socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        Self::from_socket(socket)
    }

    /// Wraps an already created `NETLINK_ROUTE` socket (e.g. one created inside another netns).
    pub fn from_socket(socket: Socket) -> Result<(Rtnl, RtnlConnection), RtnlError> {
        // TokioSocket::from_raw_fd panics outside a runtime; turn that into an error.
        tokio::runtime::Handle::try_current().map_err(|_| RtnlError::NoRuntime)?;
        socket.set_ext_ack(true).map_err(RtnlError::Socket)?;
        socket.set_cap_ack(true).map_err(RtnlError::Socket)?;
        socket
            .set_netlink_get_strict_chk(true)
            .map_err(RtnlError::Socket)?;
        // Connected to the kernel (port 0): the kernel then refuses unicasts from any other
        // socket of the netns (see `crate::kernel::netlink::connect_to_kernel`). netlink-proto already
        // matches replies by (sequence, source port 0), so a forged one is never taken for an
        // answer; this keeps it from reaching the socket at all.
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        socket.set_non_blocking(true).map_err(RtnlError::Socket)?;
        // SAFETY: `into_raw_fd` hands over sole ownership of a valid, open netlink socket.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (mut conn, handle, _unsolicited) = rtnetlink::from_socket(socket);
        // Forward ACKs and DONE so `request` can tell "acknowledged" from "connection died" and
        // see the errno a failed dump reports in NLMSG_DONE.
        conn.set_forward_ack(true);
        conn.set_forward_done(true);
        Ok((Rtnl { handle }, conn))
    }

    /// Sends a request that the kernel acknowledges (`NLM_F_REQUEST | NLM_F_ACK | extra`) and
    /// returns any messages it sent before the ACK (e.g. the answer of a non-dump GET).
    pub(crate) async fn ack(
        &self,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags, true)
            .await
    }

    /// Sends a non-dump GET and returns the single answer.
    pub(crate) async fn get(
        &self,
        msg: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, RtnlError> {
        let mut replies = self.request(msg, NLM_F_REQUEST, false).await?;
        match replies.len() {
            1 => Ok(replies.remove(0)),
            n => Err(RtnlError::UnexpectedReply(format!(
                "expected one answer, got {n}"
            ))),
        }
    }

    /// Sends a dump request and collects every message until `NLMSG_DONE`.
    /// Sends a dump request and collects every message until `NLMSG_DONE`. A dump the kernel
    /// flags as interrupted (the table changed underneath it, likely while pods churn) is
    /// retried a few times rather than handed out possibly inconsistent.
    pub(crate) async fn dump(
        &self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        const ATTEMPTS: u32 = 3;
        for _ in 0..ATTEMPTS {
            let (replies, interrupted) = self
                .request_flagged(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, false)
                .await?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(RtnlError::DumpInterrupted(ATTEMPTS))
    }

    async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        expect_ack: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        Ok(self.request_flagged(msg, flags, expect_ack).await?.0)
    }

    /// Like `request`, also reporting whether any reply carried `NLM_F_DUMP_INTR`.
    async fn request_flagged(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        expect_ack: bool,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), RtnlError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|_| RtnlError::ConnectionClosed)?;
        let mut out = Vec::new();
        let mut acked = false;
        let mut interrupted = false;
        while let Some(reply) = replies.next().await {
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) => {
                        return Err(KernelError::from_error_payload(code.get(), &e.header).into())
                    }
                    None => acked = true,
                },
                NetlinkPayload::Done(done) if done.code < 0 => {
                    return Err(KernelError::from_tlvs(done.code, &done.extended_ack).into())
                }
                NetlinkPayload::Done(_) | NetlinkPayload::Noop => acked = true,
                NetlinkPayload::Overrun(_) => return Err(RtnlError::Overrun),
                other => {
                    return Err(RtnlError::UnexpectedReply(format!(
                        "message type {}",
                        other.message_type()
                    )))
                }
            }
        }
        // Without an ACK/DONE the stream only ends because the connection went away.
        if (expect_ack || flags & NLM_F_DUMP == NLM_F_DUMP) && !acked {
            return Err(RtnlError::ConnectionClosed);
        }
        if !expect_ack && flags & NLM_F_DUMP != NLM_F_DUMP && out.is_empty() {
            return Err(RtnlError::ConnectionClosed);
        }
        Ok((out, interrupted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::{NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS};
    use nix::errno::Errno;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize((len + 3) & !3, 0);
        v
    }

    #[test]
    fn error_payload_extack_after_capped_header() {
        let mut payload = vec![0xaa; NLMSG_HDR_LEN]; // echoed nlmsghdr, content irrelevant
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"Unknown device type\0"));
        payload.extend(tlv(NLMSGERR_ATTR_OFFS, &52u32.to_ne_bytes()));
        let err = KernelError::from_error_payload(-libc::EOPNOTSUPP, &payload);
        assert_eq!(err.errno, Errno::EOPNOTSUPP);
        assert_eq!(err.msg(), Some("Unknown device type"));
        assert_eq!(err.extack.bad_attr_offset, Some(52));
        assert_eq!(
            err.to_string(),
            "EOPNOTSUPP: Operation not supported (Unknown device type)"
        );
    }

    #[test]
    fn error_payload_without_tlvs() {
        let err = KernelError::from_error_payload(-libc::ENODEV, &[0u8; NLMSG_HDR_LEN]);
        assert_eq!(err, KernelError::new(Errno::ENODEV));
        assert_eq!(err.to_string(), "ENODEV: No such device");
    }

    #[test]
    fn truncated_tlv_is_ignored_not_overread() {
        let mut tlvs = tlv(NLMSGERR_ATTR_MSG, b"ok\0");
        tlvs.extend_from_slice(&[200, 0, 1, 0, b'x']); // claims 200 bytes, has 1
        let err = KernelError::from_tlvs(-libc::EINVAL, &tlvs);
        assert_eq!(err.errno, Errno::EINVAL);
        assert_eq!(err.msg(), Some("ok"));
    }

    #[test]
    fn connect_outside_runtime_is_an_error_not_a_panic() {
        assert!(matches!(Rtnl::connect(), Err(RtnlError::NoRuntime)));
    }
}
