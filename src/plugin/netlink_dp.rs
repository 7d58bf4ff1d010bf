//! [`Dataplane`] over rtnetlink: the implementation the binary uses.
//!
//! The host side is driven from the plugin's own netns (the runtime's host netns) on a Tokio
//! current-thread runtime; the pod side from a dedicated thread inside the pod netns
//! ([`NetNs::run_rtnl`]), so the process's main thread never changes namespace. Nothing here
//! dumps all links on ADD's path: everything is addressed by name or index.

use std::net::IpAddr;
use std::path::Path;

use netlink_packet_route::link::LinkAttribute;

use super::dataplane::*;
use crate::addr::{self, AddressSpec, IpFamily, IpPrefix};
use crate::cni::IpCidr;
use crate::config::{Mode, Policy, Scrub};
use crate::link::{self, LinkInfo, Marker, NetkitMode, NetkitPair, NetkitPolicy, NetkitScrub};
use crate::netns::NetNs;
use crate::route::{self, RouteScope};
use crate::rtnl::{Deletion, Rtnl};
use crate::sysctl::{self, SysctlKey};

pub struct NetlinkDataplane {
    rt: tokio::runtime::Runtime,
    rtnl: Rtnl,
}

impl NetlinkDataplane {
    /// Connects to rtnetlink in the calling thread's netns (the node's host netns).
    pub fn new() -> Result<Self, DpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| DpError::Other(format!("cannot start the netlink runtime: {e}")))?;
        let rtnl = rt.block_on(async {
            let (rtnl, conn) = Rtnl::connect().map_err(|source| DpError::Rtnl { step: "connect to rtnetlink", source })?;
            tokio::spawn(conn);
            Ok::<_, DpError>(rtnl)
        })?;
        Ok(NetlinkDataplane { rt, rtnl })
    }
}

fn open_netns(path: &Path) -> Result<NetNs, DpError> {
    NetNs::open(path).map_err(|source| DpError::Netns { path: path.to_path_buf(), source })
}

fn nk_mode(m: Mode) -> NetkitMode {
    match m {
        Mode::L2 => NetkitMode::L2,
        Mode::L3 => NetkitMode::L3,
    }
}

fn nk_policy(p: Policy) -> NetkitPolicy {
    match p {
        Policy::Forward => NetkitPolicy::Forward,
        Policy::Blackhole => NetkitPolicy::Blackhole,
    }
}

fn nk_scrub(s: Scrub) -> NetkitScrub {
    match s {
        Scrub::Default => NetkitScrub::Default,
        Scrub::None => NetkitScrub::None,
    }
}

/// The device's MAC as CNI results spell it; L3 netkit devices have none.
fn mac_of(info: &LinkInfo) -> Option<String> {
    info.message.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 && b.iter().any(|x| *x != 0) => {
            Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
        }
        _ => None,
    })
}

fn observed(info: &LinkInfo) -> ObservedLink {
    ObservedLink {
        ifindex: info.index,
        is_netkit: info.is_netkit(),
        mode: info.netkit.as_ref().and_then(|n| n.mode).and_then(|m| match m {
            NetkitMode::L2 => Some(Mode::L2),
            NetkitMode::L3 => Some(Mode::L3),
            NetkitMode::Other(_) => None,
        }),
        marker: info.marker(),
    }
}

fn prefix(c: &IpCidr) -> Result<IpPrefix, DpError> {
    IpPrefix::new(c.addr(), c.prefix_len()).map_err(|source| DpError::Addr { step: "address", source })
}

fn host_prefix(ip: IpAddr) -> IpPrefix {
    IpPrefix::host(ip)
}

fn cidr(p: &IpPrefix) -> IpCidr {
    IpCidr::new(p.addr(), p.prefix_len()).expect("a kernel prefix length is valid")
}

async fn add_route(rtnl: &Rtnl, ifindex: u32, r: &PlannedRoute) -> Result<(), DpError> {
    let step = "add route";
    let dst = IpPrefix::new(r.dst.addr(), r.dst.prefix_len())
        .map(|p| p.network())
        .map_err(|source| DpError::Addr { step, source })?;
    let mut route = route::Route::new(dst).map_err(|source| DpError::Route { step, source })?.dev(ifindex);
    route = match r.gw {
        Some(gw) => route.via(gw).map_err(|source| DpError::Route { step, source })?,
        None => route.scope(RouteScope::Link),
    };
    route::add_route(rtnl, &route).await.map_err(|source| DpError::Route { step, source })
}

