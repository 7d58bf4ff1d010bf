//! Errors of the XDP dispatcher loader.

use std::path::PathBuf;

use nix::errno::Errno;

/// Error of a dispatcher operation.
///
/// Kernel and file-system failures keep the errno typed ([`Errno`]) together with the operation
/// and the bpffs path involved, because callers act on specific errnos (a CNI DEL treats
/// `ENOENT` as "already gone", an ADD reports `EBUSY` from the XDP attach as "the NIC already has
/// another XDP program").
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A syscall (bpf(2), mkdir, flock, ...) failed.
    #[error("{op}{}: {errno}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Sys {
        /// What was being done, e.g. "BPF_MAP_UPDATE_ELEM queues".
        op: &'static str,
        /// The bpffs path involved, if any.
        path: Option<PathBuf>,
        /// Typed errno.
        errno: Errno,
    },
    /// libbpf could not open or load the embedded dispatcher object (verifier rejection, map
    /// creation failure, or a pinned map whose layout does not match this build).
    #[error("loading the XDP dispatcher: {source}")]
    Load {
        /// libbpf-rs' error; its display carries libbpf's message, the verifier log goes to
        /// libbpf's print callback.
        #[source]
        source: libbpf_rs::Error,
    },
    /// The configured bpffs root is not a mounted BPF file system.
    #[error("{} is not a bpf file system (statfs magic {magic:#x})", .path.display())]
    NotBpffs {
        /// The configured root.
        path: PathBuf,
        /// `f_type` reported by statfs.
        magic: i64,
    },
    /// A queue range configuration entry is invalid.
    #[error("queue configuration{}: {reason}", .entry.map(|i| format!(" entry {i}")).unwrap_or_default())]
    InvalidConfig {
        /// Index of the offending entry in the configuration list, if one entry is at fault.
        entry: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A container id or interface name cannot be used to derive a bpffs path.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidId {
        /// "container id" or "interface name".
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A physical queue id the dispatcher has no table entry for.
    #[error("physical queue {queue} out of range (the dispatcher handles queues 0..{limit})")]
    QueueOutOfRange {
        /// Requested queue.
        queue: u32,
        /// Exclusive bound ([`super::MAX_QUEUES`]).
        limit: u32,
    },
    /// A virtual queue id beyond the size of pod XSKMAPs.
    #[error("virtual queue {vqueue} out of range (pod socket maps hold queues 0..{limit})")]
    VqueueOutOfRange {
        /// Requested virtual queue.
        vqueue: u32,
        /// Exclusive bound ([`super::MAX_VQUEUES`]).
        limit: u32,
    },
    /// The physical queue is already steered to another pod.
    #[error("physical queue {queue} is already steered to {}", .owner.as_deref().unwrap_or("another pod"))]
    QueueBusy {
        /// Requested queue.
        queue: u32,
        /// `<container id>/<ifname>` of the current owner, when its pin could be found.
        owner: Option<String>,
    },
    /// The pod already receives another physical queue on this virtual queue id.
    #[error("virtual queue {vqueue} of this pod already receives physical queue {queue}")]
    VqueueBusy {
        /// Requested virtual queue.
        vqueue: u32,
        /// Physical queue already mapped to it.
        queue: u32,
    },
    /// The NIC already runs an XDP program that is not our dispatcher link.
    #[error("interface {ifindex} already has an XDP program attached (not the netkit-cni dispatcher): {errno}")]
    NicHasXdp {
        /// The NIC.
        ifindex: u32,
        /// `EBUSY` (attached through another link) or `EEXIST` (attached through netlink).
        errno: Errno,
    },
    /// The dispatcher must not be attached now: leases for memory providers exist on the NIC
    /// (the kernel would refuse their bind while any XDP program is attached,
    /// `__netif_mp_open_rxq` in net/core/netdev_rx_queue.c), or one is bound already.
    #[error("refusing to attach the XDP dispatcher to interface {ifindex}: {reason}")]
    AttachRefused {
        /// The NIC.
        ifindex: u32,
        /// What is in the way, naming it (leases, queues, attachments).
        reason: String,
    },
    /// An admin program pin is not an XDP program.
    #[error("{} is not an XDP program (program type {prog_type})", .path.display())]
    NotXdpProgram {
        /// The configured pin.
        path: PathBuf,
        /// Its `bpf_prog_type`.
        prog_type: u32,
    },
    /// The kernel refused an admin program as tail-call target of the dispatcher: it must be XDP,
    /// have the same JIT state and the same `xdp.frags` flag as the dispatcher.
    #[error("{} cannot be tail-called by the dispatcher: {errno}", .path.display())]
    ProgramIncompatible {
        /// The configured pin.
        path: PathBuf,
        /// Typed errno (`EINVAL` for incompatibility).
        errno: Errno,
    },
    /// The pinned state is not what this loader writes.
    #[error("pinned dispatcher state in {} is inconsistent: {reason}", .path.display())]
    Corrupt {
        /// The NIC directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Statistics were requested from a dispatcher loaded without the statistics knob.
    #[error("the dispatcher was attached without statistics")]
    StatsDisabled,
    /// Walking the plugin's bpffs directory failed or found an entry it does not trust (a
    /// symlink, a non-directory, another owner, a mount point), or the NIC directory's lock
    /// was held past its deadline.
    #[error(transparent)]
    Fs(#[from] crate::safefs::SafeFsError),
}

impl XdpError {
    /// The errno of a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            XdpError::Sys { errno, .. }
            | XdpError::NicHasXdp { errno, .. }
            | XdpError::ProgramIncompatible { errno, .. } => Some(*errno),
            XdpError::Fs(e) => e.errno(),
            _ => None,
        }
    }

    /// Whether this is a lock held by another operation past the deadline (CNI code 11, "try
    /// again later").
    pub fn is_lock_timeout(&self) -> bool {
        matches!(
            self,
            XdpError::Fs(crate::safefs::SafeFsError::LockTimeout { .. })
        )
    }

    pub(crate) fn sys(op: &'static str, path: Option<&std::path::Path>, errno: Errno) -> XdpError {
        XdpError::Sys {
            op,
            path: path.map(|p| p.to_path_buf()),
            errno,
        }
    }
}

/// The BPF layer's errors keep their message and meaning as the dispatcher's own.
impl From<crate::bpf::BpfError> for XdpError {
    fn from(e: crate::bpf::BpfError) -> Self {
        match e {
            crate::bpf::BpfError::Sys { op, path, errno } => XdpError::Sys { op, path, errno },
            crate::bpf::BpfError::NotBpffs { path, magic } => XdpError::NotBpffs { path, magic },
            crate::bpf::BpfError::Fs(e) => XdpError::Fs(e),
        }
    }
}
