//! The plugin's directory under bpffs, shared by the XDP dispatcher (`<nic key>/`) and BPF host
//! routing (`host-<uplink key>/`): opening it without following symlinks ([`crate::safefs`]),
//! locking one object's directory, and pinning and opening pins relative to a verified handle.
//!
//! ```text
//! <bpffs>/netkit-cni/            plugin root (PLUGIN_DIR)
//! <bpffs>/netkit-cni/<name>/     one NIC's or uplink's state; flock(2)ed by every user
//! <bpffs>/netkit-cni/attic/      what a removal could not remove (ATTIC)
//! ```

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::Flock;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::{sys, BpfError};
use crate::safefs::{utf8_name, Dir, Owner};

/// Where bpffs is usually mounted.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// The plugin's directory directly under the bpffs root.
pub const PLUGIN_DIR: &str = "netkit-cni";
/// `BPF_FS_MAGIC` from <linux/magic.h>.
pub const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// `SO_NETNS_COOKIE` of the calling thread's netns (Linux ≥ 5.14): sockets are created in the
/// creating thread's netns, so a throwaway socket tells which one that is.
pub fn current_netns_cookie() -> Result<u64, BpfError> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| BpfError::sys("socket(AF_UNIX) for SO_NETNS_COOKIE", None, e))?;
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
        return Err(BpfError::sys(
            "getsockopt(SO_NETNS_COOKIE)",
            None,
            Errno::last(),
        ));
    }
    Ok(cookie)
}

/// The plugin's root directory under a bpffs mount.
pub fn plugin_root(bpffs: &Path) -> PathBuf {
    bpffs.join(PLUGIN_DIR)
}

/// Opens the configured bpffs mount (the administrator's path, trusted) and checks it is bpffs.
/// Everything below it is walked through [`crate::safefs::Dir`] handles.
pub(crate) fn open_bpffs(bpffs: &Path) -> Result<Dir, BpfError> {
    let root = Dir::open_trusted(bpffs, Owner::Us)?;
    let magic = root.fs_magic()?;
    if magic != BPF_FS_MAGIC {
        return Err(BpfError::NotBpffs {
            path: bpffs.to_path_buf(),
            magic,
        });
    }
    Ok(root)
}

/// `<bpffs>/netkit-cni/`, created (mode 0700) if `create`; `None` if missing and not `create`.
/// An entry there that is not a root-owned directory on the same bpffs is refused.
pub(crate) fn open_plugin_dir(root: &Dir, create: bool) -> Result<Option<Dir>, BpfError> {
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
pub(crate) fn lock_dir(root: &Dir, name: &str, create: bool) -> Result<Option<Locked>, BpfError> {
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
pub fn check_bpffs(path: &Path) -> Result<(), BpfError> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| BpfError::sys("statfs", Some(path), e))?;
    let magic = st.filesystem_type().0 as i64;
    if magic != BPF_FS_MAGIC {
        return Err(BpfError::NotBpffs {
            path: path.to_path_buf(),
            magic,
        });
    }
    Ok(())
}

/// The pin named `name` in `dir`, opened without following symlinks; `None` if there is none.
pub(crate) fn get_pin(dir: &Dir, name: &str) -> Result<Option<OwnedFd>, BpfError> {
    let Some(handle) = dir.open_file_path(name)? else {
        return Ok(None);
    };
    match sys::obj_get_fd(handle.as_fd()) {
        Ok(fd) => Ok(Some(fd)),
        // Unpinned between the open and the get: the pin is gone.
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(BpfError::sys("BPF_OBJ_GET", Some(&dir.join(name)), e)),
    }
}

/// Pin `fd` as `name` in `dir`, relative to the handle (see [`sys::obj_pin_at`]).
pub(crate) fn pin_at(dir: &Dir, name: &str, fd: BorrowedFd<'_>) -> Result<(), BpfError> {
    sys::obj_pin_at(fd, dir.fd(), name)
        .map_err(|e| BpfError::sys("BPF_OBJ_PIN", Some(&dir.join(name)), e))
}

/// The entries of `<bpffs>/netkit-cni/` named `<kind>netns<cookie>-if<ifindex>` for the calling
/// thread's netns, with their ifindex, and that netns's cookie: the directories a sweep of this
/// netns looks at (another netns's, or the other kind's, are left alone). Each is still to be
/// locked ([`lock_dir`]) before it is touched.
pub(crate) fn netns_dirs(plugin: &Dir, kind: &str) -> Result<(u64, Vec<(String, u32)>), BpfError> {
    let cookie = current_netns_cookie()?;
    let prefix = format!("{kind}netns{cookie}-if");
    let mut dirs = Vec::new();
    for entry in plugin.entries()? {
        let Some(name) = utf8_name(&entry.name) else {
            continue;
        };
        let Some(ifindex) = name
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        dirs.push((name.to_owned(), ifindex));
    }
    Ok((cookie, dirs))
}
