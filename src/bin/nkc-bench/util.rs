//! The run's environment (node netns, scratch directory, CNI_PATH) and small shell/netns helpers.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Every plugin binary is copied here (a tmpfs inside the VM) before measuring. Where they come
/// from differs (ours from the repo's writable 9p share, whose pages the guest re-reads from the
/// host on every exec; Debian's from the cached read-only root), which would otherwise decide
/// the comparison. On a node they all sit side by side in /opt/cni/bin; so do they here.
pub(crate) const CNI_PATH: &str = "/run/nkc-bench-bin";

pub(crate) const DEBIAN_CNI: &str = "/usr/lib/cni";

/// The real host-local, behind scripts/lib/ipam-wrap.c (installed as CNI_PATH/host-local), which
/// records each IPAM exec's CPU time under IPAM_RECORDS so that a plugin's own share can be told
/// from its IPAM's. Both paths are compiled into the wrapper too.
pub(crate) const IPAM_REAL: &str = "/run/nkc-bench-bin/host-local.real";

pub(crate) const IPAM_RECORDS: &str = "/run/nkc-bench-ipam";

pub(crate) struct Plugin {
    pub(crate) name: &'static str,
    pub(crate) bin: PathBuf,
    pub(crate) conf: Value,
}

pub(crate) struct Env {
    /// The node netns (by name) the plugins run in, entered with setns(2) between fork and exec.
    /// Not `ip netns exec`: that unshares a mount namespace, copying every /run/netns mount, so
    /// its cost would grow with the number of pods and be charged to the plugin.
    pub(crate) node: String,
    pub(crate) node_fd: OwnedFd,
    pub(crate) data: PathBuf,
    pub(crate) out_dir: PathBuf,
}

pub(crate) fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!("{:?}: {}", args, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `prog` is on PATH.
pub(crate) fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Make `c` enter the netns `fd` between fork and exec.
pub(crate) fn enter_in_child(c: &mut Command, fd: BorrowedFd<'_>) {
    use std::os::unix::process::CommandExt;
    let fd = fd.as_raw_fd();
    // SAFETY: setns is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Run `f` on a thread inside the netns `fd`; the caller's thread stays where it is.
pub(crate) fn in_netns<T: Send>(
    fd: BorrowedFd<'_>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    })
}

pub(crate) fn netns_fd(name: &str) -> Result<OwnedFd> {
    Ok(std::fs::File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("netns {name}"))?
        .into())
}

/// Scratch space on the VM's tmpfs. Not /tmp: inside the VM that is the host's directory over
/// 9p, where every file operation is a round trip to the host. host-local keeps one file per
/// address and reads them all on every ADD, so with its data there the pod count would be
/// measured through 9p (on a node, /var/lib/cni is a local disk).
pub(crate) fn scratch() -> PathBuf {
    PathBuf::from(format!("/run/nkc-bench-{}", std::process::id()))
}

/// `ip netns add NAME` without the exec (under TCG an exec of ip costs ~0.3 s, which the
/// 500-pod scale test pays a thousand times): a fresh netns made on a short-lived thread and
/// bind-mounted at /run/netns/NAME.
pub(crate) fn netns_add(name: &str) -> Result<()> {
    std::fs::create_dir_all("/run/netns")?;
    let path = format!("/run/netns/{name}");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {path}"))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("unshare(CLONE_NEWNET)")?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                path.as_str(),
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting the new netns at {path}"))?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    made
}

/// `ip netns del NAME` without the exec.
pub(crate) fn netns_del(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("unmounting {path}"))?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Sends `batch` through `sock` again and again for `d`: the far side's flood in sections 5b and
/// 5c. Returns the frames the kernel took, or the first send error.
pub(crate) fn flood_for(
    sock: &mut netkit_cni::xsk::Xsk,
    batch: &[&[u8]],
    d: std::time::Duration,
) -> std::result::Result<u64, String> {
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        sent += sock.send(batch).map_err(|e| e.to_string())? as u64;
    }
    Ok(sent)
}
