//! [`Dataplane`] against the real kernel, the implementation the binary uses: links, addresses
//! and routes over rtnetlink, leases over the netdev generic-netlink family, the XDP dispatcher
//! through bpf(2) and bpffs, and sysctls.
//!
//! Everything runs on one Tokio current-thread runtime in the plugin's own netns (the runtime's
//! host netns). The pod side goes through a netlink socket created inside the pod netns by a
//! short-lived thread ([`NetNs::connect_rtnl`]), once per pod netns and invocation, so the
//! process's main thread never changes namespace. Nothing here dumps all links on ADD's path:
//! everything is addressed by name or index.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use netlink_packet_route::link::LinkAttribute;

use super::dataplane::*;
use crate::cni::IpCidr;
use crate::config::{Mode, XdpConfig};
use crate::kernel::addr::{self, AddressSpec, IpFamily};
use crate::kernel::link::{
    self, LinkError, LinkInfo, Marker, NetkitMode, NetkitPair, NetkitSingle,
};
use crate::kernel::netdev::{
    Lease, NetdevClient, NetdevCmd, NetdevError, Queue, QueueId, QueueType,
};
use crate::kernel::netns::{NetNs, NetnsError};
use crate::kernel::route::{self, RouteScope};
use crate::kernel::rtnl::{Deletion, Rtnl};
use crate::kernel::sysctl::{self, SysctlKey};
use crate::xdp::{
    Attach, DetachOutcome, Dispatcher, NicLock, PodHandoff, PodId, XdpError, DISPATCHER_PROG_NAMES,
};

pub struct KernelDataplane {
    rt: tokio::runtime::Runtime,
    rtnl: Rtnl,
    /// rtnetlink connections whose sockets live in pod netns (by path), driven by `rt` like
    /// `rtnl`: one socket per pod netns and invocation, rather than a thread, a runtime and a
    /// socket for every step on the pod side.
    pod_rtnl: HashMap<PathBuf, Rtnl>,
    /// netdev genl in the node netns (queue dumps of the master), opened on first use.
    node_netdev: Option<NetdevClient>,
    /// netdev genl sockets created inside pod netns (queue-create must be sent from there),
    /// with the nsid each pod netns gives the node netns (`None`: same netns).
    pod_netdev: HashMap<PathBuf, (NetdevClient, Option<i32>)>,
    /// Every netns path this invocation was given (CNI_NETNS), opened once (see
    /// [`NetNs::open`]: `O_PATH`, nsfs checked) and that handle used by every later step, so a
    /// path swapped mid-ADD cannot send steps to different namespaces.
    netns: HashMap<PathBuf, Arc<NetNs>>,
    /// The master's flow steering (ethtool), in the node netns.
    steer: KernelSteering,
    /// BPF host routing, in the node netns.
    host_routing: KernelHostRouting,
}

/// [`NicSteering`] in the calling thread's netns (the node's): an ethtool genl socket opened
/// on first use, an ioctl socket per call (a datagram socket, cheap), an rtnetlink socket per
/// unicast change.
#[derive(Default)]
pub struct KernelSteering {
    genl: Option<crate::kernel::ethtool::EthtoolClient>,
}

impl KernelSteering {
    fn genl(&mut self) -> Result<&mut crate::kernel::ethtool::EthtoolClient, DpError> {
        if self.genl.is_none() {
            self.genl = Some(
                crate::kernel::ethtool::EthtoolClient::open()
                    .map_err(|e| ethtool_err("open ethtool netlink", e))?,
            );
        }
        Ok(self.genl.as_mut().expect("opened above"))
    }

    fn ioctl(nic: &Master) -> Result<crate::kernel::ethtool::client::Ioctl, DpError> {
        crate::kernel::ethtool::client::Ioctl::open(&nic.name)
            .map_err(|e| ethtool_err("open the ethtool ioctl", e))
    }
}

fn ethtool_err(step: &'static str, e: crate::kernel::ethtool::EthtoolError) -> DpError {
    DpError::Ethtool {
        step,
        source: Box::new(e),
    }
}

