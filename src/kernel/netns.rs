//! Network namespace handles and running code inside a namespace.
//!
//! `setns(CLONE_NEWNET)` switches only the calling *thread*. A CNI plugin that switched its main
//! thread (or a Tokio worker) would leave every later socket, `/proc/sys/net` access and
//! spawned task in the wrong namespace, so this module never changes the caller's namespace:
//! work runs on a dedicated thread that enters the namespace and is joined afterwards.

use std::{
    future::Future,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sched::{setns, CloneFlags},
    sys::statfs::{fstatfs, NSFS_MAGIC},
};

use crate::kernel::rtnl::{Rtnl, RtnlConnection, RtnlError};

/// Errors opening or entering a network namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    #[error("open netns {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The path exists but is not an nsfs file (a regular file, directory, or a symlink to one).
    #[error("{path} is not a namespace file (filesystem magic {fs_magic:#x})")]
    NotANamespace { path: PathBuf, fs_magic: i64 },
    /// The path is a namespace file of another kind, e.g. `/proc/<pid>/ns/mnt`.
    #[error("{path} is a namespace of type {nstype:#x}, not a network namespace")]
    WrongType { path: PathBuf, nstype: i32 },
    #[error("inspect {path}: {source}")]
    Inspect { path: PathBuf, source: Errno },
    #[error("setns({path}, CLONE_NEWNET): {source}")]
    Setns { path: PathBuf, source: Errno },
    #[error("spawn netns thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("build tokio runtime in netns {path}: {source}")]
    Runtime {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rtnetlink in netns {path}: {source}")]
    Netlink { path: PathBuf, source: RtnlError },
}

