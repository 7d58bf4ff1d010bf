//! NIC queue leasing as the verbs use it: what a pod may ask for (the admin's pool, the per-pod
//! cap, the NIC's range), which free queues it gets, and what the kernel's answers mean.
//!
//! Queue selection reads the master's queue dump in the node netns and tries the lowest free
//! queue of the pool. Two ADDs racing for the same queue are settled by the kernel: one
//! queue-create wins, the other gets EBUSY, re-reads the dump and picks again. Every refusal
//! removes a queue from the candidates, so the loop ends after at most `pool + n` attempts, and
//! two pods can never hold the same queue (the kernel allows one lease per physical queue).

use std::collections::BTreeSet;

use nix::errno::Errno;
use serde_json::{Map, Value};

use super::dataplane::{Dataplane, DpError, LeaseTarget, Master};
use super::errcodes;
use crate::cni::{CniArgs, CniError};
use crate::config::{LeaseConfig, LeaseQueues, QueueSet, MAX_LEASES_PER_DEVICE};
use crate::kernel::link::Marker;
use crate::kernel::netdev::{Queue, QueueType};
use crate::kernel::rtnl::Deletion;
use crate::logging::Logger;

// The pod's side of a lease request (CNI_ARGS, runtimeConfig) is named with the config, which
// the parse layer checks before anything acts.
pub use crate::config::{ARG_QUEUES, ARG_QUEUE_IDS, RC_QUEUES, RC_QUEUE_IDS};

/// How much of a pod-supplied value an error message or log line repeats.
const ECHO_MAX: usize = 64;

/// CNI_ARGS without this plugin's own keys, for delegated plugins.
pub fn strip_own_args(raw: &str) -> String {
    raw.split(';')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            key != ARG_QUEUES && key != ARG_QUEUE_IDS
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A pod's resolved request and where it came from (named in error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRequest {
    pub queues: LeaseQueues,
    pub origin: String,
}

/// Reads the pod's request: runtimeConfig first (the runtime's structured channel), then
/// CNI_ARGS, then the config's own default. The request is checked against the admin's pool and
/// cap here; against the NIC in [`plan`].
pub fn pod_request(
    conf: &LeaseConfig,
    args: &CniArgs,
    runtime: Option<&Map<String, Value>>,
) -> Result<PodRequest, CniError> {
    let rc = |k: &str| runtime.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    // The pod controls these values: bounded before they are expanded, clipped where echoed.
    let cap = conf.max_queues_per_pod.unwrap_or(MAX_LEASES_PER_DEVICE) as usize;
    let clip = |v: &dyn std::fmt::Display| crate::logging::clip(&v.to_string(), ECHO_MAX);
    let req = match (rc(RC_QUEUES), rc(RC_QUEUE_IDS)) {
        (Some(_), Some(_)) => {
            return Err(CniError::invalid_config(
                format!("runtimeConfig has both {RC_QUEUES} and {RC_QUEUE_IDS}"),
                "ask for a number of queues or for exact queue ids, not both",
            ))
        }
        (Some(v), None) => {
            let n = v
                .as_u64()
                .filter(|n| *n <= u64::from(u32::MAX))
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!("runtimeConfig {RC_QUEUES}={} is not a queue count", clip(v)),
                        "expected a positive integer",
                    )
                })?;
            Some(PodRequest {
                queues: LeaseQueues::Count(n as u32),
                origin: format!("runtimeConfig {RC_QUEUES}={n}"),
            })
        }
        (None, Some(v)) => {
            if let Some(a) = v.as_array().filter(|a| a.len() > cap) {
                return Err(CniError::invalid_config(
                    format!("runtimeConfig {RC_QUEUE_IDS}={} asks for {} queues, more than the {cap} a pod may have", clip(v), a.len()),
                    "",
                ));
            }
            let ids = v
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| {
                    a.iter()
                        .map(|i| {
                            i.as_u64()
                                .filter(|n| *n <= u64::from(u32::MAX))
                                .map(|n| n as u32)
                        })
                        .collect::<Option<Vec<u32>>>()
                })
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!(
                            "runtimeConfig {RC_QUEUE_IDS}={} is not a list of queue ids",
                            clip(v)
                        ),
                        "expected e.g. [2, 3]",
                    )
                })?;
            Some(PodRequest {
                queues: LeaseQueues::Ids(ids),
                origin: format!("runtimeConfig {RC_QUEUE_IDS}={}", clip(v)),
            })
        }
        (None, None) => None,
    };
    let req = match req {
        Some(r) => r,
        None => match (args.get(ARG_QUEUES), args.get(ARG_QUEUE_IDS)) {
            (Some(_), Some(_)) => {
                return Err(CniError::invalid_config(
                    format!("CNI_ARGS has both {ARG_QUEUES} and {ARG_QUEUE_IDS}"),
                    "ask for a number of queues or for exact queue ids, not both",
                ))
            }
            (Some(v), None) => {
                let n = v
                    .parse::<u32>()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        CniError::invalid_config(
                            format!("CNI_ARGS {ARG_QUEUES}={:?} is not a queue count", clip(&v)),
                            "expected a positive integer",
                        )
                    })?;
                PodRequest {
                    queues: LeaseQueues::Count(n),
                    origin: format!("CNI_ARGS {ARG_QUEUES}={n}"),
                }
            }
            (None, Some(v)) => {
                // Capped at what the pod may hold before anything is expanded.
                let set = QueueSet::parse_capped(v, cap)
                    .map_err(|why| CniError::invalid_config(format!("CNI_ARGS {ARG_QUEUE_IDS}={:?} is not a list of at most {cap} queue ids", clip(&v)), why))?;
                PodRequest {
                    queues: LeaseQueues::Ids(set.iter().collect()),
                    origin: format!("CNI_ARGS {ARG_QUEUE_IDS}={}", clip(&v)),
                }
            }
            (None, None) => {
                return Ok(PodRequest {
                    queues: conf.queues.clone(),
                    origin: "the lease block".into(),
                })
            }
        },
    };
    check_against_pool(conf, &req)?;
    Ok(req)
}

