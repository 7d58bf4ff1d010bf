//! Netlink plumbing shared by the generic-netlink `netdev` client ([`crate::kernel::netdev`]) and the
//! rtnetlink netns-id helpers ([`crate::kernel::nsid`]): a byte-level [`Transport`], reply framing,
//! NLMSG_ERROR / NLMSG_DONE decoding with extended ACKs, and the request/reply loop
//! ([`transact`]).
//!
//! Everything above the transport works on plain byte slices so that request encoding and reply
//! decoding can be tested byte-for-byte on a host without a kernel; only [`SocketTransport`]
//! touches a real socket.
//!
//! Framing uses `netlink-packet-core`'s [`NetlinkBuffer`] rather than neli's `Nlmsghdr` parser
//! because neli 0.7 (a) ignores `NLM_F_CAPPED` and trusts the echoed request's length inside an
//! NLMSG_ERROR, (b) never reads the extended-ACK TLVs of a *successful* ACK and (c) does not bound
//! each message by its own `nlmsg_len`, so an ACK carrying TLVs desynchronises every following
//! message in the same datagram. The extended-ACK TLVs are read by [`ExtAck`], the one parser
//! for both families (rtnetlink errors reach it through [`crate::kernel::rtnl`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;
use netlink_packet_core::NetlinkBuffer;
use nix::errno::Errno;

// Message types and flags from include/uapi/linux/netlink.h, as netlink-packet-core exports
// them (NLM_F_MULTI is its NLM_F_MULTIPART).
pub use netlink_packet_core::{
    NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART as NLM_F_MULTI, NLM_F_REQUEST,
};

/// `NLMSGERR_ATTR_MSG`: human readable error string.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLMSGERR_ATTR_OFFS`: offset of the offending attribute in the request.
pub const NLMSGERR_ATTR_OFFS: u16 = 2;
/// `NLMSGERR_ATTR_COOKIE`: subsystem cookie.
pub const NLMSGERR_ATTR_COOKIE: u16 = 3;
/// `NLMSGERR_ATTR_POLICY`: policy of the rejected attribute.
pub const NLMSGERR_ATTR_POLICY: u16 = 4;
/// `NLMSGERR_ATTR_MISS_TYPE`: type of a missing required attribute.
pub const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;
/// `NLMSGERR_ATTR_MISS_NEST`: offset of the nest in which that attribute is missing.
pub const NLMSGERR_ATTR_MISS_NEST: u16 = 6;

/// Size of `struct nlmsghdr`.
const NETLINK_HEADER_LEN: usize = 16;

// Socket options from uapi/linux/netlink.h (SOL_NETLINK level).
const NETLINK_CAP_ACK: libc::c_int = 10;

/// Decoded extended ACK (`NETLINK_EXT_ACK`) attached to an error, a warning-carrying ACK or a
/// dump's NLMSG_DONE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtAck {
    /// `NLMSGERR_ATTR_MSG`, e.g. "Device queue in use due to queue leasing".
    pub msg: Option<String>,
    /// `NLMSGERR_ATTR_OFFS`: byte offset (from the start of the request's nlmsghdr) of the
    /// attribute the kernel rejected.
    pub bad_attr_offset: Option<u32>,
    /// `NLMSGERR_ATTR_MISS_TYPE`: attribute type that was required but missing.
    pub missing_attr_type: Option<u32>,
    /// `NLMSGERR_ATTR_MISS_NEST`: offset of the nest the missing attribute belonged in.
    pub missing_nest_offset: Option<u32>,
    /// `NLMSGERR_ATTR_COOKIE`.
    pub cookie: Option<Vec<u8>>,
    /// `NLMSGERR_ATTR_POLICY` and anything newer, kept raw: (type, payload).
    pub other: Vec<(u16, Vec<u8>)>,
}

impl ExtAck {
    /// True when the kernel attached nothing.
    pub fn is_empty(&self) -> bool {
        *self == ExtAck::default()
    }

    /// Strict: a run of TLVs that does not follow the format is an error (generic netlink
    /// replies, which this crate decodes byte by byte).
    pub fn parse(tlvs: &[u8]) -> Result<ExtAck, NetlinkError> {
        match ExtAck::walk(tlvs) {
            (ext, None) => Ok(ext),
            (_, Some(why)) => Err(NetlinkError::Malformed(format!(
                "extended ACK attributes: {why}"
            ))),
        }
    }

