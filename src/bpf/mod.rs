//! The BPF layer: what the XDP dispatcher (`src/xdp/`) and BPF host routing (`src/hostrouting/`)
//! both need of bpf(2) and bpffs, so neither reaches into the other.
//!
//! - [`sys`]: thin bpf(2) wrappers over libbpf-sys with the errno kept typed (maps, programs,
//!   pins, and XDP, tcx and netkit attachments): the only raw libbpf-sys link code.
//! - [`pins`]: the plugin's directory under bpffs, walked without following symlinks
//!   ([`crate::safefs`]), one object's locked directory, pinning relative to a verified handle.
//! - [`skel`]: opening a libbpf-rs skeleton and setting its read-only data before load.

use std::path::PathBuf;

use nix::errno::Errno;

use crate::safefs::SafeFsError;

pub mod pins;
pub mod skel;
pub mod sys;

/// Error of the BPF layer. Its users turn it into their own error with the same variants
/// (`XdpError`, `HostRoutingError`), so the messages and CNI codes do not depend on which layer
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A syscall (bpf(2), statfs, getsockopt, ...) failed.
    #[error("{op}{}: {errno}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Sys {
        /// What was being done, e.g. "BPF_OBJ_GET".
        op: &'static str,
        /// The bpffs path involved, if any.
        path: Option<PathBuf>,
        /// Typed errno.
        errno: Errno,
    },
    /// The configured bpffs root is not a mounted BPF file system.
    #[error("{} is not a bpf file system (statfs magic {magic:#x})", .path.display())]
    NotBpffs {
        /// The configured root.
        path: PathBuf,
        /// `f_type` reported by statfs.
        magic: i64,
    },
    /// Walking the plugin's bpffs directory failed or found an entry it does not trust (a
    /// symlink, a non-directory, another owner, a mount point), or a directory's lock was held
    /// past its deadline.
    #[error(transparent)]
    Fs(#[from] SafeFsError),
}

impl BpfError {
    pub(crate) fn sys(op: &'static str, path: Option<&std::path::Path>, errno: Errno) -> Self {
        BpfError::Sys {
            op,
            path: path.map(|p| p.to_path_buf()),
            errno,
        }
    }
}
