//! Who holds the master's leases (DEL, GC): the lessees the kernel names, and whose
//! attachment each is by the device-info records.

use crate::config::LeaseConfig;
use crate::kernel::link::Marker;
use crate::kernel::netdev::{Queue, QueueType};
use crate::kernel::rtnl::Deletion;
use crate::logging::Logger;
use crate::plugin::dataplane::{Dataplane, DpError};
use crate::plugin::devinfo;

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
    /// [`devinfo::LeaseInfo::describes`]): facts the pod cannot change. `None` when no
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
    let records = match devinfo::records(&conf.device_info_dir) {
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
/// [`devinfo::records`]: only root-owned files whose content matches their name) declares
/// as leased for a memory provider and [`describes`](devinfo::LeaseInfo::describes)
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
    records: &[devinfo::Record],
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
