//! CHECK: the attachment compared with `prevResult`, its device-info record and the kernel.

use std::path::Path;

use nix::errno::Errno;

use crate::cni::{CniError, CniResult, IpCidr, IpConfig};
use crate::config::{LeaseConfig, Pairing, XdpConfig};
use crate::kernel::link::Marker;

use super::dataplane::*;
use super::plan::cidr_str;
use super::{
    devinfo, dp_error, errcodes, host_routing_error, kernel_error, pod_id, steer, IpamDelegate,
    Request,
};

/// CHECK: the attachment must still look like `prevResult` says — the device(s) exist and are
/// netkit in the configured mode, every address and route is in place — every lease recorded
/// in the device-info file still holds on the master, and IPAM agrees.
pub fn cmd_check(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
) -> Result<(), CniError> {
    let marker = req.marker()?;
    let prev = req.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("CHECK needs prevResult", "field prevResult is missing")
    })?;
    let obs = dp
        .observe(&marker, Some(req.netns()), req.ifname())
        .map_err(|e| dp_error(e, req))?;
    let fail = |what: String| {
        CniError::plugin_specific(errcodes::CHECK_FAILED, what, format!("attachment {marker}"))
    };
    let pod_ifindex = check_devices(req, &marker, &obs).map_err(fail)?;
    let ours = our_addresses(req, prev);
    check_addresses(req, &marker, &ours, &obs).map_err(fail)?;
    check_routes(req, prev, &obs).map_err(fail)?;
    if let Some(l) = &req.conf.lease {
        let info = check_leases(req, dp, l, &marker, pod_ifindex).map_err(fail)?;
        if let Some(x) = &req.conf.xdp {
            check_xdp(dp, x, &marker, &info).map_err(fail)?;
        }
        if let Some(st) = &info.steering {
            let master = dp
                .master(&l.master)
                .map_err(kernel_error)?
                .ok_or_else(|| fail(format!("lease master {} is gone", l.master)))?;
            let physical: Vec<u32> = info.queues.iter().map(|q| q.physical).collect();
            steer::check(dp, l, &master, st, &physical)?;
        }
    }
    if let Some(h) = &req.conf.host_routing {
        let ips: Vec<_> = ours.iter().map(|ip| ip.address.addr()).collect();
        dp.host_routing()
            .check(h, &marker.host_ifname(), &ips)
            .map_err(host_routing_error)?
            .map_err(fail)?;
    }
    if let Some(ipam) = ipam {
        ipam.check()?;
    }
    Ok(())
}

/// The host device of a pair, marked as this attachment, and the pod interface, both netkit,
/// the pod's in the configured mode (and marked, for a single device, which has no host side to
/// carry the marker). Returns the pod interface's ifindex.
fn check_devices(req: &Request, marker: &Marker, obs: &Observed) -> Result<u32, String> {
    let ifname = req.ifname();
    let single = req.conf.pairing == Pairing::Single;
    let host_name = marker.host_ifname();
    if !single {
        let host = obs
            .host
            .as_ref()
            .ok_or_else(|| format!("host device {host_name} is missing"))?;
        if !host.is_netkit {
            return Err(format!("host device {host_name} is not a netkit device"));
        }
        if host.marker.as_ref() != Some(marker) {
            return Err(format!("host device {host_name} is not marked as {marker}"));
        }
    }
    let pod = obs
        .pod
        .as_ref()
        .ok_or_else(|| format!("pod interface {ifname} is missing"))?;
    if !pod.is_netkit {
        return Err(format!("pod interface {ifname} is not a netkit device"));
    }
    if single && pod.marker.as_ref() != Some(marker) {
        return Err(format!("pod interface {ifname} is not marked as {marker}"));
    }
    if pod.mode != Some(req.conf.mode) {
        return Err(format!(
            "pod interface {ifname} is in mode {:?}, config says {:?}",
            pod.mode, req.conf.mode
        ));
    }
    Ok(pod.ifindex)
}

/// The addresses `prevResult` gives this attachment's pod interface: those whose interface is
/// this ifname in this sandbox (a chained result also lists other plugins' addresses).
fn our_addresses<'p>(req: &Request, prev: &'p CniResult) -> Vec<&'p IpConfig> {
    let ifname = req.ifname();
    let sandbox = req.netns().display().to_string();
    let is_ours = |i: Option<usize>| {
        i.and_then(|i| prev.interfaces.get(i)).is_some_and(|itf| {
            itf.name == ifname && itf.sandbox.as_deref() == Some(sandbox.as_str())
        })
    };
    prev.ips.iter().filter(|ip| is_ours(ip.interface)).collect()
}

/// Each address on the pod interface and, for a pair, the host route to it.
fn check_addresses(
    req: &Request,
    marker: &Marker,
    ours: &[&IpConfig],
    obs: &Observed,
) -> Result<(), String> {
    let ifname = req.ifname();
    let single = req.conf.pairing == Pairing::Single;
    for ip in ours {
        if !obs.pod_addrs.contains(&ip.address) {
            return Err(format!(
                "address {} is missing on {ifname}",
                cidr_str(&ip.address)
            ));
        }
        if single {
            continue;
        }
        let host_route = IpCidr::new(
            ip.address.addr(),
            if ip.address.is_ipv4() { 32 } else { 128 },
        )
        .unwrap();
        if !obs.host_routes.contains(&host_route) {
            return Err(format!(
                "host route to {} via {} is missing",
                ip.address.addr(),
                marker.host_ifname()
            ));
        }
    }
    Ok(())
}

