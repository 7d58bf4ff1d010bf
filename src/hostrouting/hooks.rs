//! The plugin's calls into host routing, with CNI error mapping, so `src/plugin/mod.rs` only
//! needs one line per command.

use std::net::IpAddr;

use crate::cni::{codes, CniError};
use crate::logging::Logger;

use super::{sweep, Attach, HostRoutingConfig, HostRoutingError, Uplink};

/// The CNI error for `e`: a lock held past its deadline is 11, a bypass set that disagrees with
/// the uplink's is 7 (the config is at fault), everything else 111.
pub fn cni_error(e: HostRoutingError) -> CniError {
    let code = if e.is_lock_timeout() {
        codes::TRY_AGAIN_LATER
    } else if matches!(e, HostRoutingError::BypassConflict { .. }) {
        codes::INVALID_CONFIG
    } else {
        codes::HOST_ROUTING_FAILED
    };
    let msg = match &e {
        HostRoutingError::BypassConflict { uplink, want, .. } => format!(
            "invalid value [{want}] for field hostRouting.bypass: uplink {uplink} is shared with another bypass set"
        ),
        HostRoutingError::NoUplink { name } => {
            format!("invalid value {name:?} for field hostRouting.uplink: no such device")
        }
        _ => "BPF host routing failed".to_string(),
    };
    CniError::new(code, msg, e.to_string())
}

/// ADD, after the pair and its routes exist and before the result: route `ips` to the pod's
/// primary `primary_ifindex` and attach the egress program to its pair (attaching the uplink's
/// tcx program first if this is its first pod).
pub fn add(
    conf: &HostRoutingConfig,
    primary_ifindex: u32,
    ips: &[IpAddr],
    log: &Logger,
) -> Result<(), CniError> {
    let (up, how) = Uplink::attach_or_open(conf).map_err(cni_error)?;
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
        return Err(cni_error(e));
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
pub fn release(
    conf: &HostRoutingConfig,
    primary_ifindex: Option<u32>,
    log: &Logger,
) -> Result<(), CniError> {
    let Some(up) = Uplink::open(&conf.bpffs, &conf.uplink).map_err(cni_error)? else {
        // No uplink (or a dead one): sweep its directory so nothing leaks.
        let removed = sweep(&conf.bpffs).map_err(cni_error)?;
        if !removed.is_empty() {
            log.info(format_args!("host routing: swept {removed:?}"));
        }
        return Ok(());
    };
    let mut n = 0;
    if let Some(ifindex) = primary_ifindex {
        n = up.remove_pod(ifindex).map_err(cni_error)?;
    }
    n += up.sweep_dead().map_err(cni_error)?;
    let dir = up.dir().to_path_buf();
    if up.detach_if_unused().map_err(cni_error)? {
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
) -> Result<Result<(), String>, CniError> {
    let Some(up) = Uplink::open(&conf.bpffs, &conf.uplink).map_err(cni_error)? else {
        return Ok(Err(format!(
            "uplink {} has no host-routing program attached",
            conf.uplink
        )));
    };
    let Some(ifindex) = super::ifindex_of(host_ifname) else {
        return Ok(Err(format!("host device {host_ifname} is missing")));
    };
    up.verify_pod(ifindex, ips).map_err(cni_error)
}

/// GC, after orphan devices are deleted: addresses of primaries that no longer exist go, and
/// uplinks without pods (or whose NIC is gone) are detached and their pins removed.
pub fn gc(conf: &HostRoutingConfig, log: &Logger) -> Result<(), CniError> {
    let removed = sweep(&conf.bpffs).map_err(cni_error)?;
    if !removed.is_empty() {
        log.info(format_args!("GC: host routing removed {removed:?}"));
    }
    Ok(())
}
