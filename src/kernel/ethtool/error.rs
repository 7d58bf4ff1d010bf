//! Errors of the ethtool clients (generic netlink and ioctl).

use std::io;

use nix::errno::Errno;

use crate::kernel::netdev::NetdevError;
use crate::kernel::netlink::{KernelError, NetlinkError};

/// Error of an ethtool operation. Kernel failures keep the errno and, over netlink, the extack:
/// `EOPNOTSUPP` with no extack is a driver without the operation (no `create_rxfh_context`,
/// no `set_rxnfc`), with a bad-attribute offset an attribute the driver cannot honour
/// (net/ethtool/rss.c, `ethnl_rss_set_validate`).
#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    /// The `ethtool` generic netlink family does not exist (CONFIG_ETHTOOL_NETLINK off).
    #[error("generic netlink family \"ethtool\" not found: kernel lacks ethtool netlink")]
    FamilyNotFound,
    /// The family exists but has no such operation (kernel older than RSS over netlink).
    #[error("kernel ethtool family has no {op} operation")]
    OperationNotSupported { op: &'static str },
    /// The kernel refused a netlink request.
    #[error("ethtool {op} on ifindex {ifindex}: {kernel}")]
    Kernel {
        op: &'static str,
        ifindex: u32,
        kernel: KernelError,
    },
    /// The kernel refused an ioctl.
    #[error("ethtool ioctl {op} on {ifname}: {errno}")]
    Ioctl {
        op: &'static str,
        ifname: String,
        errno: Errno,
    },
    /// Socket-level failure.
    #[error("ethtool {op}: socket: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The reply did not match the format.
    #[error("ethtool {op}: malformed reply: {reason}")]
    Malformed { op: &'static str, reason: String },
    /// The request cannot be encoded (bad input, caught before the kernel sees it).
    #[error("ethtool {op}: invalid request: {reason}")]
    InvalidRequest { op: &'static str, reason: String },
}

impl EthtoolError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            EthtoolError::Kernel { kernel, .. } => Some(kernel.errno),
            EthtoolError::Ioctl { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The NIC (its driver) or the kernel lacks the operation: `EOPNOTSUPP`, or no family/op.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            EthtoolError::FamilyNotFound | EthtoolError::OperationNotSupported { .. }
        ) || self.errno() == Some(Errno::EOPNOTSUPP)
    }

    /// "Already gone": an unknown rule location (`ENOENT`, or `EINVAL` from drivers that check
    /// the location against their table) or an unknown RSS context (`ENOENT`,
    /// `ethnl_rss_delete_doit`).
    pub fn is_gone(&self) -> bool {
        self.errno() == Some(Errno::ENOENT)
    }

    pub(crate) fn from_netlink(op: &'static str, ifindex: u32, e: NetlinkError) -> Self {
        match e {
            NetlinkError::Kernel(kernel) => EthtoolError::Kernel {
                op,
                ifindex,
                kernel,
            },
            NetlinkError::Io(source) => EthtoolError::Io { op, source },
            NetlinkError::Malformed(reason) => EthtoolError::Malformed { op, reason },
            NetlinkError::DumpInterrupted => EthtoolError::Malformed {
                op,
                reason: "dump interrupted by a concurrent change".into(),
            },
        }
    }

    pub(crate) fn malformed(op: &'static str, reason: impl Into<String>) -> Self {
        EthtoolError::Malformed {
            op,
            reason: reason.into(),
        }
    }
}

/// The shared neli helpers ([`crate::kernel::netdev::wire`]) report in the netdev client's
/// error type; only their encode/decode variants can occur here.
impl From<NetdevError> for EthtoolError {
    fn from(e: NetdevError) -> Self {
        match e {
            NetdevError::Encode { op, reason } | NetdevError::InvalidRequest { op, reason } => {
                EthtoolError::InvalidRequest { op, reason }
            }
            NetdevError::Malformed { op, reason } => EthtoolError::Malformed { op, reason },
            NetdevError::Io { op, source } => EthtoolError::Io { op, source },
            NetdevError::FamilyNotFound => EthtoolError::FamilyNotFound,
            other => EthtoolError::Malformed {
                op: "ethtool",
                reason: other.to_string(),
            },
        }
    }
}