    /// Lenient: what parsed before the first malformed attribute (rtnetlink errors, where the
    /// errno is the answer and the extack only explains it).
    pub fn parse_prefix(tlvs: &[u8]) -> ExtAck {
        ExtAck::walk(tlvs).0
    }

    /// The one TLV walker: every attribute up to the first that breaks the format (a length
    /// below the header or past the end, a fixed-size value of the wrong size), and why it broke.
    fn walk(tlvs: &[u8]) -> (ExtAck, Option<String>) {
        let mut ext = ExtAck::default();
        let mut off = 0usize;
        while off < tlvs.len() {
            let Some(hdr) = tlvs.get(off..off + 4) else {
                return (
                    ext,
                    Some(format!("{} stray bytes at offset {off}", tlvs.len() - off)),
                );
            };
            let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
            // NLA_F_NESTED / NLA_F_NET_BYTEORDER are flags, not part of the type.
            let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
            let Some(payload) = (len >= 4).then(|| tlvs.get(off + 4..off + len)).flatten() else {
                return (
                    ext,
                    Some(format!(
                        "attribute {kind} at offset {off} claims {len} bytes"
                    )),
                );
            };
            let value = |what| u32_ne(payload, what).map_err(|e| e.to_string());
            let parsed = match kind {
                NLMSGERR_ATTR_MSG => {
                    // NUL-terminated C string; tolerate a missing terminator.
                    let end = payload
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(payload.len());
                    ext.msg = Some(String::from_utf8_lossy(&payload[..end]).into_owned());
                    Ok(())
                }
                NLMSGERR_ATTR_OFFS => {
                    value("NLMSGERR_ATTR_OFFS").map(|v| ext.bad_attr_offset = Some(v))
                }
                NLMSGERR_ATTR_MISS_TYPE => {
                    value("NLMSGERR_ATTR_MISS_TYPE").map(|v| ext.missing_attr_type = Some(v))
                }
                NLMSGERR_ATTR_MISS_NEST => {
                    value("NLMSGERR_ATTR_MISS_NEST").map(|v| ext.missing_nest_offset = Some(v))
                }
                NLMSGERR_ATTR_COOKIE => {
                    ext.cookie = Some(payload.to_vec());
                    Ok(())
                }
                _ => {
                    ext.other.push((kind, payload.to_vec()));
                    Ok(())
                }
            };
            if let Err(why) = parsed {
                return (ext, Some(why));
            }
            off += (len + 3) & !3;
        }
        (ext, None)
    }
}

/// What an operator can use: the message, or the missing attribute. The offset of a rejected
/// attribute points into our own request, so only a message without any text shows it.
impl std::fmt::Display for ExtAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = &self.msg {
            parts.push(m.clone());
        }
        if let (None, Some(o)) = (&self.msg, self.bad_attr_offset) {
            parts.push(format!("bad attribute at offset {o}"));
        }
        if let Some(t) = self.missing_attr_type {
            match self.missing_nest_offset {
                Some(n) => parts.push(format!("missing attribute type {t} in nest at offset {n}")),
                None => parts.push(format!("missing attribute type {t}")),
            }
        }
        write!(f, "{}", parts.join(", "))
    }
}

fn u32_ne(payload: &[u8], what: &str) -> Result<u32, NetlinkError> {
    let arr: [u8; 4] = payload.try_into().map_err(|_| {
        NetlinkError::Malformed(format!("{what}: expected 4 bytes, got {}", payload.len()))
    })?;
    Ok(u32::from_ne_bytes(arr))
}

fn i32_ne(payload: &[u8], what: &str) -> Result<i32, NetlinkError> {
    u32_ne(payload, what).map(|v| v as i32)
}

