//! The kernel boundary of the plugin: what ADD/DEL/CHECK/GC/STATUS ask of the kernel, as one
//! small trait, with the NIC's flow steering ([`NicSteering`]) and BPF host routing
//! ([`HostRoutingOps`]) as traits of their own reached through it. The real implementation is [`super::kernel_dp::KernelDataplane`];
//! unit tests use a recording fake to check ordering and rollback without a kernel. Which one is
//! used is decided where the plugin is constructed, never by `cfg!(test)`.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::cni::IpCidr;
use crate::config::{Mode, Policy, Scrub, XdpConfig};
use crate::hostrouting::{HostRoutingConfig, HostRoutingError};
use crate::kernel::ethtool::EthtoolError;
pub use crate::kernel::ethtool::{FlowRule, Rss, RuleTable};
use crate::kernel::link::{LinkError, Marker};
use crate::kernel::netdev::{NetdevError, Queue};
use crate::kernel::nsid::NsidError;
use crate::kernel::rtnl::Deletion;
use crate::logging::Logger;
use crate::xdp::{PodHandoff, PodId, XdpError};

/// Everything needed to create one pod's netkit pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairSpec {
    pub marker: Marker,
    pub netns: PathBuf,
    pub mode: Mode,
    pub policy: Policy,
    pub peer_policy: Policy,
    pub scrub: Scrub,
    pub peer_scrub: Scrub,
    pub headroom: Option<u16>,
    pub tailroom: Option<u16>,
    pub mtu: Option<u32>,
    /// RX queues allocated on the peer: 1 + the number of leases planned (`None`: kernel default).
    pub peer_rx_queues: Option<u32>,
}

/// Everything needed to create one pod's single netkit device (lease-only, no host side).
#[derive(Debug, Clone, PartialEq)]
pub struct SingleSpec {
    /// Also names the device: [`Marker::ifname`] inside `netns`.
    pub marker: Marker,
    pub netns: PathBuf,
    pub mode: Mode,
    pub headroom: Option<u16>,
    pub tailroom: Option<u16>,
    pub mtu: Option<u32>,
    /// 1 + the number of leases planned.
    pub rx_queues: u32,
}

/// The lease master (physical NIC) as found in the node's netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub name: String,
    pub ifindex: u32,
    /// `IFLA_NUM_RX_QUEUES`: allocated RX queues, an upper bound of the real ones.
    pub num_rx_queues: Option<u32>,
    pub is_up: bool,
}

/// Where a lease goes: the pod's netkit device (the peer of a pair or a single device), inside
/// `netns`, and the master it leases from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTarget {
    pub netns: PathBuf,
    pub ifindex: u32,
    pub master_ifindex: u32,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub host_ifindex: u32,
    pub host_ifname: String,
    pub host_mac: Option<String>,
    pub pod_ifindex: u32,
    pub pod_mac: Option<String>,
}

/// A route to install: `dst` via `gw` (or directly on the link when `gw` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRoute {
    pub dst: IpCidr,
    pub gw: Option<IpAddr>,
}

/// The pod side's addresses and routes, all on the pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodPlan {
    pub ifname: String,
    /// The pod interface's ifindex, as `create_pair`/`create_single` reported it: the pod side
    /// is configured by index, without looking the name up again.
    pub ifindex: u32,
    pub addrs: Vec<IpCidr>,
    pub routes: Vec<PlannedRoute>,
    /// Keep the kernel's prefix route for each address. A pair routes everything through the
    /// host side's gateway instead; a single device has no host side and no gateway.
    pub prefix_routes: bool,
}

/// The host side: gateway addresses on the host device, a /32 (/128) route per pod address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPlan {
    pub host_ifindex: u32,
    pub gateways: Vec<IpAddr>,
    pub pod_addrs: Vec<IpAddr>,
}

