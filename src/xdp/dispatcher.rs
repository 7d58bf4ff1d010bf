//! The dispatcher on one NIC: attach-or-open, per-queue steering, range actions, atomic
//! upgrade and detach. State lives only in bpffs pins (see [`super::paths`]); every operation
//! runs under an exclusive `flock(2)` of the NIC directory, held for the life of a
//! [`Dispatcher`] value, so concurrent plugin invocations for one NIC are serialised without a
//! daemon.
//!
//! # Update ordering
//!
//! A queue's entry (`struct nkc_queue`: action, virtual queue, range action) is written with one
//! atomic 8-byte store into the mmapped table and read by the dispatcher with one 8-byte load,
//! so a frame sees a whole old or a whole new entry. What remains is the order of the entry
//! against the other maps, chosen so that every intermediate state is safe:
//!
//! * Steering a queue to a pod stores the pod's map at `pod_xsks[q]` *before* the entry says
//!   *pod*; giving it back writes the range action *before* removing the map. Whenever a frame
//!   can see *pod*, `pod_xsks[q]` holds the map of the pod that owns the queue (a queue changes
//!   owner only through a reset), so frames go to that pod or are dropped, never to another pod
//!   or the host.
//! * A queue switching to *program* gets its `programs[q]` entry before its action; leaving
//!   *program* changes the action before deleting the entry. A tail call into an empty slot
//!   passes to the host, which is what the queue was configured for anyway.
//!
//! For the same reason, callers should steer a queue to its pod *before* creating the lease and
//! reset it *after* destroying the lease: in both windows the queue's frames are dropped (no
//! socket yet / socket no longer valid for the queue) instead of reaching the host stack.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::OpenSkel;
use libbpf_rs::AsRawLibbpf;
use nix::errno::Errno;
use nix::fcntl::Flock;

use super::config::{QueueRanges, RangeAction};
use super::error::XdpError;
use super::paths::{
    NicKey, NicPaths, PodId, DIR_PODS, PIN_LINK, PIN_POD_XSKMAP, PIN_POD_XSKS, PIN_PROGRAMS,
    PIN_QUEUES, PIN_STATS,
};
use super::skel::types::{nkc_action, nkc_queue, nkc_stats};
use super::skel::DispatcherSkelBuilder;
use super::table::QueueTable;
use super::{MAX_QUEUES, MAX_VQUEUES};
use crate::bpf::pins::{
    attic, get_pin, lock_dir, netns_dirs, open_bpffs, open_plugin_dir, pin_at, Locked,
    DEFAULT_BPFFS,
};
use crate::bpf::{skel, sys};
use crate::safefs::{utf8_name, Dir, Kind};

/// How the XDP link attaches to the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports XDP, generic (skb) mode otherwise: the
    /// kernel's choice when no mode flag is given.
    #[default]
    Auto,
    /// Driver mode only (`XDP_FLAGS_DRV_MODE`); attach fails on drivers without XDP support.
    Native,
    /// Generic mode (`XDP_FLAGS_SKB_MODE`), e.g. for tests on devices whose native XDP is
    /// unwanted.
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Auto => 0,
            XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// What [`Dispatcher::sweep_defunct`] did: the directories it removed, and an error naming
/// each entry it had to leave (an entry the plugin did not create, a lock held past the
/// deadline).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub removed: Vec<PathBuf>,
    pub refused: Vec<String>,
}

/// Options of a NIC's dispatcher.
///
/// `mode` and `stats` only take effect when a call attaches the dispatcher; later users get
/// what the first one chose (statistics are read back from the pinned map). `frags` must be the
/// same for every user of a NIC: the kernel ties the pinned program array to it, so an upgrade
/// with a different value fails to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherOptions {
    /// Mount point of the bpf file system to pin under.
    pub bpffs: PathBuf,
    /// Attach mode.
    pub mode: XdpMode,
    /// Keep per-queue counters (costs one per-CPU map lookup per frame when on; compiled out by
    /// the verifier when off).
    pub stats: bool,
    /// Load the dispatcher as multi-buffer aware (`xdp.frags`), required by drivers to attach
    /// XDP on an MTU above one page. Admin programs must then be `xdp.frags` too.
    pub frags: bool,
    /// Owner, group and mode of each pod's XSKMAP pin (`xdp.podMap`), for a consumer that does
    /// not run as root (a KubeVirt launcher). `None`: root, 0600. Never applied to the
    /// dispatcher's own maps or link.
    pub pod_map_access: Option<PinAccess>,
}

/// Ownership and permissions given to a pod's XSKMAP pin (see
/// [`DispatcherOptions::pod_map_access`]). The directories on the way to it
/// (`netkit-cni/<nic>/pods/<cid>/<ifname>`) then get mode 0711 — searchable, not listable —
/// so the owner can reach the pin by its path; they stay root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinAccess {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits (at most 0o666).
    pub mode: u32,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        DispatcherOptions {
            bpffs: PathBuf::from(DEFAULT_BPFFS),
            mode: XdpMode::Auto,
            stats: false,
            frags: false,
            pod_map_access: None,
        }
    }
}

/// What [`Dispatcher::attach_or_open`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// This call attached the dispatcher to the NIC (and applied the ranges it was given).
    Attached,
    /// The dispatcher was already attached; this call opened its pins.
    Opened,
}

/// A queue action as stored in the dispatcher's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// Host stack.
    Pass,
    /// XDP_DROP.
    Drop,
    /// The pod's XSKMAP.
    Pod,
    /// Tail call into an admin program.
    Program,
}

impl QueueAction {
    fn from_raw(a: nkc_action) -> Option<QueueAction> {
        match a {
            nkc_action::NKC_ACTION_PASS => Some(QueueAction::Pass),
            nkc_action::NKC_ACTION_DROP => Some(QueueAction::Drop),
            nkc_action::NKC_ACTION_POD => Some(QueueAction::Pod),
            nkc_action::NKC_ACTION_PROGRAM => Some(QueueAction::Program),
            _ => None,
        }
    }

    fn of_range(a: &RangeAction) -> nkc_action {
        match a {
            RangeAction::Pass => nkc_action::NKC_ACTION_PASS,
            RangeAction::Drop => nkc_action::NKC_ACTION_DROP,
            RangeAction::Program(_) => nkc_action::NKC_ACTION_PROGRAM,
        }
    }
}

/// One physical queue's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    /// What the dispatcher does now.
    pub action: QueueAction,
    /// The configured range action, restored when a pod gives the queue back.
    pub base: QueueAction,
    /// For [`QueueAction::Pod`]: the virtual queue id (XSKMAP index) in the pod.
    pub vqueue: Option<u32>,
    /// For [`QueueAction::Pod`]: kernel id of the pod's XSKMAP.
    pub pod_map_id: Option<u32>,
}

/// A physical queue handed to a pod and the virtual queue it appears as there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueLease {
    /// Physical queue id on the NIC.
    pub queue: u32,
    /// Virtual queue id on the pod's netkit device: the XSKMAP index for its socket.
    pub vqueue: u32,
}