/// A pod may only ask within the admin's pool and cap.
fn check_against_pool(conf: &LeaseConfig, req: &PodRequest) -> Result<(), CniError> {
    let cap = conf.max_queues_per_pod.unwrap_or(MAX_LEASES_PER_DEVICE);
    let cap_name = if conf.max_queues_per_pod.is_some() {
        "maxQueuesPerPod"
    } else {
        "the netkit limit"
    };
    let origin = &req.origin;
    match &req.queues {
        LeaseQueues::Count(0) => Err(CniError::invalid_config(
            format!("{origin}: a pod asking for leases needs at least 1 queue"),
            "",
        )),
        LeaseQueues::Count(n) if *n > cap => Err(CniError::invalid_config(
            format!("{origin} asks for {n} queues, more than {cap_name} {cap}"),
            format!("lease pool: {}", conf.pool_description()),
        )),
        LeaseQueues::Count(n) => match &conf.allowed_queues {
            Some(pool) if *n as usize > pool.len() => Err(CniError::invalid_config(
                format!(
                    "{origin} asks for {n} queues, more than the {} in allowedQueues {pool}",
                    pool.len()
                ),
                "",
            )),
            _ => Ok(()),
        },
        LeaseQueues::Ids(ids) => {
            let distinct: BTreeSet<u32> = ids.iter().copied().collect();
            if distinct.len() != ids.len() {
                return Err(CniError::invalid_config(
                    format!("{origin} names a queue twice"),
                    "",
                ));
            }
            if ids.len() as u32 > cap {
                return Err(CniError::invalid_config(
                    format!(
                        "{origin} asks for {} queues, more than {cap_name} {cap}",
                        ids.len()
                    ),
                    "",
                ));
            }
            match ids.iter().find(|id| !conf.allows(**id)) {
                Some(id) => Err(CniError::invalid_config(
                    format!(
                        "{origin} asks for queue {id}, which is outside the lease pool ({})",
                        conf.pool_description()
                    ),
                    "a pod may only ask for queues of the pool the lease block allows",
                )),
                None => Ok(()),
            }
        }
    }
}

/// What the master's queue dump says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicView {
    /// Real RX queues; when the NIC is down (the kernel dumps nothing) the allocated count,
    /// an upper bound.
    pub rx_queues: u32,
    /// Whether `busy` is known. A down NIC dumps no queues, so occupancy is only learnt from
    /// queue-create's answers.
    pub known: bool,
    /// RX queues that cannot be leased, with the reason.
    pub busy: Vec<(u32, String)>,
}

impl NicView {
    fn is_busy(&self, id: u32) -> bool {
        self.busy.iter().any(|(q, _)| *q == id)
    }

    fn why_busy(&self, id: u32) -> Option<&str> {
        self.busy
            .iter()
            .find(|(q, _)| *q == id)
            .map(|(_, w)| w.as_str())
    }
}

