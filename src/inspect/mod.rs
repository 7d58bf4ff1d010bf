//! `netkit-cni inspect`: what the plugin did on this node, read back from the kernel and bpffs
//! without reading any log. Read-only: it creates, changes and deletes nothing (the one side
//! effect is the kernel's own: reporting a queue lease across netns may assign an nsid).
//!
//! It runs in the node's netns (the netns the plugin runs in; the calling thread's) and reports
//! every NIC there whose RX queues carry leases or that has a netkit-cni dispatcher directory in
//! bpffs, or only the NIC named with `--master`. Per NIC:
//!
//! - identity: name, ifindex, the netns cookie and the NIC's bpffs directory
//!   ([`NicKey`](crate::xdp::NicKey), [`NicPaths`](crate::xdp::NicPaths)), real RX queue count;
//! - every real RX queue (netdev `queue-get` dump): free, leased to a netkit-cni device (container
//!   id, ifname, network from the ownership [`Marker`](crate::kernel::link::Marker); pairing), or leased
//!   to a device that is not ours; the lessee's ifindex, the nsid the node gives its netns and
//!   the virtual queue; plus the dispatcher's entry for the queue when a dispatcher is attached;
//! - the dispatcher: XDP link id, program id, attach mode, statistics, the pinned objects.
//!
//! Sources: rtnetlink (links, aliases, `IFLA_XDP`), netdev generic netlink (queues and leases),
//! bpffs and bpf(2) through [`Dispatcher::open`] (whose lock is held only while reading).
//!
//! # JSON (`--json`)
//!
//! Field names are stable; `version` changes only when a field changes meaning or disappears
//! (new fields may be added). Absent values are `null`, never left out.
//!
//! ```text
//! {
//!   "version": 1,
//!   "bpffs": "/sys/fs/bpf",              bpffs mount read for dispatchers
//!   "bpffs_mounted": true,               false: no bpffs there, dispatchers not read
//!   "nics": [{
//!     "name": "ens1f0", "ifindex": 4,
//!     "up": true,                        IFF_UP; the kernel reports no queues of a down device
//!     "netns_cookie": 4097,              SO_NETNS_COOKIE of the node netns (half the NIC key)
//!     "bpffs_dir": "/sys/fs/bpf/netkit-cni/netns4097-if4",
//!     "rx_queues": 8,                    real RX queues; null when down
//!     "xdp": null | {"mode": M, "prog_id": 40},   any XDP the kernel reports on the NIC
//!     "dispatcher": null | {
//!       "link_id": 12, "program_id": 40,
//!       "mode": M | null,                how the link's program is attached (from IFLA_XDP)
//!       "stats": false,                  per-queue counters compiled in
//!       "pins": [{"path": "link", "kind": "link" | "map", "id": 12 | null}, ...]
//!     },                                 paths relative to bpffs_dir, e.g. "pods/<cid>/<ifname>/xsks"
//!     "steering": null | {              the NIC's flow steering (docs/steering.md)
//!       "default_queues": [0, 1] | null,  queues the default RSS context spreads over
//!       "contexts": [{"id": 1, "queues": [2, 3]}],
//!       "pods": [{"network": N, "container_id": C, "ifname": I, "match": "mac" | "ip" | "none",
//!                 "context": 1 | null, "rules": [{"location": 8, "rule": R, "live": R | null}]}]
//!     },
//!     "host_routing": null | {           the NIC is a hostRouting uplink with its tcx link
//!       "dir": "/sys/fs/bpf/netkit-cni/uplink-…", "ingress_prog_id": 51 | null,
//!       "pods": 2, "addresses": 2        host-side primaries / pod addresses in its map
//!     },
//!     "queues": [{
//!       "id": 1,
//!       "state": "free" | "leased" | "foreign",   foreign: leased to a device that is not ours
//!       "busy": ["af-xdp" | "dmabuf" | "io-uring", ...],  other users the kernel reports
//!       "lease": null | {
//!         "ifindex": 2,                  the lessee device, in its netns
//!         "netns_id": 0 | null,          nsid the node gives the lessee's netns; null: the node's
//!         "vqueue": 1,                   the queue it became on the lessee
//!         "ifname": "eth0" | null,       the lessee's name (null: unreachable)
//!         "network": "net" | null, "container_id": "c1" | null,   from the marker
//!         "pairing": "pair" | "single" | null,
//!         "host_ifname": "nk…" | null,   pair: the host-side device carrying the marker
//!         "owner_verified": true | false | null,  see below
//!         "consumer": "af-xdp" | "memory-provider" | null   lease.consumer, from the record
//!       },
//!       "dispatch": null | {             the dispatcher's entry (null: no dispatcher)
//!         "action": A,                   what it does now
//!         "range_action": A,             what it restores when the pod gives the queue back
//!         "vqueue": 1 | null, "xskmap_id": 9 | null,   action "pod": where frames go
//!         "pod": "<cid>/<ifname>" | null               the pod pin holding that XSKMAP
//!       }
//!     }],
//!     "warnings": ["..."]
//!   }],
//!   "warnings": ["..."]
//! }
//! M: "native" | "generic" | "offload" | "multi";  A: "pass" | "drop" | "pod" | "program"
//! ```
//!
//! `owner_verified` (null for a lessee that is not ours) says whether `network`, `container_id`
//! and `pairing` come from facts the pod cannot change. A pair's marker is on its host side in
//! the node netns: `true`. A single device lives in the pod netns, where a pod with
//! CAP_NET_ADMIN can rename it and rewrite its alias; its owner is taken from the device-info
//! record (`--device-info-dir`) that describes exactly this lessee — the master, the lessee's
//! ifindex and every (physical, virtual) queue it holds — and is then `true`. With no such record
//! the alias is all there is: it is shown with `false` (the table says "owner unverified").

