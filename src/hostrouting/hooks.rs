//! What the plugin's verbs ask of host routing, one function per verb, each a sequence of
//! [`Uplink`] steps. The plugin reaches these only through its host-routing seam
//! (`plugin::dataplane::HostRoutingOps`), which maps the errors to CNI codes.

use std::net::IpAddr;

use crate::logging::Logger;

use super::{sweep, Attach, HostRoutingConfig, Result, Uplink};

/// ADD, after the pair and its routes exist and before the result: route `ips` to the pod's
/// primary `primary_ifindex` and attach the egress program to its pair (attaching the uplink's
/// tcx program first if this is its first pod).
pub fn add(
    conf: &HostRoutingConfig,
    primary_ifindex: u32,
    ips: &[IpAddr],
    log: &Logger,
) -> Result<()> {
    let (up, how) = Uplink::attach_or_open(conf)?;
    if how == Attach::Attached {
        log.info(format_args!(
            "host routing: tcx ingress attached to {} (ifindex {}), pins in {}",
            conf.uplink,
            up.ifindex(),
            up.dir().display()
        ));
    }
    if let Err(e) = up.add_pod(primary_ifindex, ips) {
        // Leave no tcx program behind for an uplink without pods.
        let _ = up.detach_if_unused();
        return Err(e);
    }
    log.debug(format_args!(
        "host routing: {ips:?} -> ifindex {primary_ifindex} via {}",
        conf.uplink
    ));
    Ok(())
}

/// DEL (and ADD's rollback), before the device goes: remove the pod's addresses (those routed
/// to `primary_ifindex`, the attachment's own primary: `None` when it has none, or when the
/// device at its name is another network's; addresses of primaries that no longer exist go
/// too) and detach the uplink's program if no pod is left. An uplink that is gone or was never
/// set up is fine.
pub fn release(conf: &HostRoutingConfig, primary_ifindex: Option<u32>, log: &Logger) -> Result<()> {
    let Some(up) = Uplink::open(&conf.bpffs, &conf.uplink)? else {
        // No uplink (or a dead one): sweep its directory so nothing leaks.
        let removed = sweep(&conf.bpffs)?;
        if !removed.is_empty() {
            log.info(format_args!("host routing: swept {removed:?}"));
        }
        return Ok(());
    };
    let mut n = 0;
    if let Some(ifindex) = primary_ifindex {
        n = up.remove_pod(ifindex)?;
    }
    n += up.sweep_dead()?;
    let dir = up.dir().to_path_buf();
    if up.detach_if_unused()? {
        log.info(format_args!(
            "host routing: last pod gone, {} detached and {} removed",
            conf.uplink,
            dir.display()
        ));
    }
    log.debug(format_args!("host routing: {n} address(es) removed"));
    Ok(())
}

/// CHECK: `Err(reason)` when the pod's addresses, the egress program or the tcx program are not
/// as ADD left them.
pub fn check(
    conf: &HostRoutingConfig,
    host_ifname: &str,
    ips: &[IpAddr],
) -> Result<std::result::Result<(), String>> {
    let Some(up) = Uplink::open(&conf.bpffs, &conf.uplink)? else {
        return Ok(Err(format!(
            "uplink {} has no host-routing program attached",
            conf.uplink
        )));
    };
    let Some(ifindex) = super::ifindex_of(host_ifname) else {
        return Ok(Err(format!("host device {host_ifname} is missing")));
    };
    up.verify_pod(ifindex, ips)
}

/// GC, after orphan devices are deleted: addresses of primaries that no longer exist go, and
/// uplinks without pods (or whose NIC is gone) are detached and their pins removed.
pub fn gc(conf: &HostRoutingConfig, log: &Logger) -> Result<()> {
    let removed = sweep(&conf.bpffs)?;
    if !removed.is_empty() {
        log.info(format_args!("GC: host routing removed {removed:?}"));
    }
    Ok(())
}