/// Why a physical queue cannot be leased, if it cannot: the same three conditions the kernel's
/// `netdev_queue_busy` checks (a lease, an AF_XDP pool, a memory provider).
pub fn busy_reason(q: &Queue) -> Option<String> {
    if let Some(l) = &q.lease {
        let ns = l
            .netns_id
            .map(|n| format!(" in netns id {n}"))
            .unwrap_or_default();
        return Some(format!(
            "leased to ifindex {}{ns} as its queue {}",
            l.ifindex, l.queue.id
        ));
    }
    if q.xsk {
        return Some("in use by an AF_XDP socket".into());
    }
    if q.io_uring.is_some() || q.dmabuf.is_some() {
        return Some("in use by a memory provider (io_uring zero-copy RX or devmem)".into());
    }
    None
}

pub fn nic_view(dp: &mut dyn Dataplane, master: &Master) -> Result<NicView, CniError> {
    let queues = dp
        .master_queues(master.ifindex)
        .map_err(|e| lease_kernel_error(e, &master.name))?;
    let rx: Vec<&Queue> = queues
        .iter()
        .filter(|q| q.queue_type == QueueType::Rx)
        .collect();
    if rx.is_empty() {
        return Ok(NicView {
            rx_queues: master.num_rx_queues.unwrap_or(0),
            known: false,
            busy: vec![],
        });
    }
    Ok(NicView {
        rx_queues: rx.len() as u32,
        known: true,
        busy: rx
            .iter()
            .filter_map(|q| busy_reason(q).map(|w| (q.id, w)))
            .collect(),
    })
}

/// A request checked against the NIC: what to lease and from which candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePlan {
    pub master: Master,
    pub want: LeaseQueues,
    /// The pool on this NIC: the admin's pool within the NIC's range, ascending.
    pub pool: QueueSet,
    pub origin: String,
    /// The NIC's RX queues (real ones; the allocated count when it is down): what RSS spreads
    /// over.
    pub rx_queues: u32,
}

impl LeasePlan {
    pub fn count(&self) -> u32 {
        match &self.want {
            LeaseQueues::Count(n) => *n,
            LeaseQueues::Ids(ids) => ids.len() as u32,
        }
    }

    fn pool_name(&self, conf: &LeaseConfig) -> String {
        format!(
            "{} on {}, here {}",
            conf.pool_description(),
            self.master.name,
            self.pool
        )
    }
}

/// Checks the request against the NIC's range (code 7: it can never succeed on this NIC) and
/// the current occupancy (code ≥ 100: it may succeed later), before anything is allocated.
pub fn plan(
    conf: &LeaseConfig,
    req: PodRequest,
    master: Master,
    view: &NicView,
) -> Result<LeasePlan, CniError> {
    let pool = match &conf.allowed_queues {
        Some(set) => set.below(view.rx_queues),
        None => QueueSet::from_ids(1..view.rx_queues),
    };
    let range = match view.rx_queues {
        0 => format!("{} reports no RX queues", master.name),
        n if view.known => format!("{} has {n} RX queues (0-{})", master.name, n - 1),
        n => format!(
            "{} has at most {n} RX queues (0-{}; it is down, so the kernel lists none)",
            master.name,
            n - 1
        ),
    };
    let plan = LeasePlan {
        master,
        want: req.queues,
        pool,
        origin: req.origin,
        rx_queues: view.rx_queues,
    };
    match &plan.want {
        LeaseQueues::Ids(ids) => {
            if let Some(id) = ids.iter().find(|id| **id >= view.rx_queues) {
                return Err(CniError::invalid_config(
                    format!("{} asks for queue {id}, out of range: {range}", plan.origin),
                    "",
                ));
            }
            if let Some(id) = ids.iter().find(|id| view.is_busy(**id)) {
                return Err(queue_busy(
                    &plan.master.name,
                    *id,
                    view.why_busy(*id).unwrap_or_default(),
                ));
            }
        }
        LeaseQueues::Count(n) => {
            if *n as usize > plan.pool.len() {
                return Err(CniError::invalid_config(
                    format!(
                        "{} asks for {n} queues, but the lease pool has only {} on this NIC",
                        plan.origin,
                        plan.pool.len()
                    ),
                    format!("pool: {}; {range}", plan.pool_name(conf)),
                ));
            }
            let free = plan.pool.iter().filter(|q| !view.is_busy(*q)).count();
            if free < *n as usize {
                return Err(pool_exhausted(conf, &plan, free));
            }
        }
    }
    Ok(plan)
}