mod collect;
mod render;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use collect::inspect;
pub use render::render_table;

use crate::kernel::link::LinkError;
use crate::kernel::netdev::NetdevError;
use crate::xdp::XdpError;

/// Version of the JSON report ([`Report::version`]).
pub const REPORT_VERSION: u32 = 1;

/// Usage of `netkit-cni inspect`.
pub const USAGE: &str = "\
Usage: netkit-cni inspect [--json] [--master IFNAME] [--bpffs PATH] [--device-info-dir PATH]

Shows, read-only, what netkit-cni did on this node: per NIC in the current netns whose RX queues
are leased or that has a netkit-cni XDP dispatcher, each RX queue (free, leased to which pod and
virtual queue, the dispatcher's action) and the dispatcher (XDP link, program, pinned objects).
Run it as root in the node's netns.

  --json           machine-readable output (fields documented in the crate's inspect module)
  --master IFNAME  only this NIC (an error if it does not exist)
  --bpffs PATH     bpffs mount the dispatcher state is pinned under (default /sys/fs/bpf)
  --device-info-dir PATH
                   the networks' lease.deviceInfoDir, whose records verify the owners of single
                   devices (default /var/run/k8s.cni.cncf.io/devinfo/cni); an owner no record
                   confirms is marked unverified
";

/// Errors of `netkit-cni inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A bad command line; the message names the argument.
    #[error("{arg}: {reason}")]
    Usage {
        /// The offending argument.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--master` names no interface in this netns.
    #[error("--master {0}: no such interface in this network namespace")]
    NoSuchMaster(String),
    /// The Tokio runtime for rtnetlink could not start.
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The rtnetlink connection could not be opened.
    #[error("rtnetlink: {0}")]
    Rtnl(#[source] crate::kernel::rtnl::RtnlError),
    /// An rtnetlink request failed.
    #[error("{step}: {source}")]
    Link {
        /// What was being read.
        step: &'static str,
        /// The link error.
        #[source]
        source: LinkError,
    },
    /// A netdev generic netlink request failed.
    #[error("{step}: {source}")]
    Netdev {
        /// What was being read.
        step: &'static str,
        /// The netdev error (boxed: it carries the kernel's extack).
        #[source]
        source: Box<NetdevError>,
    },
    /// bpffs or bpf(2) failed where the report cannot do without it.
    #[error("{step}: {source}")]
    Xdp {
        /// What was being read.
        step: &'static str,
        /// The XDP error.
        #[source]
        source: XdpError,
    },
}

impl InspectError {
    /// The process exit status for this error: 2 for a bad command line, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            InspectError::Usage { .. } => 2,
            _ => 1,
        }
    }

    fn usage(arg: &str, reason: impl Into<String>) -> InspectError {
        InspectError::Usage {
            arg: arg.to_string(),
            reason: reason.into(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `--json`.
    pub json: bool,
    /// `--master IFNAME`.
    pub master: Option<String>,
    /// `--bpffs PATH`; `None`: [`crate::bpf::pins::DEFAULT_BPFFS`], where a missing bpffs is only a
    /// warning (an explicit path that is not a bpffs is an error).
    pub bpffs: Option<PathBuf>,
    /// `--device-info-dir PATH`; `None`: [`crate::config::DEFAULT_DEVICE_INFO_DIR`].
    pub device_info_dir: Option<PathBuf>,
}

/// A parsed `inspect` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `--help`.
    Help,
    /// Inspect with these options.
    Run(Options),
}

/// Parse the arguments after `inspect`. Accepts `--opt value` and `--opt=value`; an unknown,
/// repeated or incomplete argument is [`InspectError::Usage`] naming it.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Invocation, InspectError> {
    use crate::cli_args::{parse, Opt};
    const OPTS: &[Opt] = &[
        Opt::flag("--json"),
        Opt::value("--master", "an interface name"),
        Opt::value("--bpffs", "a path"),
        Opt::value("--device-info-dir", "a path"),
    ];
    let p = parse(args, OPTS).map_err(|e| InspectError::usage(e.arg(), e.why()))?;
    if p.help {
        return Ok(Invocation::Help);
    }
    if let Some(master) = p.get("--master") {
        crate::kernel::link::validate_ifname(master).map_err(|e| {
            InspectError::usage(
                "--master",
                format!("{master:?} is not an interface name: {e}"),
            )
        })?;
    }
    Ok(Invocation::Run(Options {
        json: p.has("--json"),
        master: p.get("--master").map(str::to_string),
        bpffs: p.get("--bpffs").map(PathBuf::from),
        device_info_dir: p.get("--device-info-dir").map(PathBuf::from),
    }))
}

/// The NIC's flow steering (`lease.steering`, see docs/steering.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteeringReport {
    /// Queues the default RSS context spreads over; `None` when RSS cannot be read.
    pub default_queues: Option<Vec<u32>>,
    /// Additional RSS contexts: (id, the queues they spread over).
    pub contexts: Vec<ContextReport>,
    /// Each attachment with a steering record on this NIC.
    pub pods: Vec<PodSteeringReport>,
}

/// An additional RSS context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextReport {
    pub id: u32,
    pub queues: Vec<u32>,
}