/// What a pod needs to receive its queues (for the CNI device-info handoff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHandoff {
    /// bpffs pin of the pod interface's XSKMAP: the pod puts the AF_XDP socket bound to virtual
    /// queue `v` at index `v`.
    pub xskmap_pin: PathBuf,
    /// Every queue of this NIC steered to the pod, by physical queue id.
    pub queues: Vec<QueueLease>,
}

impl PodHandoff {
    /// The virtual queue ids, ascending.
    pub fn vqueues(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.queues.iter().map(|l| l.vqueue).collect();
        v.sort_unstable();
        v
    }
}

/// Counters of one queue, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Frames passed to the host by a *pass* entry.
    pub pass: u64,
    /// Frames dropped by a *drop* entry.
    pub drop: u64,
    /// Frames handed to a pod's XSKMAP.
    pub redirect: u64,
    /// Frames of a *pod* queue dropped because the pod had no socket at the virtual queue.
    pub pod_drop: u64,
    /// Tail calls attempted for a *program* entry.
    pub program: u64,
    /// Tail calls that failed (frame passed to the host).
    pub program_fallback: u64,
}

/// What a pin in the NIC directory holds (see [`Dispatcher::pins`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinKind {
    /// The XDP `bpf_link` (`link`).
    Link,
    /// A map: the dispatcher's (`queues`, `pod_xsks`, `programs`, `stats`) or a pod's XSKMAP.
    Map,
}

/// One object pinned in the NIC directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Path relative to the NIC directory, e.g. `link` or `pods/<cid>/<ifname>/xsks`.
    pub path: PathBuf,
    /// Link or map.
    pub kind: PinKind,
    /// Kernel id of the object; `None` when it could not be opened.
    pub id: Option<u32>,
}

/// Result of [`Dispatcher::upgrade`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    /// The (unchanged) link.
    pub link_id: u32,
    /// Program the link ran before.
    pub old_prog_id: u32,
    /// Program the link runs now.
    pub new_prog_id: u32,
}

/// Result of [`Dispatcher::detach_if_unused`].
#[derive(Debug)]
pub enum DetachOutcome {
    /// The XDP link was detached and the NIC directory removed.
    Detached,
    /// Queues are still steered to pods; nothing changed.
    StillUsed {
        /// The physical queues still in *pod* state.
        pod_queues: Vec<u32>,
        /// The dispatcher, still locked, for further use (boxed: it holds several handles).
        dispatcher: Box<Dispatcher>,
    },
}

/// The dispatcher's maps, opened from (or about to be pinned to) the NIC directory.
#[derive(Debug)]
struct Maps {
    queues: OwnedFd,
    pod_xsks: OwnedFd,
    programs: OwnedFd,
    stats: OwnedFd,
}

impl Maps {
    fn pins(&self) -> [(&'static str, BorrowedFd<'_>); 4] {
        [
            (PIN_QUEUES, self.queues.as_fd()),
            (PIN_POD_XSKS, self.pod_xsks.as_fd()),
            (PIN_PROGRAMS, self.programs.as_fd()),
            (PIN_STATS, self.stats.as_fd()),
        ]
    }
}

/// The XDP dispatcher of one NIC, opened and locked.
///
/// Obtained with [`Dispatcher::attach_or_open`] (ADD) or [`Dispatcher::open`] (DEL, CHECK). The
/// NIC directory stays `flock`ed until the value is dropped: keep it only for the duration of
/// one plugin operation. The lock belongs to the open directory, not the process, so a second
/// `attach_or_open`/`open` of the same NIC blocks until the first value is dropped, even from
/// another thread of the same process.
#[derive(Debug)]
pub struct Dispatcher {
    nic: NicKey,
    paths: NicPaths,
    opts: DispatcherOptions,
    link: OwnedFd,
    maps: Maps,
    table: QueueTable,
    stats_enabled: bool,
    /// `<bpffs>/netkit-cni/`, for removing the NIC directory.
    parent: Dir,
    /// The NIC directory: every pin is opened, created and removed relative to this handle.
    dir: Dir,
    // Dropped last (fields drop in declaration order): the lock outlives every use of the pins.
    _lock: Flock<File>,
}

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The NIC directory's lock, taken by an operation that is not a dispatcher user: an ADD whose
/// leases are for a memory provider holds it from its check that the NIC carries no XDP program
/// until its device-info record is written, so a first XDP ADD on the NIC (which asks, under the
/// same lock, whether such leases exist before attaching) cannot pass it. Creates the directory
/// if needed (an empty directory is what a dispatcher-less NIC looks like to
/// [`Dispatcher::attach_or_open`]: it attaches afresh) and removes it again on drop when it is
/// still empty, i.e. no dispatcher was ever attached there.
pub struct NicLock {
    parent: Dir,
    name: String,
    dir: Dir,
    // Dropped after `Drop::drop` ran: the empty directory is removed while still locked, so a
    // waiter sees `st_nlink == 0` and starts over (as after a detach).
    _lock: Flock<File>,
}

impl NicLock {
    /// Lock NIC `ifindex`'s directory (in the calling thread's netns) under `<bpffs>/netkit-cni/`.
    /// Gives up after [`LOCK_TIMEOUT`](crate::bpf::pins::LOCK_TIMEOUT) ([`XdpError::is_lock_timeout`]).
    pub fn acquire(bpffs: &Path, ifindex: u32) -> Result<NicLock, XdpError> {
        let root = open_bpffs(bpffs)?;
        let nic = NicKey::in_current_netns(ifindex)?;
        let name = nic.dir_name();
        let locked = lock_dir(&root, &name, true)?.expect("created");
        Ok(NicLock {
            parent: locked.parent,
            name,
            dir: locked.dir,
            _lock: locked.lock,
        })
    }

    /// The program id of the netkit-cni dispatcher whose live link is pinned in the directory,
    /// `None` when there is none (or its device is gone). Read under the lock.
    pub fn dispatcher_prog_id(&self) -> Result<Option<u32>, XdpError> {
        let Some(link) = get_pin(&self.dir, PIN_LINK)? else {
            return Ok(None);
        };
        let info = sys::link_info(link.as_fd()).map_err(|e| {
            XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&self.dir.join(PIN_LINK)), e)
        })?;
        Ok((info.ifindex != 0).then_some(info.prog_id))
    }
}

impl Drop for NicLock {
    fn drop(&mut self) {
        // rmdir refuses a directory with pins in it (ENOTEMPTY): a dispatcher's, live or dead,
        // stays for its users and the sweep.
        let _ = self.parent.rmdir(&self.name);
    }
}

impl std::fmt::Debug for NicLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NicLock")
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Name and id of a BPF program, by id (`BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`).
/// The name is the kernel's (at most 15 bytes of the program's function name).
pub fn prog_name(id: u32) -> Result<String, XdpError> {
    let fd = sys::prog_fd_by_id(id).map_err(|e| XdpError::sys("BPF_PROG_GET_FD_BY_ID", None, e))?;
    prog_name_of(fd.as_fd())
}

