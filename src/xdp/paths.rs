//! Where the dispatcher's state lives in bpffs, and the names it is derived from.
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

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::Flock;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::error::XdpError;
use crate::safefs::{Dir, Owner};

/// Where bpffs is usually mounted.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// The plugin's directory directly under the bpffs root.
pub const PLUGIN_DIR: &str = "netkit-cni";
/// `BPF_FS_MAGIC` from <linux/magic.h>.
pub const BPF_FS_MAGIC: i64 = 0xcafe4a11;

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

/// `SO_NETNS_COOKIE` of the calling thread's netns (Linux ≥ 5.14): sockets are created in the
/// creating thread's netns, so a throwaway socket tells which one that is.
pub fn current_netns_cookie() -> Result<u64, XdpError> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| XdpError::sys("socket(AF_UNIX) for SO_NETNS_COOKIE", None, e))?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid socket, output buffer of `len` bytes.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(XdpError::sys(
            "getsockopt(SO_NETNS_COOKIE)",
            None,
            Errno::last(),
        ));
    }
    Ok(cookie)
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

/// The plugin's root directory under a bpffs mount.
pub fn plugin_root(bpffs: &Path) -> PathBuf {
    bpffs.join(PLUGIN_DIR)
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

/// Opens the configured bpffs mount (the administrator's path, trusted) and checks it is bpffs.
/// Everything below it is walked through [`crate::safefs::Dir`] handles.
pub(crate) fn open_bpffs(bpffs: &Path) -> Result<Dir, XdpError> {
    let root = Dir::open_trusted(bpffs, Owner::Us)?;
    let magic = root.fs_magic()?;
    if magic != BPF_FS_MAGIC {
        return Err(XdpError::NotBpffs {
            path: bpffs.to_path_buf(),
            magic,
        });
    }
    Ok(root)
}

/// `<bpffs>/netkit-cni/`, created (mode 0700) if `create`; `None` if missing and not `create`.
/// An entry there that is not a root-owned directory on the same bpffs is refused.
pub(crate) fn open_plugin_dir(root: &Dir, create: bool) -> Result<Option<Dir>, XdpError> {
    Ok(if create {
        Some(root.create_dir(PLUGIN_DIR, 0o700)?)
    } else {
        root.child_dir(PLUGIN_DIR)?
    })
}

/// `<bpffs>/netkit-cni/attic/` (mode 0700, created on first use): where a removal moves what
/// a pod left in a NIC's directory that cannot be removed (a tree deeper than
/// [`crate::safefs::MAX_DEPTH`], a subdirectory another uid owns), so that the NIC's directory
/// empties and the NIC stays usable. Nothing in the plugin reads it; its name matches no NIC's
/// or uplink's directory.
/// Returns the maker the removals call only when something must be moved.
pub(crate) fn attic(plugin: &Dir) -> impl FnMut() -> Result<Dir, crate::safefs::SafeFsError> + '_ {
    move || plugin.create_dir(ATTIC, 0o700)
}

/// The name of [`attic`]. No dot: bpffs refuses any name with a '.' in it (`bpf_lookup`,
/// kernel/bpf/inode.c: EPERM).
pub const ATTIC: &str = "attic";

/// A locked directory under `<bpffs>/netkit-cni/` (a NIC's dispatcher, an uplink's host
/// routing): its handle, its parent's and the lock.
pub(crate) struct Locked {
    pub(crate) parent: Dir,
    pub(crate) dir: Dir,
    pub(crate) lock: Flock<File>,
}

/// How long an operation waits for another one on the same NIC before giving up with CNI code
/// 11 ("try again later"): one plugin operation holds the lock for at most a program load and a
/// few map updates (well under a second natively, a few seconds under TCG), so a holder past
/// this is stuck or hostile (anyone who can open the directory can flock it).
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Lock the directory `name` (a NIC's, an uplink's) under `<bpffs>/netkit-cni/`, creating both first if `create`.
/// Returns `None` if it does not exist and `create` is false. Every step goes through
/// [`crate::safefs::Dir`]: an entry that is a symlink, a non-directory, not root's or on another
/// file system is refused, and the lock gives up after
/// [`LOCK_TIMEOUT`].
///
/// A detaching user removes the directory while holding the lock, so a waiter that then gets
/// the lock may hold a dead directory: it sees `st_nlink == 0` and starts over.
pub(crate) fn lock_dir(root: &Dir, name: &str, create: bool) -> Result<Option<Locked>, XdpError> {
    loop {
        let Some(parent) = open_plugin_dir(root, create)? else {
            return Ok(None);
        };
        let dir = if create {
            parent.create_dir(name, 0o700)?
        } else {
            match parent.child_dir(name)? {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        let lock = dir.lock(LOCK_TIMEOUT)?;
        if dir.nlink()? == 0 {
            if create {
                continue;
            }
            return Ok(None);
        }
        return Ok(Some(Locked { parent, dir, lock }));
    }
}

/// Fails unless `path` is the root of (or inside) a mounted bpffs.
pub fn check_bpffs(path: &Path) -> Result<(), XdpError> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| XdpError::sys("statfs", Some(path), e))?;
    let magic = st.filesystem_type().0 as i64;
    if magic != BPF_FS_MAGIC {
        return Err(XdpError::NotBpffs {
            path: path.to_path_buf(),
            magic,
        });
    }
    Ok(())
}
