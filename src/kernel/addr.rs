//! IPv4/IPv6 addresses on an interface over rtnetlink (`RTM_NEWADDR`/`RTM_DELADDR`/
//! `RTM_GETADDR`), on the crate's one prefix type, [`IpCidr`].

use std::{fmt, net::IpAddr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
    AddressFamily, RouteNetlinkMessage,
};
use nix::errno::Errno;

pub use crate::ip::IpCidr;
use crate::kernel::rtnl::{Deletion, KernelError, Rtnl, RtnlError};

/// Which operation failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrOp {
    Add,
    Delete,
    List,
}

impl fmt::Display for AddrOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrOp::Add => "add address",
            AddrOp::Delete => "delete address",
            AddrOp::List => "list addresses",
        })
    }
}

/// Errors of address operations, split by errno; every kernel variant keeps the
/// [`KernelError`] (typed errno + extack).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// EADDRNOTAVAIL: the interface exists but has no such address (what both IPv4 and IPv6
    /// return when deleting a missing address).
    #[error("{op} {prefix} on ifindex {index}: {kernel}")]
    NotFound {
        op: AddrOp,
        index: u32,
        prefix: IpCidr,
        kernel: KernelError,
    },
    /// ENODEV: no interface with that index (IPv6 also answers ENXIO for an interface without
    /// IPv6 state).
    #[error("{op} on ifindex {index}: {kernel}")]
    LinkNotFound {
        op: AddrOp,
        index: u32,
        kernel: KernelError,
    },
    /// EEXIST: the address is already configured.
    #[error("{op} {prefix} on ifindex {index}: {kernel}")]
    Exists {
        op: AddrOp,
        index: u32,
        prefix: IpCidr,
        kernel: KernelError,
    },
    /// Any other errno.
    #[error("{op} on ifindex {index}: {kernel}")]
    Kernel {
        op: AddrOp,
        index: u32,
        kernel: KernelError,
    },
    /// The request never got a kernel verdict.
    #[error("{op} on ifindex {index}: {error}")]
    Transport {
        op: AddrOp,
        index: u32,
        error: RtnlError,
    },
    /// An address/prefix string or prefix length that cannot be valid.
    #[error("invalid prefix {value:?}: {reason}")]
    InvalidPrefix { value: String, reason: &'static str },
    /// The kernel's answer lacks the address.
    #[error("{op} on ifindex {index}: malformed kernel reply: {reason}")]
    MalformedReply {
        op: AddrOp,
        index: u32,
        reason: &'static str,
    },
}

impl AddrError {
    fn from_netlink(op: AddrOp, index: u32, prefix: Option<IpCidr>, err: RtnlError) -> Self {
        let kernel = match err {
            RtnlError::Kernel(k) => k,
            error => return AddrError::Transport { op, index, error },
        };
        match (kernel.errno, prefix) {
            (Errno::ENODEV | Errno::ENXIO, _) => AddrError::LinkNotFound { op, index, kernel },
            (Errno::EADDRNOTAVAIL, Some(prefix)) => AddrError::NotFound {
                op,
                index,
                prefix,
                kernel,
            },
            (Errno::EEXIST, Some(prefix)) => AddrError::Exists {
                op,
                index,
                prefix,
                kernel,
            },
            _ => AddrError::Kernel { op, index, kernel },
        }
    }

    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            AddrError::NotFound { kernel, .. }
            | AddrError::LinkNotFound { kernel, .. }
            | AddrError::Exists { kernel, .. }
            | AddrError::Kernel { kernel, .. } => Some(kernel),
            AddrError::Transport {
                error: RtnlError::Kernel(kernel),
                ..
            } => Some(kernel),
            _ => None,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        self.kernel().map(|k| k.errno)
    }

    /// The address or its interface no longer exists (for DEL: nothing left to do).
    pub fn is_already_gone(&self) -> bool {
        matches!(
            self,
            AddrError::NotFound { .. } | AddrError::LinkNotFound { .. }
        )
    }
}

/// The address family of a prefix, as rtnetlink headers carry it.
pub(crate) fn family_of(p: &IpCidr) -> AddressFamily {
    if p.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// An address to configure on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSpec {
    index: u32,
    prefix: IpCidr,
    flags: AddressFlags,
}

impl AddressSpec {
    pub fn new(index: u32, prefix: IpCidr) -> AddressSpec {
        AddressSpec {
            index,
            prefix,
            flags: AddressFlags::empty(),
        }
    }

    /// IPv6: skip duplicate address detection, so the address is usable immediately instead
    /// of staying tentative for ~1s (a pod's address is allocated by IPAM, not by SLAAC).
    pub fn nodad(mut self) -> Self {
        self.flags |= AddressFlags::Nodad;
        self
    }