impl NicSteering for KernelSteering {
    fn ntuple_enabled(&mut self, nic: &Master) -> Result<bool, DpError> {
        Self::ioctl(nic)?
            .ntuple_enabled()
            .map_err(|e| ethtool_err("read the ntuple flag (ETHTOOL_GFLAGS)", e))
    }
    fn rss_get(&mut self, nic: &Master, context: u32) -> Result<Rss, DpError> {
        self.genl()?
            .rss_get(nic.ifindex, context)
            .map_err(|e| ethtool_err("read RSS (rss-get)", e))
    }
    fn rss_contexts(&mut self, nic: &Master) -> Result<Vec<Rss>, DpError> {
        self.genl()?
            .rss_dump(nic.ifindex)
            .map_err(|e| ethtool_err("list RSS contexts (rss-get dump)", e))
    }
    fn rss_set_default(&mut self, nic: &Master, table: &[u32]) -> Result<(), DpError> {
        self.genl()?
            .rss_set(nic.ifindex, 0, table)
            .map_err(|e| ethtool_err("write the default RSS table (rss-set)", e))
    }
    fn rss_create(&mut self, nic: &Master, table: &[u32]) -> Result<u32, DpError> {
        self.genl()?
            .rss_create(nic.ifindex, table)
            .map_err(|e| ethtool_err("create an RSS context (rss-create-act)", e))
    }
    fn rss_delete(&mut self, nic: &Master, context: u32) -> Result<bool, DpError> {
        self.genl()?
            .rss_delete(nic.ifindex, context)
            .map_err(|e| ethtool_err("delete an RSS context (rss-delete-act)", e))
    }
    fn rules(&mut self, nic: &Master) -> Result<RuleTable, DpError> {
        Self::ioctl(nic)?
            .rules()
            .map_err(|e| ethtool_err("list ntuple rules (ETHTOOL_GRXCLSRLALL)", e))
    }
    fn rule_get(&mut self, nic: &Master, location: u32) -> Result<Option<FlowRule>, DpError> {
        Self::ioctl(nic)?
            .rule(location)
            .map_err(|e| ethtool_err("read an ntuple rule (ETHTOOL_GRXCLSRULE)", e))
    }
    fn rule_insert(&mut self, nic: &Master, rule: &FlowRule) -> Result<(), DpError> {
        Self::ioctl(nic)?
            .insert(rule)
            .map_err(|e| ethtool_err("insert an ntuple rule (ETHTOOL_SRXCLSRLINS)", e))
    }
    fn rule_delete(&mut self, nic: &Master, location: u32) -> Result<bool, DpError> {
        Self::ioctl(nic)?
            .delete(location)
            .map_err(|e| ethtool_err("delete an ntuple rule (ETHTOOL_SRXCLSRLDEL)", e))
    }
    fn unicast(&mut self, nic: &Master, mac: [u8; 6], add: bool) -> Result<bool, DpError> {
        crate::kernel::ethtool::fdb::set_in_current_netns(add, nic.ifindex, &mac).map_err(|e| {
            ethtool_err(
                if add {
                    "add to the NIC's unicast filter (fdb add self)"
                } else {
                    "remove from the NIC's unicast filter (fdb del self)"
                },
                e,
            )
        })
    }
}