/// One lease as made: physical queue on the master ↔ virtual queue on the pod device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leased {
    pub physical: u32,
    pub virtual_id: u32,
}

/// Leases the planned queues into `target`. On error, the leases already made stay until the
/// caller deletes the device (a lease has no release of its own; it ends with the device).
pub fn lease_queues(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    target: &LeaseTarget,
    plan: &LeasePlan,
    log: &Logger,
) -> Result<Vec<Leased>, CniError> {
    let master = &plan.master.name;
    let mut out: Vec<Leased> = Vec::new();
    match &plan.want {
        LeaseQueues::Ids(ids) => {
            for &phys in ids {
                match dp.lease_queue(target, phys) {
                    Ok(v) => {
                        out.push(Leased {
                            physical: phys,
                            virtual_id: v,
                        });
                        crate::failpoint::hit("add-after-lease").map_err(super::injected)?;
                    }
                    Err(e) if e.netdev_errno() == Some(Errno::EBUSY) => {
                        let why = e.to_string();
                        return Err(queue_busy(master, phys, &why));
                    }
                    Err(e) => return Err(lease_error(e, master, phys)),
                }
            }
        }
        LeaseQueues::Count(n) => {
            let n = *n as usize;
            // Queues the kernel refused during this ADD: taken by a racing ADD, or (NIC down,
            // range unknown) beyond the NIC's real queues.
            let mut refused: BTreeSet<u32> = BTreeSet::new();
            let mut view = nic_view(dp, &plan.master)?;
            let bound = plan.pool.len() + n;
            for _attempt in 0..bound {
                if out.len() == n {
                    break;
                }
                let taken = |q: u32| {
                    view.is_busy(q) || refused.contains(&q) || out.iter().any(|l| l.physical == q)
                };
                let Some(phys) = plan.pool.iter().find(|q| !taken(*q)) else {
                    break;
                };
                match dp.lease_queue(target, phys) {
                    Ok(v) => {
                        out.push(Leased {
                            physical: phys,
                            virtual_id: v,
                        });
                        crate::failpoint::hit("add-after-lease").map_err(super::injected)?;
                    }
                    Err(e) if e.netdev_errno() == Some(Errno::EBUSY) => {
                        log.info(format_args!(
                            "queue {phys} of {master} was taken meanwhile ({e}); picking again"
                        ));
                        refused.insert(phys);
                        view = nic_view(dp, &plan.master)?;
                    }
                    Err(e) if e.netdev_errno() == Some(Errno::ERANGE) && !view.known => {
                        // The NIC is down and its allocated count overstated the real one:
                        // every higher id is out of range too.
                        log.info(format_args!(
                            "queue {phys} of {master} is beyond its real RX queues"
                        ));
                        refused.extend(plan.pool.iter().filter(|q| *q >= phys));
                    }
                    Err(e) => return Err(lease_error(e, master, phys)),
                }
            }
            if out.len() < n {
                let free = plan
                    .pool
                    .iter()
                    .filter(|q| !view.is_busy(*q) && !refused.contains(q))
                    .count();
                return Err(pool_exhausted(conf, plan, free.saturating_sub(out.len())));
            }
        }
    }
    Ok(out)
}

fn pool_exhausted(conf: &LeaseConfig, plan: &LeasePlan, free: usize) -> CniError {
    CniError::plugin_specific(
        errcodes::LEASE_POOL_EXHAUSTED,
        format!(
            "no free RX queue left in the lease pool of {} ({}): {} needed, {free} free",
            plan.master.name,
            conf.pool_description(),
            plan.count()
        ),
        format!(
            "pool {}; requested by {}",
            plan.pool_name(conf),
            plan.origin
        ),
    )
}

fn queue_busy(master: &str, id: u32, why: &str) -> CniError {
    CniError::plugin_specific(
        errcodes::LEASE_QUEUE_BUSY,
        format!("queue {id} of {master} is busy: {why}"),
        "it cannot be leased until its current user lets go",
    )
}

/// A refused queue-create: out of range is the caller's mistake (7), a kernel without leasing
/// is [`errcodes::LEASE_UNSUPPORTED`], anything else carries the kernel's extack (a virtual
/// master, one without queue management, a second master for the same device...).
fn lease_error(e: DpError, master: &str, phys: u32) -> CniError {
    if e.netdev_errno() == Some(Errno::ERANGE) {
        return CniError::invalid_config(
            format!("queue {phys} is out of range for {master}"),
            e.to_string(),
        );
    }
    if e.is_lease_unsupported() {
        return unsupported(e);
    }
    CniError::plugin_specific(
        errcodes::LEASE_FAILED,
        format!("cannot lease queue {phys} of {master}: {e}"),
        "",
    )
}

