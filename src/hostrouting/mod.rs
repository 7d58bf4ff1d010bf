//! BPF host routing for `pairing: pair` pods (`hostRouting: {"mode": "bpf", ...}`).
//!
//! Two programs move a pod's traffic between its netkit pair and the uplink NIC without the
//! node's IP forwarding and netfilter, for remote addresses inside the admin's bypass prefixes
//! only (empty by default: nothing bypasses):
//!
//! - `bpf/host_ingress.bpf.c`, tcx ingress on the uplink (a tcx `bpf_link`, so it shares the
//!   hook with other tcx programs through bpf_mprog): pod address → `bpf_redirect_peer()` into
//!   the pod; anything else `TCX_NEXT`.
//! - `bpf/host_egress.bpf.c`, attached to each pod's pair as `BPF_NETKIT_PEER` (runs on the
//!   pod's transmit): `bpf_fib_lookup()` in the node netns and `bpf_redirect_neigh()` out of the
//!   uplink; anything else `NETKIT_NEXT` (the node's stack).
//!
//! Both hand a TCP/UDP flow that the node's conntrack NATs (`bpf_skb_ct_lookup()`, a `__weak`
//! kfunc: without conntrack in the kernel the programs load and nothing is NATed) to the stack:
//! a hostPort's replies, a ClusterIP's replies (`nkc_hr_ct_nat()` in bpf/host_routing.h).
//!
//! State lives in bpffs, one directory per uplink, like the XDP dispatcher's
//! (the BPF layer's `src/bpf/pins.rs`), and every invocation holds its `flock` (20 s deadline,
//! then code 11):
//!
//! ```text
//! <bpffs>/netkit-cni/host-netns<cookie>-if<ifindex>/
//!     link        the tcx ingress bpf_link (its pin keeps the program attached; the commit point)
//!     egress      the egress program, attached to every pod's pair of this uplink
//!     pods        HASH: pod address (v4/v6) → netkit primary ifindex
//!     bypass      LPM_TRIE: the bypass prefixes
//!     stats       PERCPU_ARRAY: packet counters (bpf/host_routing.h `enum nkc_hr_counter`)
//! ```
//!
//! The `pods` map is the reference count: the DEL that removes an uplink's last pod address
//! detaches the tcx link and removes the directory. The egress program is attached with
//! `BPF_PROG_ATTACH` (netkit's bpf_mprog, `netkit_prog_attach()`), not a link: the attachment
//! belongs to the device and goes with it (`netkit_uninit()` releases its programs), so a pod
//! needs no pin of its own and a deleted or crashed ADD's device leaves nothing in bpffs.
//! Walks below the bpffs root go through [`crate::safefs::Dir`]: no symlink is ever followed.

use std::fs::File;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys as sys;
use libbpf_rs::skel::OpenSkel;
use nix::errno::Errno;
use nix::fcntl::Flock;

use crate::bpf::pins::{
    current_netns_cookie, get_pin, lock_dir, netns_dirs, open_bpffs, open_plugin_dir, pin_at,
    plugin_root, Locked,
};
use crate::bpf::sys::{
    self as bpf, link_info, map_keys, netkit_attach, netkit_peer_programs, tcx_ingress_programs,
    tcx_link_create,
};
use crate::bpf::{skel, BpfError};
use crate::ip::IpCidr;
use crate::safefs::{utf8_name, Dir, SafeFsError};

#[allow(clippy::all, missing_docs)]
mod ingress_skel {
    include!(concat!(env!("OUT_DIR"), "/host_ingress.skel.rs"));
}
#[allow(clippy::all, missing_docs)]
mod egress_skel {
    include!(concat!(env!("OUT_DIR"), "/host_egress.skel.rs"));
}