/// What CHECK compares against `prevResult`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The host device named after the attachment, if any: (is netkit, marker on it).
    pub host: Option<ObservedLink>,
    pub pod: Option<ObservedLink>,
    pub pod_addrs: Vec<IpCidr>,
    pub pod_routes: Vec<PlannedRoute>,
    /// Destinations of routes on the host device.
    pub host_routes: Vec<IpCidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    pub ifindex: u32,
    pub is_netkit: bool,
    pub mode: Option<Mode>,
    pub marker: Option<Marker>,
}

/// A failed kernel step, with the step named for the error message.
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("{step}: {source}")]
    Link {
        step: &'static str,
        source: LinkError,
    },
    #[error("{step}: {source}")]
    Addr {
        step: &'static str,
        source: crate::kernel::addr::AddrError,
    },
    #[error("{step}: {source}")]
    Route {
        step: &'static str,
        source: crate::kernel::route::RouteError,
    },
    #[error("{step}: {source}")]
    Sysctl {
        step: &'static str,
        source: crate::kernel::sysctl::SysctlError,
    },
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        source: crate::kernel::netns::NetnsError,
    },
    #[error("{step}: {source}")]
    Rtnl {
        step: &'static str,
        source: crate::kernel::rtnl::RtnlError,
    },
    /// Boxed, as is `Nsid`: their extacks would make every `DpError` several times larger.
    #[error("{step}: {source}")]
    Netdev {
        step: &'static str,
        source: Box<NetdevError>,
    },
    #[error("{step}: {source}")]
    Nsid {
        step: &'static str,
        source: Box<NsidError>,
    },
    #[error("{step}: {source}")]
    Xdp {
        step: &'static str,
        source: Box<XdpError>,
    },
    #[error("{step}: {source}")]
    Ethtool {
        step: &'static str,
        source: Box<EthtoolError>,
    },
    #[error("{0}")]
    Other(String),
}

impl DpError {
    /// True when the kernel has no netkit at all ("Unknown device type").
    pub fn is_netkit_missing(&self) -> bool {
        matches!(self, DpError::Link { source, .. } if source.is_unknown_kind())
    }

