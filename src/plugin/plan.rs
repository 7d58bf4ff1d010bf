//! Planning: what goes on the pod side and the host side, from the IPAM result.

use std::net::IpAddr;

use crate::cni::{self, CniError, CniResult, IpCidr, Route};

use super::dataplane::{HostPlan, PlannedRoute, PodPlan};

/// Pod side: each address without its prefix route, a link route to its gateway, the subnet and
/// IPAM's routes via that gateway, and a default route via it unless IPAM gave one. Returns the
/// plan and the routes to report (all but the gateway's link route).
pub(super) fn pod_plan(ifname: &str, ipam: &CniResult) -> Result<(PodPlan, Vec<Route>), CniError> {
    let mut p = PodRoutes {
        plan: PodPlan {
            ifname: ifname.to_string(),
            ..Default::default()
        },
        reported: Vec::new(),
    };
    for ip in &ipam.ips {
        p.address(ip)?;
    }
    for r in &ipam.routes {
        p.ipam_route(r, ipam)?;
    }
    for ip in &ipam.ips {
        p.default_route(ip)?;
    }
    Ok((p.plan, p.reported))
}

/// The pod plan as it is built, and the routes to report.
struct PodRoutes {
    plan: PodPlan,
    reported: Vec<Route>,
}

impl PodRoutes {
    /// Adds a route unless the plan has it already; reports it if `report`.
    fn push(&mut self, dst: IpCidr, gw: Option<IpAddr>, report: bool) {
        let r = PlannedRoute {
            dst: dst.network(),
            gw,
        };
        if !self.plan.routes.contains(&r) {
            self.plan.routes.push(r);
            if report {
                self.reported.push(Route::new(dst.network(), gw));
            }
        }
    }

    /// The address, the link route to its gateway (not reported) and its subnet via the
    /// gateway (unless it is a host address).
    fn address(&mut self, ip: &cni::IpConfig) -> Result<(), CniError> {
        let gw = gateway_of(ip)?;
        self.plan.addrs.push(ip.address);
        let full = if gw.is_ipv4() { 32 } else { 128 };
        self.push(IpCidr::new(gw, full).unwrap(), None, false);
        if ip.address.prefix_len() < full {
            self.push(ip.address, Some(gw), true);
        }
        Ok(())
    }

    /// IPAM's route, via its gateway or that of IPAM's first address of its family.
    fn ipam_route(&mut self, r: &Route, ipam: &CniResult) -> Result<(), CniError> {
        let gw = match r.gw {
            Some(g) => g,
            None => ipam
                .ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == r.dst.is_ipv4())
                .map(gateway_of)
                .transpose()?
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!(
                            "IPAM route {} has no address of its family",
                            cidr_str(&r.dst)
                        ),
                        "",
                    )
                })?,
        };
        self.push(r.dst, Some(gw), true);
        Ok(())
    }

    /// A default route via the address's gateway, unless its family has one.
    fn default_route(&mut self, ip: &cni::IpConfig) -> Result<(), CniError> {
        let v4 = ip.address.is_ipv4();
        let has_default = self
            .plan
            .routes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.dst.is_ipv4() == v4);
        if !has_default {
            let any = if v4 {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            };
            self.push(IpCidr::new(any, 0).unwrap(), Some(gateway_of(ip)?), true);
        }
        Ok(())
    }
}

/// Host side: the gateways as host addresses (shared by every pod of the subnet, as ptp does)
/// and a host route to each pod address.
pub(super) fn host_plan(host_ifindex: u32, ipam: &CniResult, pod: &PodPlan) -> HostPlan {
    let mut gateways: Vec<IpAddr> = Vec::new();
    for ip in &ipam.ips {
        if let Ok(gw) = gateway_of(ip) {
            if !gateways.contains(&gw) {
                gateways.push(gw);
            }
        }
    }
    HostPlan {
        host_ifindex,
        gateways,
        pod_addrs: pod.addrs.iter().map(|a| a.addr()).collect(),
    }
}

/// IPAM's gateway, or the subnet's first address when it gave none (host-local always does).
pub(super) fn gateway_of(ip: &cni::IpConfig) -> Result<IpAddr, CniError> {
    if let Some(gw) = ip.gateway {
        return Ok(gw);
    }
    let net = ip.address.network();
    let first = match net.addr() {
        IpAddr::V4(a) => IpAddr::from(u32::from(a).wrapping_add(1).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(u128::from(a).wrapping_add(1).to_be_bytes()),
    };
    if first == ip.address.addr() {
        return Err(CniError::invalid_config(
            format!(
                "IPAM gave {} without a gateway, and its subnet's first address is the pod's own",
                cidr_str(&ip.address)
            ),
            "set a gateway in the ipam block",
        ));
    }
    Ok(first)
}

pub(super) fn cidr_str(c: &IpCidr) -> String {
    format!("{}/{}", c.addr(), c.prefix_len())
}