impl KernelDataplane {
    /// Connects to rtnetlink in the calling thread's netns (the node's host netns).
    pub fn new() -> Result<Self, DpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| DpError::Other(format!("cannot start the netlink runtime: {e}")))?;
        let rtnl = rt.block_on(async {
            let (rtnl, conn) = Rtnl::connect().map_err(|source| DpError::Rtnl {
                step: "connect to rtnetlink",
                source,
            })?;
            tokio::spawn(conn);
            Ok::<_, DpError>(rtnl)
        })?;
        Ok(KernelDataplane {
            rt,
            rtnl,
            pod_rtnl: HashMap::new(),
            node_netdev: None,
            pod_netdev: HashMap::new(),
            netns: HashMap::new(),
            steer: KernelSteering::default(),
            host_routing: KernelHostRouting,
        })
    }

    /// The handle of the netns at `path`, opened on first use and reused afterwards.
    fn netns(&mut self, path: &Path) -> Result<Arc<NetNs>, DpError> {
        if let Some(ns) = self.netns.get(path) {
            return Ok(ns.clone());
        }
        let ns = Arc::new(NetNs::open(path).map_err(|source| DpError::Netns {
            path: path.to_path_buf(),
            source,
        })?);
        self.netns.insert(path.to_path_buf(), ns.clone());
        Ok(ns)
    }

    /// The rtnetlink connection inside the pod netns `ns` (opened at `path`), made on first use.
    fn pod_rtnl(&mut self, path: &Path, ns: &NetNs) -> Result<Rtnl, DpError> {
        if let Some(r) = self.pod_rtnl.get(path) {
            return Ok(r.clone());
        }
        let (rtnl, conn) = {
            // Registering the socket with the runtime's reactor needs its context.
            let _rt = self.rt.enter();
            ns.connect_rtnl().map_err(|source| DpError::Netns {
                path: path.to_path_buf(),
                source,
            })?
        };
        self.rt.spawn(conn);
        self.pod_rtnl.insert(path.to_path_buf(), rtnl.clone());
        Ok(rtnl)
    }

    fn node_netdev(&mut self) -> Result<&mut NetdevClient, DpError> {
        if self.node_netdev.is_none() {
            let c = NetdevClient::open().map_err(|source| DpError::Netdev {
                step: "open netdev netlink in the node netns",
                source: Box::new(source),
            })?;
            self.node_netdev = Some(c);
        }
        Ok(self.node_netdev.as_mut().expect("just opened"))
    }

    /// The netdev client inside `netns` and the nsid that netns gives the node's, opened once
    /// per ADD. Both are made on a thread inside the pod netns; a netlink socket keeps the netns
    /// it was created in, so the client then works from this thread.
    fn pod_netdev(&mut self, netns: &Path) -> Result<&mut (NetdevClient, Option<i32>), DpError> {
        if !self.pod_netdev.contains_key(netns) {
            let ns = self.netns(netns)?;
            let node = NetNs::current().map_err(|source| DpError::Netns {
                path: "/proc/thread-self/ns/net".into(),
                source,
            })?;
            let opened = ns
                .run(|| {
                    let nsid =
                        if crate::kernel::nsid::is_current_netns(node.as_fd()).map_err(
                            |source| DpError::Nsid {
                                step: "compare netns",
                                source: Box::new(source),
                            },
                        )? {
                            None
                        } else {
                            // Never assume an id: the pod netns may already know the node's
                            // netns under any number, or not at all (then one is assigned).
                            Some(crate::kernel::nsid::ensure_nsid(node.as_fd()).map_err(
                                |source| DpError::Nsid {
                                    step: "nsid of the node netns as the pod sees it",
                                    source: Box::new(source),
                                },
                            )?)
                        };
                    let client = NetdevClient::open().map_err(|source| DpError::Netdev {
                        step: "open netdev netlink in the pod netns",
                        source: Box::new(source),
                    })?;
                    Ok::<_, DpError>((client, nsid))
                })
                .map_err(|source| DpError::Netns {
                    path: netns.to_path_buf(),
                    source,
                })??;
            self.pod_netdev.insert(netns.to_path_buf(), opened);
        }
        Ok(self.pod_netdev.get_mut(netns).expect("just inserted"))
    }
}

/// A netns that no longer exists for DEL's purposes: the path is gone, or only the empty mount
/// point a runtime left behind after unmounting it.
fn netns_gone(e: &NetnsError) -> bool {
    match e {
        NetnsError::Open { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        NetnsError::NotANamespace { .. } => true,
        _ => false,
    }
}

/// The device's MAC as CNI results spell it. An L3 netkit device reports all zeros, and that is
/// what we report too rather than leaving `mac` out: podman parses the MAC of every sandbox
/// interface in the result and refuses the container when it is missing ("invalid MAC address").
fn mac_of(info: &LinkInfo) -> Option<String> {
    info.message.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => Some(
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    })
}

fn observed(info: &LinkInfo) -> ObservedLink {
    ObservedLink {
        ifindex: info.index,
        is_netkit: info.is_netkit(),
        mode: info
            .netkit
            .as_ref()
            .and_then(|n| n.mode)
            .and_then(|m| match m {
                NetkitMode::L2 => Some(Mode::L2),
                NetkitMode::L3 => Some(Mode::L3),
                NetkitMode::Other(_) => None,
            }),
        marker: info.marker(),
    }
}