impl Dataplane for NetlinkDataplane {
    fn validate_netns(&mut self, path: &Path) -> Result<(), DpError> {
        open_netns(path).map(drop)
    }

    fn create_pair(&mut self, spec: &PairSpec) -> Result<Created, DpError> {
        let ns = open_netns(&spec.netns)?;
        let step = "create netkit pair";
        let mut pair = NetkitPair::for_attachment(&spec.marker, std::os::fd::AsFd::as_fd(&ns))
            .mode(nk_mode(spec.mode))
            .policy(nk_policy(spec.policy))
            .peer_policy(nk_policy(spec.peer_policy))
            .scrub(nk_scrub(spec.scrub))
            .peer_scrub(nk_scrub(spec.peer_scrub))
            .host_up(true);
        if let Some(h) = spec.headroom {
            pair = pair.headroom(h);
        }
        if let Some(t) = spec.tailroom {
            pair = pair.tailroom(t);
        }
        if let Some(m) = spec.mtu {
            pair = pair.mtu(m);
        }
        let host = self
            .rt
            .block_on(link::create_marked_pair(&self.rtnl, &pair, &spec.marker))
            .map_err(|source| DpError::Link { step, source })?;
        let ifname = spec.marker.ifname().to_string();
        let peer = ns
            .run_rtnl(|rtnl| async move { link::get_link_by_name(&rtnl, &ifname).await })
            .map_err(|source| DpError::Netns { path: spec.netns.clone(), source })?
            .map_err(|source| DpError::Link { step: "read back the pod interface", source })?;
        Ok(Created {
            host_ifindex: host.index,
            host_ifname: host.name.clone(),
            host_mac: mac_of(&host),
            pod_ifindex: peer.index,
            pod_mac: mac_of(&peer),
        })
    }

    fn configure_pod(&mut self, netns: &Path, plan: &PodPlan) -> Result<(), DpError> {
        let ns = open_netns(netns)?;
        let plan = plan.clone();
        ns.run_rtnl(|rtnl| async move {
            let pod = link::get_link_by_name(&rtnl, &plan.ifname)
                .await
                .map_err(|source| DpError::Link { step: "find the pod interface", source })?;
            for a in &plan.addrs {
                // No prefix route: the pod reaches its subnet through the gateway like everything
                // else (in L2 mode an on-link subnet route would ARP for other pods, which nobody
                // answers), and the routes below say so explicitly.
                let mut spec = AddressSpec::new(pod.index, prefix(a)?).noprefixroute();
                if !a.is_ipv4() {
                    spec = spec.nodad();
                }
                addr::add_address(&rtnl, &spec)
                    .await
                    .map_err(|source| DpError::Addr { step: "add pod address", source })?;
            }
            link::set_link_up(&rtnl, pod.index, true)
                .await
                .map_err(|source| DpError::Link { step: "bring the pod interface up", source })?;
            for r in &plan.routes {
                add_route(&rtnl, pod.index, r).await?;
            }
            Ok(())
        })
        .map_err(|source| DpError::Netns { path: netns.to_path_buf(), source })?
    }

    fn configure_host(&mut self, plan: &HostPlan) -> Result<(), DpError> {
        let rtnl = &self.rtnl;
        self.rt.block_on(async {
            for gw in &plan.gateways {
                let mut spec = AddressSpec::new(plan.host_ifindex, host_prefix(*gw));
                if gw.is_ipv6() {
                    spec = spec.nodad();
                }
                addr::add_address(rtnl, &spec)
                    .await
                    .map_err(|source| DpError::Addr { step: "add gateway address on the host side", source })?;
            }
            for ip in &plan.pod_addrs {
                let r = PlannedRoute { dst: cidr(&host_prefix(*ip)), gw: None };
                add_route(rtnl, plan.host_ifindex, &r).await?;
            }
            Ok::<_, DpError>(())
        })?;
        let step = "enable forwarding";
        if plan.pod_addrs.iter().any(|a| a.is_ipv4()) {
            sysctl::ensure(&SysctlKey::ipv4_forward(), "1").map_err(|source| DpError::Sysctl { step, source })?;
        }
        if plan.pod_addrs.iter().any(|a| a.is_ipv6()) {
            sysctl::ensure(&SysctlKey::ipv6_forwarding(), "1").map_err(|source| DpError::Sysctl { step, source })?;
        }
        Ok(())
    }