/// Each route of `prevResult` in the pod, through the same gateway when it names one.
fn check_routes(req: &Request, prev: &CniResult, obs: &Observed) -> Result<(), String> {
    // A single device installs no routes, so any in prevResult belong to other plugins.
    if req.conf.pairing == Pairing::Single {
        return Ok(());
    }
    for r in &prev.routes {
        let dst = r.dst.network();
        let found = obs
            .pod_routes
            .iter()
            .any(|o| o.dst == dst && (r.gw.is_none() || o.gw == r.gw));
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(format!(
                "route {}{via} is missing in the pod",
                cidr_str(&r.dst)
            ));
        }
    }
    Ok(())
}

/// The master's dispatcher must be attached, and exactly the queues the device-info file records
/// must be steered into this attachment's XSKMAP at their virtual queues.
fn check_xdp(
    dp: &mut dyn Dataplane,
    x: &XdpConfig,
    marker: &Marker,
    info: &devinfo::LeaseInfo,
) -> Result<(), String> {
    let pod = pod_id(marker).map_err(|e| e.msg)?;
    let master = &info.master;
    let obs = dp
        .xdp_observe(x, master.ifindex, &pod)
        .map_err(|e| format!("cannot read the XDP dispatcher of {}: {e}", master.name))?
        .ok_or_else(|| {
            format!(
                "no XDP dispatcher is attached to {} (under {})",
                master.name,
                x.bpffs.display()
            )
        })?;
    let handoff = obs.handoff.ok_or_else(|| {
        format!(
            "{marker} has no XSKMAP on the dispatcher of {} (link {})",
            master.name, obs.link_id
        )
    })?;
    let mut want: Vec<(u32, u32)> = info
        .queues
        .iter()
        .map(|q| (q.physical, q.virtual_id))
        .collect();
    let mut got: Vec<(u32, u32)> = handoff.queues.iter().map(|q| (q.queue, q.vqueue)).collect();
    want.sort_unstable();
    got.sort_unstable();
    if want != got {
        return Err(format!("the dispatcher of {} steers {got:?} (physical, virtual) to {marker}, the device-info file says {want:?}", master.name));
    }
    if let Some(recorded) = &info.xdp {
        if Path::new(&recorded.xsk_map) != handoff.xskmap_pin {
            return Err(format!(
                "XSKMAP pin is {}, the device-info file says {}",
                handoff.xskmap_pin.display(),
                recorded.xsk_map
            ));
        }
    }
    Ok(())
}

/// Every lease the device-info file records must still be on the master, pointing at this
/// pod's device in this pod's netns. Read with queue-get on each physical queue. Returns the
/// file's lease section.
fn check_leases(
    req: &Request,
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    marker: &Marker,
    pod_ifindex: u32,
) -> Result<devinfo::LeaseInfo, String> {
    let path = devinfo::path_for(&conf.device_info_dir, marker);
    let info = devinfo::read(&conf.device_info_dir, marker)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "device-info file {} is missing, so the leases cannot be checked",
                path.display()
            )
        })?
        .lease;
    let master = dp
        .master(&conf.master)
        .map_err(|e| format!("cannot look up lease master {}: {e}", conf.master))?
        .ok_or_else(|| format!("lease master {} is gone", conf.master))?;
    // The pod's nsid is read after the queues, never before: the node netns may have no id for
    // the pod netns until the kernel allocates one to name it in a lease reply.
    let mut pod_nsid = None;
    for (i, q) in info.queues.iter().enumerate() {
        let got = match dp.master_queue(master.ifindex, q.physical) {
            Ok(got) => got,
            Err(e) if e.netdev_errno() == Some(Errno::ENOENT) => {
                return Err(format!(
                    "queue {} of {}: cannot read it while {} is down ({e})",
                    q.physical, master.name, master.name
                ))
            }
            Err(e) if e.netdev_errno() == Some(Errno::EINVAL) => {
                return Err(format!(
                    "queue {} of {} no longer exists ({e})",
                    q.physical, master.name
                ))
            }
            Err(e) => return Err(format!("queue {} of {}: {e}", q.physical, master.name)),
        };
        let Some(l) = got.lease else {
            return Err(format!(
                "lease of queue {} of {} is gone",
                q.physical, master.name
            ));
        };
        if i == 0 {
            pod_nsid = dp.nsid_of(req.netns()).map_err(|e| e.to_string())?;
        }
        if l.ifindex != pod_ifindex || l.netns_id != pod_nsid || l.queue.id != q.virtual_id {
            return Err(format!(
                "queue {} of {} is leased to ifindex {} queue {} in netns id {:?}, not to {} (ifindex {pod_ifindex}) queue {} in netns id {pod_nsid:?}",
                q.physical,
                master.name,
                l.ifindex,
                l.queue.id,
                l.netns_id,
                marker.ifname(),
                q.virtual_id
            ));
        }
    }
    Ok(info)
}