/// Pin names in an uplink directory.
pub const PIN_LINK: &str = "link";
pub const PIN_EGRESS: &str = "egress";
pub const PIN_PODS: &str = "pods";
pub const PIN_BYPASS: &str = "bypass";
pub const PIN_STATS: &str = "stats";
/// Prefix of an uplink directory's name under `<bpffs>/netkit-cni/` (the XDP dispatcher's
/// directories start with `netns`, so neither sweep ever mistakes the other's).
pub const DIR_PREFIX: &str = "host-";

pub mod hooks;

/// Counter indices (bpf/host_routing.h `enum nkc_hr_counter`).
pub mod counter {
    pub const IN_REDIRECT: u32 = 0;
    pub const IN_NOT_POD: u32 = 1;
    pub const IN_NOT_BYPASS: u32 = 2;
    pub const IN_TTL: u32 = 3;
    pub const OUT_REDIRECT: u32 = 4;
    pub const OUT_NOT_BYPASS: u32 = 5;
    pub const OUT_NOT_OWN: u32 = 6;
    pub const OUT_FIB: u32 = 7;
    pub const OUT_TTL: u32 = 8;
    pub const OTHER: u32 = 9;
    /// Appended after the first release's ten (indices stay): flows the node's conntrack NATs.
    pub const OUT_NAT: u32 = 10;
    pub const IN_NAT: u32 = 11;
    /// Appended after NAT's two: ingress refusals, reverse path and frames not for the uplink.
    pub const IN_RPF: u32 = 12;
    pub const IN_NOT_HOST: u32 = 13;
    pub const COUNT: u32 = 14;
    /// Names in index order, as `inspect`-style output and the tests print them.
    pub const NAMES: [&str; COUNT as usize] = [
        "in_redirect",
        "in_not_pod",
        "in_not_bypass",
        "in_ttl",
        "out_redirect",
        "out_not_bypass",
        "out_not_own",
        "out_fib",
        "out_ttl",
        "other",
        "out_nat",
        "in_nat",
        "in_rpf",
        "in_not_host",
    ];
}

/// `BPF_NOEXIST`: create, never replace (include/uapi/linux/bpf.h).
const BPF_NOEXIST: u64 = sys::BPF_NOEXIST as u64;

const AF_INET: u32 = libc::AF_INET as u32;
const AF_INET6: u32 = libc::AF_INET6 as u32;

/// The `hostRouting` block with `mode: bpf`, as the config layer reads it
/// (`src/config/host_routing.rs`). Defined here, with the programs it configures, so this
/// module does not import the config layer above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoutingConfig {
    /// The physical NIC (by name, in the node's netns) whose tcx ingress redirects into pods
    /// and through which pods' bypassing traffic leaves.
    pub uplink: String,
    /// Remote prefixes whose traffic with the pods skips the node's stack (and so netfilter)
    /// in both directions. Empty (the default): nothing bypasses, every packet takes the
    /// kernel's path exactly as without the block.
    pub bypass: Vec<IpCidr>,
    /// The bpf file system to pin under (`<bpffs>/netkit-cni/`).
    pub bpffs: PathBuf,
}

/// `struct nkc_hr_addr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodAddrKey {
    family: u32,
    addr: [u8; 16],
}

impl PodAddrKey {
    pub fn of(ip: IpAddr) -> PodAddrKey {
        let mut addr = [0u8; 16];
        let family = match ip {
            IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                AF_INET
            }
            IpAddr::V6(a) => {
                addr = a.octets();
                AF_INET6
            }
        };
        PodAddrKey { family, addr }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self.family {
            AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(&self.addr[..4]).ok()?)),
            AF_INET6 => Some(IpAddr::from(self.addr)),
            _ => None,
        }
    }
}

/// `struct nkc_hr_pod`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct PodValue {
    ifindex: u32,
    reserved: u32,
}

/// `struct nkc_hr_prefix`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct PrefixKey {
    prefixlen: u32,
    family: u32,
    addr: [u8; 16],
}