/// An open network namespace file (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`, ...).
///
/// Holding the fd pins the namespace: it cannot disappear while the handle lives, even if the
/// bind mount is removed, so a CNI ADD cannot race a concurrent netns teardown into the wrong
/// namespace.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetNs {
    /// Opens `path` and verifies it refers to a network namespace. Symlinks are followed (the
    /// `/proc/<pid>/ns/net` entries are symlinks), but what they resolve to must be an nsfs inode
    /// of type `CLONE_NEWNET`.
    ///
    /// The path is resolved exactly once, with `O_PATH`: that neither blocks on a FIFO nor runs
    /// a device's open handler, whatever a caller's `CNI_NETNS` names. Only once `fstatfs` shows
    /// an nsfs inode is it opened for real, through the `O_PATH` handle's
    /// `/proc/thread-self/fd/<n>` magic link (fs/proc/fd.c `proc_fd_link()`: the very inode the
    /// handle holds, not the path again) — setns(2) and `NS_GET_NSTYPE` need a non-`O_PATH`
    /// file (kernel/nsproxy.c `setns()` takes the fd with `CLASS(fd)`, which refuses `O_PATH`).
    /// A path swapped after this call changes nothing: callers keep this handle for every step.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source: Errno| NetnsError::Open {
            path: path.clone(),
            source: std::io::Error::from_raw_os_error(source as i32),
        };
        let handle = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(open_err)?;

        // statfs first: NS_GET_NSTYPE is an nsfs ioctl number that another driver could
        // interpret differently, so only ask once we know the inode lives on nsfs.
        let fs = fstatfs(&handle).map_err(|source| NetnsError::Inspect {
            path: path.clone(),
            source,
        })?;
        if fs.filesystem_type() != NSFS_MAGIC {
            // f_type's C type differs per architecture; i64 holds all of them.
            #[allow(clippy::unnecessary_cast)]
            let fs_magic = fs.filesystem_type().0 as i64;
            return Err(NetnsError::NotANamespace { path, fs_magic });
        }
        let fd = nix::fcntl::open(
            format!("/proc/thread-self/fd/{}", handle.as_raw_fd()).as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(open_err)?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only returns an int.
        let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE as _) };
        if nstype < 0 {
            return Err(NetnsError::Inspect {
                path,
                source: Errno::last(),
            });
        }
        if nstype != libc::CLONE_NEWNET {
            return Err(NetnsError::WrongType { path, nstype });
        }
        Ok(NetNs { fd, path })
    }

    /// The network namespace of the calling thread.
    pub fn current() -> Result<NetNs, NetnsError> {
        // thread-self, not self: /proc/self resolves to the thread-group leader, whose
        // namespace may differ from this thread's.
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result. The
    /// calling thread's namespace is never touched. A panic in `f` is propagated to the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Setns {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .map_err(NetnsError::Spawn)?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs the async closure `f` inside this namespace, on a dedicated thread with a Tokio
    /// current-thread runtime, handing it an [`Rtnl`] connection opened in the namespace.
    ///
    /// The future does not need to be `Send`: it never leaves that thread.
    pub fn run_rtnl<F, Fut, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce(Rtnl) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|source| NetnsError::Runtime {
                    path: self.path.clone(),
                    source,
                })?;
            runtime.block_on(async {
                let (rtnl, conn) = Rtnl::connect().map_err(|source| NetnsError::Netlink {
                    path: self.path.clone(),
                    source,
                })?;
                let driver = tokio::spawn(conn);
                let out = f(rtnl).await;
                driver.abort();
                Ok(out)
            })
        })?
    }

    /// Opens an [`Rtnl`] connection whose socket lives in this namespace, usable from the
    /// caller's runtime and thread. Only the socket creation runs on a short-lived thread inside
    /// the namespace; must be called within a Tokio runtime (spawn the returned connection).
    pub fn connect_rtnl(&self) -> Result<(Rtnl, RtnlConnection), NetnsError> {
        let socket =
            self.run(|| netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE))?;
        let socket = socket.map_err(|e| NetnsError::Netlink {
            path: self.path.clone(),
            source: RtnlError::Socket(e),
        })?;
        Rtnl::from_socket(socket).map_err(|source| NetnsError::Netlink {
            path: self.path.clone(),
            source,
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A unique scratch directory under the system temp dir, removed on drop.
    pub(crate) struct Scratch(PathBuf);

    impl Scratch {
        pub(crate) fn new(tag: &str) -> Scratch {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netkit-cni-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn regular_file_is_rejected() {
        let dir = Scratch::new("netns");
        let file = dir.path().join("not-a-netns");
        std::fs::write(&file, b"").unwrap();
        match NetNs::open(&file) {
            Err(NetnsError::NotANamespace { path, fs_magic }) => {
                assert_eq!(path, file);
                assert_ne!(fs_magic, 0x6e73_6673); // NSFS_MAGIC
            }
            other => panic!("expected NotANamespace, got {other:?}"),
        }
    }

    #[test]
    fn symlink_to_regular_file_is_rejected() {
        let dir = Scratch::new("netns");
        let file = dir.path().join("target");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        assert!(matches!(
            NetNs::open(&link),
            Err(NetnsError::NotANamespace { .. })
        ));
    }

    /// Runs `NetNs::open(path)` on a thread and fails the test if it has not returned in 5 s.
    fn open_within_5s(path: PathBuf) -> Result<NetNs, NetnsError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(NetNs::open(&path));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("NetNs::open blocked: it must never open a FIFO for reading")
    }

    #[test]
    fn a_fifo_is_rejected_without_blocking() {
        let dir = Scratch::new("netns");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            open_within_5s(fifo),
            Err(NetnsError::NotANamespace { .. })
        ));
    }

    #[test]
    fn directory_is_rejected() {
        let dir = Scratch::new("netns");
        assert!(matches!(
            NetNs::open(dir.path()),
            Err(NetnsError::NotANamespace { .. })
        ));
    }

    #[test]
    fn missing_path_is_an_open_error() {
        let dir = Scratch::new("netns");
        match NetNs::open(dir.path().join("gone")) {
            Err(NetnsError::Open { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("expected Open error, got {other:?}"),
        }
    }

    #[test]
    fn other_namespace_type_is_rejected() {
        match NetNs::open("/proc/self/ns/uts") {
            Err(NetnsError::WrongType { nstype, .. }) => assert_eq!(nstype, libc::CLONE_NEWUTS),
            other => panic!("expected WrongType, got {other:?}"),
        }
    }

    #[test]
    fn own_netns_opens_through_symlinks() {
        let ns = NetNs::current().unwrap();
        assert_eq!(ns.path(), Path::new("/proc/thread-self/ns/net"));
        // A symlink to a real namespace file is as good as the file itself.
        let dir = Scratch::new("netns");
        let link = dir.path().join("net");
        symlink("/proc/self/ns/net", &link).unwrap();
        NetNs::open(&link).unwrap();
    }

    fn netns_inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn run_executes_on_another_thread_in_the_namespace() {
        let ns = NetNs::open("/proc/self/ns/net").unwrap();
        let caller = std::thread::current().id();
        let (worker, inode) = ns
            .run(|| {
                (
                    std::thread::current().id(),
                    netns_inode("/proc/thread-self/ns/net"),
                )
            })
            .unwrap();
        assert_ne!(worker, caller);
        assert_eq!(inode, netns_inode("/proc/self/ns/net"));
    }

    #[test]
    fn run_propagates_panics() {
        let ns = NetNs::current().unwrap();
        let caught = std::panic::catch_unwind(|| ns.run(|| panic!("inside netns")));
        let payload = caught.expect_err("panic must cross the thread boundary");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside netns"));
    }

    #[test]
    fn run_rtnl_talks_to_the_kernel_in_the_namespace() {
        // Read-only: asks for the loopback device, which every netns has at ifindex 1.
        let ns = NetNs::current().unwrap();
        let lo = ns
            .run_rtnl(
                |rtnl| async move { crate::kernel::link::get_link_by_name(&rtnl, "lo").await },
            )
            .unwrap()
            .unwrap();
        assert_eq!(lo.index, 1);
        assert_eq!(lo.name, "lo");
    }

    #[test]
    fn connect_rtnl_socket_is_usable_from_the_callers_runtime() {
        let ns = NetNs::current().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let lo = rt.block_on(async {
            let (rtnl, conn) = ns.connect_rtnl().unwrap();
            tokio::spawn(conn);
            crate::kernel::link::get_link_by_index(&rtnl, 1).await
        });
        assert_eq!(lo.unwrap().name, "lo");
    }
}