pub fn unsupported(e: impl std::fmt::Display) -> CniError {
    CniError::plugin_specific(
        errcodes::LEASE_UNSUPPORTED,
        "this kernel cannot lease NIC queues (needs Linux >= 7.1 with netdev queue-create)",
        e.to_string(),
    )
}

/// A failure reading the master's queues.
pub fn lease_kernel_error(e: DpError, master: &str) -> CniError {
    if e.is_lease_unsupported() {
        return unsupported(e);
    }
    CniError::plugin_specific(
        errcodes::KERNEL_FAILED,
        format!("cannot read the queues of {master}: {e}"),
        "",
    )
}

/// The master must exist in the node netns: a missing one is a config error naming it.
pub fn find_master(dp: &mut dyn Dataplane, conf: &LeaseConfig) -> Result<Master, CniError> {
    dp.master(&conf.master)
        .map_err(|e| {
            CniError::plugin_specific(
                errcodes::KERNEL_FAILED,
                format!("cannot look up lease.master {:?}: {e}", conf.master),
                "",
            )
        })?
        .ok_or_else(|| {
            CniError::invalid_config(
                format!(
                    "lease.master {:?} does not exist in the node's network namespace",
                    conf.master
                ),
                "field lease.master names the physical NIC to lease queues from",
            )
        })
}

/// Everything ADD checks before allocating: master, kernel support, the pod's request against
/// pool, cap, NIC range and current occupancy.
pub fn prepare(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    args: &CniArgs,
    runtime: Option<&Map<String, Value>>,
) -> Result<LeasePlan, CniError> {
    let req = pod_request(conf, args, runtime)?;
    if !dp
        .lease_available()
        .map_err(|e| lease_kernel_error(e, &conf.master))?
    {
        return Err(unsupported(
            "the netdev generic netlink family has no queue-create operation",
        ));
    }
    let master = find_master(dp, conf)?;
    let view = nic_view(dp, &master)?;
    plan(conf, req, master, &view)
}

// ---------------------------------------------------------------------------------------------
// Who holds the master's leases (DEL, GC)

/// Which kind of attachment a device-info record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedPairing {
    Pair,
    Single,
}

/// A device holding leases on the master, as the node netns addresses it, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasingDevice {
    /// The lessee's netns as the node names it (`None`: the node's own).
    pub netnsid: Option<i32>,
    pub ifindex: u32,
    /// The (physical, virtual) queues it holds, ascending physical.
    pub queues: Vec<(u32, u32)>,
    /// The attachment whose device-info record describes exactly this lessee (see
    /// [`super::devinfo::LeaseInfo::describes`]): facts the pod cannot change. `None` when no
    /// record, or more than one, does.
    pub verified: Option<(Marker, RecordedPairing)>,
    /// What the device's alias claims, read only when `verified` is `None` (and only from a
    /// netkit device). The device lives in the pod netns, where a pod with CAP_NET_ADMIN can
    /// rename it and rewrite its alias: this may name anything, so it is never handed to IPAM.
    pub alias: Option<Marker>,
}

/// (physical, virtual) queue pairs, ascending physical.
pub type QueuePairs = Vec<(u32, u32)>;
/// A lessee as the master's leases name it: (nsid, ifindex, the queues it holds).
pub type Lessee = (Option<i32>, u32, QueuePairs);

/// Groups the master's RX leases by lessee. Lessees the kernel could not name (nsid < 0) are
/// left out: nothing can address them.
pub fn lessees(queues: &[Queue]) -> Vec<Lessee> {
    let mut by: std::collections::BTreeMap<(Option<i32>, u32), QueuePairs> = Default::default();
    for q in queues.iter().filter(|q| q.queue_type == QueueType::Rx) {
        let Some(l) = &q.lease else { continue };
        if l.netns_id.is_some_and(|n| n < 0) {
            continue;
        }
        by.entry((l.netns_id, l.ifindex))
            .or_default()
            .push((q.id, l.queue.id));
    }
    by.into_iter()
        .map(|((ns, ifx), mut qs)| {
            qs.sort_unstable();
            (ns, ifx, qs)
        })
        .collect()
}

