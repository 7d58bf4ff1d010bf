//! Helpers for the privileged *host* tests (cargo feature `host-tests`): BPF and veth work
//! on the development hosts' own kernel, so these run there as root, not in the VM.
//!
//! Every test builds a private world: a throwaway netns (deleted on drop) holding a veth pair
//! with 8 RX queues, and a private bpffs mount (unmounted on drop). Names are random. Namespace
//! switches happen on dedicated threads; the test thread never changes its own netns.
#![allow(dead_code)] // each test binary uses a different subset

pub use super::common::{sh, unique};

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use libbpf_rs::MapCore;

/// Fails loudly (never skips): a privileged test that silently passed unprivileged would prove
/// nothing.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "host BPF tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for mounts): run them as root, \
         e.g. `sudo -E cargo test --features host-tests --test host_xdp`"
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
        Netns { name }
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

/// A private bpffs mount in a fresh directory under the temp dir, unmounted on drop.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn new() -> Bpffs {
        let path = std::env::temp_dir().join(unique("nkc-bpffs-"));
        fs::create_dir(&path).unwrap();
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount -t bpf {}: {e}", path.display()));
        Bpffs { path }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.path);
    }
}

/// A bound AF_XDP socket in copy mode with its UMEM, a filled fill ring and a mapped RX ring, so
/// frames redirected to it can be read back; closed and unmapped on drop.
pub struct Xsk {
    pub fd: OwnedFd,
    umem: *mut libc::c_void,
    fill: *mut libc::c_void,
    fill_len: usize,
    rx: *mut libc::c_void,
    rx_len: usize,
    offsets: libc::xdp_mmap_offsets,
}

// SAFETY: the mappings are only touched through &self methods and unmapped on drop.
unsafe impl Send for Xsk {}

const XSK_FRAMES: usize = 16;
const XSK_FRAME: usize = 4096;
const XSK_RING: u32 = 8;

fn map_ring(fd: libc::c_int, len: usize, pgoff: u64) -> *mut libc::c_void {
    // SAFETY: mapping a ring of a live AF_XDP socket at the kernel's offset.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff as libc::off_t,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap ring {pgoff:#x}: {}",
        std::io::Error::last_os_error()
    );
    p
}

impl Xsk {
    /// Bind a socket to `ifindex`/`queue` in the calling thread's netns.
    pub fn bind(ifindex: u32, queue: u32) -> Xsk {
        // SAFETY: plain syscalls on values we own; every result is checked.
        unsafe {
            let raw = libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            assert!(
                raw >= 0,
                "socket(AF_XDP): {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(raw);
            let umem = libc::mmap(
                std::ptr::null_mut(),
                XSK_FRAMES * XSK_FRAME,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(umem, libc::MAP_FAILED, "mmap umem");
            let reg = libc::xdp_umem_reg {
                addr: umem as u64,
                len: (XSK_FRAMES * XSK_FRAME) as u64,
                chunk_size: XSK_FRAME as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            let so = |opt: libc::c_int, val: *const libc::c_void, len: usize| {
                let r = libc::setsockopt(raw, libc::SOL_XDP, opt, val, len as libc::socklen_t);
                assert_eq!(
                    r,
                    0,
                    "setsockopt(SOL_XDP, {opt}): {}",
                    std::io::Error::last_os_error()
                );
            };
            so(
                libc::XDP_UMEM_REG,
                (&reg as *const libc::xdp_umem_reg).cast(),
                std::mem::size_of_val(&reg),
            );
            let ring_ptr = (&XSK_RING as *const u32).cast();
            so(libc::XDP_UMEM_FILL_RING, ring_ptr, 4);
            so(libc::XDP_UMEM_COMPLETION_RING, ring_ptr, 4);
            so(libc::XDP_RX_RING, ring_ptr, 4);

            let mut offsets: libc::xdp_mmap_offsets = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
            let r = libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            );
            assert_eq!(
                r,
                0,
                "XDP_MMAP_OFFSETS: {}",
                std::io::Error::last_os_error()
            );
            let fill_len = offsets.fr.desc as usize + XSK_RING as usize * 8;
            let fill = map_ring(raw, fill_len, libc::XDP_UMEM_PGOFF_FILL_RING);
            let rx_len = offsets.rx.desc as usize
                + XSK_RING as usize * std::mem::size_of::<libc::xdp_desc>();
            let rx = map_ring(raw, rx_len, libc::XDP_PGOFF_RX_RING as u64);
            // Give the kernel every ring slot's worth of frames to copy into.
            let descs = fill
                .cast::<u8>()
                .add(offsets.fr.desc as usize)
                .cast::<u64>();
            for i in 0..XSK_RING as usize {
                *descs.add(i) = (i * XSK_FRAME) as u64;
            }
            let producer = &*fill
                .cast::<u8>()
                .add(offsets.fr.producer as usize)
                .cast::<std::sync::atomic::AtomicU32>();
            producer.store(XSK_RING, Ordering::Release);

            let xsk = Xsk {
                fd,
                umem,
                fill,
                fill_len,
                rx,
                rx_len,
                offsets,
            };
            let mut sa: libc::sockaddr_xdp = std::mem::zeroed();
            sa.sxdp_family = libc::AF_XDP as u16;
            sa.sxdp_flags = libc::XDP_COPY;
            sa.sxdp_ifindex = ifindex;
            sa.sxdp_queue_id = queue;
            let r = libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            );
            assert_eq!(
                r,
                0,
                "bind AF_XDP to {ifindex}/{queue}: {}",
                std::io::Error::last_os_error()
            );
            xsk
        }
    }

    /// Frames the kernel has put on the RX ring so far (not consumed: repeated calls see them
    /// again), as their bytes in the UMEM.
    pub fn received(&self) -> Vec<Vec<u8>> {
        // SAFETY: reading the kernel-published part of our own RX ring and UMEM.
        unsafe {
            let base = self.rx.cast::<u8>();
            let producer = &*base
                .add(self.offsets.rx.producer as usize)
                .cast::<std::sync::atomic::AtomicU32>();
            let n = producer.load(Ordering::Acquire);
            let descs = base
                .add(self.offsets.rx.desc as usize)
                .cast::<libc::xdp_desc>();
            (0..n.min(XSK_RING))
                .map(|i| {
                    let d = *descs.add(i as usize);
                    std::slice::from_raw_parts(
                        self.umem.cast::<u8>().add(d.addr as usize),
                        d.len as usize,
                    )
                    .to_vec()
                })
                .collect()
        }
    }

    /// Put this socket into the XSKMAP pinned at `pin`, at `slot`.
    pub fn insert_into(&self, pin: &Path, slot: u32) {
        let map = libbpf_rs::MapHandle::from_pinned_path(pin)
            .unwrap_or_else(|e| panic!("open {}: {e}", pin.display()));
        let fd = self.fd.as_raw_fd() as u32;
        map.update(
            &slot.to_ne_bytes(),
            &fd.to_ne_bytes(),
            libbpf_rs::MapFlags::ANY,
        )
        .unwrap_or_else(|e| panic!("insert socket into {} at {slot}: {e}", pin.display()));
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // SAFETY: each mapped once in bind, unmapped once.
        unsafe {
            libc::munmap(self.rx, self.rx_len);
            libc::munmap(self.fill, self.fill_len);
            libc::munmap(self.umem, XSK_FRAMES * XSK_FRAME);
        }
    }
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