/// A negative errno from the kernel with its extended ACK: the one kernel-error value of every
/// netlink family this crate speaks (rtnetlink through [`crate::kernel::rtnl`], generic netlink and the
/// nsid requests through [`transact`]). Each object module's error keeps it beside the operation.
///
/// `errno` stays a typed [`Errno`] so callers can match ENODEV vs EEXIST vs EBUSY vs EOPNOTSUPP;
/// `extack` carries strings such as "Unknown device type" or "netkit can only lease against the
/// peer device" that make EOPNOTSUPP/EINVAL diagnosable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errno:?}: {}{}", strerror(*errno), if .extack.is_empty() { String::new() } else { format!(" ({})", .extack) })]
pub struct KernelError {
    pub errno: Errno,
    /// Boxed: every object module's error carries a `KernelError`, and most have no extack.
    pub extack: Box<ExtAck>,
}

impl KernelError {
    pub fn new(errno: Errno) -> Self {
        KernelError {
            errno,
            extack: Box::default(),
        }
    }

    /// An errno (as the kernel sends it, negative) with a raw run of extack TLVs, e.g. what
    /// netlink-packet-core leaves of an NLMSG_ERROR or NLMSG_DONE. A malformed tail is dropped:
    /// the errno is what matters, the extack only explains it.
    pub fn from_tlvs(code: i32, tlvs: &[u8]) -> Self {
        KernelError {
            errno: Errno::from_raw(code.saturating_abs()),
            extack: Box::new(ExtAck::parse_prefix(tlvs)),
        }
    }

    /// The extended ACK's message, if the kernel set one.
    pub fn msg(&self) -> Option<&str> {
        self.extack.msg.as_deref()
    }
}

/// The C library's message for `errno` (nix's own table words some errnos differently from
/// what operators see from `ip`, e.g. EOPNOTSUPP).
fn strerror(errno: Errno) -> String {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: the buffer is valid for its length; the XSI strerror_r NUL-terminates on success.
    let rc = unsafe { libc::strerror_r(errno as i32, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("errno {}", errno as i32);
    }
    // SAFETY: NUL-terminated within `buf` (checked by rc == 0 above).
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Errors of the shared netlink layer; each protocol module wraps them into its own error type
/// with the operation name attached.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel answered with a negative errno (NLMSG_ERROR, or NLMSG_DONE of a dump).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Socket-level failure.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// A reply that does not follow the netlink wire format.
    #[error("malformed netlink message: {0}")]
    Malformed(String),
    /// A dump reply carried NLM_F_DUMP_INTR: the kernel state changed while dumping, the result
    /// may be inconsistent and the caller should retry.
    #[error("netlink dump interrupted by a concurrent change")]
    DumpInterrupted,
}

/// One netlink message of a reply datagram, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A protocol message (anything that is not a control message).
    Data(DataMessage),
    /// NLMSG_ERROR with error 0. Extended ACK here is a warning.
    Ack {
        /// Sequence number of the request being acknowledged.
        seq: u32,
        /// Warning TLVs, usually empty.
        extack: ExtAck,
    },
    /// NLMSG_ERROR with a negative error.
    Error {
        /// Sequence number of the failed request.
        seq: u32,
        /// The (positive) errno.
        errno: Errno,
        /// Extended ACK.
        extack: ExtAck,
    },
    /// NLMSG_DONE: end of a dump, with the dump's final status.
    Done {
        /// Sequence number of the dump request.
        seq: u32,
        /// `None` for success, otherwise the errno the dump ended with.
        errno: Option<Errno>,
        /// Extended ACK.
        extack: ExtAck,
    },
}

/// A protocol message from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    /// `nlmsg_type` (the generic netlink family id, or an RTM_* type).
    pub msg_type: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the 16-byte nlmsghdr, up to `nlmsg_len`.
    pub payload: Vec<u8>,
}