/// One attachment's steering, from its record, checked against the NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSteeringReport {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// `match`: "none", "mac" or "ip".
    #[serde(rename = "match")]
    pub match_on: String,
    pub rules: Vec<RuleReport>,
    pub context: Option<u32>,
}

/// A recorded rule and what the NIC has at its location now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    pub location: u32,
    /// As recorded: "ether dst 02:… -> queue 2".
    pub rule: String,
    /// What the NIC has there now (`None`: no rule, or not readable).
    pub live: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The bpffs mount dispatchers were read from.
    pub bpffs: PathBuf,
    /// Whether a bpffs is mounted there (dispatchers are only read when it is).
    pub bpffs_mounted: bool,
    /// The NICs, by ifindex.
    pub nics: Vec<NicReport>,
    /// Node-wide observations (no bpffs, leftover directories).
    pub warnings: Vec<String>,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicReport {
    /// Interface name.
    pub name: String,
    /// ifindex in the node netns.
    pub ifindex: u32,
    /// `IFF_UP`.
    pub up: bool,
    /// `SO_NETNS_COOKIE` of the node netns.
    pub netns_cookie: u64,
    /// The NIC's directory under bpffs (whether or not it exists).
    pub bpffs_dir: PathBuf,
    /// Real RX queues; `None` when the device is down (the kernel then reports none).
    pub rx_queues: Option<u32>,
    /// XDP the kernel reports on the NIC, whoever attached it.
    pub xdp: Option<XdpReport>,
    /// The netkit-cni dispatcher, if attached.
    pub dispatcher: Option<DispatcherReport>,
    /// BPF host routing, when the NIC is an uplink with its tcx link attached.
    #[serde(default)]
    pub host_routing: Option<HostRoutingReport>,
    /// Flow steering: the default RSS context and each pod's rules and context.
    #[serde(default)]
    pub steering: Option<SteeringReport>,
    /// Every real RX queue, by id.
    pub queues: Vec<QueueReport>,
    /// Per-NIC observations (stale directory, unreadable dispatcher, unreachable lessee).
    pub warnings: Vec<String>,
}

/// How an XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Driver mode (`XDP_ATTACHED_DRV`).
    Native,
    /// Generic / skb mode (`XDP_ATTACHED_SKB`).
    Generic,
    /// Offloaded to the NIC (`XDP_ATTACHED_HW`).
    Offload,
    /// Several modes at once (`XDP_ATTACHED_MULTI`).
    Multi,
}

/// `IFLA_XDP` of the NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpReport {
    /// Attach mode.
    pub mode: XdpAttachMode,
    /// The attached program (for `multi`: the driver-mode one, else the first reported).
    pub prog_id: Option<u32>,
}

