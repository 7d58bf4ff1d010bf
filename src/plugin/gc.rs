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
    let mut gc = Gc {
        network: &req.conf.name,
        valid: valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect(),
        failures: Vec::new(),
        removed: Vec::new(),
        log,
    };
    gc.pairs(dp)?;
    if let Some(l) = &req.conf.lease {
        gc.single_devices(dp, l);
    }
    if let (Some(l), Some(x)) = (&req.conf.lease, &req.conf.xdp) {
        gc_xdp(dp, l, x, gc.network, &gc.valid, &mut gc.failures, log);
    }
    // After the orphans' devices (and so their leases) are gone: their rules, contexts and
    // unicast addresses are stale now, found by location and queue (see steer::sweep).
    if let Some(l) = req
        .conf
        .lease
        .as_ref()
        .filter(|l| l.steering.match_on != crate::config::SteerMatch::None)
    {
        gc.steering(dp, l);
    }
    // After the orphans' devices are gone: their addresses name dead primaries now.
    if let Some(h) = &req.conf.host_routing {
        if let Err(e) = dp.host_routing().gc(h, log) {
            gc.failures.push(host_routing_error(e).to_string());
        }
    }
    if let Some(ipam) = ipam {
        gc.release_addresses(ipam);
    }
    if let Some(l) = &req.conf.lease {
        gc.device_info(dp, l);
    }
    if let Some(ipam) = ipam {
        let d = ipam.gc()?;
        log.info(format_args!("GC forwarded to IPAM: {d}"));
    }
    if gc.failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::plugin_specific(
            errcodes::KERNEL_FAILED,
            "GC could not remove every orphan",
            gc.failures.join("; "),
        ))
    }
}

/// One GC: what the runtime lists, and what the steps removed and failed to.
struct Gc<'a> {
    network: &'a str,
    valid: BTreeSet<(&'a str, &'a str)>,
    /// Deleted orphans whose addresses IPAM releases: only identifiers the kernel or a record
    /// vouches for, never an alias a pod could have written.
    removed: Vec<Marker>,
    failures: Vec<String>,
    log: &'a Logger,
}

impl Gc<'_> {
    fn orphan(&self, m: &Marker) -> bool {
        m.network() == self.network && !self.valid.contains(&(m.container_id(), m.ifname()))
    }

    /// Pairs, found by the marker on their host side (in the node netns, out of the pod's reach).
    fn pairs(&mut self, dp: &mut dyn Dataplane) -> Result<(), CniError> {
        let mut ours = dp.list_ours().map_err(kernel_error)?;
        ours.retain(|m| self.orphan(m));
        for m in ours {
            self.log.info(format_args!("GC: removing orphan {m}"));
            match dp.delete(&m) {
                Ok(_) => self.removed.push(m),
                Err(e) => self.failures.push(format!("{m}: {e}")),
            }
        }
        Ok(())
    }

    /// Single devices, found through the master's leases.
    fn single_devices(&mut self, dp: &mut dyn Dataplane, l: &LeaseConfig) {
        let devs = match lease::leasing_devices(dp, l, self.log) {
            Ok(devs) => devs,
            Err(e) => {
                return self
                    .failures
                    .push(format!("devices leasing from {}: {e}", l.master))
            }
        };
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
            if !self.orphan(&m) {
                continue;
            }
            if verified {
                self.log.info(format_args!(
                    "GC: removing orphan single device {m} (ifindex {} in netns id {:?})",
                    d.ifindex, d.netnsid
                ));
            } else {
                self.log.warn(format_args!(
                    "GC: removing the device ifindex {} in netns id {:?}, whose alias claims orphan {m} and which no device-info record describes; its claim is not handed to IPAM",
                    d.ifindex, d.netnsid
                ));
            }
            match dp.delete_remote(d.netnsid, d.ifindex) {
                Ok(_) if verified => self.removed.push(m),
                Ok(_) => {}
                Err(e) => self.failures.push(format!("{m}: {e}")),
            }
        }
    }

    fn steering(&mut self, dp: &mut dyn Dataplane, l: &LeaseConfig) {
        match dp.master(&l.master) {
            Ok(Some(master)) => {
                if let Err(e) = steer::sweep(dp, l, &master, self.log) {
                    self.failures.push(format!("steering on {}: {e}", l.master));
                }
            }
            Ok(None) => {}
            Err(e) => self
                .failures
                .push(format!("lease master {}: {e}", l.master)),
        }
    }

    fn release_addresses(&mut self, ipam: &dyn IpamDelegate) {
        for m in &self.removed {
            if let Err(e) = ipam.del(m.container_id(), m.ifname()) {
                self.failures.push(format!("{m}: IPAM DEL: {}", e.msg));
            }
        }
    }

    /// Files outlive devices that died with their netns without a DEL.
    fn device_info(&mut self, dp: &mut dyn Dataplane, l: &LeaseConfig) {
        let mut files = match devinfo::list(&l.device_info_dir, self.network) {
            Ok(files) => files,
            Err(e) => return self.failures.push(e.to_string()),
        };
        files.retain(|m| self.orphan(m));
        for m in files {
            // What the record names and the sweep cannot find by location (a MAC whose
            // rule someone else deleted) goes with it.
            if let Err(e) = release_steering(dp, l, &m, self.log) {
                self.failures.push(format!("{m}: {}", e.msg));
            }
            self.log
                .info(format_args!("GC: removing the device-info file of {m}"));
            if let Err(e) = devinfo::remove(&l.device_info_dir, &m) {
                self.failures.push(e.to_string());
            }
        }
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