async fn add_route(rtnl: &Rtnl, ifindex: u32, r: &PlannedRoute) -> Result<(), DpError> {
    let step = "add route";
    let dst = r.dst.network();
    let mut route = route::Route::new(dst)
        .map_err(|source| DpError::Route { step, source })?
        .dev(ifindex);
    route = match r.gw {
        Some(gw) => route
            .via(gw)
            .map_err(|source| DpError::Route { step, source })?,
        None => route.scope(RouteScope::Link),
    };
    route::add_route(rtnl, &route)
        .await
        .map_err(|source| DpError::Route { step, source })
}

impl Dataplane for KernelDataplane {
    fn validate_netns(&mut self, path: &Path) -> Result<(), DpError> {
        self.netns(path).map(drop)
    }

    fn create_pair(&mut self, spec: &PairSpec) -> Result<Created, DpError> {
        let ns = self.netns(&spec.netns)?;
        let step = "create netkit pair";
        let mut pair = NetkitPair::for_attachment(&spec.marker, std::os::fd::AsFd::as_fd(&ns))
            .mode(spec.mode)
            .policy(spec.policy)
            .peer_policy(spec.peer_policy)
            .scrub(spec.scrub)
            .peer_scrub(spec.peer_scrub)
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
        if let Some(n) = spec.peer_rx_queues {
            pair = pair
                .peer_num_rx_queues(n)
                .map_err(|source| DpError::Link { step, source })?;
        }
        let host = self
            .rt
            .block_on(link::create_marked_pair(&self.rtnl, &pair, &spec.marker))
            .map_err(|source| DpError::Link { step, source })?;
        // A failed create leaves no device behind (ADD's rollback only undoes created ones):
        // deleting the primary takes the peer with it.
        let peer = self.pod_rtnl(&spec.netns, &ns).and_then(|pod| {
            self.rt
                .block_on(link::get_link_by_name(&pod, spec.marker.ifname()))
                .map_err(|source| DpError::Link {
                    step: "read back the pod interface",
                    source,
                })
        });
        let peer = match peer {
            Ok(p) => p,
            Err(e) => {
                let _ = self.rt.block_on(link::delete_link(&self.rtnl, host.index));
                return Err(e);
            }
        };
        Ok(Created {
            host_ifindex: host.index,
            host_ifname: host.name.clone(),
            host_mac: mac_of(&host),
            pod_ifindex: peer.index,
            pod_mac: mac_of(&peer),
        })
    }

    fn configure_pod(&mut self, netns: &Path, plan: &PodPlan) -> Result<(), DpError> {
        let ns = self.netns(netns)?;
        let rtnl = self.pod_rtnl(netns, &ns)?;
        self.rt.block_on(async {
            for a in &plan.addrs {
                // No prefix route: the pod reaches its subnet through the gateway like everything
                // else (in L2 mode an on-link subnet route would ARP for other pods, which nobody
                // answers), and the routes below say so explicitly.
                let mut spec = AddressSpec::new(plan.ifindex, *a);
                if !plan.prefix_routes {
                    spec = spec.noprefixroute();
                }
                if !a.is_ipv4() {
                    spec = spec.nodad();
                }
                addr::add_address(&rtnl, &spec)
                    .await
                    .map_err(|source| DpError::Addr {
                        step: "add pod address",
                        source,
                    })?;
            }
            link::set_link_up(&rtnl, plan.ifindex, true)
                .await
                .map_err(|source| DpError::Link {
                    step: "bring the pod interface up",
                    source,
                })?;
            for r in &plan.routes {
                add_route(&rtnl, plan.ifindex, r).await?;
            }
            Ok(())
        })
    }

    fn configure_host(&mut self, plan: &HostPlan) -> Result<(), DpError> {
        let rtnl = &self.rtnl;
        self.rt.block_on(async {
            for gw in &plan.gateways {
                let mut spec = AddressSpec::new(plan.host_ifindex, IpCidr::host(*gw));
                if gw.is_ipv6() {
                    spec = spec.nodad();
                }
                addr::add_address(rtnl, &spec)
                    .await
                    .map_err(|source| DpError::Addr {
                        step: "add gateway address on the host side",
                        source,
                    })?;
            }
            for ip in &plan.pod_addrs {
                let r = PlannedRoute {
                    dst: IpCidr::host(*ip),
                    gw: None,
                };
                add_route(rtnl, plan.host_ifindex, &r).await?;
            }
            Ok::<_, DpError>(())
        })?;
        let step = "enable forwarding";
        if plan.pod_addrs.iter().any(|a| a.is_ipv4()) {
            sysctl::ensure(&SysctlKey::ipv4_forward(), "1")
                .map_err(|source| DpError::Sysctl { step, source })?;
        }
        if plan.pod_addrs.iter().any(|a| a.is_ipv6()) {
            sysctl::ensure(&SysctlKey::ipv6_forwarding(), "1")
                .map_err(|source| DpError::Sysctl { step, source })?;
        }
        Ok(())
    }