impl PrefixKey {
    fn of(c: &IpCidr) -> PrefixKey {
        let k = PodAddrKey::of(c.addr());
        PrefixKey {
            prefixlen: 32 + u32::from(c.prefix_len()),
            family: k.family,
            addr: k.addr,
        }
    }

    fn cidr(&self) -> Option<IpCidr> {
        let ip = PodAddrKey {
            family: self.family,
            addr: self.addr,
        }
        .ip()?;
        IpCidr::new(ip, u8::try_from(self.prefixlen.checked_sub(32)?).ok()?)
    }
}

/// Error of a host-routing operation; errnos stay typed.
#[derive(Debug, thiserror::Error)]
pub enum HostRoutingError {
    #[error("{op}{}: {errno}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Sys {
        op: &'static str,
        path: Option<PathBuf>,
        errno: Errno,
    },
    #[error("loading the host-routing BPF programs: {source}")]
    Load {
        #[source]
        source: libbpf_rs::Error,
    },
    #[error(transparent)]
    Fs(#[from] SafeFsError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("uplink {name:?} does not exist in the node's network namespace")]
    NoUplink { name: String },
    #[error("uplink {uplink:?} already routes for bypass prefixes [{have}], this network asks for [{want}]; every network on one uplink must name the same hostRouting.bypass")]
    BypassConflict {
        uplink: String,
        have: String,
        want: String,
    },
    #[error("{} is not the plugin's own state: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("address {ip} is already routed to another pod (primary ifindex {ifindex}) in {}; refusing to take it over", .path.display())]
    AddressTaken {
        ip: IpAddr,
        ifindex: u32,
        path: PathBuf,
    },
}

impl HostRoutingError {
    fn sys(op: &'static str, path: Option<&Path>, errno: Errno) -> Self {
        HostRoutingError::Sys {
            op,
            path: path.map(Path::to_path_buf),
            errno,
        }
    }

    /// A lock held past its deadline: CNI code 11 ("try again later").
    pub fn is_lock_timeout(&self) -> bool {
        matches!(
            self,
            HostRoutingError::Fs(SafeFsError::LockTimeout { .. })
                | HostRoutingError::Bpf(BpfError::Fs(SafeFsError::LockTimeout { .. }))
        )
    }
}

type Result<T> = std::result::Result<T, HostRoutingError>;

/// The ifindex of `name` in the calling thread's netns.
pub fn ifindex_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

fn ifindex_exists(ifindex: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname(3) requires.
    !unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) }.is_null()
}

