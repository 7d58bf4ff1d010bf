//! Where the dispatcher's state lives in bpffs, and the names it is derived from. The plugin's
//! bpffs directory itself (opening, locking, pinning) is the BPF layer's ([`crate::bpf::pins`]).
//!
//! ```text
//! <bpffs>/netkit-cni/                          plugin root
//! <bpffs>/netkit-cni/<nic key>/                one NIC; flock(2)ed by every user
//!     link                                     the XDP bpf_link (its pin keeps XDP attached)
//!     queues  pod_xsks  programs  stats        the dispatcher's maps
//!     pods/<container id>/<ifname>/xsks        one pod interface's XSKMAP
//! ```
//!
//! Every path component is derived from validated input only: the NIC key is two integers, the
//! pod components are checked against the CNI container-id grammar and the kernel's interface
//! name rules, so no input can climb out of (`..`) or alias into another directory.

use std::path::{Path, PathBuf};

use super::error::XdpError;
use crate::bpf::pins::{current_netns_cookie, plugin_root};

/// Pin names inside a NIC directory.
pub(crate) const PIN_LINK: &str = "link";
pub(crate) const PIN_QUEUES: &str = "queues";
pub(crate) const PIN_POD_XSKS: &str = "pod_xsks";
pub(crate) const PIN_PROGRAMS: &str = "programs";
pub(crate) const PIN_STATS: &str = "stats";
pub(crate) const DIR_PODS: &str = "pods";
pub(crate) const PIN_POD_XSKMAP: &str = "xsks";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest container id accepted: a bpffs directory name must fit NAME_MAX.
pub const CONTAINER_ID_MAX: usize = 255;

/// Identity of one NIC on this node: its netns and its ifindex there.
///
/// An ifindex alone is only unique within one netns (every netns has its own counter), so two
/// NICs in two netns may share one. The netns is identified by its *cookie*
/// (`SO_NETNS_COOKIE`), a 64-bit id the kernel never reuses while it runs, rather than by the
/// nsfs inode number: inode numbers are recycled when a netns dies, and a physical NIC outlives
/// its netns (it moves back to the initial netns with its XDP link still attached), so an
/// inode-based key could make a new NIC adopt a dead netns's directory and links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NicKey {
    /// `SO_NETNS_COOKIE` of the NIC's netns.
    pub netns_cookie: u64,
    /// The NIC's ifindex in that netns.
    pub ifindex: u32,
}

impl NicKey {
    /// The key of `ifindex` in the calling *thread's* netns (where XDP attach resolves it too).
    pub fn in_current_netns(ifindex: u32) -> Result<NicKey, XdpError> {
        Ok(NicKey {
            netns_cookie: current_netns_cookie()?,
            ifindex,
        })
    }

    /// Directory name under `<bpffs>/netkit-cni/`.
    pub fn dir_name(&self) -> String {
        format!("netns{}-if{}", self.netns_cookie, self.ifindex)
    }
}

/// One pod interface that receives queues: the CNI container id and the interface name inside
/// the pod, both validated so they can be used as bpffs path components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodId {
    container_id: String,
    ifname: String,
}

impl PodId {
    /// Validate and build. The container id follows the CNI spec
    /// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`CONTAINER_ID_MAX`] bytes); the interface name
    /// follows the kernel's `dev_valid_name()` (1..=15 bytes, not `.`/`..`, no `/`, `:` or
    /// whitespace).
    pub fn new(container_id: &str, ifname: &str) -> Result<PodId, XdpError> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        Ok(PodId {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        })
    }

    /// The container id.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The interface name inside the pod.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

impl std::fmt::Display for PodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

fn validate_container_id(id: &str) -> Result<(), XdpError> {
    let bad = |reason| {
        Err(XdpError::InvalidId {
            what: "container id",
            value: id.to_owned(),
            reason,
        })
    };
    let bytes = id.as_bytes();
    match bytes.first() {
        None => return bad("empty"),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return bad("must start with an ASCII letter or digit")
        }
        Some(_) => {}
    }
    if bytes.len() > CONTAINER_ID_MAX {
        return bad("longer than 255 bytes");
    }
    if !bytes
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return bad("may only contain ASCII letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

fn validate_ifname(name: &str) -> Result<(), XdpError> {
    let bad = |reason| {
        Err(XdpError::InvalidId {
            what: "interface name",
            value: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > IFNAME_MAX {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if name
        .bytes()
        .any(|c| c == b'/' || c == b':' || c == 0 || crate::text::kernel_isspace(c))
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// Every path of one NIC's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPaths {
    /// `<bpffs>/netkit-cni/<nic key>`.
    pub dir: PathBuf,
}

impl NicPaths {
    /// Paths for `nic` under the bpffs mount `bpffs`.
    pub fn new(bpffs: &Path, nic: &NicKey) -> NicPaths {
        NicPaths {
            dir: plugin_root(bpffs).join(nic.dir_name()),
        }
    }

    /// The pinned XDP link.
    pub fn link(&self) -> PathBuf {
        self.dir.join(PIN_LINK)
    }

    /// A pinned dispatcher map by pin name.
    pub(crate) fn pin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `pods/`.
    pub fn pods(&self) -> PathBuf {
        self.dir.join(DIR_PODS)
    }

    /// `pods/<container id>`.
    pub fn pod_container_dir(&self, pod: &PodId) -> PathBuf {
        self.pods().join(&pod.container_id)
    }

    /// `pods/<container id>/<ifname>`.
    pub fn pod_dir(&self, pod: &PodId) -> PathBuf {
        self.pod_container_dir(pod).join(&pod.ifname)
    }

    /// The pod interface's XSKMAP pin: what the pod (or its device-info consumer) opens to put
    /// its AF_XDP sockets in, at the index of their virtual queue.
    pub fn pod_xskmap(&self, pod: &PodId) -> PathBuf {
        self.pod_dir(pod).join(PIN_POD_XSKMAP)
    }
}