    fn delete(&mut self, marker: &Marker) -> Result<Deletion, DpError> {
        self.rt
            .block_on(link::delete_attachment(&self.rtnl, marker))
            .map_err(|source| DpError::Link {
                step: "delete the host device",
                source,
            })
    }

    fn observe(
        &mut self,
        marker: &Marker,
        netns: Option<&Path>,
        ifname: &str,
    ) -> Result<Observed, DpError> {
        let mut out = Observed::default();
        let rtnl = &self.rtnl;
        let host_name = marker.host_ifname();
        self.rt.block_on(async {
            match link::get_link_by_name(rtnl, &host_name).await {
                Ok(h) => {
                    for fam in [IpFamily::V4, IpFamily::V6] {
                        let routes =
                            route::list_routes(rtnl, fam, h.index)
                                .await
                                .map_err(|source| DpError::Route {
                                    step: "list host routes",
                                    source,
                                })?;
                        out.host_routes.extend(routes.iter().map(|r| r.dst));
                    }
                    out.host = Some(observed(&h));
                }
                Err(e) if e.is_not_found() => {}
                Err(source) => {
                    return Err(DpError::Link {
                        step: "find the host device",
                        source,
                    })
                }
            }
            Ok(())
        })?;
        let Some(netns) = netns else { return Ok(out) };
        let ns = self.netns(netns)?;
        let rtnl = self.pod_rtnl(netns, &ns)?;
        let pod = self.rt.block_on(async {
            let pod = match link::get_link_by_name(&rtnl, ifname).await {
                Ok(p) => p,
                Err(e) if e.is_not_found() => return Ok::<_, DpError>(None),
                Err(source) => {
                    return Err(DpError::Link {
                        step: "find the pod interface",
                        source,
                    })
                }
            };
            let addrs = addr::list_addresses(&rtnl, pod.index, None)
                .await
                .map_err(|source| DpError::Addr {
                    step: "list pod addresses",
                    source,
                })?;
            let mut routes = Vec::new();
            for fam in [IpFamily::V4, IpFamily::V6] {
                let rs = route::list_routes(&rtnl, fam, pod.index)
                    .await
                    .map_err(|source| DpError::Route {
                        step: "list pod routes",
                        source,
                    })?;
                routes.extend(rs.iter().map(|r| PlannedRoute {
                    dst: r.dst,
                    gw: r.gateway,
                }));
            }
            Ok(Some((
                observed(&pod),
                addrs.iter().map(|a| a.prefix).collect::<Vec<_>>(),
                routes,
            )))
        })?;
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
            .map_err(|source| DpError::Link {
                step: "list netkit devices",
                source,
            })?;
        Ok(links.into_iter().map(|l| l.marker).collect())
    }