/// Directory name of uplink `ifindex` in the calling thread's netns.
fn dir_name(ifindex: u32) -> Result<String> {
    Ok(format!(
        "{DIR_PREFIX}netns{}-if{ifindex}",
        current_netns_cookie()?
    ))
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned().map_err(|e| {
        HostRoutingError::sys(
            "dup",
            None,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })
}

/// The maps shared by both programs.
#[derive(Debug)]
struct Maps {
    pods: OwnedFd,
    bypass: OwnedFd,
    stats: OwnedFd,
}

/// Load the ingress program for `uplink_ifindex` (its reverse-path check) with fresh maps.
fn load_ingress(uplink_ifindex: u32) -> Result<(OwnedFd, Maps)> {
    let load_err = |source| HostRoutingError::Load { source };
    let mut object = MaybeUninit::uninit();
    let mut open =
        skel::open::<ingress_skel::HostIngressSkelBuilder>(&mut object).map_err(load_err)?;
    skel::rodata(open.maps.rodata_data.as_deref_mut())
        .map_err(load_err)?
        .nkc_uplink_ifindex = uplink_ifindex;
    let skel = open.load().map_err(load_err)?;
    Ok((
        dup(skel.progs.nkc_host_ingress.as_fd())?,
        Maps {
            pods: dup(skel.maps.hr_pods.as_fd())?,
            bypass: dup(skel.maps.hr_bypass.as_fd())?,
            stats: dup(skel.maps.hr_stats.as_fd())?,
        },
    ))
}

/// Load the egress program for `uplink_ifindex`, sharing `maps`.
fn load_egress(maps: &Maps, uplink_ifindex: u32) -> Result<OwnedFd> {
    let load_err = |source| HostRoutingError::Load { source };
    let mut object = MaybeUninit::uninit();
    let mut open =
        skel::open::<egress_skel::HostEgressSkelBuilder>(&mut object).map_err(load_err)?;
    skel::rodata(open.maps.rodata_data.as_deref_mut())
        .map_err(load_err)?
        .nkc_uplink_ifindex = uplink_ifindex;
    let m = &mut open.maps;
    skel::reuse_maps([
        (&mut m.hr_pods, maps.pods.as_fd()),
        (&mut m.hr_bypass, maps.bypass.as_fd()),
        (&mut m.hr_stats, maps.stats.as_fd()),
    ])
    .map_err(load_err)?;
    let skel = open.load().map_err(load_err)?;
    dup(skel.progs.nkc_host_egress.as_fd())
}

/// One uplink's host routing, opened and locked (the lock lasts as long as the value).
#[derive(Debug)]
pub struct Uplink {
    ifindex: u32,
    name: String,
    link: OwnedFd,
    egress: OwnedFd,
    maps: Maps,
    path: PathBuf,
    parent: Dir,
    dir: Dir,
    _lock: Flock<File>,
}

/// Whether [`Uplink::attach_or_open`] attached the tcx program or found it attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    Attached,
    Opened,
}

/// The pins of a live uplink directory.
struct Pins {
    link: OwnedFd,
    egress: OwnedFd,
    maps: Maps,
}

/// The pinned state of a locked directory if its link is live and on `ifindex`; `None` if there
/// is no link pin or its device is gone (the directory is then dead state to clear).
fn open_pins(dir: &Dir, path: &Path, ifindex: u32) -> Result<Option<Pins>> {
    let Some(link) = get_pin(dir, PIN_LINK)? else {
        return Ok(None);
    };
    let info = link_info(link.as_fd()).map_err(|e| {
        HostRoutingError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&path.join(PIN_LINK)), e)
    })?;
    if info.link_type != sys::BPF_LINK_TYPE_TCX {
        return Err(HostRoutingError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("pinned link is of type {}, not tcx", info.link_type),
        });
    }
    if info.ifindex == 0 {
        return Ok(None);
    }
    if info.ifindex != ifindex {
        return Err(HostRoutingError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("link on ifindex {}, not {ifindex}", info.ifindex),
        });
    }
    let open = |pin: &str| -> Result<OwnedFd> {
        get_pin(dir, pin)?.ok_or_else(|| {
            HostRoutingError::sys("BPF_OBJ_GET", Some(&path.join(pin)), Errno::ENOENT)
        })
    };
    Ok(Some(Pins {
        maps: Maps {
            pods: open(PIN_PODS)?,
            bypass: open(PIN_BYPASS)?,
            stats: open(PIN_STATS)?,
        },
        egress: open(PIN_EGRESS)?,
        link,
    }))
}

impl Uplink {
    /// Open the uplink's host routing, attaching it if no pod uses it yet. The first user loads
    /// both programs, pins maps and the egress program, writes the bypass prefixes, attaches the
    /// tcx link and pins it last (the commit point: a directory without a live link is cleared
    /// and set up afresh). Later users check that their bypass prefixes are the uplink's.
    pub fn attach_or_open(conf: &HostRoutingConfig) -> Result<(Uplink, Attach)> {
        let ifindex = ifindex_of(&conf.uplink).ok_or_else(|| HostRoutingError::NoUplink {
            name: conf.uplink.clone(),
        })?;
        let root = open_bpffs(&conf.bpffs)?;
        let name = dir_name(ifindex)?;
        let locked = lock_dir(&root, &name, true)?.expect("created");
        let path = plugin_root(&conf.bpffs).join(&name);
        match open_pins(&locked.dir, &path, ifindex)? {
            Some(pins) => {
                let up = Self::build(&conf.uplink, ifindex, path, locked, pins);
                up.check_bypass(&conf.bypass)?;
                Ok((up, Attach::Opened))
            }
            None => {
                locked.dir.clear()?;
                Ok((
                    Self::attach_fresh(conf, ifindex, path, locked)?,
                    Attach::Attached,
                ))
            }
        }
    }

