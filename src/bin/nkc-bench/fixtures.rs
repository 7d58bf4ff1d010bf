//! Throwaway kernel fixtures of the sections that need more than a pod: a netns, a private bpffs, a
//! netdevsim NIC.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::util::{netns_add, netns_del, scratch, sh};

/// A network namespace made for one section, deleted on drop.
pub(crate) struct NetnsGuard(pub(crate) String);

impl NetnsGuard {
    pub(crate) fn new(name: String) -> Result<NetnsGuard> {
        netns_add(&name)?;
        let g = NetnsGuard(name);
        sh(&["ip", "-n", &g.0, "link", "set", "lo", "up"])?;
        Ok(g)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = netns_del(&self.0);
    }
}

/// A private bpf file system under /tmp (`ip netns exec` would hide one under /sys), unmounted
/// on drop.
pub(crate) struct Bpffs {
    pub(crate) path: PathBuf,
}

impl Bpffs {
    pub(crate) fn new(tag: &str) -> Result<Bpffs> {
        let path = scratch().join(format!("bpffs-{tag}"));
        std::fs::create_dir_all(&path)?;
        sh(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            path.to_str().context("utf-8 path")?,
        ])?;
        Ok(Bpffs { path })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", self.path.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A netdevsim device standing in for a physical NIC with `queues` RX/TX queues, moved into the
/// netns `node` and brought up; removed (with everything leased from it) on drop.
pub(crate) struct Nsim {
    pub(crate) id: u32,
    pub(crate) ifname: String,
}

impl Nsim {
    /// `slot` tells apart the devices of one run (0 to 3).
    pub(crate) fn new(node: &str, queues: u32, slot: u32) -> Result<Nsim> {
        let id = 4000 + (std::process::id() % 1000) * 4 + slot;
        std::fs::write("/sys/bus/netdevsim/new_device", format!("{id} 1 {queues}"))
            .context("creating a netdevsim device (does this kernel have netdevsim?)")?;
        let mut nsim = Nsim {
            id,
            ifname: String::new(),
        };
        let want = format!("nkcbnic{id}");
        let dir = format!("/sys/bus/netdevsim/devices/netdevsim{id}/net");
        // As the tests' fixture: a loaded TCG VM has taken over 10 s to show a new netdev.
        let deadline = Instant::now() + Duration::from_secs(60);
        // udev may rename the new netdev between our reading its name and moving it: retry.
        loop {
            let name = std::fs::read_dir(&dir)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned());
            if let Some(orig) = name {
                if sh(&[
                    "ip", "link", "set", "dev", &orig, "name", &want, "netns", node,
                ])
                .is_ok()
                {
                    break;
                }
            }
            ensure!(
                Instant::now() < deadline,
                "netdevsim{id} never showed a netdev that could be moved"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sh(&["ip", "-n", node, "link", "set", "dev", &want, "up"])?;
        nsim.ifname = want;
        Ok(nsim)
    }
}

impl Drop for Nsim {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/bus/netdevsim/del_device", self.id.to_string());
    }
}