/// The kernel's name of a program, by fd.
fn prog_name_of(fd: BorrowedFd<'_>) -> Result<String, XdpError> {
    let info = sys::prog_info(fd).map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", None, e))?;
    let bytes: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The kernel's names of the dispatcher's two programs (bpf/dispatcher.bpf.c): the lean
/// `nkc_dispatch` and the full `nkc_disp_full` (see [`Variant`]).
pub const DISPATCHER_PROG_NAMES: [&str; 2] = ["nkc_dispatch", "nkc_disp_full"];

/// Which of the dispatcher object's two entry programs a NIC runs (bpf/dispatcher.bpf.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `nkc_dispatch`: pass, drop and pod actions, no counters, no tail call. Its pass path is a
    /// bounds check and one byte load (make bench section 4).
    Lean,
    /// `nkc_disp_full`: also admin programs (tail calls) and the counters. A program with a tail
    /// call pays the JIT's tail-call-counter prologue on every packet, so it runs only where
    /// it is needed.
    Full,
}

impl Variant {
    /// The variant a NIC needs: full with statistics or with any queue whose action, now or to
    /// restore, is an admin program.
    fn needed(stats: bool, programs: bool) -> Variant {
        if stats || programs {
            Variant::Full
        } else {
            Variant::Lean
        }
    }

    /// The kernel's name of the variant's program (`bpf_prog_info.name`, at most 15 bytes).
    fn prog_name(self) -> &'static str {
        match self {
            Variant::Lean => DISPATCHER_PROG_NAMES[0],
            Variant::Full => DISPATCHER_PROG_NAMES[1],
        }
    }

    /// The variant of a loaded program, by its kernel name; `None` for a program that is not
    /// one of ours (or an older build's, which had only the full dispatcher under the lean's
    /// name: its `set_ranges` then upgrades it when it must, see [`Dispatcher::set_ranges`]).
    fn of_program(prog: BorrowedFd<'_>) -> Result<Option<Variant>, XdpError> {
        let name = prog_name_of(prog)?;
        Ok([Variant::Lean, Variant::Full]
            .into_iter()
            .find(|v| v.prog_name() == name))
    }
}

/// Whether any range's action is an admin program.
fn ranges_have_programs(ranges: &QueueRanges) -> bool {
    ranges
        .ranges()
        .iter()
        .any(|r| matches!(r.action, RangeAction::Program(_)))
}

/// Load the dispatcher program. With `reuse`, the program uses those (pinned) maps; without,
/// libbpf creates fresh maps and their fds are returned.
fn load_program(
    variant: Variant,
    stats: bool,
    frags: bool,
    reuse: Option<&Maps>,
) -> Result<(OwnedFd, Option<Maps>), XdpError> {
    let load_err = |source| XdpError::Load { source };
    let mut object = MaybeUninit::uninit();
    let mut open = skel::open::<DispatcherSkelBuilder>(&mut object).map_err(load_err)?;
    skel::rodata(open.maps.rodata_data.as_deref_mut())
        .map_err(load_err)?
        .nkc_stats_enabled = stats;
    if !stats {
        // The program never looks the map up then; one entry keeps its pin uniform and cheap.
        open.maps.stats.set_max_entries(1).map_err(load_err)?;
    }
    // Only the variant asked for is loaded; both share the maps (same object).
    open.progs
        .nkc_dispatch
        .set_autoload(variant == Variant::Lean);
    open.progs
        .nkc_disp_full
        .set_autoload(variant == Variant::Full);
    if frags {
        let chosen = match variant {
            Variant::Lean => &mut open.progs.nkc_dispatch,
            Variant::Full => &mut open.progs.nkc_disp_full,
        };
        // SAFETY: the program belongs to the open, not yet loaded object we hold.
        let flags = unsafe { libbpf_sys::bpf_program__flags(chosen.as_libbpf_object().as_ptr()) };
        chosen.set_flags(flags | libbpf_sys::BPF_F_XDP_HAS_FRAGS);
    }
    if let Some(maps) = reuse {
        let m = &mut open.maps;
        skel::reuse_maps([
            (&mut m.data_queues, maps.queues.as_fd()),
            (&mut m.pod_xsks, maps.pod_xsks.as_fd()),
            (&mut m.programs, maps.programs.as_fd()),
            (&mut m.stats, maps.stats.as_fd()),
        ])
        .map_err(load_err)?;
    }
    let skel = open.load().map_err(load_err)?;
    let dup = |fd: BorrowedFd<'_>, what| {
        fd.try_clone_to_owned()
            .map_err(|e| XdpError::sys(what, None, io_errno(&e)))
    };
    let prog = match variant {
        Variant::Lean => dup(skel.progs.nkc_dispatch.as_fd(), "dup program fd")?,
        Variant::Full => dup(skel.progs.nkc_disp_full.as_fd(), "dup program fd")?,
    };
    let maps = match reuse {
        Some(_) => None,
        None => Some(Maps {
            queues: dup(skel.maps.data_queues.as_fd(), "dup map fd")?,
            pod_xsks: dup(skel.maps.pod_xsks.as_fd(), "dup map fd")?,
            programs: dup(skel.maps.programs.as_fd(), "dup map fd")?,
            stats: dup(skel.maps.stats.as_fd(), "dup map fd")?,
        }),
    };
    Ok((prog, maps))
}

fn same_entry(a: &nkc_queue, b: &nkc_queue) -> bool {
    a.vqueue == b.vqueue && a.action == b.action && a.base == b.base && a.reserved == b.reserved
}

fn entry(vqueue: u32, action: nkc_action, base: nkc_action) -> nkc_queue {
    nkc_queue {
        vqueue,
        action,
        base,
        reserved: 0,
    }
}

fn check_queue(queue: u32) -> Result<(), XdpError> {
    if queue >= MAX_QUEUES {
        return Err(XdpError::QueueOutOfRange {
            queue,
            limit: MAX_QUEUES,
        });
    }
    Ok(())
}

/// Write the range actions into the maps. Nothing in the queue table changes unless every
/// program pin opened, is XDP, and was accepted by the kernel into the program array; program
/// array entries written before a refusal are restored.
fn apply_ranges(
    maps: &Maps,
    table: &QueueTable,
    paths: &NicPaths,
    ranges: &QueueRanges,
) -> Result<(), XdpError> {
    let programs = open_range_programs(ranges)?;
    // Program array entries first: a queue gets its program before its action says *program*,
    // and the kernel's compatibility check (same type, JIT and frags flag as the dispatcher)
    // happens here, before the table is touched.
    write_range_programs(maps, paths, ranges, &programs)?;
    write_range_actions(maps, table, paths, ranges)
}