    /// Open the uplink's host routing if attached; never attaches.
    pub fn open(bpffs: &Path, uplink: &str) -> Result<Option<Uplink>> {
        let Some(ifindex) = ifindex_of(uplink) else {
            return Ok(None);
        };
        let root = open_bpffs(bpffs)?;
        let name = dir_name(ifindex)?;
        let Some(locked) = lock_dir(&root, &name, false)? else {
            return Ok(None);
        };
        let path = plugin_root(bpffs).join(&name);
        Ok(open_pins(&locked.dir, &path, ifindex)?
            .map(|pins| Self::build(uplink, ifindex, path, locked, pins)))
    }

    fn build(name: &str, ifindex: u32, path: PathBuf, locked: Locked, pins: Pins) -> Uplink {
        Uplink {
            ifindex,
            name: name.to_owned(),
            link: pins.link,
            egress: pins.egress,
            maps: pins.maps,
            path,
            parent: locked.parent,
            dir: locked.dir,
            _lock: locked.lock,
        }
    }

    fn attach_fresh(
        conf: &HostRoutingConfig,
        ifindex: u32,
        path: PathBuf,
        locked: Locked,
    ) -> Result<Uplink> {
        let (prog, maps) = load_ingress(ifindex)?;
        let egress = load_egress(&maps, ifindex)?;
        let attach = || -> Result<OwnedFd> {
            pin_at(&locked.dir, PIN_PODS, maps.pods.as_fd())?;
            pin_at(&locked.dir, PIN_BYPASS, maps.bypass.as_fd())?;
            pin_at(&locked.dir, PIN_STATS, maps.stats.as_fd())?;
            pin_at(&locked.dir, PIN_EGRESS, egress.as_fd())?;
            for c in &conf.bypass {
                bpf::map_update(maps.bypass.as_fd(), &PrefixKey::of(c), &1u8, 0).map_err(|e| {
                    HostRoutingError::sys("BPF_MAP_UPDATE_ELEM", Some(&path.join(PIN_BYPASS)), e)
                })?;
            }
            let link = tcx_link_create(prog.as_fd(), ifindex)
                .map_err(|e| HostRoutingError::sys("BPF_LINK_CREATE (tcx ingress)", None, e))?;
            pin_at(&locked.dir, PIN_LINK, link.as_fd())?;
            Ok(link)
        };
        match attach() {
            Ok(link) => Ok(Uplink {
                ifindex,
                name: conf.uplink.clone(),
                link,
                egress,
                maps,
                path,
                parent: locked.parent,
                dir: locked.dir,
                _lock: locked.lock,
            }),
            Err(e) => {
                // Nothing is committed without the link pin (its fd was dropped: detached).
                let _ = locked.dir.clear();
                let _ = locked
                    .parent
                    .rmdir(path.file_name().and_then(utf8_name).unwrap_or(""));
                Err(e)
            }
        }
    }

    /// The uplink directory.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The uplink's ifindex.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The bypass prefixes in the uplink's trie.
    pub fn bypass(&self) -> Result<Vec<IpCidr>> {
        let keys: Vec<PrefixKey> = map_keys(self.maps.bypass.as_fd()).map_err(|e| {
            HostRoutingError::sys("BPF_MAP_GET_NEXT_KEY", Some(&self.path.join(PIN_BYPASS)), e)
        })?;
        let mut out: Vec<IpCidr> = keys.iter().filter_map(PrefixKey::cidr).collect();
        out.sort_by_key(|c| c.to_string());
        Ok(out)
    }

