//! Errors of the netdev generic netlink client.

use std::io;

use nix::errno::Errno;

use crate::kernel::netlink::{KernelError, NetlinkError};

/// Error of a netdev netlink operation.
///
/// Kernel failures keep the errno typed ([`Errno`]) *and* the extended ACK, because several
/// distinct failures share one errno and only the extack message / offending attribute tells
/// them apart.
///
/// # `queue-create` errnos
///
/// From `netdev_nl_queue_create_doit()` (net/core/netdev-genl.c), the helpers it calls
/// (net/core/netdev_queues.c) and netkit's `ndo_queue_create` (drivers/net/netkit.c), Linux 7.3,
/// in the order the kernel checks them:
///
/// | errno | extack message | meaning |
/// |---|---|---|
/// | `EPERM` | — | caller lacks CAP_NET_ADMIN in the *initial* user namespace (`GENL_ADMIN_PERM` on the op; checked again with `capable()` when `lease.netns-id` is present) |
/// | `EINVAL` | "Unknown attribute type", "NLA_F_NESTED is missing", … | policy validation of the request failed |
/// | `ERANGE` | "integer out of range" | policy: `ifindex`/`lease.ifindex` < 1, `type` > 1, or `lease.netns-id` < 0 (this client rejects those before sending, see [`NetdevError::InvalidRequest`]) |
/// | `EINVAL` | (missing-attribute TLV) | `ifindex`, `type`, `lease`, `lease.ifindex`, `lease.queue`, `queue.id` or `queue.type` missing |
/// | `EINVAL` | (bad-attribute offset) | `type` or `lease.queue.type` is not rx: only RX queues can be leased |
/// | `ENODEV` | — | the virtual `ifindex` does not exist in the socket's netns |
/// | `EINVAL` | "Device is not a virtual device" | `ifindex` has a parent device (is physical) |
/// | `EINVAL` | "Device does not support queue creation" | driver has no `ndo_queue_create` (not netkit) |
/// | `EINVAL` | "Device must have at least one real queue" | virtual device has no real rx or tx queue |
/// | `ENONET` | — | `lease.netns-id` names no netns, as seen from the virtual device's netns |
/// | `ENODEV` | — | `lease.ifindex` does not exist in the lease netns (or vanished while being locked) |
/// | `EINVAL` | "Lease device is a virtual device" | `lease.ifindex` has no parent device |
/// | `EINVAL` | "Lease device has been removed from the system" | physical device not present |
/// | `EINVAL` | "Lease device does not support queue management operations" | NIC driver has no queue_mgmt_ops |
/// | `ERANGE` | (bad-attribute offset → `lease.queue.id`) | physical queue id ≥ its `real_num_rx_queues` |
/// | `EBUSY` | "Device queue in use by AF_XDP" | an XSK pool is bound to the physical queue |
/// | `EBUSY` | "Device queue in use due to queue leasing" | the physical queue is already leased |
/// | `EBUSY` | "Device queue in use by memory provider" | io_uring zcrx / devmem is bound to it |
/// | `EOPNOTSUPP` | "Leasing queues from different devices not supported" | the virtual device already leases queues of *another* physical device |
/// | `EOPNOTSUPP` | "netkit can only lease against the peer device" | request addressed the primary (host-side) device of a netkit pair |
/// | `EINVAL` | "netkit maximum queue limit reached" | the netkit's `num_rx_queues` (fixed at link creation) is used up |
/// | other | "netkit cannot create more queues err=N" | `netif_set_real_num_rx_queues()` failed (e.g. `ENOMEM` from sysfs) |
/// | `ENOMEM` / `EMSGSIZE` | — | allocation of the reply failed |
///
/// Generic netlink itself answers `ENOENT` for an unknown family id and `EOPNOTSUPP` for an
/// unknown command; the client avoids both by resolving the family and its operation list first
/// and reports [`NetdevError::FamilyNotFound`] / [`NetdevError::OperationNotSupported`] instead
/// (see [`NetdevError::is_kernel_unsupported`]).
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// The `netdev` generic netlink family does not exist (kernel without it, or CTRL_CMD_GETFAMILY
    /// answered ENOENT in this netns).
    #[error("generic netlink family \"netdev\" not found: kernel lacks netdev netlink")]
    FamilyNotFound,
    /// The family exists but does not offer this operation (kernel older than queue leasing).
    #[error("kernel netdev family has no {op} operation: kernel too old for queue leasing")]
    OperationNotSupported {
        /// Operation name from netdev.yaml.
        op: &'static str,
    },
    /// The kernel rejected the request.
    #[error("netdev {op}: {kernel}")]
    Kernel {
        /// Operation name from netdev.yaml (or "getfamily" for the controller lookup).
        op: &'static str,
        /// Typed errno and extended ACK (message, offending/missing attribute).
        kernel: KernelError,
    },
    /// The request was refused before being sent because the kernel policy would reject it.
    #[error("netdev {op}: invalid request: {reason}")]
    InvalidRequest {
        /// Operation name.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Socket-level failure.
    #[error("netdev {op}: netlink socket: {source}")]
    Io {
        /// Operation name.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The reply did not match netdev.yaml or the netlink wire format.
    #[error("netdev {op}: malformed reply: {reason}")]
    Malformed {
        /// Operation name.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A dump was interrupted by a concurrent change; retry it.
    #[error("netdev {op}: dump interrupted by a concurrent change")]
    DumpInterrupted {
        /// Operation name.
        op: &'static str,
    },
    /// Serialising the request failed (neli builder error).
    #[error("netdev {op}: cannot encode request: {reason}")]
    Encode {
        /// Operation name.
        op: &'static str,
        /// neli's message.
        reason: String,
    },
}

impl NetdevError {
    /// The kernel errno, when the kernel rejected the request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetdevError::Kernel { kernel, .. } => Some(kernel.errno),
            _ => None,
        }
    }

    /// The kernel's extended-ACK message, if any.
    pub fn extack_msg(&self) -> Option<&str> {
        match self {
            NetdevError::Kernel { kernel, .. } => kernel.msg(),
            _ => None,
        }
    }

    /// True when the running kernel simply lacks the netdev family or the operation, i.e. queue
    /// leasing is unavailable on this node (as opposed to a failed request).
    pub fn is_kernel_unsupported(&self) -> bool {
        matches!(
            self,
            NetdevError::FamilyNotFound | NetdevError::OperationNotSupported { .. }
        )
    }

    pub(crate) fn from_netlink(op: &'static str, e: NetlinkError) -> NetdevError {
        match e {
            NetlinkError::Kernel(kernel) => NetdevError::Kernel { op, kernel },
            NetlinkError::Io(source) => NetdevError::Io { op, source },
            NetlinkError::Malformed(reason) => NetdevError::Malformed { op, reason },
            NetlinkError::DumpInterrupted => NetdevError::DumpInterrupted { op },
        }
    }

    pub(crate) fn malformed(op: &'static str, reason: impl Into<String>) -> NetdevError {
        NetdevError::Malformed {
            op,
            reason: reason.into(),
        }
    }
}
