//! The one way the plugin walks, creates, reads and deletes under a directory an untrusted pod
//! may write to: `<bpffs>/netkit-cni/` (KubeVirt setups mount bpffs into launcher pods) and the
//! device-info directory (handed to device plugins).
//!
//! The plugin runs as root, so any path it resolves by name under such a directory is a path a
//! pod can bend: a symlink planted at `netkit-cni/netns…-if…` made a GC delete the contents of the
//! directory it pointed to. Here every step is relative to a directory *handle*:
//!
//! * a child is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`
//!   (fs/open.c `do_sys_openat2`, fs/namei.c: `LOOKUP_BENEATH`, `LOOKUP_NO_SYMLINKS`,
//!   `LOOKUP_NO_XDEV`), so a symlink at any component fails with `ELOOP` and a mount point with
//!   `EXDEV` instead of being followed;
//! * an existing entry that is not what the plugin would have created — a symlink, a non-directory
//!   where a directory belongs, a directory owned by another uid (when [`Owner::Us`]), another
//!   file system — is refused with [`SafeFsError::Untrusted`] naming it; it is never followed and
//!   nothing is deleted through it;
//! * removal is `unlinkat(2)` on the handle of the directory holding the entry, recursion opens
//!   each subdirectory through the same checks (so it stays on the same file system);
//! * a lock is `flock(2)` with a deadline: non-blocking attempts, then
//!   [`SafeFsError::LockTimeout`] naming the directory, instead of blocking forever behind
//!   whoever holds (or merely opened and locked) the directory;
//! * a file is read with `O_NOFOLLOW | O_NONBLOCK` (a FIFO neither blocks the open nor the read),
//!   must be a regular file, and is read up to a cap;
//! * a file is written to a temporary name that cannot be predicted, created
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` (a planted entry at that name fails the create), then
//!   renamed over the final name with `renameat(2)` (which replaces a symlink, never writes
//!   through it).
//!
//! Entry names passed here are single path components; anything else is refused before a syscall.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, Flock, FlockArg, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Errors of the safe walk. Every variant names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    /// A syscall failed.
    #[error("{op} {}: {errno}", .path.display())]
    Sys {
        /// What was being done ("openat2", "unlinkat", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// Typed errno.
        errno: Errno,
    },
    /// An existing entry is not what the plugin creates there; it is refused, never followed.
    #[error("{} is not the plugin's own {expected}: {reason}; refusing to use or delete through it", .path.display())]
    Untrusted {
        /// The entry.
        path: PathBuf,
        /// "directory", "regular file" or "pin".
        expected: &'static str,
        /// What it is instead.
        reason: String,
    },
    /// A name that is not a single path component.
    #[error("{} + {name:?}: not a single path component", .dir.display())]
    BadName {
        /// The directory.
        dir: PathBuf,
        /// The rejected name.
        name: String,
    },
    /// Another process held the directory's lock past the deadline.
    #[error("{} is locked by another operation, still after {waited:?}; try again later", .path.display())]
    LockTimeout {
        /// The locked directory.
        path: PathBuf,
        /// How long this call tried.
        waited: Duration,
    },
    /// A file larger than the reader's cap.
    #[error("{} is larger than {limit} bytes; refusing to read it", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap in bytes.
        limit: u64,
    },
}

impl SafeFsError {
    /// The errno of a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SafeFsError::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// How deep a removal walks below the directory it clears. The plugin itself never creates
/// more than three levels below a NIC's directory (`pods/<container id>/<ifname>/xsks`); the
/// walk holds one fd per level, so the bound also bounds its fds.
pub const MAX_DEPTH: usize = 8;

/// Who must own the directories (and files) found under a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The plugin's effective uid (root in production): only the plugin creates entries there
    /// (the bpffs tree).
    Us,
    /// Anyone (the device-info directory, which the administrator may hand to a device plugin
    /// running as another user). Kinds are still checked.
    Any,
}

/// What an entry of a directory is (from `d_type`, or `fstatat(AT_SYMLINK_NOFOLLOW)` when the
/// file system does not fill it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file (bpffs pins are regular files).
    File,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name in the directory.
    pub name: OsString,
    /// Its kind, never resolved through a symlink.
    pub kind: Kind,
}

/// An open directory: the handle every operation under it goes through. The path is kept for
/// messages only; it is never resolved again.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    owner: Owner,
}

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

fn kind_of(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Dir => "a directory",
        Kind::File => "a regular file",
        Kind::Symlink => "a symbolic link",
        Kind::Other => "a FIFO, socket or device node",
    }
}

impl Dir {
    /// Opens a directory the administrator configured (following symlinks in it, e.g.
    /// `/var/run` → `/run`): the *root* of a walk. Only what lies below it is untrusted.
    pub fn open_trusted(path: &Path, owner: Owner) -> Result<Dir, SafeFsError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| SafeFsError::Sys {
            op: "open",
            path: path.to_path_buf(),
            errno,
        })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
            owner,
        })
    }

    /// Opens `path` whose parent the administrator configured (trusted, created if `create`)
    /// and whose last component is untrusted: opened (created if `create`) without following a
    /// symlink there. `None` if it does not exist and `create` is false.
    pub fn open_last_untrusted(
        path: &Path,
        create: bool,
        mode: u32,
        owner: Owner,
    ) -> Result<Option<Dir>, SafeFsError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(SafeFsError::BadName {
                dir: path.to_path_buf(),
                name: String::new(),
            });
        };
        let name = name.to_str().ok_or_else(|| SafeFsError::BadName {
            dir: parent.to_path_buf(),
            name: name.to_string_lossy().into_owned(),
        })?;
        if create {
            std::fs::create_dir_all(parent).map_err(|e| SafeFsError::Sys {
                op: "mkdir -p",
                path: parent.to_path_buf(),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        }
        let parent = match Dir::open_trusted(parent, Owner::Any) {
            Ok(d) => d,
            Err(SafeFsError::Sys {
                errno: Errno::ENOENT,
                ..
            }) if !create => return Ok(None),
            Err(e) => return Err(e),
        };
        let parent = Dir { owner, ..parent };
        if create {
            parent.create_dir(name, mode).map(Some)
        } else {
            parent.child_dir(name)
        }
    }

    /// The same directory, with `owner` required of the entries opened through it from now on
    /// (e.g. records in a directory anyone may own, which count only when the plugin wrote them).
    pub fn with_owner(self, owner: Owner) -> Dir {
        Dir { owner, ..self }
    }

    /// The path this handle was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, for messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The handle.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check_name(&self, name: &str) -> Result<(), SafeFsError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(SafeFsError::BadName {
                dir: self.path.clone(),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn sys(&self, op: &'static str, name: &str, errno: Errno) -> SafeFsError {
        SafeFsError::Sys {
            op,
            path: self.join(name),
            errno,
        }
    }

    fn untrusted(&self, name: &str, expected: &'static str, reason: String) -> SafeFsError {
        SafeFsError::Untrusted {
            path: self.join(name),
            expected,
            reason,
        }
    }

    /// What openat2 said about `name`, as an error: a symlink, a mount point or a non-directory
    /// is untrusted; anything else a plain syscall error.
    fn open_error(&self, name: &str, expected: &'static str, errno: Errno) -> SafeFsError {
        match errno {
            Errno::ELOOP => self.untrusted(name, expected, "it is a symbolic link".into()),
            Errno::EXDEV => self.untrusted(
                name,
                expected,
                "it is on another file system (a mount point)".into(),
            ),
            Errno::ENOTDIR => {
                let what = fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| kind_name(kind_of(&st)))
                    .unwrap_or("not a directory");
                self.untrusted(name, expected, format!("it is {what}"))
            }
            e => self.sys("openat2", name, e),
        }
    }

    fn check_owner(
        &self,
        name: &str,
        expected: &'static str,
        st: &FileStat,
    ) -> Result<(), SafeFsError> {
        let me = nix::unistd::geteuid().as_raw();
        if self.owner == Owner::Us && st.st_uid != me {
            return Err(self.untrusted(
                name,
                expected,
                format!("it is owned by uid {}, not {me}", st.st_uid),
            ));
        }
        Ok(())
    }

    /// Opens the subdirectory `name`; `None` if it does not exist. A symlink, a non-directory, a
    /// mount point or (with [`Owner::Us`]) a directory owned by another uid is refused.
    pub fn child_dir(&self, name: &str) -> Result<Option<Dir>, SafeFsError> {
        self.check_name(name)?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let fd = match openat2(self.fd.as_fd(), name, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.open_error(name, "directory", e)),
        };
        let st = fstat(&fd).map_err(|e| self.sys("fstat", name, e))?;
        self.check_owner(name, "directory", &st)?;
        Ok(Some(Dir {
            fd,
            path: self.join(name),
            owner: self.owner,
        }))
    }

    /// Creates the subdirectory `name` (mode `mode`) unless it exists, then opens it as
    /// [`Dir::child_dir`] does: an existing entry gets the same checks as an opened one.
    pub fn create_dir(&self, name: &str, mode: u32) -> Result<Dir, SafeFsError> {
        self.check_name(name)?;
        // A concurrent remover (a detaching user, see the dispatcher) may delete it between our
        // mkdir and open; a few rounds settle that.
        for _ in 0..8 {
            match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.sys("mkdirat", name, e)),
            }
            if let Some(d) = self.child_dir(name)? {
                return Ok(d);
            }
        }
        Err(self.sys("mkdirat", name, Errno::ENOENT))
    }

    /// The entries of this directory (without `.` and `..`), kinds never resolved through a
    /// symlink.
    pub fn entries(&self) -> Result<Vec<Entry>, SafeFsError> {
        // A fresh open file description of the same directory: reading entries moves the
        // description's offset, which must not be shared with the handle (or a lock on it).
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let fd = openat2(self.fd.as_fd(), ".", how).map_err(|e| self.sys("openat2", ".", e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| self.sys("fdopendir", ".", e))?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| self.sys("readdir", ".", e))?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name = OsString::from_vec(bytes.to_vec());
            let kind = match entry.file_type() {
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::File) => Kind::File,
                Some(nix::dir::Type::Symlink) => Kind::Symlink,
                Some(_) => Kind::Other,
                None => match fstatat(
                    self.fd.as_fd(),
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st) => kind_of(&st),
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(self.sys("fstatat", &name.to_string_lossy(), e)),
                },
            };
            out.push(Entry { name, kind });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the non-directory `name` (a symlink itself, never its target); `false` if it was
    /// not there.
    pub fn unlink(&self, name: &str) -> Result<bool, SafeFsError> {
        self.check_name(name)?;
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.sys("unlinkat", name, e)),
        }
    }

    /// Removes the empty directory `name`; `false` if it was not there. A non-empty one fails
    /// with `ENOTEMPTY` (see [`SafeFsError::errno`]).
    pub fn rmdir(&self, name: &str) -> Result<bool, SafeFsError> {
        self.check_name(name)?;
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.sys("unlinkat(AT_REMOVEDIR)", name, e)),
        }
    }

    /// Removes everything inside this directory (not the directory itself), at most
    /// [`MAX_DEPTH`] levels down. Subdirectories are opened through [`Dir::child_dir`], so a
    /// subdirectory this walk may not enter (another owner, another file system) stops it with
    /// an error naming it, and so does a tree deeper than the bound (the walk holds one fd per
    /// level: an unbounded one ran out of fds, `EMFILE`, on a 3000-deep tree a pod made);
    /// symlinks are unlinked themselves. See [`Dir::clear_or_move_aside`] for a removal that
    /// never leaves the directory non-empty.
    pub fn clear(&self) -> Result<(), SafeFsError> {
        self.clear_depth(MAX_DEPTH)
    }

    fn entry_name<'a>(&self, e: &'a Entry) -> Result<&'a str, SafeFsError> {
        e.name.to_str().ok_or_else(|| SafeFsError::BadName {
            dir: self.path.clone(),
            name: e.name.to_string_lossy().into_owned(),
        })
    }

    fn clear_depth(&self, depth: usize) -> Result<(), SafeFsError> {
        for e in self.entries()? {
            let name = self.entry_name(&e)?;
            if e.kind == Kind::Dir {
                self.remove_tree_depth(name, depth)?;
            } else {
                self.unlink(name)?;
            }
        }
        Ok(())
    }

    /// Removes the subdirectory `name` and everything in it (see [`Dir::clear`]); `false` if it
    /// was not there.
    pub fn remove_tree(&self, name: &str) -> Result<bool, SafeFsError> {
        self.remove_tree_depth(name, MAX_DEPTH)
    }

    fn remove_tree_depth(&self, name: &str, depth: usize) -> Result<bool, SafeFsError> {
        if depth == 0 {
            return Err(self.untrusted(
                name,
                "directory",
                format!("it is more than {MAX_DEPTH} levels deep"),
            ));
        }
        let Some(sub) = self.child_dir(name)? else {
            return Ok(false);
        };
        sub.clear_depth(depth - 1)?;
        self.rmdir(name)
    }

    /// Empties this directory whatever a pod left in it: each entry is removed as
    /// [`Dir::clear`] would, and one that cannot be (a tree deeper than [`MAX_DEPTH`], a
    /// subdirectory another uid owns, a mount point) is renamed, as a whole, into `aside` (a
    /// directory of the plugin's on the same file system) under a fresh unpredictable name,
    /// never entered. So a pod's junk costs one rename, not an outage of the directory's owner
    /// (a NIC whose dispatcher clears its directory before attaching). Returns where each
    /// entry went, with why it could not be removed; an error only when an entry can be
    /// neither removed nor moved.
    pub fn clear_or_move_aside(
        &self,
        aside: &mut dyn FnMut() -> Result<Dir, SafeFsError>,
    ) -> Result<Vec<String>, SafeFsError> {
        let mut moved = Vec::new();
        // Made only when something must go there: an attach clears on every first ADD, and an
        // empty attic left behind would be one more entry in bpffs for nothing.
        let mut made: Option<Dir> = None;
        for e in self.entries()? {
            let name = self.entry_name(&e)?;
            let removed = if e.kind == Kind::Dir {
                self.remove_tree(name).map(|_| ())
            } else {
                self.unlink(name).map(|_| ())
            };
            if let Err(why) = removed {
                if made.is_none() {
                    made = Some(aside()?);
                }
                let aside = made.as_ref().expect("made above");
                let to = format!("moved-{}", random_hex()?);
                nix::fcntl::renameat(self.fd.as_fd(), name, aside.fd.as_fd(), to.as_str())
                    .map_err(|e| self.sys("renameat (moving aside)", name, e))?;
                moved.push(format!(
                    "{} moved to {} ({why})",
                    self.join(name).display(),
                    aside.join(&to).display()
                ));
            }
        }
        Ok(moved)
    }

    /// Removes the subdirectory `name` as [`Dir::remove_tree`] does, or, when it cannot be
    /// removed, moves it into `aside` as [`Dir::clear_or_move_aside`] does. `None`: it was
    /// removed (or not there); else where it went and why.
    pub fn remove_tree_or_move_aside(
        &self,
        name: &str,
        aside: &mut dyn FnMut() -> Result<Dir, SafeFsError>,
    ) -> Result<Option<String>, SafeFsError> {
        match self.remove_tree(name) {
            Ok(_) => Ok(None),
            Err(why) => {
                let aside = aside()?;
                let to = format!("moved-{}", random_hex()?);
                nix::fcntl::renameat(self.fd.as_fd(), name, aside.fd.as_fd(), to.as_str())
                    .map_err(|e| self.sys("renameat (moving aside)", name, e))?;
                Ok(Some(format!(
                    "{} moved to {} ({why})",
                    self.join(name).display(),
                    aside.join(&to).display()
                )))
            }
        }
    }

    /// Number of links of the directory (0 once it was removed while open).
    pub fn nlink(&self) -> Result<u64, SafeFsError> {
        let st = fstat(&self.fd).map_err(|e| SafeFsError::Sys {
            op: "fstat",
            path: self.path.clone(),
            errno: e,
        })?;
        #[allow(clippy::useless_conversion)]
        Ok(u64::from(st.st_nlink))
    }

    /// `f_type` of the file system the directory is on.
    pub fn fs_magic(&self) -> Result<i64, SafeFsError> {
        let st = nix::sys::statfs::fstatfs(&self.fd).map_err(|e| SafeFsError::Sys {
            op: "fstatfs",
            path: self.path.clone(),
            errno: e,
        })?;
        // f_type's C type differs per architecture; i64 holds all of them.
        #[allow(clippy::unnecessary_cast)]
        Ok(st.filesystem_type().0 as i64)
    }

    /// Sets the directory's permission bits (`fchmod` on the handle).
    pub fn chmod(&self, mode: u32) -> Result<(), SafeFsError> {
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(mode)).map_err(|e| {
            SafeFsError::Sys {
                op: "fchmod",
                path: self.path.clone(),
                errno: e,
            }
        })
    }

    /// Gives the regular file `name` (opened as [`Dir::open_file_path`] does: never through a
    /// symlink) owner `uid`, group `gid` and permission bits `mode`. Both act on the inode the
    /// `O_PATH` handle holds: `fchownat(AT_EMPTY_PATH)` on the handle, and `chmod` of its
    /// `/proc/thread-self/fd/<n>` magic link (fchmod refuses `O_PATH` handles).
    pub fn chown_chmod_file(
        &self,
        name: &str,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<(), SafeFsError> {
        let fd = self
            .open_file_path(name)?
            .ok_or_else(|| self.sys("open", name, Errno::ENOENT))?;
        nix::unistd::fchownat(
            &fd,
            "",
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| self.sys("fchownat", name, e))?;
        let magic = format!(
            "/proc/thread-self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        );
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            magic.as_str(),
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.sys("chmod", name, e))
    }

    /// Takes an exclusive `flock(2)` on the directory, retrying without blocking until `timeout`
    /// has passed; then [`SafeFsError::LockTimeout`]. The lock lives on a fresh open file
    /// description, held by the returned value.
    pub fn lock(&self, timeout: Duration) -> Result<Flock<File>, SafeFsError> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let fd = openat2(self.fd.as_fd(), ".", how).map_err(|e| self.sys("openat2", ".", e))?;
        let mut file = File::from(fd);
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(l),
                Err((f, Errno::EWOULDBLOCK)) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(SafeFsError::LockTimeout {
                            path: self.path.clone(),
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(50));
                    file = f;
                }
                Err((_, Errno::EINTR)) => {
                    return Err(SafeFsError::Sys {
                        op: "flock",
                        path: self.path.clone(),
                        errno: Errno::EINTR,
                    })
                }
                Err((_, e)) => {
                    return Err(SafeFsError::Sys {
                        op: "flock",
                        path: self.path.clone(),
                        errno: e,
                    })
                }
            }
        }
    }

    /// An `O_PATH` handle of the regular file `name` (a bpffs pin is one); `None` if missing.
    /// A symlink, another kind of entry or another file system is refused. The owner is not
    /// checked: the directory holding it was (only its owner can add entries), and a pod's
    /// XSKMAP pin may be given to another uid (`xdp.podMap`); callers check what the pinned
    /// object is.
    pub fn open_file_path(&self, name: &str) -> Result<Option<OwnedFd>, SafeFsError> {
        self.check_name(name)?;
        // No O_NOFOLLOW here: with O_PATH it would return a handle of the symlink itself;
        // RESOLVE_NO_SYMLINKS makes a trailing symlink fail with ELOOP instead.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let fd = match openat2(self.fd.as_fd(), name, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.open_error(name, "pin", e)),
        };
        let st = fstat(&fd).map_err(|e| self.sys("fstat", name, e))?;
        let kind = kind_of(&st);
        if kind != Kind::File {
            return Err(self.untrusted(name, "pin", format!("it is {}", kind_name(kind))));
        }
        Ok(Some(fd))
    }

    /// Reads the regular file `name`, at most `limit` bytes; `None` if it does not exist. Opened
    /// `O_NOFOLLOW | O_NONBLOCK`: a symlink is refused, a FIFO neither blocks the open nor gets
    /// read, a device node is refused before any read.
    pub fn read_file(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, SafeFsError> {
        self.check_name(name)?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let fd = match openat2(self.fd.as_fd(), name, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.open_error(name, "regular file", e)),
        };
        let st = fstat(&fd).map_err(|e| self.sys("fstat", name, e))?;
        let kind = kind_of(&st);
        if kind != Kind::File {
            return Err(self.untrusted(name, "regular file", format!("it is {}", kind_name(kind))));
        }
        self.check_owner(name, "regular file", &st)?;
        let mut body = Vec::new();
        File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                self.sys(
                    "read",
                    name,
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })?;
        if body.len() as u64 > limit {
            return Err(SafeFsError::TooLarge {
                path: self.join(name),
                limit,
            });
        }
        Ok(Some(body))
    }

    /// Replaces `name` with a regular file holding `body` (mode `mode`): written under an
    /// unpredictable temporary name created `O_CREAT | O_EXCL | O_NOFOLLOW`, then renamed over
    /// `name`, so readers see the old or the new file, never a part, and nothing planted at
    /// either name is written through. The temporary name is `.<32 hex digits>.tmp` (39 bytes),
    /// whatever `name`'s length.
    pub fn write_file_atomic(&self, name: &str, body: &[u8], mode: u32) -> Result<(), SafeFsError> {
        let tmp = format!(".{}.tmp", random_hex()?);
        self.write_via(name, &tmp, body, mode)
    }

    fn write_via(&self, name: &str, tmp: &str, body: &[u8], mode: u32) -> Result<(), SafeFsError> {
        self.check_name(name)?;
        self.check_name(tmp)?;
        let how = OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(mode))
            .resolve(resolve_flags());
        let fd = openat2(self.fd.as_fd(), tmp, how)
            .map_err(|e| self.open_error(tmp, "regular file", e))?;
        let mut file = File::from(fd);
        let res = file
            .write_all(body)
            .map_err(|e| {
                self.sys(
                    "write",
                    tmp,
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })
            .and_then(|()| {
                nix::fcntl::renameat(self.fd.as_fd(), tmp, self.fd.as_fd(), name)
                    .map_err(|e| self.sys("renameat", name, e))
            });
        if res.is_err() {
            let _ = unlinkat(self.fd.as_fd(), tmp, UnlinkatFlags::NoRemoveDir);
        }
        res
    }
}

/// 128 random bits in hex, from getrandom(2).
fn random_hex() -> Result<String, SafeFsError> {
    let mut buf = [0u8; 16];
    // SAFETY: valid buffer of the given length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(SafeFsError::Sys {
            op: "getrandom",
            path: PathBuf::new(),
            errno: Errno::last(),
        });
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `name` as UTF-8, for entries the plugin would have created (all its names are ASCII); other
/// names are not its own.
pub fn utf8_name(name: &std::ffi::OsStr) -> Option<&str> {
    std::str::from_utf8(name.as_bytes()).ok()
}

#[cfg(test)]
mod tests;
