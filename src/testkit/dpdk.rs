//! DPDK's testpmd in a pod (tests/vm_dpdk.rs and the benchmark's section 5c): the root
//! filesystem scripts/dpdk-rootfs builds, and testpmd's command line in it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The DPDK root filesystem (what scripts/dpdk-rootfs prints, passed by scripts/vm-tests and
/// scripts/bench as `NKC_DPDK_ROOTFS`), checked to be one.
pub fn rootfs() -> Result<PathBuf, String> {
    let root = std::env::var("NKC_DPDK_ROOTFS").map_err(|_| {
        "NKC_DPDK_ROOTFS is unset: scripts/vm-tests and scripts/bench set it to what \
         scripts/dpdk-rootfs prints (run through them; make test and make bench do)"
            .to_string()
    })?;
    let root = PathBuf::from(root);
    if !(root.join(".nkc-built").exists() && root.join("usr/bin/dpdk-testpmd").exists()) {
        return Err(format!(
            "{} is not a DPDK root filesystem built by scripts/dpdk-rootfs",
            root.display()
        ));
    }
    Ok(root)
}

/// `ip netns exec <netns> scripts/dpdk-chroot <rootfs> --bind … -- <wrap…> stdbuf -o0 -e0
/// dpdk-testpmd <EAL args> --vdev …`; the caller adds `--` and testpmd's own arguments.
/// `stdbuf`: testpmd's stdout is a pipe here, which stdio would buffer, hiding the answers to
/// commands and the prompt (which has no newline). EAL: 2 lcores (the main one and one
/// forwarding core), no hugepages in the VM (anonymous memory), no shared runtime files, no PCI
/// scan. `wrap` (e.g. prlimit, setpriv) runs before testpmd inside the chroot.
pub fn testpmd_command(
    netns: &str,
    rootfs: &Path,
    binds: &[&Path],
    wrap: &[&str],
    vdevs: &[String],
) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dpdk-chroot"))
        .arg(rootfs);
    for b in binds {
        c.arg("--bind").arg(b);
    }
    c.arg("--").args(wrap);
    c.args(["stdbuf", "-o0", "-e0", "/usr/bin/dpdk-testpmd"]);
    c.args([
        "-l",
        "0-1",
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
        "--no-telemetry",
    ]);
    for v in vdevs {
        c.args(["--vdev", v]);
    }
    c
}
