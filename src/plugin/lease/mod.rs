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
use crate::config::{LeaseConfig, LeaseQueues, QueueSet};
use crate::kernel::netdev::{Queue, QueueType};
use crate::logging::Logger;

mod holders;
mod request;

pub use holders::*;
pub use request::*;

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
    match &plan.want {
        LeaseQueues::Ids(ids) => lease_named(dp, target, plan, ids),
        LeaseQueues::Count(n) => lease_any(dp, conf, target, plan, *n as usize, log),
    }
}

/// Exactly the queues the pod named: one that is busy fails the ADD.
fn lease_named(
    dp: &mut dyn Dataplane,
    target: &LeaseTarget,
    plan: &LeasePlan,
    ids: &[u32],
) -> Result<Vec<Leased>, CniError> {
    let master = &plan.master.name;
    let mut out: Vec<Leased> = Vec::new();
    for &phys in ids {
        match dp.lease_queue(target, phys) {
            Ok(v) => record(&mut out, phys, v)?,
            Err(e) if e.netdev_errno() == Some(Errno::EBUSY) => {
                let why = e.to_string();
                return Err(queue_busy(master, phys, &why));
            }
            Err(e) => return Err(lease_error(e, master, phys)),
        }
    }
    Ok(out)
}

/// `n` queues of the pool, the lowest free first; a queue the kernel refuses is skipped and the
/// choice made again (see the module's documentation for why this ends).
fn lease_any(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    target: &LeaseTarget,
    plan: &LeasePlan,
    n: usize,
    log: &Logger,
) -> Result<Vec<Leased>, CniError> {
    let master = &plan.master.name;
    let mut out: Vec<Leased> = Vec::new();
    // Queues the kernel refused during this ADD: taken by a racing ADD, or (NIC down,
    // range unknown) beyond the NIC's real queues.
    let mut refused: BTreeSet<u32> = BTreeSet::new();
    let mut view = nic_view(dp, &plan.master)?;
    let bound = plan.pool.len() + n;
    for _attempt in 0..bound {
        if out.len() == n {
            break;
        }
        let taken =
            |q: u32| view.is_busy(q) || refused.contains(&q) || out.iter().any(|l| l.physical == q);
        let Some(phys) = plan.pool.iter().find(|q| !taken(*q)) else {
            break;
        };
        match dp.lease_queue(target, phys) {
            Ok(v) => record(&mut out, phys, v)?,
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
    Ok(out)
}

/// A lease the kernel made, then the fault tests' point after each lease.
fn record(out: &mut Vec<Leased>, physical: u32, virtual_id: u32) -> Result<(), CniError> {
    out.push(Leased {
        physical,
        virtual_id,
    });
    crate::failpoint::hit("add-after-lease").map_err(super::injected)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::link::Marker;

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