    /// Do not install the prefix route the kernel adds for the address's subnet.
    pub fn noprefixroute(mut self) -> Self {
        self.flags |= AddressFlags::Noprefixroute;
        self
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn prefix(&self) -> IpCidr {
        self.prefix
    }

    /// The RTM_NEWADDR payload: IFA_LOCAL and IFA_ADDRESS both set to the address, as `ip addr
    /// add` does (IPv4 matches on both; IPv6 takes IFA_LOCAL as the address when both are
    /// equal).
    pub fn message(&self) -> AddressMessage {
        let mut msg = base_message(self.index, self.prefix);
        msg.header.scope = if is_loopback(self.prefix.addr()) {
            AddressScope::Host
        } else {
            AddressScope::Universe
        };
        if !self.flags.is_empty() {
            // The header holds only the low 8 flag bits; IFA_FLAGS carries all 32 and takes
            // precedence in the kernel.
            msg.header.flags = AddressHeaderFlags::from_bits_retain(self.flags.bits() as u8);
            msg.attributes.push(AddressAttribute::Flags(self.flags));
        }
        msg
    }
}

fn is_loopback(addr: IpAddr) -> bool {
    addr.is_loopback()
}

fn base_message(index: u32, prefix: IpCidr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family_of(&prefix);
    msg.header.prefix_len = prefix.prefix_len();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(prefix.addr()));
    msg.attributes
        .push(AddressAttribute::Address(prefix.addr()));
    msg
}

/// An address as reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    pub index: u32,
    pub prefix: IpCidr,
    pub scope: AddressScope,
    /// All flags (from IFA_FLAGS when present, else the header byte).
    pub flags: AddressFlags,
    pub label: Option<String>,
    /// The complete decoded message, including attributes without a field above.
    pub message: AddressMessage,
}

impl AddressInfo {
    fn decode(message: AddressMessage) -> Result<AddressInfo, &'static str> {
        let mut local = None;
        let mut address = None;
        let mut flags = None;
        let mut label = None;
        for attr in &message.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Flags(f) => flags = Some(*f),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        // links and the only one IPv6 reports otherwise.
        let addr = local.or(address).ok_or("no IFA_LOCAL or IFA_ADDRESS")?;
        let prefix = IpCidr::new(addr, message.header.prefix_len)
            .ok_or("prefix length exceeds the address size")?;
        Ok(AddressInfo {
            index: message.header.index,
            prefix,
            scope: message.header.scope,
            flags: flags.unwrap_or_else(|| {
                AddressFlags::from_bits_retain(message.header.flags.bits().into())
            }),
            label,
            message,
        })
    }
}

/// Adds an address; [`AddrError::Exists`] if it is already there.
pub async fn add_address(rtnl: &Rtnl, spec: &AddressSpec) -> Result<(), AddrError> {
    rtnl.ack(
        RouteNetlinkMessage::NewAddress(spec.message()),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map(drop)
    .map_err(|e| AddrError::from_netlink(AddrOp::Add, spec.index, Some(spec.prefix), e))
}

/// Deletes an address (matched by address and prefix length). Idempotent: a missing address
/// or interface is [`Deletion::AlreadyGone`].
pub async fn delete_address(
    rtnl: &Rtnl,
    index: u32,
    prefix: IpCidr,
) -> Result<Deletion, AddrError> {
    match rtnl
        .ack(
            RouteNetlinkMessage::DelAddress(base_message(index, prefix)),
            0,
        )
        .await
    {
        Ok(_) => Ok(Deletion::Deleted),
        Err(e) => match AddrError::from_netlink(AddrOp::Delete, index, Some(prefix), e) {
            e if e.is_already_gone() => Ok(Deletion::AlreadyGone),
            e => Err(e),
        },
    }
}

/// IP families for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl From<IpFamily> for AddressFamily {
    fn from(f: IpFamily) -> AddressFamily {
        match f {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        }
    }
}

