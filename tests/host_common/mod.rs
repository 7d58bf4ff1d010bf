//! Helpers for the XDP dispatcher's BPF tests (cargo feature `host-tests`): BPF and veth, no
//! netkit. They run in the VM by default (scripts/vm-tests), because a host's kernel may refuse
//! what they do; NKC_TESTS_ON_HOST=1 runs them on a capable host as root.
//!
//! Every test builds a private world: a throwaway netns (deleted on drop) holding a veth pair
//! with 8 RX queues, and a private bpffs mount (unmounted on drop). Names are random. Namespace
//! switches happen on dedicated threads; the test thread never changes its own netns.
#![allow(dead_code)] // each test binary uses a different subset

pub use super::common::{sh, unique, KernelOk};

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use libbpf_rs::MapCore;
use netkit_cni::xsk::{Xsk, XskConfig};

/// Fails loudly (never skips): a privileged test that silently passed unprivileged would prove
/// nothing.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these BPF tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for mounts): run them in \
         the VM with `make host-test` (or as root on a capable host: NKC_TESTS_ON_HOST=1 make host-test)"
    );
}

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique("nkcx");
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let ns = Netns { name };
        // Quiet links: without IPv6 a new veth sends nothing by itself (no DAD, router
        // solicitations or MLD reports), so every frame a test's socket sees is the test's own.
        ns.run(|| {
            for conf in ["all", "default"] {
                let knob = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                if std::path::Path::new(&knob).exists() {
                    fs::write(&knob, "1").unwrap_or_else(|e| panic!("{knob}: {e}"));
                }
            }
        });
        ns
    }

    pub fn fd(&self) -> OwnedFd {
        fs::File::open(format!("/run/netns/{}", self.name))
            .unwrap()
            .into()
    }

    /// `ip -n <ns> ...`, returning stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Run a closure on a fresh thread switched into this netns; the caller's thread is untouched.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Like [`Netns::run`] without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let fd = self.fd();
        std::thread::spawn(move || {
            nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    pub fn ifindex(&self, ifname: &str) -> u32 {
        let out = self.ip(&["-j", "link", "show", "dev", ifname]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["ifindex"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ifindex for {ifname}: {out}")) as u32
    }

    /// The XDP program id attached to `ifname`, if any (from `ip -d -j link show`).
    pub fn xdp_prog_id(&self, ifname: &str) -> Option<u32> {
        xdp_prog_id_in(&self.name, ifname)
    }

    /// A veth pair with `queues` RX and TX queues on both ends, both up. Returns (name, ifindex)
    /// of the end the tests use; `index` pins its ifindex when given.
    pub fn veth(&self, queues: u32, index: Option<u32>) -> (String, u32) {
        let a = unique("nkv");
        let b = unique("nkp");
        let q = queues.to_string();
        let idx = index.map(|i| i.to_string());
        let mut args = vec!["link", "add", &a];
        if let Some(i) = &idx {
            args.extend_from_slice(&["index", i]);
        }
        args.extend_from_slice(&[
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &b,
        ]);
        args.extend_from_slice(&["numtxqueues", &q, "numrxqueues", &q]);
        self.ip(&args);
        self.ip(&["link", "set", &a, "up"]);
        self.ip(&["link", "set", &b, "up"]);
        let ifindex = self.ifindex(&a);
        (a, ifindex)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A copy-mode AF_XDP socket on `ifindex`/`queue` (calling thread's netns) with a small UMEM:
/// enough for the tests, which bind several at once.
pub fn bind_xsk(ifindex: u32, queue: u32) -> Xsk {
    let config = XskConfig {
        frames: 64,
        ring_size: 32,
        ..XskConfig::default()
    };
    Xsk::bind(ifindex, queue, &config).kernel("binding an AF_XDP socket")
}

/// Remove slot `slot` of the map pinned at `pin`.
pub fn delete_slot(pin: &Path, slot: u32) {
    let map = libbpf_rs::MapHandle::from_pinned_path(pin)
        .unwrap_or_else(|e| panic!("open {}: {e}", pin.display()));
    map.delete(&slot.to_ne_bytes())
        .unwrap_or_else(|e| panic!("delete {} slot {slot}: {e}", pin.display()));
}

/// The XDP program id on `ifname` in the netns named `ns` (callable from a thread inside another
/// netns: `ip -n` resolves the netns by name).
pub fn xdp_prog_id_in(ns: &str, ifname: &str) -> Option<u32> {
    let out = sh(&["ip", "-n", ns, "-d", "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let xdp = &v[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
        .map(|n| n as u32)
}