/// Every device leasing a queue of the master, found from the node netns alone: each physical
/// queue's lease names the lessee's netns (by nsid) and ifindex, and the device-info records in
/// `conf.device_info_dir` say whose it is. A lessee no record describes keeps its alias as an
/// unverified claim. An unreadable directory or record is logged and only leaves lessees
/// unverified. No master means no lessees: removing a NIC deletes every device leasing from it.
pub fn leasing_devices(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    log: &Logger,
) -> Result<Vec<LeasingDevice>, DpError> {
    let Some(master) = dp.master(&conf.master)? else {
        log.debug(format_args!(
            "lease master {} is gone, and its lessees with it",
            conf.master
        ));
        return Ok(vec![]);
    };
    let found = lessees(&dp.master_queues(master.ifindex)?);
    if found.is_empty() {
        return Ok(vec![]);
    }
    let records = match super::devinfo::records(&conf.device_info_dir) {
        Ok((records, skipped)) => {
            for s in skipped {
                log.warn(format_args!("device-info record left out: {s}"));
            }
            records
        }
        Err(e) => {
            log.warn(format_args!(
                "device-info records unreadable, lessees of {} stay unverified: {e}",
                master.name
            ));
            vec![]
        }
    };
    let mut out = Vec::new();
    for (netnsid, ifindex, queues) in found {
        let mut describing = records
            .iter()
            .filter(|(_, r)| r.describes(master.ifindex, ifindex, &queues));
        let verified = match (describing.next(), describing.next()) {
            (Some((m, r)), None) => Some((
                m.clone(),
                if r.pairing == "single" {
                    RecordedPairing::Single
                } else {
                    RecordedPairing::Pair
                },
            )),
            (Some(_), Some(_)) => {
                log.warn(format_args!(
                    "more than one device-info record describes ifindex {ifindex} in netns id {netnsid:?}; it stays unverified"
                ));
                None
            }
            _ => None,
        };
        let alias = match verified {
            Some(_) => None,
            None => dp
                .remote_link(netnsid, ifindex)?
                .filter(|l| l.is_netkit)
                .and_then(|l| l.marker),
        };
        out.push(LeasingDevice {
            netnsid,
            ifindex,
            queues,
            verified,
            alias,
        });
    }
    Ok(out)
}

/// What stands in the way of attaching XDP to the master `master_ifindex` (whose RX queues the
/// kernel reported as `queues`): each lessee that a device-info record (`records`, from
/// [`super::devinfo::records`]: only root-owned files whose content matches their name) declares
/// as leased for a memory provider and [`describes`](super::devinfo::LeaseInfo::describes)
/// exactly, and each queue the kernel reports a memory provider bound on (the kernel itself
/// then refuses the attach: `dev_xdp_attach`, net/core/dev.c). Empty: nothing is in the way.
///
/// A record only counts while the kernel still shows its leases, so a stale file (its pod gone)
/// refuses nothing; a pod that can write the device-info directory can at most remove its own
/// root-owned record (it cannot forge one: files it creates are not root's), which unblocks XDP
/// on the NIC and so only lets the kernel refuse its own memory provider later.
pub fn memory_provider_users(
    master_ifindex: u32,
    queues: &[Queue],
    records: &[super::devinfo::Record],
) -> Vec<String> {
    let mp = crate::config::LeaseConsumer::MemoryProvider.as_str();
    let mut out = Vec::new();
    for (_, ifindex, held) in lessees(queues) {
        let declared = records.iter().find(|(_, r)| {
            r.consumer.as_deref() == Some(mp) && r.describes(master_ifindex, ifindex, &held)
        });
        if let Some((m, _)) = declared {
            let qs: Vec<String> = held.iter().map(|(p, v)| format!("{p}->{v}")).collect();
            out.push(format!(
                "{m} leases queue(s) {} for a memory provider",
                qs.join(", ")
            ));
        }
    }
    for q in queues.iter().filter(|q| q.queue_type == QueueType::Rx) {
        let kind = match (&q.io_uring, q.dmabuf) {
            (Some(_), _) => "io_uring zero-copy RX",
            (None, Some(_)) => "devmem (dmabuf)",
            (None, None) => continue,
        };
        out.push(format!(
            "queue {} has a memory provider bound ({kind})",
            q.id
        ));
    }
    out
}