/// Each distinct program a range names, opened from its pin and checked to be XDP.
fn open_range_programs(ranges: &QueueRanges) -> Result<Vec<(&Path, OwnedFd)>, XdpError> {
    let mut programs: Vec<(&Path, OwnedFd)> = Vec::new();
    for r in ranges.ranges() {
        let RangeAction::Program(pin) = &r.action else {
            continue;
        };
        if programs.iter().any(|(p, _)| *p == pin.as_path()) {
            continue;
        }
        let fd =
            sys::obj_get(pin).map_err(|e| XdpError::sys("BPF_OBJ_GET program", Some(pin), e))?;
        let info = sys::prog_info(fd.as_fd())
            .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(pin), e))?;
        if info.type_ != libbpf_sys::BPF_PROG_TYPE_XDP {
            return Err(XdpError::NotXdpProgram {
                path: pin.clone(),
                prog_type: info.type_,
            });
        }
        programs.push((pin.as_path(), fd));
    }
    Ok(programs)
}

/// The program array entry of every queue whose range runs a program; all or nothing: a refused
/// entry restores the ones written before it.
fn write_range_programs(
    maps: &Maps,
    paths: &NicPaths,
    ranges: &QueueRanges,
    programs: &[(&Path, OwnedFd)],
) -> Result<(), XdpError> {
    let programs_pin = paths.pin(PIN_PROGRAMS);
    let mut written: Vec<(u32, Option<u32>)> = Vec::new();
    for q in 0..MAX_QUEUES {
        let RangeAction::Program(pin) = ranges.action_for(q) else {
            continue;
        };
        let fd = &programs
            .iter()
            .find(|(p, _)| *p == pin.as_path())
            .expect("every range's program was opened")
            .1;
        // User space reads program array entries as program ids.
        let previous = sys::map_lookup::<u32, u32>(maps.programs.as_fd(), &q)
            .map_err(|e| XdpError::sys("BPF_MAP_LOOKUP_ELEM programs", Some(&programs_pin), e));
        let raw = fd.as_raw_fd() as u32;
        let res = previous.and_then(|previous| {
            sys::map_update(maps.programs.as_fd(), &q, &raw, libbpf_sys::BPF_ANY as u64)
                .map(|()| previous)
                .map_err(|errno| match errno {
                    Errno::EINVAL => XdpError::ProgramIncompatible {
                        path: pin.clone(),
                        errno,
                    },
                    e => XdpError::sys("BPF_MAP_UPDATE_ELEM programs", Some(pin), e),
                })
        });
        match res {
            Ok(previous) => written.push((q, previous)),
            Err(e) => {
                restore_programs(maps, &written);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Every queue's range action in the table (a queue steered to a pod keeps its pod slot and only
/// its base changes); a queue that leaves *program* loses its program array entry afterwards.
fn write_range_actions(
    maps: &Maps,
    table: &QueueTable,
    paths: &NicPaths,
    ranges: &QueueRanges,
) -> Result<(), XdpError> {
    for (q, cur) in (0..MAX_QUEUES).zip(table.all()) {
        let want = ranges.action_for(q);
        let base = QueueAction::of_range(want);
        let new = if cur.action == nkc_action::NKC_ACTION_POD {
            nkc_queue { base, ..cur }
        } else {
            entry(0, base, base)
        };
        if !same_entry(&new, &cur) {
            table.set(q, &new);
        }
        // Leaving *program*: the action changed above, now the program may go.
        if !matches!(want, RangeAction::Program(_)) && cur.base == nkc_action::NKC_ACTION_PROGRAM {
            sys::map_delete(maps.programs.as_fd(), &q).map_err(|e| {
                XdpError::sys(
                    "BPF_MAP_DELETE_ELEM programs",
                    Some(&paths.pin(PIN_PROGRAMS)),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

/// Best-effort undo of program array writes (queue, previous program id): the caller is already
/// failing, so an entry that cannot be restored (its old program is gone) is removed instead.
fn restore_programs(maps: &Maps, written: &[(u32, Option<u32>)]) {
    for &(q, previous) in written.iter().rev() {
        let restored = previous
            .and_then(|id| sys::prog_fd_by_id(id).ok())
            .map(|fd| {
                let raw = fd.as_raw_fd() as u32;
                sys::map_update(maps.programs.as_fd(), &q, &raw, libbpf_sys::BPF_ANY as u64).is_ok()
            })
            .unwrap_or(false);
        if !restored {
            let _ = sys::map_delete(maps.programs.as_fd(), &q);
        }
    }
}

impl Dispatcher {
    /// Open the dispatcher of NIC `ifindex` (in the calling thread's netns), attaching it first
    /// if no user has yet.
    ///
    /// The first user loads the program, pins its maps, writes `ranges`, attaches it to the NIC
    /// through an XDP `bpf_link` and pins the link last: the link pin is the commit point, so a
    /// directory without it (an attach that died half-way) is cleared and attached afresh, as is
    /// one whose link is defunct (its device is gone). Later users open the pins and leave the
    /// ranges alone (use [`Dispatcher::set_ranges`] to change them).
    pub fn attach_or_open(
        opts: &DispatcherOptions,
        ifindex: u32,
        ranges: &QueueRanges,
    ) -> Result<(Dispatcher, Attach), XdpError> {
        Self::attach_or_open_guarded(opts, ifindex, ranges, &mut || Ok(()))
    }

    /// [`Self::attach_or_open`], with `may_attach` asked under the NIC's lock, only when this
    /// call would attach the dispatcher: its error refuses the attach and leaves no directory.
    /// The plugin refuses here while leases for memory providers exist on the NIC; an ADD of
    /// such a lease holds the same lock ([`NicLock`]) from its own XDP check until its
    /// device-info record is written, so the two checks cannot pass each other.
    pub fn attach_or_open_guarded(
        opts: &DispatcherOptions,
        ifindex: u32,
        ranges: &QueueRanges,
        may_attach: &mut dyn FnMut() -> Result<(), XdpError>,
    ) -> Result<(Dispatcher, Attach), XdpError> {
        let root = open_bpffs(&opts.bpffs)?;
        let nic = NicKey::in_current_netns(ifindex)?;
        let paths = NicPaths::new(&opts.bpffs, &nic);
        let locked = lock_dir(&root, &nic.dir_name(), true)?.expect("created");
        match Self::open_pins(&locked.dir, &paths, &nic)? {
            Some(pins) => Ok((
                Self::from_pins(opts, nic, paths, locked, pins),
                Attach::Opened,
            )),
            None => {
                if let Err(e) = may_attach() {
                    // Leave what a crashed attach left for the next one; remove only the empty
                    // directory this call may just have created.
                    let _ = locked.parent.rmdir(&nic.dir_name());
                    return Err(e);
                }
                // Whatever a pod left here that cannot be removed is moved aside, never a reason
                // for this NIC's ADDs to fail from now on.
                locked.dir.clear_or_move_aside(&mut attic(&locked.parent))?;
                let d = Self::attach_fresh(opts, nic, paths, ranges, locked)?;
                Ok((d, Attach::Attached))
            }
        }
    }

    /// Open the dispatcher of NIC `ifindex` if it is attached; never attaches. `Ok(None)` when
    /// the NIC has no (live) dispatcher.
    pub fn open(opts: &DispatcherOptions, ifindex: u32) -> Result<Option<Dispatcher>, XdpError> {
        let root = open_bpffs(&opts.bpffs)?;
        let nic = NicKey::in_current_netns(ifindex)?;
        let paths = NicPaths::new(&opts.bpffs, &nic);
        let Some(locked) = lock_dir(&root, &nic.dir_name(), false)? else {
            return Ok(None);
        };
        Ok(Self::open_pins(&locked.dir, &paths, &nic)?
            .map(|pins| Self::from_pins(opts, nic, paths, locked, pins)))
    }

    /// The dispatcher of a locked NIC directory whose pins [`Self::open_pins`] found live.
    fn from_pins(
        opts: &DispatcherOptions,
        nic: NicKey,
        paths: NicPaths,
        locked: Locked,
        (link, maps, table, stats_enabled): (OwnedFd, Maps, QueueTable, bool),
    ) -> Dispatcher {
        Dispatcher {
            nic,
            paths,
            opts: opts.clone(),
            link,
            maps,
            table,
            stats_enabled,
            parent: locked.parent,
            dir: locked.dir,
            _lock: locked.lock,
        }
    }

    /// Open the pinned link and maps; `None` if there is no live link for this NIC.
    fn open_pins(
        dir: &Dir,
        paths: &NicPaths,
        nic: &NicKey,
    ) -> Result<Option<(OwnedFd, Maps, QueueTable, bool)>, XdpError> {
        let link_pin = paths.link();
        let Some(link) = get_pin(dir, PIN_LINK)? else {
            return Ok(None);
        };
        let info = sys::link_info(link.as_fd())
            .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&link_pin), e))?;
        if info.link_type != libbpf_sys::BPF_LINK_TYPE_XDP {
            return Err(XdpError::Corrupt {
                path: paths.dir.clone(),
                reason: format!("pinned link is of type {}, not XDP", info.link_type),
            });
        }
        if info.ifindex == 0 {
            // The device this link was attached to is gone; the ifindex now names another one.
            return Ok(None);
        }
        if info.ifindex != nic.ifindex {
            return Err(XdpError::Corrupt {
                path: paths.dir.clone(),
                reason: format!(
                    "pinned link is attached to ifindex {}, not {}",
                    info.ifindex, nic.ifindex
                ),
            });
        }
        let open = |name: &str| {
            get_pin(dir, name)?
                .ok_or_else(|| XdpError::sys("BPF_OBJ_GET", Some(&paths.pin(name)), Errno::ENOENT))
        };
        let maps = Maps {
            queues: open(PIN_QUEUES)?,
            pod_xsks: open(PIN_POD_XSKS)?,
            programs: open(PIN_PROGRAMS)?,
            stats: open(PIN_STATS)?,
        };
        let stats_info = sys::map_info(maps.stats.as_fd())
            .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&paths.pin(PIN_STATS)), e))?;
        let table = QueueTable::map(maps.queues.as_fd(), &paths.pin(PIN_QUEUES))?;
        Ok(Some((
            link,
            maps,
            table,
            stats_info.max_entries >= MAX_QUEUES,
        )))
    }

    fn attach_fresh(
        opts: &DispatcherOptions,
        nic: NicKey,
        paths: NicPaths,
        ranges: &QueueRanges,
        locked: Locked,
    ) -> Result<Dispatcher, XdpError> {
        let variant = Variant::needed(opts.stats, ranges_have_programs(ranges));
        let (prog, maps) = load_program(variant, opts.stats, opts.frags, None)?;
        let maps = maps.expect("fresh maps");
        let table = QueueTable::map(maps.queues.as_fd(), &paths.pin(PIN_QUEUES))?;
        let attach = || -> Result<OwnedFd, XdpError> {
            for (name, fd) in maps.pins() {
                pin_at(&locked.dir, name, fd)?;
            }
            apply_ranges(&maps, &table, &paths, ranges)?;
            let link = sys::xdp_link_create(prog.as_fd(), nic.ifindex, opts.mode.flags()).map_err(
                |errno| match errno {
                    Errno::EBUSY | Errno::EEXIST => XdpError::NicHasXdp {
                        ifindex: nic.ifindex,
                        errno,
                    },
                    e => XdpError::sys("BPF_LINK_CREATE (XDP)", None, e),
                },
            )?;
            pin_at(&locked.dir, PIN_LINK, link.as_fd())?;
            Ok(link)
        };
        match attach() {
            Ok(link) => Ok(Dispatcher {
                nic,
                paths,
                opts: opts.clone(),
                link,
                maps,
                table,
                stats_enabled: opts.stats,
                parent: locked.parent,
                dir: locked.dir,
                _lock: locked.lock,
            }),
            Err(e) => {
                // Nothing is committed without the link pin; leave no half-made directory
                // behind (the link fd, if any, was dropped, which detached it).
                let _ = locked.dir.clear();
                let _ = locked.parent.rmdir(&nic.dir_name());
                Err(e)
            }
        }
    }

    /// The NIC this dispatcher serves.
    pub fn nic(&self) -> NicKey {
        self.nic
    }

    /// The NIC's bpffs directory.
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// Paths of the NIC directory.
    pub fn paths(&self) -> &NicPaths {
        &self.paths
    }

    /// Whether the dispatcher keeps per-queue counters.
    pub fn stats_enabled(&self) -> bool {
        self.stats_enabled
    }

    /// Kernel id of the XDP link.
    pub fn link_id(&self) -> Result<u32, XdpError> {
        Ok(self.link_info()?.id)
    }

    fn link_info(&self) -> Result<sys::LinkInfo, XdpError> {
        sys::link_info(self.link.as_fd())
            .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&self.paths.link()), e))
    }

    /// An fd of the program the link runs now (e.g. for `BPF_PROG_TEST_RUN`).
    pub fn program(&self) -> Result<OwnedFd, XdpError> {
        let id = self.link_info()?.prog_id;
        sys::prog_fd_by_id(id).map_err(|e| XdpError::sys("BPF_PROG_GET_FD_BY_ID", None, e))
    }

    /// Kernel id of the program the XDP link runs now (read-only; for `netkit-cni inspect`).
    pub fn program_id(&self) -> Result<u32, XdpError> {
        Ok(self.link_info()?.prog_id)
    }

    /// Every object pinned in the NIC directory (`link`, the maps, `pods/<cid>/<ifname>/xsks`),
    /// sorted by path, with its kernel id. Read-only; for `netkit-cni inspect`.
    pub fn pins(&self) -> Result<Vec<Pin>, XdpError> {
        let mut out = Vec::new();
        // (directory handle, its path relative to the NIC directory)
        let mut dirs: Vec<(Option<Dir>, PathBuf)> = vec![(None, PathBuf::new())];
        while let Some((dir, rel)) = dirs.pop() {
            let dir = dir.as_ref().unwrap_or(&self.dir);
            for entry in dir.entries()? {
                let Some(name) = utf8_name(&entry.name) else {
                    continue;
                };
                let path = rel.join(name);
                match entry.kind {
                    Kind::Dir => {
                        if let Some(sub) = dir.child_dir(name)? {
                            dirs.push((Some(sub), path));
                        }
                        continue;
                    }
                    Kind::File => {}
                    // Not something this plugin pins; inspect shows only pins.
                    Kind::Symlink | Kind::Other => continue,
                }
                let kind = if path == Path::new(PIN_LINK) {
                    PinKind::Link
                } else {
                    PinKind::Map
                };
                let id = get_pin(dir, name).ok().flatten().and_then(|fd| match kind {
                    PinKind::Link => sys::link_info(fd.as_fd()).ok().map(|i| i.id),
                    PinKind::Map => sys::map_info(fd.as_fd()).ok().map(|i| i.id),
                });
                out.push(Pin { path, kind, id });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// State of physical queue `queue`.
    pub fn queue_status(&self, queue: u32) -> Result<QueueStatus, XdpError> {
        check_queue(queue)?;
        let e = self.table.get(queue);
        self.status_of(queue, &e)
    }

    fn status_of(&self, queue: u32, e: &nkc_queue) -> Result<QueueStatus, XdpError> {
        let corrupt = |what: &str, v: nkc_action| XdpError::Corrupt {
            path: self.paths.dir.clone(),
            reason: format!("queue {queue}: unknown {what} {}", v.0),
        };
        let action = QueueAction::from_raw(e.action).ok_or_else(|| corrupt("action", e.action))?;
        let base = QueueAction::from_raw(e.base).ok_or_else(|| corrupt("base action", e.base))?;
        let (vqueue, pod_map_id) = if action == QueueAction::Pod {
            (Some(e.vqueue), self.pod_map_id_at(queue)?)
        } else {
            (None, None)
        };
        Ok(QueueStatus {
            action,
            base,
            vqueue,
            pod_map_id,
        })
    }

    /// Id of the XSKMAP at `pod_xsks[queue]` (user space reads map-in-map values as map ids).
    fn pod_map_id_at(&self, queue: u32) -> Result<Option<u32>, XdpError> {
        sys::map_lookup::<u32, u32>(self.maps.pod_xsks.as_fd(), &queue).map_err(|e| {
            XdpError::sys(
                "BPF_MAP_LOOKUP_ELEM pod_xsks",
                Some(&self.paths.pin(PIN_POD_XSKS)),
                e,
            )
        })
    }

    /// Open the pod's XSKMAP pin; with `create`, create and pin it if missing. Returns the fd,
    /// the map id and whether this call created it.
    fn pod_map(&self, pod: &PodId, create: bool) -> Result<Option<(OwnedFd, u32, bool)>, XdpError> {
        let pin = self.paths.pod_xskmap(pod);
        let existing = match self.pod_dir(pod)? {
            Some(dir) => get_pin(&dir, PIN_POD_XSKMAP)?,
            None => None,
        };
        let (fd, created) = match existing {
            Some(fd) => (fd, false),
            None if !create => return Ok(None),
            None => {
                let pods = self.dir.create_dir(DIR_PODS, 0o700)?;
                let cid = pods.create_dir(pod.container_id(), 0o700)?;
                let dir = cid.create_dir(pod.ifname(), 0o700)?;
                let fd = sys::xskmap_create("nkc_pod_xsks", MAX_VQUEUES)
                    .map_err(|e| XdpError::sys("BPF_MAP_CREATE (XSKMAP)", Some(&pin), e))?;
                pin_at(&dir, PIN_POD_XSKMAP, fd.as_fd())?;
                if let Some(access) = self.opts.pod_map_access {
                    for d in [&self.parent, &self.dir, &pods, &cid, &dir] {
                        d.chmod(0o711)?;
                    }
                    dir.chown_chmod_file(PIN_POD_XSKMAP, access.uid, access.gid, access.mode)?;
                }
                (fd, true)
            }
        };
        let info = sys::map_info(fd.as_fd())
            .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", Some(&pin), e))?;
        if info.type_ != libbpf_sys::BPF_MAP_TYPE_XSKMAP || info.max_entries != MAX_VQUEUES {
            return Err(XdpError::Corrupt {
                path: self.paths.dir.clone(),
                reason: format!(
                    "{} is map type {} with {} entries, not an XSKMAP of {MAX_VQUEUES}",
                    pin.display(),
                    info.type_,
                    info.max_entries
                ),
            });
        }
        Ok(Some((fd, info.id, created)))
    }

    /// `pods/<container id>/<ifname>` of `pod`, opened through the checked walk; `None` if any
    /// part is missing.
    fn pod_dir(&self, pod: &PodId) -> Result<Option<Dir>, XdpError> {
        let Some(pods) = self.dir.child_dir(DIR_PODS)? else {
            return Ok(None);
        };
        let Some(cid) = pods.child_dir(pod.container_id())? else {
            return Ok(None);
        };
        Ok(cid.child_dir(pod.ifname())?)
    }

    /// Remove a pod's XSKMAP pin and its directories (the container directory only if empty).
    fn unpin_pod(&self, pod: &PodId) -> Result<(), XdpError> {
        let Some(pods) = self.dir.child_dir(DIR_PODS)? else {
            return Ok(());
        };
        let Some(cid) = pods.child_dir(pod.container_id())? else {
            return Ok(());
        };
        cid.remove_tree_or_move_aside(pod.ifname(), &mut attic(&self.parent))?;
        match pods.rmdir(pod.container_id()) {
            Ok(_) => Ok(()),
            // Another interface of the same container still has a map.
            Err(e) if matches!(e.errno(), Some(Errno::ENOTEMPTY | Errno::EEXIST)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `<container id>/<ifname>` of the pod whose XSKMAP has kernel id `map_id`, by scanning the
    /// pod pins (error reporting only).
    fn pod_by_map_id(&self, map_id: u32) -> Option<String> {
        let pods = self.dir.child_dir(DIR_PODS).ok()??;
        for cid in pods.entries().ok()? {
            let Some(cname) = utf8_name(&cid.name) else {
                continue;
            };
            let Ok(Some(cdir)) = pods.child_dir(cname) else {
                continue;
            };
            for ifn in cdir.entries().ok()? {
                let Some(iname) = utf8_name(&ifn.name) else {
                    continue;
                };
                let Ok(Some(idir)) = cdir.child_dir(iname) else {
                    continue;
                };
                let Ok(Some(fd)) = get_pin(&idir, PIN_POD_XSKMAP) else {
                    continue;
                };
                if sys::map_info(fd.as_fd()).map(|i| i.id) == Ok(map_id) {
                    return Some(format!("{cname}/{iname}"));
                }
            }
        }
        None
    }

    /// Steer physical queue `queue` to the pod interface `pod`, as its virtual queue `vqueue`:
    /// create and pin the pod's XSKMAP if needed, store it at `pod_xsks[queue]`, then mark the
    /// queue *pod*. Idempotent for the same pod and virtual queue; a leased queue may be moved
    /// to another virtual queue of the same pod.
    ///
    /// Errors: [`XdpError::QueueBusy`] if another pod holds the queue,
    /// [`XdpError::VqueueBusy`] if another queue already feeds this pod's `vqueue`.
    pub fn set_queue_pod(
        &self,
        queue: u32,
        pod: &PodId,
        vqueue: u32,
    ) -> Result<PodHandoff, XdpError> {
        self.steer(queue, pod, vqueue, false)
    }

    /// As [`Dispatcher::set_queue_pod`], for a caller that holds the kernel's lease on `queue`
    /// for `pod`: a steering left to another pod is taken over instead of refused. The kernel
    /// allows one lease per physical queue, so such a steering is stale — its pod's device is
    /// gone (which ended its lease) and its DEL has not reset the queue yet. Taking over is safe
    /// for that DEL too: it resets only queues that still point at its own map.
    pub fn steer_leased_queue(
        &self,
        queue: u32,
        pod: &PodId,
        vqueue: u32,
    ) -> Result<PodHandoff, XdpError> {
        self.steer(queue, pod, vqueue, true)
    }

    fn steer(
        &self,
        queue: u32,
        pod: &PodId,
        vqueue: u32,
        takeover: bool,
    ) -> Result<PodHandoff, XdpError> {
        check_queue(queue)?;
        if vqueue >= MAX_VQUEUES {
            return Err(XdpError::VqueueOutOfRange {
                vqueue,
                limit: MAX_VQUEUES,
            });
        }
        let table = self.table.all();
        let cur = table[queue as usize];
        let (map_fd, map_id, created) = self.pod_map(pod, true)?.expect("created");
        let fail = |e: XdpError| {
            if created {
                let _ = self.unpin_pod(pod);
            }
            Err(e)
        };
        if cur.action == nkc_action::NKC_ACTION_POD {
            let owner = self.pod_map_id_at(queue)?;
            if owner != Some(map_id) && !takeover {
                return fail(XdpError::QueueBusy {
                    queue,
                    owner: owner.and_then(|id| self.pod_by_map_id(id)),
                });
            }
            if owner == Some(map_id) && cur.vqueue == vqueue {
                return self.handoff_for(pod, map_id, &table);
            }
        }
        for (q, e) in (0..MAX_QUEUES).zip(&table) {
            if q != queue
                && e.action == nkc_action::NKC_ACTION_POD
                && e.vqueue == vqueue
                && self.pod_map_id_at(q)? == Some(map_id)
            {
                return fail(XdpError::VqueueBusy { vqueue, queue: q });
            }
        }
        let raw = map_fd.as_raw_fd() as u32;
        if let Err(e) = sys::map_update(
            self.maps.pod_xsks.as_fd(),
            &queue,
            &raw,
            libbpf_sys::BPF_ANY as u64,
        ) {
            return fail(XdpError::sys(
                "BPF_MAP_UPDATE_ELEM pod_xsks",
                Some(&self.paths.pin(PIN_POD_XSKS)),
                e,
            ));
        }
        let base = cur.base;
        self.table
            .set(queue, &entry(vqueue, nkc_action::NKC_ACTION_POD, base));
        let mut table = table;
        table[queue as usize] = entry(vqueue, nkc_action::NKC_ACTION_POD, base);
        self.handoff_for(pod, map_id, &table)
    }

    fn handoff_for(
        &self,
        pod: &PodId,
        map_id: u32,
        table: &[nkc_queue],
    ) -> Result<PodHandoff, XdpError> {
        let mut queues = Vec::new();
        for (q, e) in (0..MAX_QUEUES).zip(table) {
            if e.action == nkc_action::NKC_ACTION_POD && self.pod_map_id_at(q)? == Some(map_id) {
                queues.push(QueueLease {
                    queue: q,
                    vqueue: e.vqueue,
                });
            }
        }
        Ok(PodHandoff {
            xskmap_pin: self.paths.pod_xskmap(pod),
            queues,
        })
    }

    /// The pod's current handoff, or `None` if it has no XSKMAP on this NIC.
    pub fn pod_handoff(&self, pod: &PodId) -> Result<Option<PodHandoff>, XdpError> {
        let Some((_, map_id, _)) = self.pod_map(pod, false)? else {
            return Ok(None);
        };
        let table = self.table.all();
        self.handoff_for(pod, map_id, &table).map(Some)
    }

    /// Give physical queue `queue` back: restore its range action, then drop the pod map
    /// reference. Returns whether the queue was steered to a pod. The pod's XSKMAP pin stays
    /// (see [`Dispatcher::release_pod`]).
    pub fn reset_queue(&self, queue: u32) -> Result<bool, XdpError> {
        check_queue(queue)?;
        let cur = self.table.get(queue);
        if cur.action != nkc_action::NKC_ACTION_POD {
            return Ok(false);
        }
        self.table.set(queue, &entry(0, cur.base, cur.base));
        sys::map_delete(self.maps.pod_xsks.as_fd(), &queue).map_err(|e| {
            XdpError::sys(
                "BPF_MAP_DELETE_ELEM pod_xsks",
                Some(&self.paths.pin(PIN_POD_XSKS)),
                e,
            )
        })?;
        Ok(true)
    }

    /// Reset every queue steered to `pod` and remove its XSKMAP pin and directory. Returns the
    /// queues that were reset (empty if the pod had none, also when it has no pin at all:
    /// DEL is idempotent).
    pub fn release_pod(&self, pod: &PodId) -> Result<Vec<u32>, XdpError> {
        let mut reset = Vec::new();
        if let Some((_, map_id, _)) = self.pod_map(pod, false)? {
            let table = self.table.all();
            for (q, e) in (0..MAX_QUEUES).zip(&table) {
                if e.action == nkc_action::NKC_ACTION_POD && self.pod_map_id_at(q)? == Some(map_id)
                {
                    self.reset_queue(q)?;
                    reset.push(q);
                }
            }
        }
        self.unpin_pod(pod)?;
        Ok(reset)
    }

    /// Replace the range actions. Queues steered to pods keep steering and only get their
    /// restore-to action updated; every other queue switches now.
    ///
    /// The program follows the ranges: a NIC that gains an admin-program range switches to the
    /// full dispatcher *before* any queue's action says `program` (the lean one has no tail
    /// call), and one that loses its last switches back to the lean one afterwards.
    pub fn set_ranges(&self, ranges: &QueueRanges) -> Result<(), XdpError> {
        let want = Variant::needed(self.stats_enabled, ranges_have_programs(ranges));
        let now = Variant::of_program(self.program()?.as_fd())?;
        if want == Variant::Full && now != Some(Variant::Full) {
            self.switch_program(Variant::Full)?;
        }
        apply_ranges(&self.maps, &self.table, &self.paths, ranges)?;
        if want == Variant::Lean && now != Some(Variant::Lean) {
            self.switch_program(Variant::Lean)?;
        }
        Ok(())
    }

    /// Load `variant` on the pinned maps and swap the link to it (`BPF_LINK_UPDATE`, atomic for
    /// the NIC's frames: each runs the old program or the new one).
    fn switch_program(&self, variant: Variant) -> Result<Upgrade, XdpError> {
        let info = self.link_info()?;
        let old = sys::prog_fd_by_id(info.prog_id)
            .map_err(|e| XdpError::sys("BPF_PROG_GET_FD_BY_ID", None, e))?;
        let (new, _) = load_program(
            variant,
            self.stats_enabled,
            self.opts.frags,
            Some(&self.maps),
        )?;
        sys::link_update(self.link.as_fd(), new.as_fd(), old.as_fd())
            .map_err(|e| XdpError::sys("BPF_LINK_UPDATE", Some(&self.paths.link()), e))?;
        let new_prog_id = sys::prog_info(new.as_fd())
            .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", None, e))?
            .id;
        Ok(Upgrade {
            link_id: info.id,
            old_prog_id: info.prog_id,
            new_prog_id,
        })
    }

    /// Physical queues currently steered to pods.
    pub fn pod_queues(&self) -> Result<Vec<u32>, XdpError> {
        Ok((0..MAX_QUEUES)
            .zip(self.table.all())
            .filter(|(_, e)| e.action == nkc_action::NKC_ACTION_POD)
            .map(|(q, _)| q)
            .collect())
    }

    /// Counters of `queue`, summed over CPUs.
    pub fn queue_stats(&self, queue: u32) -> Result<QueueStats, XdpError> {
        check_queue(queue)?;
        if !self.stats_enabled {
            return Err(XdpError::StatsDisabled);
        }
        // Per-CPU values are laid out with an 8-byte-aligned stride, one per possible CPU.
        let stride = std::mem::size_of::<nkc_stats>().div_ceil(8) * 8;
        let cpus =
            sys::possible_cpus().map_err(|e| XdpError::sys("libbpf_num_possible_cpus", None, e))?;
        let mut buf = vec![0u8; stride * cpus];
        sys::map_lookup_raw(self.maps.stats.as_fd(), &queue, &mut buf).map_err(|e| {
            XdpError::sys(
                "BPF_MAP_LOOKUP_ELEM stats",
                Some(&self.paths.pin(PIN_STATS)),
                e,
            )
        })?;
        let mut total = QueueStats::default();
        for cpu in buf.chunks_exact(stride) {
            let field =
                |i: usize| u64::from_ne_bytes(cpu[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            total.pass += field(0);
            total.drop += field(1);
            total.redirect += field(2);
            total.pod_drop += field(3);
            total.program += field(4);
            total.program_fallback += field(5);
        }
        Ok(total)
    }

    /// Replace the running program with this build's dispatcher, atomically: the new program is
    /// loaded on the pinned maps (so every queue keeps its state) and swapped in with
    /// `BPF_LINK_UPDATE`, which never leaves the NIC without a program. `BPF_F_REPLACE` makes the
    /// swap fail (`EPERM`) if the link no longer runs the program this call read. The variant
    /// loaded is the one the NIC needs now (full with statistics or an admin-program queue,
    /// lean otherwise).
    pub fn upgrade(&self) -> Result<Upgrade, XdpError> {
        let programs = self.table.all().iter().any(|e| {
            e.action == nkc_action::NKC_ACTION_PROGRAM || e.base == nkc_action::NKC_ACTION_PROGRAM
        });
        self.switch_program(Variant::needed(self.stats_enabled, programs))
    }

    /// Pod interfaces with an XSKMAP pin in this NIC's directory (GC compares them with the
    /// runtime's list of live attachments). Entries that are not valid ids are skipped: only
    /// this plugin writes here, and it only writes validated ones.
    pub fn pods(&self) -> Result<Vec<PodId>, XdpError> {
        let mut out = Vec::new();
        let Some(pods) = self.dir.child_dir(DIR_PODS)? else {
            return Ok(out);
        };
        for cid in pods.entries()? {
            let Some(c) = utf8_name(&cid.name) else {
                continue;
            };
            if cid.kind != Kind::Dir {
                continue;
            }
            let Some(cdir) = pods.child_dir(c)? else {
                continue;
            };
            for ifn in cdir.entries()? {
                let Some(i) = utf8_name(&ifn.name) else {
                    continue;
                };
                if ifn.kind != Kind::Dir {
                    continue;
                }
                if let Ok(pod) = PodId::new(c, i) {
                    out.push(pod);
                }
            }
        }
        out.sort_by(|a, b| (a.container_id(), a.ifname()).cmp(&(b.container_id(), b.ifname())));
        Ok(out)
    }

    /// Remove the directories of dispatchers in the calling thread's netns whose NIC is gone.
    /// Removing a NIC detaches its XDP link but leaves the pins (bpffs outlives devices); with
    /// the NIC gone there is no ifindex left to DEL by, so DEL and GC sweep instead. Each
    /// directory is locked first, so a live attach in progress is never touched. Returns the
    /// directories removed and, for each entry that could not be swept, the error naming it.
    pub fn sweep_defunct(opts: &DispatcherOptions) -> Result<Swept, XdpError> {
        let root = open_bpffs(&opts.bpffs)?;
        let Some(plugin) = open_plugin_dir(&root, false)? else {
            return Ok(Swept::default());
        };
        let mut refused = Vec::new();
        let (cookie, dirs) = netns_dirs(&plugin, "")?;
        let mut removed = Vec::new();
        for (name, ifindex) in dirs {
            let name = name.as_str();
            let nic = NicKey {
                netns_cookie: cookie,
                ifindex,
            };
            let paths = NicPaths::new(&opts.bpffs, &nic);
            // Refuses (with an error naming it) an entry that is not our own directory: a
            // symlink here must never be cleared through. One refused entry (junk a pod planted
            // for one NIC) must not stop the sweep of the others: it is reported, and the sweep
            // goes on.
            let one = || -> Result<Option<PathBuf>, XdpError> {
                let Some(locked) = lock_dir(&root, name, false)? else {
                    return Ok(None);
                };
                if Self::open_pins(&locked.dir, &paths, &nic)?.is_none() {
                    locked.dir.clear_or_move_aside(&mut attic(&locked.parent))?;
                    locked.parent.rmdir(name)?;
                    return Ok(Some(paths.dir.clone()));
                }
                Ok(None)
            };
            match one() {
                Ok(Some(p)) => removed.push(p),
                Ok(None) => {}
                Err(e) => refused.push(e.to_string()),
            }
        }
        Ok(Swept { removed, refused })
    }

    /// Detach the dispatcher and remove the NIC directory if no queue is steered to a pod any
    /// more. Leftover pod XSKMAP pins (pods without queues) go with it: nothing can reach them
    /// through the dispatcher.
    pub fn detach_if_unused(self) -> Result<DetachOutcome, XdpError> {
        let pod_queues = self.pod_queues()?;
        if !pod_queues.is_empty() {
            return Ok(DetachOutcome::StillUsed {
                pod_queues,
                dispatcher: Box::new(self),
            });
        }
        // Detach explicitly rather than by dropping the last reference: another process (say,
        // bpftool) may hold the link open, and the NIC must be free when this returns.
        sys::link_detach(self.link.as_fd())
            .map_err(|e| XdpError::sys("BPF_LINK_DETACH", Some(&self.paths.link()), e))?;
        self.dir.clear_or_move_aside(&mut attic(&self.parent))?;
        // Still holding the lock: waiters see the dead directory (nlink 0) and start over.
        self.parent.rmdir(&self.nic.dir_name())?;
        Ok(DetachOutcome::Detached)
    }
}
