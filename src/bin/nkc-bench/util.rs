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

/// While alive, every CPU but CPU 0 is offline, so that a process's CPU time is its own
/// instructions. Under icount QEMU runs all vCPUs in turn against one instruction counter: with
/// two busy vCPUs, a process's `sum_exec_runtime` also grows by what the *other* vCPU executes
/// (a 50 M-iteration loop pinned to CPU 0 read 305 ms alone and 528–540 ms beside a busy CPU 1).
/// An offline vCPU sits halted and executes nothing. The per-invocation sections (1, 2, 3, 6,
/// 7) run under it; the data-path sections need both CPUs (sender and receiver).
pub(crate) struct OneCpu {
    offlined: Vec<PathBuf>,
}

impl OneCpu {
    pub(crate) fn new() -> Result<OneCpu> {
        let mut offlined = Vec::new();
        for e in std::fs::read_dir("/sys/devices/system/cpu")? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let online = e.path().join("online");
            // CPU 0 has no `online` file on x86 (it cannot be taken down).
            if n == 0 || !online.exists() {
                continue;
            }
            if std::fs::read_to_string(&online)?.trim() == "1" {
                std::fs::write(&online, "0")
                    .with_context(|| format!("taking {} offline", online.display()))?;
                offlined.push(online);
            }
        }
        let now = online_cpus()?;
        if now != 1 {
            bail!("{now} CPUs still online after taking all but CPU 0 offline");
        }
        Ok(OneCpu { offlined })
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        for p in &self.offlined {
            if let Err(e) = std::fs::write(p, "1") {
                eprintln!("[bench] cannot bring {} back online: {e}", p.display());
            }
        }
    }
}

/// How many CPUs are online now: /sys/devices/system/cpu/online, a list of ranges ("0", "0-1").
pub(crate) fn online_cpus() -> Result<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let mut n = 0;
    for r in text.trim().split(',').filter(|r| !r.is_empty()) {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
        n += b + 1 - a;
    }
    Ok(n)
}