/// DEL of a single device: whatever device holds the leases recorded for `marker` is deleted,
/// whatever its name or alias now (the pod may have changed both). With `netns`, only a lessee
/// in that netns counts. When no lessee is described by the attachment's record (no record, or
/// the device is gone), the device is looked for as before: by name in `netns` (marker checked),
/// or without `netns` by the alias of a lessee no record describes.
pub fn delete_single(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    netns: Option<&std::path::Path>,
    marker: &Marker,
    log: &Logger,
) -> Result<Deletion, DpError> {
    let devs = match leasing_devices(dp, conf, log) {
        Ok(d) => d,
        // With the netns, the device can still be found by name: the master's queues failing to
        // dump must not fail a DEL the spec wants to succeed.
        Err(e) if netns.is_some() => {
            log.warn(format_args!(
                "DEL {marker}: the leases of {} cannot be read ({e}); looking for the device by name",
                conf.master
            ));
            vec![]
        }
        Err(e) => return Err(e),
    };
    // After the dump, which names (and if needed assigns) the lessee's nsid. A netns that can no
    // longer be opened restricts nothing: the record and the leases already identify the device.
    let nsid = match netns {
        Some(p) if devs.iter().any(|d| d.verified.is_some()) => match dp.nsid_of(p) {
            Ok(n) => n,
            Err(e) => {
                log.debug(format_args!("DEL {marker}: nsid of {}: {e}", p.display()));
                None
            }
        },
        _ => None,
    };
    let mut out = Deletion::AlreadyGone;
    let mut found = false;
    for d in &devs {
        let ours = matches!(&d.verified, Some((m, RecordedPairing::Single)) if m == marker);
        if ours && (nsid.is_none() || d.netnsid == nsid) {
            found = true;
            log.debug(format_args!(
                "DEL {marker}: the device holding its recorded leases {:?} is ifindex {} in netns id {:?}",
                d.queues, d.ifindex, d.netnsid
            ));
            if dp.delete_remote(d.netnsid, d.ifindex)? == Deletion::Deleted {
                out = Deletion::Deleted;
            }
        }
    }
    if found {
        return Ok(out);
    }
    match netns {
        Some(p) => dp.delete_single(p, marker),
        None => {
            for d in devs
                .iter()
                .filter(|d| d.verified.is_none() && d.alias.as_ref() == Some(marker))
            {
                out = dp.delete_remote(d.netnsid, d.ifindex)?;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_args_are_not_passed_to_delegates() {
        assert_eq!(
            strip_own_args("IgnoreUnknown=1;NETKIT_LEASE_QUEUES=2;K8S_POD_NAME=web"),
            "IgnoreUnknown=1;K8S_POD_NAME=web"
        );
        assert_eq!(strip_own_args("NETKIT_LEASE_QUEUE_IDS=1,3-4"), "");
        assert_eq!(
            strip_own_args("NETKIT_LEASE_QUEUESX=1;A=b"),
            "NETKIT_LEASE_QUEUESX=1;A=b"
        );
        assert_eq!(strip_own_args(""), "");
    }

    fn lease_conf(cap: Option<u32>) -> LeaseConfig {
        LeaseConfig {
            master: "ens1f0".into(),
            queues: LeaseQueues::Count(1),
            allowed_queues: None,
            max_queues_per_pod: cap,
            device_info_dir: "/run/devinfo".into(),
            consumer: None,
            bpffs: "/sys/fs/bpf".into(),
            steering: Default::default(),
        }
    }

    #[test]
    fn a_hostile_queue_id_list_is_refused_before_expansion_and_echoed_clipped() {
        let conf = lease_conf(Some(4));
        // 1000 ranges of 65536 queues (took ~3 s of CPU) and a 128 KiB value (~50 s).
        for v in ["0-65535,".repeat(1000) + "0", "1,".repeat(65536) + "1"] {
            let args = CniArgs::parse(&format!("{ARG_QUEUE_IDS}={v}")).unwrap();
            let started = std::time::Instant::now();
            let e = pod_request(&conf, &args, None).unwrap_err();
            assert!(
                started.elapsed() < std::time::Duration::from_millis(200),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(e.code, crate::cni::codes::INVALID_CONFIG);
            assert!(e.msg.contains(ARG_QUEUE_IDS), "{}", e.msg);
            assert!(
                e.msg.len() + e.details.len() < 400,
                "echoed whole: {} bytes",
                e.msg.len() + e.details.len()
            );
        }
        // Within the cap: still fine. Just past it: refused by the count.
        let args = CniArgs::parse(&format!("{ARG_QUEUE_IDS}=1-4")).unwrap();
        assert_eq!(
            pod_request(&conf, &args, None).unwrap().queues,
            LeaseQueues::Ids(vec![1, 2, 3, 4])
        );
        let args = CniArgs::parse(&format!("{ARG_QUEUE_IDS}=1-5")).unwrap();
        let e = pod_request(&conf, &args, None).unwrap_err();
        assert!(e.details.contains("more than 4"), "{e:?}");
        // runtimeConfig: a list longer than the cap is refused by its length.
        let rc: Map<String, Value> = serde_json::from_value(
            serde_json::json!({RC_QUEUE_IDS: (0..100_000).collect::<Vec<u32>>()}),
        )
        .unwrap();
        let e = pod_request(&conf, &CniArgs::parse("").unwrap(), Some(&rc)).unwrap_err();
        assert!(
            e.msg.contains("100000 queues") && e.msg.len() < 400,
            "{}",
            e.msg
        );
    }

    #[test]
    fn busy_reasons_follow_the_kernels_three_conditions() {
        use crate::kernel::netdev::{IoUringInfo, Lease, QueueId};
        let mut q = Queue {
            id: 3,
            queue_type: QueueType::Rx,
            ifindex: 4,
            napi_id: None,
            dmabuf: None,
            io_uring: None,
            xsk: false,
            lease: None,
            unknown: vec![],
        };
        assert_eq!(busy_reason(&q), None);
        q.lease = Some(Lease {
            ifindex: 9,
            queue: QueueId::rx(2),
            netns_id: Some(1),
        });
        assert_eq!(
            busy_reason(&q).unwrap(),
            "leased to ifindex 9 in netns id 1 as its queue 2"
        );
        q.lease = None;
        q.xsk = true;
        assert!(busy_reason(&q).unwrap().contains("AF_XDP"));
        q.xsk = false;
        q.io_uring = Some(IoUringInfo::default());
        assert!(busy_reason(&q).unwrap().contains("memory provider"));
        q.io_uring = None;
        q.dmabuf = Some(1);
        assert!(busy_reason(&q).unwrap().contains("memory provider"));
    }

    #[test]
    fn memory_provider_users_are_declared_records_of_live_leases_and_bound_providers() {
        use super::super::devinfo::{LeaseInfo, MasterInfo, QueueMap};
        use crate::kernel::netdev::{IoUringInfo, Lease, QueueId};
        let q = |id: u32, lessee: Option<(u32, u32)>| Queue {
            id,
            queue_type: QueueType::Rx,
            ifindex: 4,
            napi_id: None,
            dmabuf: None,
            io_uring: None,
            xsk: false,
            lease: lessee.map(|(ifindex, v)| Lease {
                ifindex,
                queue: QueueId::rx(v),
                netns_id: Some(1),
            }),
            unknown: vec![],
        };
        let record = |cid: &str, ifindex: u32, queues: &[(u32, u32)], consumer: Option<&str>| {
            let m = Marker::new("mpnet", cid, "eth0").unwrap();
            let info = LeaseInfo {
                network: "mpnet".into(),
                container_id: cid.into(),
                interface: "eth0".into(),
                pairing: "pair".into(),
                ifindex,
                sandbox: "/run/netns/p".into(),
                master: MasterInfo {
                    name: "ens1f0".into(),
                    ifindex: 4,
                },
                queues: queues
                    .iter()
                    .map(|&(physical, virtual_id)| QueueMap {
                        physical,
                        virtual_id,
                    })
                    .collect(),
                xdp: None,
                consumer: consumer.map(str::to_string),
                steering: None,
            };
            (m, info)
        };
        let queues = vec![q(0, None), q(1, Some((7, 1))), q(2, Some((8, 1)))];
        let records = vec![
            record("mp", 7, &[(1, 1)], Some("memory-provider")),
            record("plain", 8, &[(2, 1)], None),
            // Describes no live lease (its pod is gone): refuses nothing.
            record("stale", 9, &[(3, 1)], Some("memory-provider")),
        ];
        let users = memory_provider_users(4, &queues, &records);
        assert_eq!(users.len(), 1, "{users:?}");
        assert!(
            users[0].contains("mpnet/mp/eth0") && users[0].contains("1->1"),
            "{users:?}"
        );

        // The same lease declared af-xdp, or on another master: nothing.
        let af = vec![record("mp", 7, &[(1, 1)], Some("af-xdp"))];
        assert!(memory_provider_users(4, &queues, &af).is_empty());
        assert!(memory_provider_users(5, &queues, &records).is_empty());

        // A provider the kernel reports bound counts whatever the records say.
        let mut bound = queues.clone();
        bound[2].io_uring = Some(IoUringInfo::default());
        let users = memory_provider_users(4, &bound, &[]);
        assert_eq!(
            users,
            vec!["queue 2 has a memory provider bound (io_uring zero-copy RX)"]
        );
    }
}