    fn delete(&mut self, marker: &Marker) -> Result<Deletion, DpError> {
        self.rt
            .block_on(link::delete_attachment(&self.rtnl, marker))
            .map_err(|source| DpError::Link { step: "delete the host device", source })
    }

    fn observe(&mut self, marker: &Marker, netns: Option<&Path>, ifname: &str) -> Result<Observed, DpError> {
        let mut out = Observed::default();
        let rtnl = &self.rtnl;
        let host_name = marker.host_ifname();
        self.rt.block_on(async {
            match link::get_link_by_name(rtnl, &host_name).await {
                Ok(h) => {
                    for fam in [IpFamily::V4, IpFamily::V6] {
                        let routes = route::list_routes(rtnl, fam, h.index)
                            .await
                            .map_err(|source| DpError::Route { step: "list host routes", source })?;
                        out.host_routes.extend(routes.iter().map(|r| cidr(&r.dst)));
                    }
                    out.host = Some(observed(&h));
                }
                Err(e) if e.is_not_found() => {}
                Err(source) => return Err(DpError::Link { step: "find the host device", source }),
            }
            Ok(())
        })?;
        let Some(netns) = netns else { return Ok(out) };
        let ns = open_netns(netns)?;
        let ifname = ifname.to_string();
        let pod = ns
            .run_rtnl(|rtnl| async move {
                let pod = match link::get_link_by_name(&rtnl, &ifname).await {
                    Ok(p) => p,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(source) => return Err(DpError::Link { step: "find the pod interface", source }),
                };
                let addrs = addr::list_addresses(&rtnl, pod.index, None)
                    .await
                    .map_err(|source| DpError::Addr { step: "list pod addresses", source })?;
                let mut routes = Vec::new();
                for fam in [IpFamily::V4, IpFamily::V6] {
                    let rs = route::list_routes(&rtnl, fam, pod.index)
                        .await
                        .map_err(|source| DpError::Route { step: "list pod routes", source })?;
                    routes.extend(rs.iter().map(|r| PlannedRoute { dst: cidr(&r.dst), gw: r.gateway }));
                }
                Ok(Some((observed(&pod), addrs.iter().map(|a| cidr(&a.prefix)).collect::<Vec<_>>(), routes)))
            })
            .map_err(|source| DpError::Netns { path: netns.to_path_buf(), source })??;
        if let Some((link, addrs, routes)) = pod {
            out.pod = Some(link);
            out.pod_addrs = addrs;
            out.pod_routes = routes;
        }
        Ok(out)
    }

    fn list_ours(&mut self) -> Result<Vec<Marker>, DpError> {
        let links = self
            .rt
            .block_on(link::list_marked_links(&self.rtnl))
            .map_err(|source| DpError::Link { step: "list netkit devices", source })?;
        Ok(links.into_iter().map(|l| l.marker).collect())
    }

    fn netkit_available(&mut self) -> Result<bool, DpError> {
        // A create request that can never succeed: netkit's attribute policy caps the mode at L3,
        // so a kernel with netkit answers ERANGE/EINVAL, one without answers "Unknown device
        // type" (EOPNOTSUPP) — and nothing is created either way.
        let me = NetNs::current().map_err(|source| DpError::Netns { path: "/proc/self/ns/net".into(), source })?;
        let probe = NetkitPair::new("nkcniprobe0", "nkcniprobe1", std::os::fd::AsFd::as_fd(&me))
            .map_err(|source| DpError::Link { step: "netkit probe", source })?
            .mode(NetkitMode::Other(255));
        match self.rt.block_on(link::create_pair(&self.rtnl, &probe)) {
            Err(e) if e.is_unknown_kind() => Ok(false),
            Err(_) => Ok(true),
            Ok(info) => {
                // Cannot happen with a valid kernel; never leave the probe behind.
                let _ = self.rt.block_on(link::delete_link(&self.rtnl, info.index));
                Ok(true)
            }
        }
    }
}
