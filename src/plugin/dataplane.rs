//! The kernel boundary of the plugin: what ADD/DEL/CHECK/GC/STATUS ask of the kernel, as one
//! small trait. The real implementation speaks rtnetlink ([`super::netlink_dp::NetlinkDataplane`]);
//! unit tests use a recording fake to check ordering and rollback without a kernel. Which one is
//! used is decided where the plugin is constructed, never by `cfg!(test)`.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::cni::IpCidr;
use crate::config::{Mode, Policy, Scrub};
use crate::link::{LinkError, Marker};
use crate::rtnl::Deletion;

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
}

/// What the kernel made.
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
    pub addrs: Vec<IpCidr>,
    pub routes: Vec<PlannedRoute>,
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
    Link { step: &'static str, source: LinkError },
    #[error("{step}: {source}")]
    Addr { step: &'static str, source: crate::addr::AddrError },
    #[error("{step}: {source}")]
    Route { step: &'static str, source: crate::route::RouteError },
    #[error("{step}: {source}")]
    Sysctl { step: &'static str, source: crate::sysctl::SysctlError },
    #[error("network namespace {path}: {source}")]
    Netns { path: PathBuf, source: crate::netns::NetnsError },
    #[error("{step}: {source}")]
    Rtnl { step: &'static str, source: crate::rtnl::RtnlError },
    #[error("{0}")]
    Other(String),
}

impl DpError {
    /// True when the kernel has no netkit at all ("Unknown device type").
    pub fn is_netkit_missing(&self) -> bool {
        matches!(self, DpError::Link { source, .. } if source.is_unknown_kind())
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
    fn observe(&mut self, marker: &Marker, netns: Option<&std::path::Path>, ifname: &str) -> Result<Observed, DpError>;
    /// Every attachment of ours on this node (host devices carrying our marker).
    fn list_ours(&mut self) -> Result<Vec<Marker>, DpError>;
    /// Whether the kernel has netkit, asked without creating anything.
    fn netkit_available(&mut self) -> Result<bool, DpError>;
}