const fn nlmsg_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Split one received datagram into its netlink messages.
pub fn parse_datagram(buf: &[u8]) -> Result<Vec<Message>, NetlinkError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let nl = NetlinkBuffer::new_checked(&buf[off..])
            .map_err(|e| NetlinkError::Malformed(format!("at offset {off}: {e}")))?;
        let len = nl.length() as usize;
        let flags = nl.flags();
        let seq = nl.sequence_number();
        let payload = nl.payload();
        match nl.message_type() {
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => {
                return Err(NetlinkError::Malformed(
                    "NLMSG_OVERRUN: kernel dropped data".into(),
                ))
            }
            NLMSG_ERROR => out.push(parse_error(flags, seq, payload)?),
            NLMSG_DONE => {
                // A DONE without payload is legal (old kernels, other protocols): success.
                let (errno, extack) = if payload.len() >= 4 {
                    let code = i32_ne(&payload[..4], "NLMSG_DONE errno")?;
                    let extack = if flags & NLM_F_ACK_TLVS != 0 {
                        ExtAck::parse(&payload[4..])?
                    } else {
                        ExtAck::default()
                    };
                    ((code < 0).then(|| Errno::from_raw(-code)), extack)
                } else {
                    (None, ExtAck::default())
                };
                out.push(Message::Done { seq, errno, extack });
            }
            msg_type => out.push(Message::Data(DataMessage {
                msg_type,
                flags,
                seq,
                payload: payload.to_vec(),
            })),
        }
        off += nlmsg_align(len);
    }
    Ok(out)
}

/// Layout (uapi/linux/netlink.h): `struct nlmsgerr { int error; struct nlmsghdr msg; }`, then
/// the rest of the echoed request unless NLM_F_CAPPED, then TLVs if NLM_F_ACK_TLVS.
fn parse_error(flags: u16, seq: u32, payload: &[u8]) -> Result<Message, NetlinkError> {
    if payload.len() < 4 + NETLINK_HEADER_LEN {
        return Err(NetlinkError::Malformed(format!(
            "NLMSG_ERROR payload of {} bytes, need at least {}",
            payload.len(),
            4 + NETLINK_HEADER_LEN
        )));
    }
    let code = i32_ne(&payload[..4], "NLMSG_ERROR errno")?;
    let echoed_len = u32_ne(&payload[4..8], "echoed nlmsg_len")? as usize;
    let tlv_start = if flags & NLM_F_CAPPED != 0 {
        4 + NETLINK_HEADER_LEN
    } else {
        4 + nlmsg_align(echoed_len.max(NETLINK_HEADER_LEN))
    };
    let extack = if flags & NLM_F_ACK_TLVS != 0 {
        let tlvs = payload.get(tlv_start..).ok_or_else(|| {
            NetlinkError::Malformed(format!(
                "NLMSG_ERROR: echoed request of {echoed_len} bytes overruns the {}-byte payload",
                payload.len()
            ))
        })?;
        ExtAck::parse(tlvs)?
    } else {
        ExtAck::default()
    };
    Ok(if code == 0 {
        Message::Ack { seq, extack }
    } else {
        Message::Error {
            seq,
            // The kernel sends -errno; a positive value is bogus but keep it rather than lose it.
            errno: Errno::from_raw(if code < 0 {
                code.saturating_neg()
            } else {
                code
            }),
            extack,
        }
    })
}

/// A datagram-level netlink connection. The production implementation is [`SocketTransport`];
/// tests replay literal kernel replies through a scripted implementation.
pub trait Transport {
    /// Send one request datagram.
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;
    /// Receive one datagram (blocking).
    fn recv(&mut self) -> io::Result<Vec<u8>>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        (**self).send(datagram)
    }
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        (**self).recv()
    }
}

/// A blocking netlink socket.
///
/// A netlink socket is bound to the network namespace of the thread that *creates* it, for its
/// whole lifetime; a later `setns()` of that thread does not move it. Open it on a thread that is
/// already in the namespace you want to talk to.
pub struct SocketTransport {
    sock: NlSocket,
}

impl SocketTransport {
    /// Open and bind a socket of the given netlink protocol in the current thread's netns, with
    /// extended ACKs enabled (so errors carry the kernel's message) and capped ACKs (the kernel
    /// does not echo our request back; we still have it).
    pub fn open(protocol: NlFamily) -> io::Result<SocketTransport> {
        let sock = NlSocket::connect(protocol, None, Groups::empty())?;
        connect_to_kernel(sock.as_raw_fd())?;
        sock.block()?;
        sock.enable_ext_ack(true)?;
        // neli exposes EXT_ACK but not CAP_ACK.
        let one: libc::c_int = 1;
        // SAFETY: plain setsockopt on a socket we own, with a correctly sized c_int option.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_CAP_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SocketTransport { sock })
    }

    /// Turn on `NETLINK_GET_STRICT_CHK` so rtnetlink GET requests with attributes the kernel
    /// does not expect are rejected instead of silently ignored.
    pub fn enable_strict_checking(&self) -> io::Result<()> {
        self.sock.enable_strict_checking(true)
    }
}