/// The dispatcher on a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherReport {
    /// Kernel id of the pinned XDP link.
    pub link_id: u32,
    /// Kernel id of the program the link runs.
    pub program_id: u32,
    /// Attach mode, when the NIC's `IFLA_XDP` reports this program.
    pub mode: Option<XdpAttachMode>,
    /// Per-queue counters compiled in.
    pub stats: bool,
    /// Everything pinned in the NIC directory.
    pub pins: Vec<PinReport>,
}

/// Link or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinKind {
    /// The XDP link.
    Link,
    /// A map.
    Map,
}

/// One pinned object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinReport {
    /// Path relative to the NIC directory.
    pub path: String,
    /// Link or map.
    pub kind: PinKind,
    /// Kernel id (`bpftool link/map show id N`); `None` if it could not be opened.
    pub id: Option<u32>,
}

/// A queue's lease state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Not leased.
    Free,
    /// Leased to a netkit-cni device (its marker names the attachment).
    Leased,
    /// Leased to a device that is not netkit-cni's (or could not be reached).
    Foreign,
}

/// One RX queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReport {
    /// Physical queue id.
    pub id: u32,
    /// Lease state.
    pub state: QueueState,
    /// Other users the kernel reports on the queue: `af-xdp`, `dmabuf`, `io-uring`.
    pub busy: Vec<String>,
    /// The lease, unless free.
    pub lease: Option<LeaseReport>,
    /// The dispatcher's entry, when a dispatcher is attached.
    pub dispatch: Option<DispatchReport>,
}

/// netkit pairing of a lessee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    /// Primary on the node, peer (the lessee) in the pod.
    Pair,
    /// One device in the pod.
    Single,
}

/// Who holds a leased queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// The lessee's ifindex in its netns.
    pub ifindex: u32,
    /// nsid of the lessee's netns as the node sees it; `None`: the node's own netns.
    pub netns_id: Option<i32>,
    /// The queue id the lease became on the lessee.
    pub vqueue: u32,
    /// The lessee's interface name; `None` when it could not be read.
    pub ifname: Option<String>,
    /// The attachment's network (netkit-cni lessees only).
    pub network: Option<String>,
    /// The attachment's container id (netkit-cni lessees only).
    pub container_id: Option<String>,
    /// Pair or single (netkit-cni lessees only).
    pub pairing: Option<Pairing>,
    /// For a pair: the host-side device, which carries the marker.
    pub host_ifname: Option<String>,
    /// Whether the owner (network, container id, pairing) comes from facts the pod cannot
    /// change (see the module docs); `None` for a lessee that is not ours.
    pub owner_verified: Option<bool>,
    /// What the lease is for, `"af-xdp"` or `"memory-provider"` (the network's
    /// `lease.consumer`), from the device-info record that describes exactly this lessee;
    /// `None` without such a record or when the network declared none.
    #[serde(default)]
    pub consumer: Option<String>,
}

/// BPF host routing on a NIC that is a `hostRouting.uplink` (read through
/// [`crate::hostrouting::Uplink::open`], whose lock is held only while reading).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoutingReport {
    /// The directory of its pins.
    pub dir: PathBuf,
    /// Program id of the tcx ingress program (`None`: unreadable).
    pub ingress_prog_id: Option<u32>,
    /// Pods (host-side primaries) with addresses in its map.
    pub pods: usize,
    /// Pod addresses in its map.
    pub addresses: usize,
}

/// A dispatcher queue action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Host stack.
    Pass,
    /// Dropped.
    Drop,
    /// The pod's XSKMAP.
    Pod,
    /// An admin program.
    Program,
}

impl From<crate::xdp::QueueAction> for Action {
    fn from(a: crate::xdp::QueueAction) -> Action {
        use crate::xdp::QueueAction as Q;
        match a {
            Q::Pass => Action::Pass,
            Q::Drop => Action::Drop,
            Q::Pod => Action::Pod,
            Q::Program => Action::Program,
        }
    }
}

/// The dispatcher's entry for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchReport {
    /// What it does now.
    pub action: Action,
    /// What it restores when a pod gives the queue back.
    pub range_action: Action,
    /// For `pod`: the XSKMAP index (virtual queue).
    pub vqueue: Option<u32>,
    /// For `pod`: the XSKMAP's kernel id.
    pub xskmap_id: Option<u32>,
    /// For `pod`: `<container id>/<ifname>` of the pod pin holding that XSKMAP.
    pub pod: Option<String>,
}

impl Report {
    /// The report as pretty JSON (the `--json` output, without the final newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report is plain data")
    }
}