    fn netkit_available(&mut self) -> Result<bool, DpError> {
        // A create request that can never succeed: netkit's attribute policy caps the mode at L3,
        // so a kernel with netkit answers ERANGE/EINVAL, one without answers "Unknown device
        // type" (EOPNOTSUPP) — and nothing is created either way.
        let me = NetNs::current().map_err(|source| DpError::Netns {
            path: "/proc/self/ns/net".into(),
            source,
        })?;
        let probe = NetkitPair::new("nkcniprobe0", "nkcniprobe1", std::os::fd::AsFd::as_fd(&me))
            .map_err(|source| DpError::Link {
                step: "netkit probe",
                source,
            })?
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

    fn create_single(&mut self, spec: &SingleSpec) -> Result<Created, DpError> {
        let ns = self.netns(&spec.netns)?;
        let step = "create netkit single device";
        let mut single = NetkitSingle::new(spec.marker.ifname(), ns.as_fd())
            .map_err(|source| DpError::Link { step, source })?
            .mode(spec.mode)
            .num_rx_queues(spec.rx_queues)
            .map_err(|source| DpError::Link { step, source })?;
        if let Some(h) = spec.headroom {
            single = single.headroom(h);
        }
        if let Some(t) = spec.tailroom {
            single = single.tailroom(t);
        }
        if let Some(m) = spec.mtu {
            single = single.mtu(m);
        }
        let target = self.pod_rtnl(&spec.netns, &ns)?;
        let rtnl = &self.rtnl;
        let info = self.rt.block_on(async {
            let info = link::create_single(rtnl, &single, &target)
                .await
                .map_err(|source| DpError::Link { step, source })?;
            // The marker is what lets DEL and GC recognise the device later; an unmarked one
            // could never be cleaned up, so it does not survive a failure here.
            if let Err(source) = link::set_marker(&target, info.index, &spec.marker).await {
                let _ = link::delete_link(&target, info.index).await;
                return Err(DpError::Link {
                    step: "mark the single device",
                    source,
                });
            }
            Ok(info)
        })?;
        Ok(Created {
            host_ifindex: 0,
            host_ifname: String::new(),
            host_mac: None,
            pod_ifindex: info.index,
            pod_mac: mac_of(&info),
        })
    }

    fn delete_single(&mut self, netns: &Path, marker: &Marker) -> Result<Deletion, DpError> {
        let ns = match self.netns(netns) {
            Ok(ns) => ns,
            // Deleting a netns destroys its netkit devices, and their leases end with them.
            Err(DpError::Netns { source, .. }) if netns_gone(&source) => {
                return Ok(Deletion::AlreadyGone)
            }
            Err(e) => return Err(e),
        };
        let rtnl = self.pod_rtnl(netns, &ns)?;
        self.rt.block_on(async {
            let step = "delete the single device";
            let dev = match link::get_link_by_name(&rtnl, marker.ifname()).await {
                Ok(d) => d,
                Err(e) if e.is_not_found() => return Ok(Deletion::AlreadyGone),
                Err(source) => return Err(DpError::Link { step, source }),
            };
            if dev.marker().as_ref() != Some(marker) {
                return Err(DpError::Link {
                    step,
                    source: LinkError::MarkerMismatch {
                        name: dev.name.clone(),
                        alias: dev.alias.clone(),
                        expected: marker.to_string(),
                    },
                });
            }
            link::delete_link(&rtnl, dev.index)
                .await
                .map_err(|source| DpError::Link { step, source })
        })
    }

    fn master(&mut self, name: &str) -> Result<Option<Master>, DpError> {
        match self.rt.block_on(link::get_link_by_name(&self.rtnl, name)) {
            Ok(l) => Ok(Some(Master {
                name: l.name.clone(),
                ifindex: l.index,
                num_rx_queues: l.num_rx_queues,
                is_up: l.is_up(),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(DpError::Link {
                step: "find the lease master",
                source,
            }),
        }
    }

    fn master_queues(&mut self, master_ifindex: u32) -> Result<Vec<Queue>, DpError> {
        let client = self.node_netdev()?;
        // Queues come and go while other pods lease; an interrupted dump is simply redone.
        let mut last = None;
        for _ in 0..3 {
            match client.queue_dump(master_ifindex) {
                Err(e @ NetdevError::DumpInterrupted { .. }) => last = Some(e),
                other => {
                    return other.map_err(|source| DpError::Netdev {
                        step: "dump the master's queues",
                        source: Box::new(source),
                    })
                }
            }
        }
        Err(DpError::Netdev {
            step: "dump the master's queues",
            source: Box::new(last.expect("three interrupted dumps")),
        })
    }

    fn master_queue(&mut self, master_ifindex: u32, id: u32) -> Result<Queue, DpError> {
        self.node_netdev()?
            .queue_get(master_ifindex, id, QueueType::Rx)
            .map_err(|source| DpError::Netdev {
                step: "read a master queue",
                source: Box::new(source),
            })
    }

    fn lease_queue(&mut self, target: &LeaseTarget, phys: u32) -> Result<u32, DpError> {
        let (client, nsid) = self.pod_netdev(&target.netns)?;
        let lease = Lease {
            ifindex: target.master_ifindex,
            queue: QueueId::rx(phys),
            netns_id: *nsid,
        };
        client
            .queue_create(target.ifindex, QueueType::Rx, &lease)
            .map_err(|source| DpError::Netdev {
                step: "lease a master queue",
                source: Box::new(source),
            })
    }

    fn lease_available(&mut self) -> Result<bool, DpError> {
        match self.node_netdev() {
            Ok(c) => Ok(c.family().supports(NetdevCmd::QueueCreate, false)),
            Err(DpError::Netdev { source, .. })
                if matches!(*source, NetdevError::FamilyNotFound) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn nsid_of(&mut self, netns: &Path) -> Result<Option<i32>, DpError> {
        let ns = self.netns(netns)?;
        crate::kernel::nsid::get_nsid(ns.as_fd()).map_err(|source| DpError::Nsid {
            step: "nsid of the pod netns",
            source: Box::new(source),
        })
    }

    fn remote_link(
        &mut self,
        netnsid: Option<i32>,
        ifindex: u32,
    ) -> Result<Option<ObservedLink>, DpError> {
        let out = match netnsid {
            Some(id) => self.rt.block_on(link::get_link_in(&self.rtnl, id, ifindex)),
            None => self
                .rt
                .block_on(link::get_link_by_index(&self.rtnl, ifindex)),
        };
        match out {
            Ok(l) => Ok(Some(observed(&l))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(DpError::Link {
                step: "find a leasing device",
                source,
            }),
        }
    }

    fn delete_remote(&mut self, netnsid: Option<i32>, ifindex: u32) -> Result<Deletion, DpError> {
        let out = match netnsid {
            Some(id) => self
                .rt
                .block_on(link::delete_link_in(&self.rtnl, id, ifindex)),
            None => self.rt.block_on(link::delete_link(&self.rtnl, ifindex)),
        };
        out.map_err(|source| DpError::Link {
            step: "delete a leasing device",
            source,
        })
    }

    fn nic_lock(&mut self, bpffs: &Path, master_ifindex: u32) -> Result<NicGuard, DpError> {
        // lease.bpffs: an XDP network on the same NIC with another xdp.bpffs locks another
        // directory (docs/memory-providers.md says so); the attach refusal and the kernel's own refusals
        // still hold then, only the race between two ADDs is no longer closed.
        let lock = NicLock::acquire(bpffs, master_ifindex)
            .map_err(xdp("lock the master's NIC directory in bpffs"))?;
        Ok(NicGuard(Some(lock)))
    }

    fn nic_xdp(
        &mut self,
        master_ifindex: u32,
        lock: &NicGuard,
    ) -> Result<Vec<NicXdpProgram>, DpError> {
        use netlink_packet_route::link::LinkXdp;
        let l = self
            .rt
            .block_on(link::get_link_by_index(&self.rtnl, master_ifindex))
            .map_err(|source| DpError::Link {
                step: "read the master's XDP programs",
                source,
            })?;
        let ours = match &lock.0 {
            Some(lock) => lock
                .dispatcher_prog_id()
                .map_err(xdp("read the master's dispatcher link"))?,
            None => None,
        };
        // rtnl_xdp_fill (net/core/rtnetlink.c) reports each mode's program in its own attribute
        // (IFLA_XDP_SKB_PROG_ID, _DRV_, _HW_), also when only one mode is in use.
        let mut out = Vec::new();
        for a in &l.message.attributes {
            let LinkAttribute::Xdp(nest) = a else {
                continue;
            };
            for x in nest {
                let (mode, id) = match x {
                    LinkXdp::DrvProgId(id) => ("driver", *id),
                    LinkXdp::SkbProgId(id) => ("generic", *id),
                    LinkXdp::HwProgId(id) => ("offload", *id),
                    _ => continue,
                };
                // The program may be replaced between the dump and this lookup: the id is
                // still named, without a name.
                let name = crate::xdp::prog_name(id).unwrap_or_default();
                out.push(NicXdpProgram {
                    mode,
                    id,
                    ours: ours == Some(id) || DISPATCHER_PROG_NAMES.contains(&name.as_str()),
                    name,
                });
            }
        }
        Ok(out)
    }

    fn xdp_steer(
        &mut self,
        conf: &XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
        queues: &[SteerQueue],
        device_info_dir: &Path,
    ) -> Result<PodHandoff, DpError> {
        // Asked under the NIC's lock, only by the call that would attach: a memory-provider
        // ADD holds the same lock from its own XDP check to its device-info record.
        let mut may_attach = || -> Result<(), XdpError> {
            let refused = |reason: String| XdpError::AttachRefused {
                ifindex: master_ifindex,
                reason,
            };
            let qs = self
                .master_queues(master_ifindex)
                .map_err(|e| refused(format!("cannot read the NIC's queues: {e}")))?;
            let records = match super::devinfo::records(device_info_dir) {
                Ok((records, _)) => records,
                Err(e) => return Err(refused(format!("cannot read the device-info records: {e}"))),
            };
            let users = super::lease::memory_provider_users(master_ifindex, &qs, &records);
            if users.is_empty() {
                return Ok(());
            }
            Err(refused(format!(
                "{}; the kernel refuses a memory provider on a NIC with any XDP program (net/core/netdev_rx_queue.c); DEL those attachments first",
                users.join("; ")
            )))
        };
        let (d, attach) = Dispatcher::attach_or_open_guarded(
            &conf.options(),
            master_ifindex,
            &conf.ranges,
            &mut may_attach,
        )
        .map_err(xdp("attach the XDP dispatcher to the master"))?;
        let mut handoff = None;
        for q in queues {
            // ADD holds the kernel's lease on every queue it steers, so a steering still left to
            // another pod is stale (that pod's device, and with it its lease, is gone; its DEL
            // is between deleting the device and resetting the queue): take it over.
            match d.steer_leased_queue(q.physical, pod, q.virtual_id) {
                Ok(h) => handoff = Some(h),
                Err(e) => {
                    // This call's steering goes again; so does a dispatcher this call attached
                    // (no other pod can be using it yet: the lock is still held).
                    let _ = d.release_pod(pod);
                    if attach == Attach::Attached {
                        let _ = d.detach_if_unused();
                    }
                    return Err(xdp("steer a leased queue to the pod")(e));
                }
            }
        }
        match handoff {
            Some(h) => Ok(h),
            None => d
                .pod_handoff(pod)
                .map_err(xdp("read the pod's handoff"))?
                .ok_or_else(|| DpError::Other("no queue to steer".into())),
        }
    }

    fn xdp_release(
        &mut self,
        conf: &XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
    ) -> Result<XdpRelease, DpError> {
        let Some(d) = Dispatcher::open(&conf.options(), master_ifindex)
            .map_err(xdp("open the master's XDP dispatcher"))?
        else {
            return Ok(XdpRelease::default());
        };
        let reset = d
            .release_pod(pod)
            .map_err(xdp("give the pod's queues back"))?;
        let detached = matches!(
            d.detach_if_unused()
                .map_err(xdp("detach the XDP dispatcher"))?,
            DetachOutcome::Detached
        );
        Ok(XdpRelease { reset, detached })
    }

    fn xdp_observe(
        &mut self,
        conf: &XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
    ) -> Result<Option<XdpObserved>, DpError> {
        let Some(d) = Dispatcher::open(&conf.options(), master_ifindex)
            .map_err(xdp("open the master's XDP dispatcher"))?
        else {
            return Ok(None);
        };
        let link_id = d.link_id().map_err(xdp("read the dispatcher link"))?;
        let handoff = d.pod_handoff(pod).map_err(xdp("read the pod's handoff"))?;
        Ok(Some(XdpObserved { link_id, handoff }))
    }

    fn xdp_pods(&mut self, conf: &XdpConfig, master_ifindex: u32) -> Result<Vec<PodId>, DpError> {
        match Dispatcher::open(&conf.options(), master_ifindex)
            .map_err(xdp("open the master's XDP dispatcher"))?
        {
            Some(d) => d.pods().map_err(xdp("list the dispatcher's pods")),
            None => Ok(vec![]),
        }
    }

    fn xdp_sweep(&mut self, conf: &XdpConfig) -> Result<crate::xdp::Swept, DpError> {
        Dispatcher::sweep_defunct(&conf.options())
            .map_err(xdp("remove the pins of NICs that are gone"))
    }

    fn steering(&mut self) -> &mut dyn NicSteering {
        &mut self.steer
    }
    fn host_routing(&mut self) -> &mut dyn HostRoutingOps {
        &mut self.host_routing
    }
}

fn xdp(step: &'static str) -> impl Fn(XdpError) -> DpError {
    move |source| DpError::Xdp {
        step,
        source: Box::new(source),
    }
}