impl AsFd for SocketTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.sock` and lives as long as the borrow of `self`.
        unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) }
    }
}

impl Transport for SocketTransport {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.send(datagram, Msg::empty()) {
                Ok(n) if n == datagram.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short netlink send: {n} of {} bytes",
                        datagram.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn recv(&mut self) -> io::Result<Vec<u8>> {
        loop {
            // Peek with MSG_TRUNC to learn the datagram's real size, so a large dump chunk is
            // never silently truncated by a fixed-size buffer.
            let mut probe = [0u8; 0];
            let size = match self.sock.recv(&mut probe[..], Msg::PEEK | Msg::TRUNC) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut buf = vec![0u8; size];
            // SAFETY: zero is a valid sockaddr_nl.
            let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // recvfrom ourselves: neli's recv drops the sender's port, which is what tells a
            // kernel reply from a forged one.
            // SAFETY: valid fd, buffer of `buf.len()` bytes, address buffer of `len` bytes.
            let n = unsafe {
                libc::recvfrom(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut addr as *mut libc::sockaddr_nl).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if !from_kernel(&addr, len) {
                // Not the kernel's: ignore it, as if it had never arrived.
                continue;
            }
            buf.truncate(n as usize);
            return Ok(buf);
        }
    }
}

/// `connect(2)` a netlink socket to the kernel (port 0, no groups). Besides the destination,
/// this makes the kernel refuse unicasts to this socket from any other socket: in
/// net/netlink/af_netlink.c `netlink_getsockbyportid()` answers `ECONNREFUSED` to a sender whose
/// port is not the connected `dst_portid`, and the kernel's own sockets have port 0. A socket in
/// a pod's netns would otherwise accept datagrams from any process there that can open a netlink
/// socket (e.g. forged errors matching our sequence numbers).
pub(crate) fn connect_to_kernel(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: zero is a valid sockaddr_nl; family set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: valid fd and a correctly sized address.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a datagram's source address is the kernel: netlink port 0 and no multicast group.
/// Anything else is dropped by [`SocketTransport`] (belt and braces to [`connect_to_kernel`]).
pub(crate) fn from_kernel(addr: &libc::sockaddr_nl, len: libc::socklen_t) -> bool {
    len as usize >= std::mem::size_of::<libc::sockaddr_nl>()
        && addr.nl_family == libc::AF_NETLINK as libc::sa_family_t
        && addr.nl_pid == 0
        && addr.nl_groups == 0
}

/// Send one request and collect the protocol messages of its reply.
///
/// The reply shape is taken from the request itself: with `NLM_F_DUMP` the reply ends at
/// NLMSG_DONE; otherwise the request must carry `NLM_F_ACK` and the reply ends at the ACK (or
/// the error). Messages for other sequence numbers (leftovers of an earlier, abandoned exchange)
/// are skipped.
pub fn transact<T: Transport + ?Sized>(
    transport: &mut T,
    request: &[u8],
) -> Result<Vec<DataMessage>, NetlinkError> {
    let hdr = NetlinkBuffer::new_checked(request)
        .map_err(|e| NetlinkError::Malformed(format!("request: {e}")))?;
    let seq = hdr.sequence_number();
    let dump = hdr.flags() & NLM_F_DUMP == NLM_F_DUMP;
    if !dump && hdr.flags() & NLM_F_ACK == 0 {
        // Without an ACK a do-request that has no reply message would leave us blocked forever.
        return Err(NetlinkError::Malformed(
            "do-request without NLM_F_ACK".into(),
        ));
    }
    transport.send(request)?;

    let mut data = Vec::new();
    let mut interrupted = false;
    loop {
        let datagram = transport.recv()?;
        if datagram.is_empty() {
            return Err(NetlinkError::Malformed("empty datagram".into()));
        }
        for msg in parse_datagram(&datagram)? {
            match msg {
                Message::Data(d) if d.seq == seq => {
                    interrupted |= d.flags & NLM_F_DUMP_INTR != 0;
                    data.push(d);
                }
                Message::Error {
                    seq: s,
                    errno,
                    extack,
                } if s == seq => {
                    return Err(KernelError {
                        errno,
                        extack: Box::new(extack),
                    }
                    .into());
                }
                Message::Ack { seq: s, .. } if s == seq && !dump => return Ok(data),
                Message::Done {
                    seq: s,
                    errno,
                    extack,
                } if s == seq => {
                    if let Some(errno) = errno {
                        return Err(KernelError {
                            errno,
                            extack: Box::new(extack),
                        }
                        .into());
                    }
                    if interrupted {
                        return Err(NetlinkError::DumpInterrupted);
                    }
                    return Ok(data);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted [`Transport`] replaying literal kernel datagrams.
    use super::Transport;
    use std::collections::VecDeque;
    use std::io;

    #[derive(Default)]
    pub(crate) struct Scripted {
        pub sent: Vec<Vec<u8>>,
        pub replies: VecDeque<Vec<u8>>,
    }

    impl Scripted {
        pub fn new<I: IntoIterator<Item = Vec<u8>>>(replies: I) -> Self {
            Scripted {
                sent: Vec::new(),
                replies: replies.into_iter().collect(),
            }
        }
    }

    impl Transport for Scripted {
        fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
            self.sent.push(datagram.to_vec());
            Ok(())
        }
        fn recv(&mut self) -> io::Result<Vec<u8>> {
            self.replies
                .pop_front()
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "script exhausted"))
        }
    }

    /// Concatenate byte chunks (test literal helper).
    pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::testing::{cat, Scripted};
    use super::*;

    // A request header: len 20, type 0x1b, flags REQUEST|ACK, seq 9, pid 0 + 4 payload bytes.
    const REQ: [u8; 20] = [
        0x14, 0, 0, 0, 0x1b, 0, 0x05, 0, 9, 0, 0, 0, 0, 0, 0, 0, //
        0x0a, 0x01, 0, 0,
    ];

    #[test]
    fn error_with_full_echo_and_extack() {
        // NLMSG_ERROR, flags ACK_TLVS (0x200), seq 9, pid 0x1234.
        // payload: error -16 (EBUSY), echoed 20-byte request, then MSG "busy\0" (len 9 -> pad 12).
        let msg = cat(&[
            &[
                0x34, 0, 0, 0, 0x02, 0, 0x00, 0x02, 9, 0, 0, 0, 0x34, 0x12, 0, 0,
            ],
            &(-16i32).to_ne_bytes(),
            &REQ,
            &[0x09, 0, 0x01, 0, b'b', b'u', b's', b'y', 0, 0, 0, 0],
        ]);
        assert_eq!(msg.len(), 0x34);
        let msgs = parse_datagram(&msg).unwrap();
        assert_eq!(
            msgs,
            vec![Message::Error {
                seq: 9,
                errno: Errno::EBUSY,
                extack: ExtAck {
                    msg: Some("busy".into()),
                    ..Default::default()
                },
            }]
        );
    }

    #[test]
    fn capped_error_with_offset_and_missing_type() {
        // flags CAPPED|ACK_TLVS = 0x300: only the echoed header (16 bytes) is present.
        let msg = cat(&[
            &[0x34, 0, 0, 0, 0x02, 0, 0x00, 0x03, 9, 0, 0, 0, 0, 0, 0, 0],
            &(-22i32).to_ne_bytes(),
            &REQ[..16],
            &[0x08, 0, 0x02, 0, 0x24, 0, 0, 0], // OFFS = 36
            &[0x08, 0, 0x05, 0, 0x02, 0, 0, 0], // MISS_TYPE = 2
        ]);
        assert_eq!(msg.len(), 0x34);
        match &parse_datagram(&msg).unwrap()[..] {
            [Message::Error {
                seq: 9,
                errno: Errno::EINVAL,
                extack,
            }] => {
                assert_eq!(extack.bad_attr_offset, Some(36));
                assert_eq!(extack.missing_attr_type, Some(2));
                assert_eq!(extack.msg, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ack_with_warning_tlv_does_not_desync_following_message() {
        // A capped ACK with a warning, followed in the same datagram by a data message.
        let ack = cat(&[
            &[0x2c, 0, 0, 0, 0x02, 0, 0x00, 0x03, 9, 0, 0, 0, 0, 0, 0, 0],
            &0i32.to_ne_bytes(),
            &REQ[..16],
            &[0x07, 0, 0x01, 0, b'h', b'm', 0, 0], // MSG "hm\0": nla_len 7, padded to 8
        ]);
        assert_eq!(ack.len(), 0x2c);
        let data = [
            0x14, 0, 0, 0, 0x1b, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x01, 0, 0,
        ];
        let msgs = parse_datagram(&cat(&[&ack, &data])).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0],
            Message::Ack {
                seq: 9,
                extack: ExtAck {
                    msg: Some("hm".into()),
                    ..Default::default()
                }
            }
        );
        assert_eq!(
            msgs[1],
            Message::Data(DataMessage {
                msg_type: 0x1b,
                flags: 0,
                seq: 10,
                payload: vec![0x0a, 0x01, 0, 0]
            })
        );
    }

    #[test]
    fn done_with_error_and_extack() {
        // NLMSG_DONE, flags MULTI|ACK_TLVS, errno -ENODEV, MSG "gone".
        let msg = cat(&[
            &[0x20, 0, 0, 0, 0x03, 0, 0x02, 0x02, 9, 0, 0, 0, 0, 0, 0, 0],
            &(-19i32).to_ne_bytes(),
            &[0x09, 0, 0x01, 0, b'g', b'o', b'n', b'e', 0, 0, 0, 0],
        ]);
        assert_eq!(
            parse_datagram(&msg).unwrap(),
            vec![Message::Done {
                seq: 9,
                errno: Some(Errno::ENODEV),
                extack: ExtAck {
                    msg: Some("gone".into()),
                    ..Default::default()
                }
            }]
        );
    }

    #[test]
    fn truncated_message_is_rejected() {
        // nlmsg_len claims 40 bytes, only 20 present.
        let mut bad = REQ;
        bad[0] = 40;
        assert!(matches!(
            parse_datagram(&bad),
            Err(NetlinkError::Malformed(_))
        ));
    }

    #[test]
    fn transact_skips_stale_seq_and_stops_at_ack() {
        let stale = [
            0x14, 0, 0, 0, 0x1b, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0,
        ];
        let reply = [
            0x14, 0, 0, 0, 0x1b, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0,
        ];
        let ack = cat(&[
            &[0x24, 0, 0, 0, 0x02, 0, 0x00, 0x01, 9, 0, 0, 0, 0, 0, 0, 0],
            &0i32.to_ne_bytes(),
            &REQ[..16],
        ]);
        let mut t = Scripted::new([cat(&[&stale, &reply]), ack]);
        let data = transact(&mut t, &REQ).unwrap();
        assert_eq!(t.sent, vec![REQ.to_vec()]);
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].payload, vec![2, 1, 0, 0]);
        assert!(t.replies.is_empty());
    }

    #[test]
    fn transact_dump_interrupted() {
        let mut req = REQ;
        req[6] = 0x01;
        req[7] = 0x03; // REQUEST | DUMP
        let part = [
            0x14, 0, 0, 0, 0x1b, 0, 0x12, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0,
        ];
        let done = cat(&[
            &[0x14, 0, 0, 0, 0x03, 0, 0x02, 0, 9, 0, 0, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0],
        ]);
        let mut t = Scripted::new([cat(&[&part, &done])]);
        assert!(matches!(
            transact(&mut t, &req),
            Err(NetlinkError::DumpInterrupted)
        ));
    }

    #[test]
    fn transact_refuses_do_without_ack() {
        let mut req = REQ;
        req[6] = 0x01; // REQUEST only
        let mut t = Scripted::new([]);
        assert!(matches!(
            transact(&mut t, &req),
            Err(NetlinkError::Malformed(_))
        ));
        assert!(t.sent.is_empty());
    }

    /// A real generic-netlink socket, and a second one playing a pod process with CAP_NET_ADMIN
    /// in the same netns that forges an error reply to our pending request.
    mod forged {
        use super::*;
        use neli::consts::socket::NlFamily;

        // CTRL_CMD_GETFAMILY "nlctrl" to GENL_ID_CTRL, REQUEST|ACK, seq 4242.
        fn getfamily(seq: u32) -> Vec<u8> {
            let mut attr = vec![11, 0, 2, 0]; // len 4 + "nlctrl\0", CTRL_ATTR_FAMILY_NAME
            attr.extend_from_slice(b"nlctrl\0");
            attr.push(0); // pad to 12
            let len = 16 + 4 + attr.len();
            let mut m = Vec::new();
            m.extend_from_slice(&(len as u32).to_ne_bytes());
            m.extend_from_slice(&0x10u16.to_ne_bytes());
            m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&[3, 1, 0, 0]); // CTRL_CMD_GETFAMILY, version 1
            m.extend_from_slice(&attr);
            m
        }

        // NLMSG_ERROR -EBUSY for `seq`, capped (header only echoed).
        fn forged_ebusy(seq: u32) -> Vec<u8> {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m.extend_from_slice(&NLM_F_CAPPED.to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&(-libc::EBUSY).to_ne_bytes());
            m.extend_from_slice(&getfamily(seq)[..16]);
            m
        }

        fn port_of(fd: BorrowedFd<'_>) -> u32 {
            // SAFETY: zero is a valid sockaddr_nl; getsockname fills at most `len` bytes.
            let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            let rc = unsafe {
                libc::getsockname(
                    fd.as_raw_fd(),
                    (&mut addr as *mut libc::sockaddr_nl).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0, "getsockname: {}", io::Error::last_os_error());
            addr.nl_pid
        }

        /// Sends `msg` from a fresh NETLINK_GENERIC socket to `port`; the errno if refused.
        fn forge(port: u32, msg: &[u8]) -> Result<(), Errno> {
            assert!(
                nix::unistd::geteuid().is_root(),
                "sending to another netlink socket's port needs CAP_NET_ADMIN: run as root"
            );
            // SAFETY: plain socket(2).
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_GENERIC,
                )
            };
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: we own the new fd.
            let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // SAFETY: zero is a valid sockaddr_nl.
            let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            to.nl_pid = port;
            // SAFETY: valid fd, buffer and address.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&to as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                Err(Errno::last())
            } else {
                assert_eq!(n as usize, msg.len());
                Ok(())
            }
        }

        fn genuine_answer(t: &mut SocketTransport, seq: u32) {
            let data =
                transact(t, &getfamily(seq)).expect("the kernel's answer, not the forged EBUSY");
            assert_eq!(data.len(), 1, "{data:?}");
            assert_eq!(data[0].msg_type, 0x10, "a GENL_ID_CTRL reply");
            assert_eq!(data[0].seq, seq);
        }

        #[test]
        fn the_kernel_refuses_a_forged_reply_to_a_connected_socket() {
            let mut t = SocketTransport::open(NlFamily::Generic).unwrap();
            let port = port_of(t.as_fd());
            assert_eq!(forge(port, &forged_ebusy(4242)), Err(Errno::ECONNREFUSED));
            genuine_answer(&mut t, 4242);
        }

        #[test]
        fn a_forged_reply_that_arrives_anyway_is_ignored_by_the_transport() {
            let mut t = SocketTransport::open(NlFamily::Generic).unwrap();
            // Undo the connect (AF_UNSPEC) so the forged datagram is queued: the transport's own
            // check on the sender must drop it.
            let unspec = libc::sockaddr {
                sa_family: libc::AF_UNSPEC as libc::sa_family_t,
                sa_data: [0; 14],
            };
            // SAFETY: valid fd and address.
            let rc = unsafe {
                libc::connect(
                    t.as_fd().as_raw_fd(),
                    &unspec,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "disconnect: {}", io::Error::last_os_error());
            let port = port_of(t.as_fd());
            forge(port, &forged_ebusy(4343))
                .expect("an unconnected socket accepts the forged datagram");
            genuine_answer(&mut t, 4343);
        }

        #[test]
        fn only_port_zero_without_groups_is_the_kernel() {
            // SAFETY: zero is a valid sockaddr_nl.
            let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let full = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            assert!(from_kernel(&a, full));
            assert!(!from_kernel(&a, 4), "a short address says nothing");
            a.nl_pid = 77;
            assert!(!from_kernel(&a, full));
            a.nl_pid = 0;
            a.nl_groups = 1;
            assert!(!from_kernel(&a, full), "a multicast is not a reply");
        }
    }
}