    /// The errno of a failed netdev (queue) operation.
    pub fn netdev_errno(&self) -> Option<nix::errno::Errno> {
        match self {
            DpError::Netdev { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// The kernel lacks queue leasing altogether (no netdev family or no queue-create).
    pub fn is_lease_unsupported(&self) -> bool {
        matches!(self, DpError::Netdev { source, .. } if source.is_kernel_unsupported())
    }
}

pub trait Dataplane {
    /// Fail early, before IPAM allocates anything, when `path` is not a network namespace.
    fn validate_netns(&mut self, path: &std::path::Path) -> Result<(), DpError>;
    /// Create the pair: host side in the current netns, peer created directly inside
    /// `spec.netns`, host side marked with `spec.marker`.
    fn create_pair(&mut self, spec: &PairSpec) -> Result<Created, DpError>;
    /// Bring the pod interface up and give it its addresses and routes (inside the pod netns).
    fn configure_pod(&mut self, netns: &std::path::Path, plan: &PodPlan) -> Result<(), DpError>;
    /// Gateway addresses, routes to the pod and forwarding on the host side.
    fn configure_host(&mut self, plan: &HostPlan) -> Result<(), DpError>;
    /// Delete the attachment's host device (the peer goes with it), only if it carries
    /// `marker`. Already gone is success.
    fn delete(&mut self, marker: &Marker) -> Result<Deletion, DpError>;
    /// Read back what exists for CHECK. `netns` None: the pod side is not looked at.
    fn observe(
        &mut self,
        marker: &Marker,
        netns: Option<&std::path::Path>,
        ifname: &str,
    ) -> Result<Observed, DpError>;
    /// Every attachment of ours on this node (host devices carrying our marker).
    fn list_ours(&mut self) -> Result<Vec<Marker>, DpError>;
    /// Whether the kernel has netkit, asked without creating anything.
    fn netkit_available(&mut self) -> Result<bool, DpError>;

    // --- Queue leasing -------------------------------------------------------------------

    /// Create a single netkit device named `spec.marker.ifname()` inside `spec.netns`, with
    /// `spec.marker` in its alias. `Created::host_*` are meaningless (there is no host side).
    fn create_single(&mut self, spec: &SingleSpec) -> Result<Created, DpError>;
    /// Delete the single device `marker.ifname()` in `netns`, only if it carries `marker`.
    /// Already gone (netns included) is success.
    fn delete_single(
        &mut self,
        netns: &std::path::Path,
        marker: &Marker,
    ) -> Result<Deletion, DpError>;
    /// The master by name in the node netns; `None` when no such device exists.
    fn master(&mut self, name: &str) -> Result<Option<Master>, DpError>;
    /// queue-get dump of the master: its real RX and TX queues (none while it is down).
    fn master_queues(&mut self, master_ifindex: u32) -> Result<Vec<Queue>, DpError>;
    /// queue-get of RX queue `id` of the master.
    fn master_queue(&mut self, master_ifindex: u32, id: u32) -> Result<Queue, DpError>;
    /// Lease the master's RX queue `phys` into `target`; returns the new queue's id on the pod
    /// device. Issued from inside the pod netns with `lease.netns-id` = the node netns as the
    /// pod netns knows it.
    fn lease_queue(&mut self, target: &LeaseTarget, phys: u32) -> Result<u32, DpError>;
    /// Whether the kernel offers queue-create.
    fn lease_available(&mut self) -> Result<bool, DpError>;
    /// The nsid the node netns gives to `netns` (how queue leases name it), if any.
    fn nsid_of(&mut self, netns: &std::path::Path) -> Result<Option<i32>, DpError>;
    /// A link in another netns, by its nsid as the node knows it (`None`: the node's own netns)
    /// and its ifindex there. `None` when it does not exist.
    fn remote_link(
        &mut self,
        netnsid: Option<i32>,
        ifindex: u32,
    ) -> Result<Option<ObservedLink>, DpError>;
    /// Delete such a link. Already gone is success.
    fn delete_remote(&mut self, netnsid: Option<i32>, ifindex: u32) -> Result<Deletion, DpError>;

    // --- Memory providers and XDP on the master -------------------------------------------

    /// Lock the master's NIC directory under `bpffs`, the lock the dispatcher takes
    /// ([`crate::xdp::NicLock`]); held by the caller while the guard lives.
    fn nic_lock(
        &mut self,
        bpffs: &std::path::Path,
        master_ifindex: u32,
    ) -> Result<NicGuard, DpError>;
    /// Every XDP program the kernel reports on the master (`IFLA_XDP`: driver, generic and
    /// offload mode), each recognised as the netkit-cni dispatcher or not. Asked under `lock`.
    fn nic_xdp(
        &mut self,
        master_ifindex: u32,
        lock: &NicGuard,
    ) -> Result<Vec<NicXdpProgram>, DpError>;

    // --- XDP dispatcher on the master ----------------------------------------------------

    /// Attach the master's dispatcher unless it is (applying `conf.ranges` when this call
    /// attaches), then steer each leased physical queue to `pod`'s XSKMAP at its virtual queue.
    /// Before attaching, under the NIC's lock, it refuses while leases for memory providers
    /// exist on the master ([`super::lease::memory_provider_users`], with the device-info
    /// records of `device_info_dir`).
    fn xdp_steer(
        &mut self,
        conf: &XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
        queues: &[SteerQueue],
        device_info_dir: &std::path::Path,
    ) -> Result<PodHandoff, DpError>;
    /// Give `pod`'s queues back to their range actions, remove its XSKMAP pin, and detach the
    /// dispatcher when no pod is left on the master. No dispatcher at all is success (DEL is
    /// idempotent).
    fn xdp_release(
        &mut self,
        conf: &XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
    ) -> Result<XdpRelease, DpError>;
    /// The dispatcher as CHECK sees it: `None` when none is attached to the master.
    fn xdp_observe(
        &mut self,
        conf: &XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
    ) -> Result<Option<XdpObserved>, DpError>;
    /// Every pod with an XSKMAP pin on the master's dispatcher (GC's view).
    fn xdp_pods(&mut self, conf: &XdpConfig, master_ifindex: u32) -> Result<Vec<PodId>, DpError>;
    /// Remove the pins of dispatchers whose NIC is gone (its link is defunct), in this netns.
    /// Returns the directories removed and the entries it had to leave, each named.
    fn xdp_sweep(&mut self, conf: &XdpConfig) -> Result<crate::xdp::Swept, DpError>;

    // --- Flow steering on the master ------------------------------------------------------

    /// The master's RSS, ntuple rules and unicast filter ([`NicSteering`]).
    fn steering(&mut self) -> &mut dyn NicSteering;

    // --- BPF host routing -----------------------------------------------------------------

    /// The uplink's host-routing programs and the pods' entries ([`HostRoutingOps`]).
    fn host_routing(&mut self) -> &mut dyn HostRoutingOps;
}

/// BPF host routing (`hostRouting.mode: bpf`), in the node netns: the uplink's tcx program, the
/// pods' address-map entries and their egress programs, pinned under `conf.bpffs`. When each is
/// called (after the host routes on ADD, before the device goes on DEL and in a rollback) is the
/// verbs' policy; this only does it. Its errors stay [`HostRoutingError`]: the verbs map them to
/// CNI codes where they map the dataplane's.
pub trait HostRoutingOps {
    /// Route `ips` to the pod's primary `primary_ifindex` and attach the egress program to its
    /// pair, attaching the uplink's program first if this is its first pod. A failure leaves no
    /// uplink program without pods.
    fn add(
        &mut self,
        conf: &HostRoutingConfig,
        primary_ifindex: u32,
        ips: &[IpAddr],
        log: &Logger,
    ) -> Result<(), HostRoutingError>;
    /// Remove the entries routed to `primary_ifindex` (`None`: the attachment has no primary of
    /// its own, so only the entries of primaries that no longer exist go) and detach the
    /// uplink's program when no pod is left. No uplink, or none set up, is success.
    fn release(
        &mut self,
        conf: &HostRoutingConfig,
        primary_ifindex: Option<u32>,
        log: &Logger,
    ) -> Result<(), HostRoutingError>;
    /// `Ok(Err(reason))` when the pod's entries, its egress program or the uplink's program are
    /// not as ADD left them.
    fn check(
        &mut self,
        conf: &HostRoutingConfig,
        host_ifname: &str,
        ips: &[IpAddr],
    ) -> Result<Result<(), String>, HostRoutingError>;
    /// Remove the entries of primaries that no longer exist and the programs of uplinks without
    /// pods (or whose NIC is gone).
    fn gc(&mut self, conf: &HostRoutingConfig, log: &Logger) -> Result<(), HostRoutingError>;
}

/// [`HostRoutingOps`] on the real kernel: [`crate::hostrouting::hooks`], in the calling
/// thread's netns (the node's).
#[derive(Debug, Default)]
pub struct KernelHostRouting;

impl HostRoutingOps for KernelHostRouting {
    fn add(
        &mut self,
        conf: &HostRoutingConfig,
        primary_ifindex: u32,
        ips: &[IpAddr],
        log: &Logger,
    ) -> Result<(), HostRoutingError> {
        crate::hostrouting::hooks::add(conf, primary_ifindex, ips, log)
    }
    fn release(
        &mut self,
        conf: &HostRoutingConfig,
        primary_ifindex: Option<u32>,
        log: &Logger,
    ) -> Result<(), HostRoutingError> {
        crate::hostrouting::hooks::release(conf, primary_ifindex, log)
    }
    fn check(
        &mut self,
        conf: &HostRoutingConfig,
        host_ifname: &str,
        ips: &[IpAddr],
    ) -> Result<Result<(), String>, HostRoutingError> {
        crate::hostrouting::hooks::check(conf, host_ifname, ips)
    }
    fn gc(&mut self, conf: &HostRoutingConfig, log: &Logger) -> Result<(), HostRoutingError> {
        crate::hostrouting::hooks::gc(conf, log)
    }
}

/// The master NIC's flow steering, in the node netns: RSS contexts (ethtool netlink), ntuple
/// rules (the ethtool ioctl) and its own unicast address filter (RTM_NEWNEIGH, AF_BRIDGE,
/// NTF_SELF). The policy (which table, which rule where) is [`super::steer`]'s; this only
/// reads and writes the NIC. Deletions report whether something was there (already gone is
/// success, as DEL needs).
pub trait NicSteering {
    /// Whether ntuple filtering is on (`NETIF_F_NTUPLE`).
    fn ntuple_enabled(&mut self, nic: &Master) -> Result<bool, DpError>;
    /// RSS context `context` (0: the default one).
    fn rss_get(&mut self, nic: &Master, context: u32) -> Result<Rss, DpError>;
    /// Every RSS context, the default one included.
    fn rss_contexts(&mut self, nic: &Master) -> Result<Vec<Rss>, DpError>;
    /// Write the default context's whole table.
    fn rss_set_default(&mut self, nic: &Master, table: &[u32]) -> Result<(), DpError>;
    /// Create a context over `table`; its id.
    fn rss_create(&mut self, nic: &Master, table: &[u32]) -> Result<u32, DpError>;
    /// Delete a context; `false` when it was already gone.
    fn rss_delete(&mut self, nic: &Master, context: u32) -> Result<bool, DpError>;
    /// The rule table (size, locations in use).
    fn rules(&mut self, nic: &Master) -> Result<RuleTable, DpError>;
    /// The rule at `location`; `None` when there is none, or one of a shape the plugin never
    /// writes.
    fn rule_get(&mut self, nic: &Master, location: u32) -> Result<Option<FlowRule>, DpError>;
    fn rule_insert(&mut self, nic: &Master, rule: &FlowRule) -> Result<(), DpError>;
    /// Delete the rule at `location`; `false` when there was none.
    fn rule_delete(&mut self, nic: &Master, location: u32) -> Result<bool, DpError>;
    /// Add (`add`) or remove `mac` in the NIC's unicast filter; whether the filter changed.
    fn unicast(&mut self, nic: &Master, mac: [u8; 6], add: bool) -> Result<bool, DpError>;
}

/// The master's NIC lock ([`Dataplane::nic_lock`]); `None` in a dataplane without bpffs (tests).
#[derive(Debug)]
pub struct NicGuard(pub Option<crate::xdp::NicLock>);

/// An XDP program attached to a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicXdpProgram {
    /// "driver", "generic" or "offload".
    pub mode: &'static str,
    /// Kernel program id.
    pub id: u32,
    /// The kernel's program name (empty if it could not be read).
    pub name: String,
    /// It is the netkit-cni dispatcher: the program of the live link pinned in the NIC's
    /// directory, or a program of the dispatcher's name.
    pub ours: bool,
}

impl std::fmt::Display for NicXdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ours {
            write!(
                f,
                "the netkit-cni XDP dispatcher (program id {}, {} mode) of a network with an xdp block",
                self.id, self.mode
            )
        } else {
            write!(
                f,
                "XDP program id {} name {:?} ({} mode), not netkit-cni's",
                self.id, self.name, self.mode
            )
        }
    }
}

/// One leased queue to steer: the master's RX queue and the queue it became on the pod device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteerQueue {
    pub physical: u32,
    pub virtual_id: u32,
}

/// What [`Dataplane::xdp_release`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpRelease {
    /// Physical queues given back to their range action.
    pub reset: Vec<u32>,
    /// Whether this call detached the dispatcher (the last pod on the master left).
    pub detached: bool,
}

/// The master's dispatcher as CHECK sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpObserved {
    /// Kernel id of the pinned XDP link (attached to the master).
    pub link_id: u32,
    /// This pod's XSKMAP and the queues steered into it; `None` without a pin for the pod.
    pub handoff: Option<PodHandoff>,
}
