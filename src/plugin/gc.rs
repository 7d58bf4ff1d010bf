//! GC: what this network holds for attachments the runtime no longer lists.

use std::collections::BTreeSet;

use crate::cni::CniError;
use crate::config::{LeaseConfig, XdpConfig};
use crate::kernel::link::Marker;
use crate::logging::Logger;

use super::dataplane::*;
use super::del::{held_by_another, release_steering};
use super::{
    devinfo, errcodes, host_routing_error, kernel_error, lease, steer, IpamDelegate, Request,
};

/// GC: every attachment of this network that the runtime no longer lists is deleted and its
/// addresses released — pairs found by their host side, single devices through the master's
/// leases — and stale device-info files are removed; then GC is forwarded to IPAM. Failures on
/// one orphan do not stop the others; they are all reported at the end.
pub fn cmd_gc(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<(), CniError> {
    let valid = req.conf.valid_attachments.as_ref().ok_or_else(|| {
        // Treating a missing list as empty would delete every pod on the node.
        CniError::invalid_config(
            "GC needs cni.dev/valid-attachments",
            "field cni.dev/valid-attachments is missing",
        )
    })?;
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let orphan = |m: &Marker| {
        m.network() == req.conf.name && !valid.contains(&(m.container_id(), m.ifname()))
    };
    let mut failures = Vec::new();
    let mut removed: Vec<Marker> = Vec::new();
    for m in dp
        .list_ours()
        .map_err(kernel_error)?
        .into_iter()
        .filter(|m| orphan(m))
    {
        log.info(format_args!("GC: removing orphan {m}"));
        match dp.delete(&m) {
            Ok(_) => removed.push(m),
            Err(e) => failures.push(format!("{m}: {e}")),
        }
    }
    if let Some(l) = &req.conf.lease {
        match lease::leasing_devices(dp, l, log) {
            Ok(devs) => {
                for d in devs {
                    // Only a device its record describes gets an IPAM release, under the
                    // record's identifiers; an alias the pod may have forged never reaches IPAM.
                    let (m, verified) = match (d.verified, d.alias) {
                        (Some((m, lease::RecordedPairing::Single)), _) => (m, true),
                        // Pairs are found by their host side above.
                        (Some((_, lease::RecordedPairing::Pair)), _) => continue,
                        (None, Some(m)) => (m, false),
                        (None, None) => continue,
                    };
                    if !orphan(&m) {
                        continue;
                    }
                    if verified {
                        log.info(format_args!(
                            "GC: removing orphan single device {m} (ifindex {} in netns id {:?})",
                            d.ifindex, d.netnsid
                        ));
                    } else {
                        log.warn(format_args!(
                            "GC: removing the device ifindex {} in netns id {:?}, whose alias claims orphan {m} and which no device-info record describes; its claim is not handed to IPAM",
                            d.ifindex, d.netnsid
                        ));
                    }
                    match dp.delete_remote(d.netnsid, d.ifindex) {
                        Ok(_) if verified => removed.push(m),
                        Ok(_) => {}
                        Err(e) => failures.push(format!("{m}: {e}")),
                    }
                }
            }
            Err(e) => failures.push(format!("devices leasing from {}: {e}", l.master)),
        }
    }
    if let (Some(l), Some(x)) = (&req.conf.lease, &req.conf.xdp) {
        gc_xdp(dp, l, x, &req.conf.name, &valid, &mut failures, log);
    }
    // After the orphans' devices (and so their leases) are gone: their rules, contexts and
    // unicast addresses are stale now, found by location and queue (see steer::sweep).
    if let Some(l) = req
        .conf
        .lease
        .as_ref()
        .filter(|l| l.steering.match_on != crate::config::SteerMatch::None)
    {
        match dp.master(&l.master) {
            Ok(Some(master)) => {
                if let Err(e) = steer::sweep(dp, l, &master, log) {
                    failures.push(format!("steering on {}: {e}", l.master));
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(format!("lease master {}: {e}", l.master)),
        }
    }
    // After the orphans' devices are gone: their addresses name dead primaries now.
    if let Some(h) = &req.conf.host_routing {
        if let Err(e) = dp.host_routing().gc(h, log) {
            failures.push(host_routing_error(e).to_string());
        }
    }
    if let Some(ipam) = ipam {
        for m in &removed {
            if let Err(e) = ipam.del(m.container_id(), m.ifname()) {
                failures.push(format!("{m}: IPAM DEL: {}", e.msg));
            }
        }
    }
    if let Some(l) = &req.conf.lease {
        // Files outlive devices that died with their netns without a DEL.
        match devinfo::list(&l.device_info_dir, &req.conf.name) {
            Ok(files) => {
                for m in files.into_iter().filter(|m| orphan(m)) {
                    // What the record names and the sweep cannot find by location (a MAC whose
                    // rule someone else deleted) goes with it.
                    if let Err(e) = release_steering(dp, l, &m, log) {
                        failures.push(format!("{m}: {}", e.msg));
                    }
                    log.info(format_args!("GC: removing the device-info file of {m}"));
                    if let Err(e) = devinfo::remove(&l.device_info_dir, &m) {
                        failures.push(e.to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(ipam) = ipam {
        let d = ipam.gc()?;
        log.info(format_args!("GC forwarded to IPAM: {d}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::plugin_specific(
            errcodes::KERNEL_FAILED,
            "GC could not remove every orphan",
            failures.join("; "),
        ))
    }
}

/// Pods steered on the master's dispatcher that the runtime no longer lists lose their queues
/// and pins (the last one detaches the dispatcher); a dead NIC's pins are swept. The pins carry
/// no network name and the runtime's list covers only this network, so a pin whose attachment
/// still has a live leasing device of another network on the same NIC is left alone.
fn gc_xdp(
    dp: &mut dyn Dataplane,
    l: &LeaseConfig,
    x: &XdpConfig,
    network: &str,
    valid: &BTreeSet<(&str, &str)>,
    failures: &mut Vec<String>,
    log: &Logger,
) {
    match dp.xdp_sweep(x) {
        Ok(swept) => {
            if !swept.removed.is_empty() {
                log.info(format_args!(
                    "GC: removed the pins of NICs that are gone: {:?}",
                    swept.removed
                ));
            }
            failures.extend(swept.refused);
        }
        Err(e) => failures.push(e.to_string()),
    }
    let master = match dp.master(&l.master) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => return failures.push(e.to_string()),
    };
    let pods = match dp.xdp_pods(x, master.ifindex) {
        Ok(p) => p,
        Err(e) => return failures.push(e.to_string()),
    };
    let devs = match lease::leasing_devices(dp, l, log) {
        Ok(devs) => devs,
        Err(e) => return failures.push(e.to_string()),
    };
    let mut orphans = Vec::new();
    for p in pods
        .into_iter()
        .filter(|p| !valid.contains(&(p.container_id(), p.ifname())))
    {
        // Kernel facts and this network's records only (see held_by_another).
        match held_by_another(dp, x, master.ifindex, &devs, network, &p) {
            Ok(Some(why)) => log.debug(format_args!("GC: the XDP steering of {p} stays: {why}")),
            Ok(None) => orphans.push(p),
            Err(e) => failures.push(format!("XDP steering of {p}: {e}")),
        }
    }
    for pod in orphans {
        log.info(format_args!(
            "GC: releasing the XDP steering of orphan {network}/{pod} on {}",
            master.name
        ));
        if let Err(e) = dp.xdp_release(x, master.ifindex, &pod) {
            failures.push(format!("XDP steering of {pod}: {e}"));
        }
    }
}