    fn check_bypass(&self, want: &[IpCidr]) -> Result<()> {
        let have = self.bypass()?;
        let mut want_sorted = want.to_vec();
        want_sorted.sort_by_key(|c| c.to_string());
        if have != want_sorted {
            let show = |v: &[IpCidr]| {
                v.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(HostRoutingError::BypassConflict {
                uplink: self.name.clone(),
                have: show(&have),
                want: show(&want_sorted),
            });
        }
        Ok(())
    }

    /// Route `addrs` to the pod whose netkit primary is `primary_ifindex` and attach the egress
    /// program to its pair. Map entries first: the egress program only bypasses for sources
    /// found there, and a reply can only come back through the bypass once the pod is in it.
    pub fn add_pod(&self, primary_ifindex: u32, addrs: &[IpAddr]) -> Result<()> {
        let value = PodValue {
            ifindex: primary_ifindex,
            reserved: 0,
        };
        // On failure only what this call wrote goes again: an address refused because another
        // pod holds it must not take that pod's entries, or this pod's earlier ones, with it.
        let mut written: Vec<PodAddrKey> = Vec::new();
        let undo = |written: &[PodAddrKey]| {
            for k in written {
                let _ = bpf::map_delete(self.maps.pods.as_fd(), k);
            }
        };
        for ip in addrs {
            match self.insert_addr(*ip, value) {
                Ok(true) => written.push(PodAddrKey::of(*ip)),
                Ok(false) => {}
                Err(e) => {
                    undo(&written);
                    return Err(e);
                }
            }
        }
        let egress_id = match self.egress_prog_id() {
            Ok(id) => id,
            Err(e) => {
                undo(&written);
                return Err(e);
            }
        };
        let attached = match netkit_peer_programs(primary_ifindex) {
            Ok(a) => a,
            Err(e) => {
                undo(&written);
                return Err(HostRoutingError::sys(
                    "BPF_PROG_QUERY (netkit peer)",
                    None,
                    e,
                ));
            }
        };
        if !attached.contains(&egress_id) {
            if let Err(e) = netkit_attach(self.egress.as_fd(), primary_ifindex) {
                undo(&written);
                return Err(HostRoutingError::sys(
                    "BPF_PROG_ATTACH (netkit peer)",
                    None,
                    e,
                ));
            }
        }
        Ok(())
    }

    /// Routes `ip` to `value`'s primary with `BPF_NOEXIST`, so an address routed to another
    /// pod is never silently taken over (a duplicate from IPAM would otherwise steal that pod's
    /// traffic). An entry that is already this primary's is kept; one whose primary no longer
    /// exists (deleted without DEL) is stale and replaced. Returns whether it wrote the entry
    /// (false: it was already this primary's).
    fn insert_addr(&self, ip: IpAddr, value: PodValue) -> Result<bool> {
        let pods = self.path.join(PIN_PODS);
        let key = PodAddrKey::of(ip);
        let fd = self.maps.pods.as_fd();
        match bpf::map_update(fd, &key, &value, BPF_NOEXIST) {
            Ok(()) => return Ok(true),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(HostRoutingError::sys("BPF_MAP_UPDATE_ELEM", Some(&pods), e)),
        }
        let have: Option<PodValue> = bpf::map_lookup(fd, &key)
            .map_err(|e| HostRoutingError::sys("BPF_MAP_LOOKUP_ELEM", Some(&pods), e))?;
        match have {
            Some(h) if h.ifindex == value.ifindex => Ok(false),
            Some(h) if ifindex_exists(h.ifindex) => Err(HostRoutingError::AddressTaken {
                ip,
                ifindex: h.ifindex,
                path: pods,
            }),
            // Stale, or deleted since: replace.
            _ => bpf::map_update(fd, &key, &value, 0)
                .map(|()| true)
                .map_err(|e| HostRoutingError::sys("BPF_MAP_UPDATE_ELEM", Some(&pods), e)),
        }
    }

    /// Remove every address routed to `primary_ifindex`. Returns how many there were.
    pub fn remove_pod(&self, primary_ifindex: u32) -> Result<usize> {
        self.remove_where(|v| v.ifindex == primary_ifindex)
    }

    /// Remove every address whose primary no longer exists (a device deleted without DEL).
    pub fn sweep_dead(&self) -> Result<usize> {
        self.remove_where(|v| !ifindex_exists(v.ifindex))
    }

    fn remove_where(&self, pred: impl Fn(&PodValue) -> bool) -> Result<usize> {
        let mut n = 0;
        for (key, value) in self.entries_raw()? {
            if pred(&value)
                && bpf::map_delete(self.maps.pods.as_fd(), &key).map_err(|e| {
                    HostRoutingError::sys("BPF_MAP_DELETE_ELEM", Some(&self.path.join(PIN_PODS)), e)
                })?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn entries_raw(&self) -> Result<Vec<(PodAddrKey, PodValue)>> {
        let pods_err = |op, e| HostRoutingError::sys(op, Some(&self.path.join(PIN_PODS)), e);
        let keys: Vec<PodAddrKey> =
            map_keys(self.maps.pods.as_fd()).map_err(|e| pods_err("BPF_MAP_GET_NEXT_KEY", e))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(v) = bpf::map_lookup::<_, PodValue>(self.maps.pods.as_fd(), &k)
                .map_err(|e| pods_err("BPF_MAP_LOOKUP_ELEM", e))?
            {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Every routed pod address with its primary's ifindex.
    pub fn entries(&self) -> Result<Vec<(IpAddr, u32)>> {
        Ok(self
            .entries_raw()?
            .into_iter()
            .filter_map(|(k, v)| Some((k.ip()?, v.ifindex)))
            .collect())
    }

    /// Id of the pinned egress program.
    pub fn egress_prog_id(&self) -> Result<u32> {
        bpf::prog_info(self.egress.as_fd())
            .map(|i| i.id)
            .map_err(|e| {
                HostRoutingError::sys(
                    "BPF_OBJ_GET_INFO_BY_FD",
                    Some(&self.path.join(PIN_EGRESS)),
                    e,
                )
            })
    }

    /// Id of the program the tcx link runs.
    pub fn ingress_prog_id(&self) -> Result<u32> {
        link_info(self.link.as_fd())
            .map(|i| i.prog_id)
            .map_err(|e| {
                HostRoutingError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&self.path.join(PIN_LINK)), e)
            })
    }

    /// CHECK: `addrs` route to `primary_ifindex`, and the egress program is on its pair. The
    /// tcx link is live (or this value would not exist). `Err(reason)` says what differs.
    pub fn verify_pod(
        &self,
        primary_ifindex: u32,
        addrs: &[IpAddr],
    ) -> Result<std::result::Result<(), String>> {
        for ip in addrs {
            let got = bpf::map_lookup::<_, PodValue>(self.maps.pods.as_fd(), &PodAddrKey::of(*ip))
                .map_err(|e| {
                    HostRoutingError::sys("BPF_MAP_LOOKUP_ELEM", Some(&self.path.join(PIN_PODS)), e)
                })?;
            match got {
                Some(v) if v.ifindex == primary_ifindex => {}
                Some(v) => {
                    return Ok(Err(format!(
                        "{ip} is routed to ifindex {} in {}, not the pod's {primary_ifindex}",
                        v.ifindex,
                        self.path.join(PIN_PODS).display()
                    )))
                }
                None => {
                    return Ok(Err(format!(
                        "{ip} is missing from {}",
                        self.path.join(PIN_PODS).display()
                    )))
                }
            }
        }
        let id = self.egress_prog_id()?;
        let attached = netkit_peer_programs(primary_ifindex)
            .map_err(|e| HostRoutingError::sys("BPF_PROG_QUERY (netkit peer)", None, e))?;
        if !attached.contains(&id) {
            return Ok(Err(format!(
                "the egress program (id {id}) is not attached to the pair of ifindex {primary_ifindex} (attached: {attached:?})"
            )));
        }
        let tcx = tcx_ingress_programs(self.ifindex)
            .map_err(|e| HostRoutingError::sys("BPF_PROG_QUERY (tcx ingress)", None, e))?;
        let ing = self.ingress_prog_id()?;
        if !tcx.contains(&ing) {
            return Ok(Err(format!(
                "the ingress program (id {ing}) is not on {}'s tcx ingress",
                self.name
            )));
        }
        Ok(Ok(()))
    }

    /// Per-counter totals over all CPUs (see [`counter`]).
    pub fn counters(&self) -> Result<Vec<u64>> {
        let cpus = bpf::possible_cpus()
            .map_err(|e| HostRoutingError::sys("libbpf_num_possible_cpus", None, e))?;
        let mut out = Vec::with_capacity(counter::COUNT as usize);
        let mut buf = vec![0u8; 8 * cpus];
        for i in 0..counter::COUNT {
            match bpf::map_lookup_raw(self.maps.stats.as_fd(), &i, &mut buf) {
                Ok(()) => {}
                // An uplink attached by a release before the NAT counters has a 10-entry map,
                // one before the reverse-path check a 12-entry one (its programs, kept until
                // the uplink's last pod goes, never count the missing ones).
                Err(Errno::ENOENT) if i >= counter::OUT_NAT => {
                    out.push(0);
                    continue;
                }
                Err(e) => {
                    return Err(HostRoutingError::sys(
                        "BPF_MAP_LOOKUP_ELEM",
                        Some(&self.path.join(PIN_STATS)),
                        e,
                    ))
                }
            }
            out.push(
                buf.chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                    .sum(),
            );
        }
        Ok(out)
    }

    /// Detach the tcx link and remove the directory if no pod address is left. Returns whether
    /// it did.
    pub fn detach_if_unused(self) -> Result<bool> {
        if !self.entries_raw()?.is_empty() {
            return Ok(false);
        }
        // Explicitly: another holder of the link (bpftool) must not keep the program attached.
        bpf::link_detach(self.link.as_fd()).map_err(|e| {
            HostRoutingError::sys("BPF_LINK_DETACH", Some(&self.path.join(PIN_LINK)), e)
        })?;
        self.dir.clear()?;
        let name = self
            .path
            .file_name()
            .and_then(utf8_name)
            .unwrap_or_default()
            .to_owned();
        self.parent.rmdir(&name)?;
        Ok(true)
    }
}

/// Remove the uplink directories in the calling thread's netns whose link is defunct (the NIC
/// is gone) or that hold no pod address any more. Returns the directories removed.
pub fn sweep(bpffs: &Path) -> Result<Vec<PathBuf>> {
    let root = open_bpffs(bpffs)?;
    let Some(plugin) = open_plugin_dir(&root, false)? else {
        return Ok(vec![]);
    };
    let (_, dirs) = netns_dirs(&plugin, DIR_PREFIX)?;
    let mut removed = Vec::new();
    for (name, ifindex) in dirs {
        let name = name.as_str();
        let Some(locked) = lock_dir(&root, name, false)? else {
            continue;
        };
        let path = plugin_root(bpffs).join(name);
        match open_pins(&locked.dir, &path, ifindex)? {
            Some(pins) => {
                let uplink_name = nix::net::if_::if_indextoname(ifindex)
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let up = Uplink::build(&uplink_name, ifindex, path.clone(), locked, pins);
                up.sweep_dead()?;
                if up.detach_if_unused()? {
                    removed.push(path);
                }
            }
            None => {
                locked.dir.clear()?;
                locked.parent.rmdir(name)?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}
