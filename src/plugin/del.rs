//! DEL, and the releases GC shares with it: what an attachment holds is found in the kernel and
//! in its device-info record, and released only when it is this attachment's.

use crate::cni::CniError;
use crate::config::{LeaseConfig, Pairing, XdpConfig};
use crate::kernel::link::{LinkError, Marker};
use crate::kernel::rtnl::Deletion;
use crate::logging::Logger;
use crate::xdp::PodId;

use super::dataplane::*;
use super::{
    devinfo, devinfo_error, host_routing_error, kernel_error, lease, pod_id, steer, xdp_error,
    IpamDelegate, Request,
};

/// DEL is idempotent and best effort, as the spec asks: a missing netns, a missing device, a
/// missing master NIC or a repeated DEL all succeed. The device goes first so the pod's traffic
/// stops (and its leases end) before its address can be handed to another pod; IPAM DEL is
/// itself idempotent, so a retry after a failure between the steps is harmless.
///
/// A pair needs no netns: the host device's name is derived, and deleting it removes the peer,
/// the host routes and the peer's leases with it. A single device lives only in the pod netns;
/// when the runtime sends no CNI_NETNS it is found through the master's leases instead.
pub fn cmd_del(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<(), CniError> {
    let marker = req.marker()?;
    // Before the device goes: its addresses stop being redirected to it first. Only those of
    // the host device that names this attachment: after network A's refused ADD (103), the
    // device at the derived name is network B's, and A's DEL must not unroute B's pod.
    if let Some(h) = &req.conf.host_routing {
        let ours = own_primary(dp, &marker).map_err(kernel_error)?;
        dp.host_routing()
            .release(h, ours, log)
            .map_err(host_routing_error)?;
    }
    // Before the device goes too: the NIC stops steering the pod's frames to its queues before
    // they return to the host.
    let steer_master = match &req.conf.lease {
        Some(l) => release_steering(dp, l, &marker, log)?,
        None => None,
    };
    let deleted = match (req.conf.pairing, req.env.netns.as_deref(), &req.conf.lease) {
        (Pairing::Pair, _, _) => dp.delete(&marker),
        // Found by the leases its record names, not by the name or alias the pod may change.
        (Pairing::Single, netns, Some(l)) => lease::delete_single(dp, l, netns, &marker, log),
        (Pairing::Single, Some(netns), None) => dp.delete_single(netns, &marker),
        (Pairing::Single, None, None) => Ok(Deletion::AlreadyGone),
    };
    match deleted {
        Ok(d) => log.debug(format_args!("DEL {marker}: device {d:?}")),
        // A device with our name but another owner's marker is not ours to delete.
        Err(DpError::Link {
            source: LinkError::MarkerMismatch { name, alias, .. },
            ..
        }) => log.warn(format_args!(
            "DEL {marker}: {name} belongs to {alias:?}, left alone"
        )),
        Err(e) => return Err(kernel_error(e)),
    }
    // After the device, whose deletion ended its leases: what an ADD killed before its record
    // was written left behind is found by its location and its queue, now unleased.
    if let (Some(l), Some(master)) = (&req.conf.lease, &steer_master) {
        if l.steering.match_on != crate::config::SteerMatch::None {
            steer::sweep(dp, l, master, log).map_err(kernel_error)?;
        }
    }
    // After the device, whose deletion ended the leases (see the rollback in cmd_add).
    if let (Some(l), Some(x)) = (&req.conf.lease, &req.conf.xdp) {
        release_xdp(dp, l, x, &marker, log)?;
    }
    if let Some(l) = &req.conf.lease {
        devinfo::remove(&l.device_info_dir, &marker).map_err(devinfo_error)?;
    }
    if let Some(ipam) = ipam {
        ipam.del(marker.container_id(), marker.ifname())?;
    }
    Ok(())
}

/// The attachment's rules, context and unicast address, as its record names them; returns the
/// master (if it exists) for the sweep after the device is gone. Already gone is success: a
/// missing record, master or rule means there is nothing (left) to remove, and DEL may run
/// any number of times.
pub(super) fn release_steering(
    dp: &mut dyn Dataplane,
    l: &LeaseConfig,
    marker: &Marker,
    log: &Logger,
) -> Result<Option<Master>, CniError> {
    let Some(master) = dp.master(&l.master).map_err(kernel_error)? else {
        return Ok(None);
    };
    let record = match devinfo::read(&l.device_info_dir, marker) {
        Ok(r) => r,
        // An unreadable record must not stop DEL; the sweep still finds what is stale.
        Err(e) => {
            log.warn(format_args!("DEL {marker}: {e}"));
            None
        }
    };
    // A NIC re-created under the same name (another ifindex) has none of the recorded rules.
    if let Some(r) = record.filter(|r| r.lease.master.ifindex == master.ifindex) {
        if let Some(st) = &r.lease.steering {
            steer::release(dp, &master, st, log)?;
        }
    }
    Ok(Some(master))
}

/// The attachment's queues go back to their range actions and its XSKMAP pin goes; the last pod
/// on the master detaches the dispatcher. With the master gone there is no dispatcher to open
/// (its link died with the NIC): the dead NIC's pins are swept instead.
///
/// XDP pins are keyed by container id and ifname only, so the pin at this key may be another
/// network's: a DEL for network A after A's ADD was refused with 103 (network B's device holds
/// that ifname) must leave B's steering alone, even when B keeps its records in another
/// directory. The release is skipped while a live device leases the steered queues and no
/// record of this network shows it to be this attachment (see [`held_by_another`]); an alias
/// never decides it.
fn release_xdp(
    dp: &mut dyn Dataplane,
    l: &LeaseConfig,
    x: &XdpConfig,
    marker: &Marker,
    log: &Logger,
) -> Result<(), CniError> {
    let pod = pod_id(marker)?;
    if let Some(master) = dp.master(&l.master).map_err(kernel_error)? {
        let devs = lease::leasing_devices(dp, l, log).map_err(kernel_error)?;
        if let Some(holder) = held_by_another(dp, x, master.ifindex, &devs, marker.network(), &pod)
            .map_err(kernel_error)?
        {
            log.warn(format_args!(
                "DEL {marker}: the XDP steering of {pod} is left alone: {holder}"
            ));
            return Ok(());
        }
    }
    match dp.master(&l.master).map_err(kernel_error)? {
        Some(master) => {
            let r = dp.xdp_release(x, master.ifindex, &pod).map_err(xdp_error)?;
            log.debug(format_args!(
                "DEL {marker}: XDP queues {:?} given back, dispatcher detached: {}",
                r.reset, r.detached
            ));
        }
        None => {
            let swept = dp.xdp_sweep(x).map_err(xdp_error)?;
            log.debug(format_args!(
                "DEL {marker}: master {} is gone; swept {:?}",
                l.master, swept.removed
            ));
            // Another NIC's directory that cannot be swept (junk a pod planted there) is not
            // this attachment's: reported, and GC reports it too, but it does not fail this DEL.
            for r in &swept.refused {
                log.warn(format_args!("DEL {marker}: left in bpffs: {r}"));
            }
        }
    }
    Ok(())
}

/// The ifindex of the pair's host device (primary) named after `marker` in the node netns, if
/// it carries exactly this marker. The name hashes only the container id and ifname, so it may
/// be another network's device; its marker is in the node netns, out of the pod's reach.
pub(super) fn own_primary(dp: &mut dyn Dataplane, marker: &Marker) -> Result<Option<u32>, DpError> {
    Ok(dp
        .observe(marker, None, marker.ifname())?
        .host
        .filter(|h| h.marker.as_ref() == Some(marker))
        .map(|h| h.ifindex))
}

/// Why the XDP steering of `pod` on the master is not `network`'s to release, or `None` when it
/// is. The pin is keyed by container id and ifname only, so another network's attachment with
/// the same key (a DEL of a network whose ADD was refused with 103, a GC of another network)
/// finds the same pin. Decided from facts the pod cannot change: the kernel's leases of the
/// queues the dispatcher steers to `pod`, and the root-owned device-info records of this
/// network ([`lease::LeasingDevice::verified`]). The steering is left alone while a live device
/// leases one of those queues and no record shows that device to be `network`'s attachment
/// `pod`; with no live lessee (the device is gone: DEL runs after it is deleted, GC after its
/// netns died) it is released. A device's alias is never asked: a pod can rewrite it, and a pod
/// that deleted its own record and took another attachment's marker as its alias must not make
/// that attachment's DEL or GC skip the release (its queues would stay steered to a dead
/// XSKMAP). What this costs: a steering whose live lessee's record was removed is released only
/// once that device is gone.
pub(super) fn held_by_another(
    dp: &mut dyn Dataplane,
    x: &XdpConfig,
    master_ifindex: u32,
    devs: &[lease::LeasingDevice],
    network: &str,
    pod: &PodId,
) -> Result<Option<String>, DpError> {
    let steered: Vec<u32> = match dp.xdp_observe(x, master_ifindex, pod)? {
        Some(XdpObserved {
            handoff: Some(h), ..
        }) => h.queues.iter().map(|q| q.queue).collect(),
        _ => return Ok(None),
    };
    let holder = devs.iter().find(|d| {
        d.queues.iter().any(|(phys, _)| steered.contains(phys))
            && !d.verified.as_ref().is_some_and(|(m, _)| {
                m.network() == network
                    && m.container_id() == pod.container_id()
                    && m.ifname() == pod.ifname()
            })
    });
    Ok(holder.map(|d| match &d.verified {
        Some((m, _)) => format!(
            "its queues {steered:?} are leased by network {}'s live device (ifindex {})",
            m.network(),
            d.ifindex
        ),
        None => format!(
            "its queues {steered:?} are leased by a live device (ifindex {}) that no device-info record of network {network} describes; released once that device is gone",
            d.ifindex
        ),
    }))
}