/// The addresses on `index` (all families when `family` is `None`). The kernel filters by
/// ifindex (strict dump checking), so this does not transfer other interfaces' addresses.
pub async fn list_addresses(
    rtnl: &Rtnl,
    index: u32,
    family: Option<IpFamily>,
) -> Result<Vec<AddressInfo>, AddrError> {
    let mut req = AddressMessage::default();
    req.header.family = family
        .map(AddressFamily::from)
        .unwrap_or(AddressFamily::Unspec);
    req.header.index = index;
    let replies = rtnl
        .dump(RouteNetlinkMessage::GetAddress(req))
        .await
        .map_err(|e| AddrError::from_netlink(AddrOp::List, index, None, e))?;
    let mut out = Vec::new();
    for reply in replies {
        let RouteNetlinkMessage::NewAddress(m) = reply else {
            return Err(AddrError::MalformedReply {
                op: AddrOp::List,
                index,
                reason: "answer is not RTM_NEWADDR",
            });
        };
        // Kernels without strict checking ignore the ifindex; never return foreign addresses.
        if m.header.index != index {
            continue;
        }
        let info = AddressInfo::decode(m).map_err(|reason| AddrError::MalformedReply {
            op: AddrOp::List,
            index,
            reason,
        })?;
        out.push(info);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::NetNs;
    use netlink_packet_core::Emitable;

    fn p(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn bytes(msg: AddressMessage) -> Vec<u8> {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_add_message_bytes() {
        let msg = AddressSpec::new(7, p("10.0.0.5/24")).message();
        #[rustfmt::skip]
        let want = [
            2, 24, 0, 0, 7, 0, 0, 0,        // ifaddrmsg: AF_INET, /24, flags 0, scope universe, ifindex 7
            8, 0, 2, 0, 10, 0, 0, 5,        // IFA_LOCAL
            8, 0, 1, 0, 10, 0, 0, 5,        // IFA_ADDRESS
        ];
        assert_eq!(bytes(msg), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_add_message_with_flags_bytes() {
        let msg = AddressSpec::new(3, p("fd00::2/64"))
            .nodad()
            .noprefixroute()
            .message();
        let mut want = vec![10, 64, 0x02, 0, 3, 0, 0, 0]; // AF_INET6, /64, IFA_F_NODAD, universe
        let addr = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        want.extend([20, 0, 2, 0]); // IFA_LOCAL
        want.extend(addr);
        want.extend([20, 0, 1, 0]); // IFA_ADDRESS
        want.extend(addr);
        want.extend([8, 0, 8, 0]); // IFA_FLAGS = NODAD | NOPREFIXROUTE
        want.extend(0x202u32.to_le_bytes());
        assert_eq!(bytes(msg), want);
    }

    #[test]
    fn loopback_addresses_get_host_scope() {
        let msg = AddressSpec::new(1, p("127.0.0.2/8")).message();
        assert_eq!(msg.header.scope, AddressScope::Host);
    }

    #[test]
    fn errno_classification() {
        let k = |errno| RtnlError::Kernel(KernelError::new(errno));
        let pre = Some(p("10.0.0.1/24"));
        let gone = AddrError::from_netlink(AddrOp::Delete, 3, pre, k(Errno::EADDRNOTAVAIL));
        assert!(matches!(gone, AddrError::NotFound { .. }) && gone.is_already_gone());
        let nodev = AddrError::from_netlink(AddrOp::Delete, 3, pre, k(Errno::ENODEV));
        assert!(matches!(nodev, AddrError::LinkNotFound { .. }) && nodev.is_already_gone());
        let exists = AddrError::from_netlink(AddrOp::Add, 3, pre, k(Errno::EEXIST));
        assert!(matches!(exists, AddrError::Exists { .. }) && !exists.is_already_gone());
        let perm = AddrError::from_netlink(AddrOp::Add, 3, pre, k(Errno::EPERM));
        assert!(matches!(perm, AddrError::Kernel { .. }));
        assert_eq!(perm.errno(), Some(Errno::EPERM));
    }

    #[test]
    fn decode_prefers_local_and_reads_full_flags() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 30;
        m.header.index = 4;
        m.attributes = vec![
            AddressAttribute::Address("10.0.0.2".parse().unwrap()), // peer
            AddressAttribute::Local("10.0.0.1".parse().unwrap()),
            AddressAttribute::Flags(AddressFlags::Noprefixroute | AddressFlags::Permanent),
        ];
        let info = AddressInfo::decode(m).unwrap();
        assert_eq!(info.prefix, p("10.0.0.1/30"));
        assert!(info.flags.contains(AddressFlags::Noprefixroute));
        assert!(AddressInfo::decode(AddressMessage::default()).is_err());
    }

    #[test]
    fn list_loopback_addresses_read_only() {
        // lo always has 127.0.0.1/8 once up; the sandbox's lo is up. The dump is filtered by
        // ifindex 1, so nothing else may appear.
        let addrs = NetNs::current()
            .unwrap()
            .run_rtnl(|rtnl| async move { list_addresses(&rtnl, 1, Some(IpFamily::V4)).await })
            .unwrap()
            .unwrap();
        assert!(addrs.iter().all(|a| a.index == 1 && a.prefix.is_ipv4()));
        assert!(
            addrs.iter().any(|a| a.prefix == p("127.0.0.1/8")),
            "{addrs:?}"
        );
    }
}
