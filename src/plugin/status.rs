//! STATUS: whether an ADD could succeed on this node now.

use crate::cni::CniError;
use crate::config::LeaseConfig;
use crate::logging::Logger;

use super::dataplane::*;
use super::{kernel_error, lease, IpamDelegate, Request};

/// STATUS: 50 when nothing could be added — the kernel has no netkit, or (with a lease block)
/// cannot lease queues, the master is missing, or its pool has no free queue left — else IPAM's
/// answer.
pub fn cmd_status(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<(), CniError> {
    if !dp.netkit_available().map_err(kernel_error)? {
        return Err(CniError::plugin_not_available(
            "this kernel has no netkit devices (needs Linux >= 6.7 with CONFIG_NETKIT)",
            "probe: RTM_NEWLINK kind netkit answered \"Unknown device type\"",
        ));
    }
    if let Some(l) = &req.conf.lease {
        lease_status(dp, l, log)?;
    }
    if req.conf.xdp.is_some() {
        // Not a reason to refuse pods (receive steering works), but the operator must know
        // that nothing on the node can filter what pods send through AF_XDP.
        let hook = crate::xdp::egress::probe();
        match hook {
            crate::xdp::egress::EgressHook::Available(_) => {
                log.info(format_args!("STATUS: {}", hook.describe()))
            }
            _ => log.warn(format_args!("STATUS: {}", hook.describe())),
        }
    }
    if let Some(ipam) = ipam {
        let d = ipam.status()?;
        log.debug(format_args!("STATUS forwarded to IPAM: {d}"));
    }
    Ok(())
}

fn lease_status(dp: &mut dyn Dataplane, conf: &LeaseConfig, log: &Logger) -> Result<(), CniError> {
    let unavailable = |msg: String, details: String| CniError::plugin_not_available(msg, details);
    match dp.lease_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(unavailable(
                "this kernel cannot lease NIC queues (needs Linux >= 7.1 with netdev queue-create)"
                    .into(),
                "the netdev generic netlink family has no queue-create operation".into(),
            ))
        }
        Err(e) if e.is_lease_unsupported() => {
            return Err(unavailable(
                "this kernel cannot lease NIC queues (needs Linux >= 7.1 with netdev queue-create)"
                    .into(),
                e.to_string(),
            ))
        }
        Err(e) => return Err(kernel_error(e)),
    }
    let master = match dp.master(&conf.master).map_err(kernel_error)? {
        Some(m) => m,
        None => {
            return Err(unavailable(
                format!(
                    "lease master {} does not exist in the node's network namespace",
                    conf.master
                ),
                "field lease.master".into(),
            ))
        }
    };
    let view = lease::nic_view(dp, &master)?;
    if !view.known {
        log.info(format_args!(
            "STATUS: {} is down, its queue occupancy is unknown",
            master.name
        ));
        return Ok(());
    }
    let pool: Vec<u32> = (0..view.rx_queues).filter(|q| conf.allows(*q)).collect();
    let free = pool
        .iter()
        .filter(|q| !view.busy.iter().any(|(b, _)| b == *q))
        .count();
    log.debug(format_args!(
        "STATUS: {free} of {} pool queues free on {}",
        pool.len(),
        master.name
    ));
    if free == 0 {
        return Err(unavailable(
            format!(
                "no free RX queue left in the lease pool of {} ({})",
                master.name,
                conf.pool_description()
            ),
            format!("{} pool queue(s), all busy", pool.len()),
        ));
    }
    Ok(())
}
