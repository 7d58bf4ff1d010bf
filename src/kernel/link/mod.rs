//! netkit devices over rtnetlink: create pairs and single devices, mark them with an
//! ownership alias, look them up, list and delete them.
//!
//! Hot-path discipline (the plugin is benchmarked at 500 pods): ADD and DEL only issue
//! requests addressed by name or ifindex. Only [`list_netkit_links`]/[`list_marked_links`]
//! (for GC) dump, and even they ask the kernel to filter by kind and skip statistics.

mod marker;
mod netkit;

use std::fmt;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    link::{
        InfoData, InfoKind, InfoNetkit, LinkAttribute, LinkExtentMask, LinkFlags,
        LinkInfo as NlaLinkInfo, LinkMessage,
    },
    RouteNetlinkMessage,
};
use nix::errno::Errno;

pub use marker::{validate_container_id, validate_ifname, Marker, ALIAS_MAX, IFNAME_MAX};
pub use netkit::{
    NetkitExtAttr, NetkitMode, NetkitPair, NetkitPairing, NetkitPolicy, NetkitScrub, NetkitSingle,
    NETKIT_MAX_RX_QUEUES, NETKIT_MAX_TX_QUEUES,
};

use crate::kernel::rtnl::{Deletion, KernelError, Rtnl, RtnlError};

/// The link kind string netkit registers (`NETKIT_DRV_NAME`).
pub const NETKIT_KIND: &str = "netkit";

/// Which operation failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOp {
    Create,
    Get,
    Set,
    Delete,
    List,
}

impl fmt::Display for LinkOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkOp::Create => "create link",
            LinkOp::Get => "get link",
            LinkOp::Set => "set link",
            LinkOp::Delete => "delete link",
            LinkOp::List => "list links",
        })
    }
}

/// The link an operation was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRef {
    Name(String),
    Index(u32),
    /// A link in another namespace, addressed by that namespace's nsid (as the requesting
    /// socket's namespace knows it) and the link's ifindex there.
    InNetns {
        netnsid: i32,
        index: u32,
    },
    /// A dump; no single link.
    All,
}

impl fmt::Display for LinkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Name(n) => write!(f, "{n:?}"),
            LinkRef::Index(i) => write!(f, "ifindex {i}"),
            LinkRef::InNetns { netnsid, index } => {
                write!(f, "ifindex {index} in netns id {netnsid}")
            }
            LinkRef::All => f.write_str("(all)"),
        }
    }
}

/// Errors of link operations. Kernel failures are split by errno so DEL can tell "already
/// gone" ([`LinkError::NotFound`]) from real failures; every kernel variant keeps the
/// [`KernelError`] with its typed errno and extack message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// ENODEV (what rtnetlink returns for a missing link) or ENOENT.
    #[error("{op} {link}: {kernel}")]
    NotFound {
        op: LinkOp,
        link: LinkRef,
        kernel: KernelError,
    },
    /// EEXIST for the named link (in the namespace of the request's socket).
    #[error("{op} {link}: {kernel}")]
    Exists {
        op: LinkOp,
        link: LinkRef,
        kernel: KernelError,
    },
    /// EEXIST while creating a pair whose host-side name is free: the peer's name is taken
    /// inside the peer namespace.
    #[error("{op}: peer name {peer:?} already exists in the target namespace: {kernel}")]
    PeerExists {
        op: LinkOp,
        peer: String,
        kernel: KernelError,
    },
    /// EBUSY.
    #[error("{op} {link}: {kernel}")]
    Busy {
        op: LinkOp,
        link: LinkRef,
        kernel: KernelError,
    },
    /// EOPNOTSUPP: the kernel lacks netkit ("Unknown device type", see
    /// [`LinkError::is_unknown_kind`]) or rejects the attribute combination.
    #[error("{op} {link}: {kernel}")]
    Unsupported {
        op: LinkOp,
        link: LinkRef,
        kernel: KernelError,
    },
    /// Any other errno (EINVAL, EPERM, ERANGE, ...).
    #[error("{op} {link}: {kernel}")]
    Kernel {
        op: LinkOp,
        link: LinkRef,
        kernel: KernelError,
    },
    /// The kernel accepted `IFLA_NETKIT_PAIRING = single` but created a pair: it predates
    /// single-device netkit and silently ignores unknown netkit attributes. The stray pair
    /// has been deleted.
    #[error("create link {name:?}: kernel ignored IFLA_NETKIT_PAIRING (no single-device netkit)")]
    SingleModeUnsupported { name: String },
    /// The device at the attachment's derived host name carries someone else's alias (or
    /// none): a name collision or a foreign device, which DEL must not touch.
    #[error("link {name:?} is not ours: alias {alias:?} does not match {expected}")]
    MarkerMismatch {
        name: String,
        alias: Option<String>,
        expected: String,
    },
    /// The request never got a kernel verdict (socket, connection or protocol failure).
    #[error("{op} {link}: {error}")]
    Transport {
        op: LinkOp,
        link: LinkRef,
        error: RtnlError,
    },
    /// Rejected before talking to the kernel.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The kernel's answer lacks something every kernel sends (e.g. the ifname).
    #[error("{op} {link}: malformed kernel reply: {reason}")]
    MalformedReply {
        op: LinkOp,
        link: LinkRef,
        reason: &'static str,
    },
}

impl LinkError {
    fn from_netlink(op: LinkOp, link: LinkRef, err: RtnlError) -> LinkError {
        let kernel = match err {
            RtnlError::Kernel(k) => k,
            error => return LinkError::Transport { op, link, error },
        };
        match kernel.errno {
            Errno::ENODEV | Errno::ENOENT => LinkError::NotFound { op, link, kernel },
            Errno::EEXIST => LinkError::Exists { op, link, kernel },
            Errno::EBUSY => LinkError::Busy { op, link, kernel },
            Errno::EOPNOTSUPP => LinkError::Unsupported { op, link, kernel },
            _ => LinkError::Kernel { op, link, kernel },
        }
    }

    /// The kernel's error, if the kernel produced this error.
    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            LinkError::NotFound { kernel, .. }
            | LinkError::Exists { kernel, .. }
            | LinkError::PeerExists { kernel, .. }
            | LinkError::Busy { kernel, .. }
            | LinkError::Unsupported { kernel, .. }
            | LinkError::Kernel { kernel, .. } => Some(kernel),
            LinkError::Transport {
                error: RtnlError::Kernel(kernel),
                ..
            } => Some(kernel),
            _ => None,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        self.kernel().map(|k| k.errno)
    }

    pub fn extack(&self) -> Option<&str> {
        self.kernel().and_then(|k| k.msg())
    }

    /// The link does not exist (for DEL: already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LinkError::NotFound { .. })
    }

    /// The kernel has no netkit driver: rtnetlink found no `rtnl_link_ops` for the kind.
    pub fn is_unknown_kind(&self) -> bool {
        matches!(self, LinkError::Unsupported { kernel, .. }
            if kernel.msg() == Some("Unknown device type"))
    }
}

/// netkit-specific state decoded from `IFLA_INFO_DATA` (`netkit_fill_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetkitInfo {
    /// Whether this is the primary. The peer of a pair reports `false`; single devices are
    /// primaries.
    pub primary: Option<bool>,
    pub mode: Option<NetkitMode>,
    pub policy: Option<NetkitPolicy>,
    /// Only reported on a device that has a peer.
    pub peer_policy: Option<NetkitPolicy>,
    /// Only reported for pairs.
    pub scrub: Option<NetkitScrub>,
    pub peer_scrub: Option<NetkitScrub>,
    pub headroom: Option<u16>,
    pub tailroom: Option<u16>,
    /// Absent on kernels that predate single-device netkit.
    pub pairing: Option<NetkitPairing>,
    /// Attributes this crate does not know, kept verbatim.
    pub unknown: Vec<DefaultNla>,
}

impl NetkitInfo {
    fn decode(attrs: &[InfoNetkit]) -> NetkitInfo {
        use netlink_packet_route::link::NetkitScrub as CrateScrub;
        let scrub = |s: &CrateScrub| match s {
            CrateScrub::None => NetkitScrub::None,
            _ => NetkitScrub::Default,
        };
        let mut info = NetkitInfo::default();
        for attr in attrs {
            match attr {
                InfoNetkit::Primary(p) => info.primary = Some(*p),
                InfoNetkit::Mode(m) => info.mode = Some(u32::from(*m).into()),
                InfoNetkit::Policy(p) => info.policy = Some(u32::from(*p).into()),
                InfoNetkit::PeerPolicy(p) => info.peer_policy = Some(u32::from(*p).into()),
                InfoNetkit::Scrub(s) => info.scrub = Some(scrub(s)),
                InfoNetkit::PeerScrub(s) => info.peer_scrub = Some(scrub(s)),
                InfoNetkit::Headroom(h) => info.headroom = Some(*h),
                InfoNetkit::Tailroom(t) => info.tailroom = Some(*t),
                InfoNetkit::Other(nla) => match NetkitExtAttr::parse(nla) {
                    Some(NetkitExtAttr::Pairing(p)) => info.pairing = Some(p),
                    Some(NetkitExtAttr::Headroom(h)) => info.headroom = Some(h),
                    Some(NetkitExtAttr::Tailroom(t)) => info.tailroom = Some(t),
                    None => info.unknown.push(nla.clone()),
                },
                // PEER_INFO is request-only; anything else the crate adds later is kept raw
                // in `LinkInfo::message`.
                _ => {}
            }
        }
        info
    }
}

/// A link as reported by RTM_NEWLINK/GETLINK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub flags: LinkFlags,
    /// `IFLA_INFO_KIND`, e.g. "netkit"; `None` for devices without rtnl_link_ops (physical).
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    /// `IFLA_IFALIAS`; carries the [`Marker`] on devices this plugin created.
    pub alias: Option<String>,
    pub num_rx_queues: Option<u32>,
    pub num_tx_queues: Option<u32>,
    /// `IFLA_LINK`: for a netkit pair, the peer's ifindex (in [`LinkInfo::link_netnsid`]).
    pub link: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub netkit: Option<NetkitInfo>,
    /// The complete decoded message, including every attribute without a field above.
    pub message: LinkMessage,
}

impl LinkInfo {
    fn decode(op: LinkOp, link: LinkRef, message: LinkMessage) -> Result<LinkInfo, LinkError> {
        let mut info = LinkInfo {
            index: message.header.index,
            name: String::new(),
            flags: message.header.flags,
            kind: None,
            mtu: None,
            alias: None,
            num_rx_queues: None,
            num_tx_queues: None,
            link: None,
            link_netnsid: None,
            netkit: None,
            message: LinkMessage::default(),
        };
        let mut have_name = false;
        for attr in &message.attributes {
            match attr {
                LinkAttribute::IfName(n) => {
                    info.name = n.clone();
                    have_name = true;
                }
                LinkAttribute::Mtu(m) => info.mtu = Some(*m),
                LinkAttribute::IfAlias(a) => info.alias = Some(a.clone()),
                LinkAttribute::NumRxQueues(n) => info.num_rx_queues = Some(*n),
                LinkAttribute::NumTxQueues(n) => info.num_tx_queues = Some(*n),
                LinkAttribute::Link(l) => info.link = Some(*l),
                LinkAttribute::LinkNetNsId(id) => info.link_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            NlaLinkInfo::Kind(k) => info.kind = Some(k.to_string()),
                            NlaLinkInfo::Data(InfoData::Netkit(attrs)) => {
                                info.netkit = Some(NetkitInfo::decode(attrs))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if !have_name {
            return Err(LinkError::MalformedReply {
                op,
                link,
                reason: "no IFLA_IFNAME",
            });
        }
        info.message = message;
        Ok(info)
    }

    pub fn is_netkit(&self) -> bool {
        self.kind.as_deref() == Some(NETKIT_KIND)
    }

    pub fn is_up(&self) -> bool {
        self.flags.contains(LinkFlags::Up)
    }

    /// The ownership marker, if the alias is one of ours.
    pub fn marker(&self) -> Option<Marker> {
        self.alias.as_deref().and_then(Marker::parse)
    }
}

/// A netkit link carrying our [`Marker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedLink {
    pub marker: Marker,
    pub link: LinkInfo,
}

/// GETLINK answers without the ~200-byte statistics blocks nobody here reads.
fn get_request(header_index: u32, name: Option<&str>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = header_index;
    if let Some(name) = name {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    msg
}

fn expect_link(
    op: LinkOp,
    link: LinkRef,
    reply: RouteNetlinkMessage,
) -> Result<LinkInfo, LinkError> {
    match reply {
        RouteNetlinkMessage::NewLink(m) => LinkInfo::decode(op, link, m),
        _ => Err(LinkError::MalformedReply {
            op,
            link,
            reason: "answer is not RTM_NEWLINK",
        }),
    }
}

pub async fn get_link_by_name(rtnl: &Rtnl, name: &str) -> Result<LinkInfo, LinkError> {
    validate_ifname(name)?;
    let link = LinkRef::Name(name.to_string());
    let req = RouteNetlinkMessage::GetLink(get_request(0, Some(name)));
    let reply = rtnl
        .get(req)
        .await
        .map_err(|e| LinkError::from_netlink(LinkOp::Get, link.clone(), e))?;
    expect_link(LinkOp::Get, link, reply)
}

pub async fn get_link_by_index(rtnl: &Rtnl, index: u32) -> Result<LinkInfo, LinkError> {
    let link = LinkRef::Index(index);
    let req = RouteNetlinkMessage::GetLink(get_request(index, None));
    let reply = rtnl
        .get(req)
        .await
        .map_err(|e| LinkError::from_netlink(LinkOp::Get, link.clone(), e))?;
    expect_link(LinkOp::Get, link, reply)
}

/// A link in another namespace, by its nsid as this socket's namespace knows it
/// (`IFLA_TARGET_NETNSID`) and its ifindex there. This is how the host side reaches a pod's
/// single netkit device, which has no host-side half, knowing only what a queue lease reports.
pub async fn get_link_in(rtnl: &Rtnl, netnsid: i32, index: u32) -> Result<LinkInfo, LinkError> {
    let link = LinkRef::InNetns { netnsid, index };
    let mut msg = get_request(index, None);
    msg.attributes.push(LinkAttribute::IfNetnsId(netnsid));
    let reply = rtnl
        .get(RouteNetlinkMessage::GetLink(msg))
        .await
        .map_err(|e| LinkError::from_netlink(LinkOp::Get, link.clone(), e))?;
    expect_link(LinkOp::Get, link, reply)
}

/// Deletes a link in another namespace (see [`get_link_in`]). Already gone is success.
pub async fn delete_link_in(rtnl: &Rtnl, netnsid: i32, index: u32) -> Result<Deletion, LinkError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::IfNetnsId(netnsid));
    delete(rtnl, msg, LinkRef::InNetns { netnsid, index }).await
}

/// Every link in the socket's namespace, of any kind. For admin tools (`netkit-cni inspect`)
/// only: this dumps, and is never on a CNI verb's path.
pub async fn list_links(rtnl: &Rtnl) -> Result<Vec<LinkInfo>, LinkError> {
    let replies = rtnl
        .dump(RouteNetlinkMessage::GetLink(get_request(0, None)))
        .await
        .map_err(|e| LinkError::from_netlink(LinkOp::List, LinkRef::All, e))?;
    replies
        .into_iter()
        .map(|reply| expect_link(LinkOp::List, LinkRef::All, reply))
        .collect()
}

/// All netkit links in the socket's namespace (primaries and peers). For GC only: this dumps.
///
/// The kernel filters by kind when it knows the kind; if the netkit module is not loaded it
/// ignores the filter and dumps every link, so the kind is checked here as well.
pub async fn list_netkit_links(rtnl: &Rtnl) -> Result<Vec<LinkInfo>, LinkError> {
    let mut req = get_request(0, None);
    req.attributes
        .push(LinkAttribute::LinkInfo(vec![NlaLinkInfo::Kind(
            InfoKind::Netkit,
        )]));
    let replies = rtnl
        .dump(RouteNetlinkMessage::GetLink(req))
        .await
        .map_err(|e| LinkError::from_netlink(LinkOp::List, LinkRef::All, e))?;
    let mut out = Vec::new();
    for reply in replies {
        let info = expect_link(LinkOp::List, LinkRef::All, reply)?;
        if info.is_netkit() {
            out.push(info);
        }
    }
    Ok(out)
}

/// The netkit links in the socket's namespace whose alias is one of our markers.
pub async fn list_marked_links(rtnl: &Rtnl) -> Result<Vec<MarkedLink>, LinkError> {
    Ok(list_netkit_links(rtnl)
        .await?
        .into_iter()
        .filter_map(|link| link.marker().map(|marker| MarkedLink { marker, link }))
        .collect())
}

/// Creates a netkit pair and returns the primary as the kernel reports it; its
/// [`LinkInfo::link`] is the peer's ifindex inside the peer namespace.
///
/// EEXIST is attributed: [`LinkError::Exists`] if the host-side name is taken,
/// [`LinkError::PeerExists`] if the peer's name is taken in the peer namespace.
pub async fn create_pair(rtnl: &Rtnl, pair: &NetkitPair<'_>) -> Result<LinkInfo, LinkError> {
    create_pair_device(rtnl, pair).await?;
    get_link_by_name(rtnl, pair.host_name()).await
}

/// [`create_pair`] plus the ownership marker on the primary. The kernel applies
/// `IFLA_IFALIAS` only to existing devices, so this takes a second request; if that fails the
/// new pair is deleted again rather than left unmarked.
pub async fn create_marked_pair(
    rtnl: &Rtnl,
    pair: &NetkitPair<'_>,
    marker: &Marker,
) -> Result<LinkInfo, LinkError> {
    create_pair_device(rtnl, pair).await?;
    let host = pair.host_name();
    if let Err(err) = set_alias_by_name(rtnl, host, &marker.to_string()).await {
        // Best effort: the original error is the one worth reporting.
        let _ = delete_link_by_name(rtnl, host).await;
        return Err(err);
    }
    get_link_by_name(rtnl, host).await
}

async fn create_pair_device(rtnl: &Rtnl, pair: &NetkitPair<'_>) -> Result<(), LinkError> {
    let host = LinkRef::Name(pair.host_name().to_string());
    let req = RouteNetlinkMessage::NewLink(pair.message());
    match rtnl.ack(req, NLM_F_CREATE | NLM_F_EXCL).await {
        Ok(_) => Ok(()),
        Err(e) => match LinkError::from_netlink(LinkOp::Create, host, e) {
            // Only register_netdevice of the primary or the peer returns EEXIST here; find
            // out which name clashed so ADD can report something actionable.
            LinkError::Exists { op, link, kernel } => {
                match get_link_by_name(rtnl, pair.host_name()).await {
                    Err(e) if e.is_not_found() => Err(LinkError::PeerExists {
                        op,
                        peer: pair.peer_name().to_string(),
                        kernel,
                    }),
                    _ => Err(LinkError::Exists { op, link, kernel }),
                }
            }
            other => Err(other),
        },
    }
}

/// Creates a single netkit device inside the namespace `single` points at, through `rtnl`
/// (any namespace), and verifies it through `target`, a connection inside that namespace (see
/// [`crate::kernel::netns::NetNs::connect_rtnl`]).
///
/// The check matters: a kernel without single-device support ignores `IFLA_NETKIT_PAIRING`
/// and creates a *pair* instead. That pair is deleted and
/// [`LinkError::SingleModeUnsupported`] returned.
pub async fn create_single(
    rtnl: &Rtnl,
    single: &NetkitSingle<'_>,
    target: &Rtnl,
) -> Result<LinkInfo, LinkError> {
    let name = LinkRef::Name(single.name().to_string());
    rtnl.ack(
        RouteNetlinkMessage::NewLink(single.message()),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|e| LinkError::from_netlink(LinkOp::Create, name, e))?;
    let info = get_link_by_name(target, single.name()).await?;
    let pairing = info.netkit.as_ref().and_then(|n| n.pairing);
    if pairing != Some(NetkitPairing::Single) {
        let _ = delete_link(target, info.index).await;
        return Err(LinkError::SingleModeUnsupported {
            name: single.name().to_string(),
        });
    }
    Ok(info)
}

/// Deletes a link by ifindex. Deleting either end of a netkit pair removes both.
pub async fn delete_link(rtnl: &Rtnl, index: u32) -> Result<Deletion, LinkError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    delete(rtnl, msg, LinkRef::Index(index)).await
}

/// Deletes a link by name (DEL's path: the host name is derived, no lookup needed).
pub async fn delete_link_by_name(rtnl: &Rtnl, name: &str) -> Result<Deletion, LinkError> {
    validate_ifname(name)?;
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    delete(rtnl, msg, LinkRef::Name(name.to_string())).await
}

async fn delete(rtnl: &Rtnl, msg: LinkMessage, link: LinkRef) -> Result<Deletion, LinkError> {
    match rtnl.ack(RouteNetlinkMessage::DelLink(msg), 0).await {
        Ok(_) => Ok(Deletion::Deleted),
        Err(e) => match LinkError::from_netlink(LinkOp::Delete, link, e) {
            LinkError::NotFound { .. } => Ok(Deletion::AlreadyGone),
            other => Err(other),
        },
    }
}

/// DEL for a CNI attachment: deletes the device at the marker's derived host name, but only
/// if it carries that marker. Already gone is success ([`Deletion::AlreadyGone`]); a device
/// with a different alias is [`LinkError::MarkerMismatch`] and left alone.
pub async fn delete_attachment(rtnl: &Rtnl, marker: &Marker) -> Result<Deletion, LinkError> {
    let name = marker.host_ifname();
    let link = match get_link_by_name(rtnl, &name).await {
        Ok(link) => link,
        Err(e) if e.is_not_found() => return Ok(Deletion::AlreadyGone),
        Err(e) => return Err(e),
    };
    if link.marker().as_ref() != Some(marker) {
        return Err(LinkError::MarkerMismatch {
            name,
            alias: link.alias,
            expected: marker.to_string(),
        });
    }
    delete_link(rtnl, link.index).await
}

/// Sets or clears `IFF_UP`.
pub async fn set_link_up(rtnl: &Rtnl, index: u32, up: bool) -> Result<(), LinkError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    msg.header.change_mask = LinkFlags::Up;
    set(rtnl, msg, LinkRef::Index(index)).await
}

/// Writes the ownership marker into the alias of `index`.
pub async fn set_marker(rtnl: &Rtnl, index: u32, marker: &Marker) -> Result<(), LinkError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::IfAlias(marker.to_string()));
    set(rtnl, msg, LinkRef::Index(index)).await
}

async fn set_alias_by_name(rtnl: &Rtnl, name: &str, alias: &str) -> Result<(), LinkError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    set(rtnl, msg, LinkRef::Name(name.to_string())).await
}

async fn set(rtnl: &Rtnl, msg: LinkMessage, link: LinkRef) -> Result<(), LinkError> {
    rtnl.ack(RouteNetlinkMessage::SetLink(msg), 0)
        .await
        .map(drop)
        .map_err(|e| LinkError::from_netlink(LinkOp::Set, link, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::NetNs;
    use netlink_packet_core::{Emitable, Parseable};

    fn kernel(errno: Errno, extack: Option<&str>) -> RtnlError {
        RtnlError::Kernel(KernelError {
            errno,
            extack: Box::new(crate::kernel::netlink::ExtAck {
                msg: extack.map(str::to_string),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn errno_classification() {
        let l = || LinkRef::Name("nk0".into());
        let e = LinkError::from_netlink(LinkOp::Delete, l(), kernel(Errno::ENODEV, None));
        assert!(e.is_not_found());
        assert_eq!(e.errno(), Some(Errno::ENODEV));
        assert!(matches!(
            LinkError::from_netlink(LinkOp::Create, l(), kernel(Errno::EEXIST, None)),
            LinkError::Exists { .. }
        ));
        assert!(matches!(
            LinkError::from_netlink(LinkOp::Delete, l(), kernel(Errno::EBUSY, None)),
            LinkError::Busy { .. }
        ));
        let unknown = LinkError::from_netlink(
            LinkOp::Create,
            l(),
            kernel(Errno::EOPNOTSUPP, Some("Unknown device type")),
        );
        assert!(unknown.is_unknown_kind());
        assert_eq!(unknown.extack(), Some("Unknown device type"));
        assert_eq!(
            unknown.to_string(),
            "create link \"nk0\": EOPNOTSUPP: Operation not supported (Unknown device type)"
        );
        // EOPNOTSUPP for another reason (e.g. > NETKIT_NUM_RX_QUEUES_MAX) is not "no netkit".
        let other = LinkError::from_netlink(LinkOp::Create, l(), kernel(Errno::EOPNOTSUPP, None));
        assert!(matches!(other, LinkError::Unsupported { .. }) && !other.is_unknown_kind());
        let inval = LinkError::from_netlink(LinkOp::Create, l(), kernel(Errno::EINVAL, Some("x")));
        assert!(matches!(inval, LinkError::Kernel { .. }) && !inval.is_not_found());
        let closed = LinkError::from_netlink(LinkOp::Get, l(), RtnlError::ConnectionClosed);
        assert!(matches!(closed, LinkError::Transport { .. }) && closed.errno().is_none());
    }

    /// An RTM_NEWLINK for a netkit primary as `netkit_fill_info` + `rtnl_fill_ifinfo` emit it,
    /// including IFLA_NETKIT_PAIRING, which the crate does not know.
    fn netkit_reply() -> Vec<u8> {
        let mut data = vec![
            InfoNetkit::Primary(true),
            InfoNetkit::Policy(netlink_packet_route::link::NetkitPolicy::Pass),
            InfoNetkit::Mode(netlink_packet_route::link::NetkitMode::L3),
            InfoNetkit::Scrub(netlink_packet_route::link::NetkitScrub::Default),
            NetkitExtAttr::Headroom(0).into(),
            NetkitExtAttr::Tailroom(0).into(),
            NetkitExtAttr::Pairing(NetkitPairing::Pair).into(),
            InfoNetkit::PeerPolicy(netlink_packet_route::link::NetkitPolicy::Drop),
            InfoNetkit::PeerScrub(netlink_packet_route::link::NetkitScrub::None),
        ];
        data.push(InfoNetkit::Other(DefaultNla::new(42, vec![1, 2, 3, 4])));
        let mut msg = LinkMessage::default();
        msg.header.index = 17;
        msg.header.flags = LinkFlags::Up | LinkFlags::Noarp;
        msg.attributes = vec![
            LinkAttribute::IfName("nk96128c575a98c".into()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
            LinkAttribute::Link(2),
            LinkAttribute::IfAlias("netkit-cni/net/abc/eth0".into()),
            LinkAttribute::LinkInfo(vec![
                NlaLinkInfo::Kind(InfoKind::Netkit),
                NlaLinkInfo::Data(InfoData::Netkit(data)),
            ]),
            LinkAttribute::LinkNetNsId(3),
            LinkAttribute::Other(DefaultNla::new(999, vec![7, 7, 7, 7])),
        ];
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[test]
    fn decode_netkit_link_keeps_unknown_attributes() {
        let bytes = netkit_reply();
        let msg = LinkMessage::parse(bytes.as_slice()).unwrap();
        let info = LinkInfo::decode(LinkOp::Get, LinkRef::Index(17), msg).unwrap();
        assert_eq!(info.index, 17);
        assert_eq!(info.name, "nk96128c575a98c");
        assert!(info.is_netkit() && info.is_up());
        assert_eq!(info.mtu, Some(1500));
        assert_eq!(info.num_rx_queues, Some(1));
        assert_eq!(info.link, Some(2));
        assert_eq!(info.link_netnsid, Some(3));
        assert_eq!(
            info.marker(),
            Some(Marker::new("net", "abc", "eth0").unwrap())
        );
        let nk = info.netkit.as_ref().unwrap();
        assert_eq!(nk.primary, Some(true));
        assert_eq!(nk.mode, Some(NetkitMode::L3));
        assert_eq!(nk.policy, Some(NetkitPolicy::Forward));
        assert_eq!(nk.peer_policy, Some(NetkitPolicy::Blackhole));
        assert_eq!(nk.scrub, Some(NetkitScrub::Default));
        assert_eq!(nk.peer_scrub, Some(NetkitScrub::None));
        assert_eq!(nk.headroom, Some(0));
        assert_eq!(nk.pairing, Some(NetkitPairing::Pair));
        assert_eq!(nk.unknown, vec![DefaultNla::new(42, vec![1, 2, 3, 4])]);
        assert!(info
            .message
            .attributes
            .contains(&LinkAttribute::Other(DefaultNla::new(
                999,
                vec![7, 7, 7, 7]
            ))));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn get_by_name_request_bytes() {
        let m = get_request(0, Some("lo"));
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ifinfomsg: all zero (strict check)
            7, 0, 3, 0, b'l', b'o', 0, 0,                   // IFLA_IFNAME "lo"
            8, 0, 29, 0, 8, 0, 0, 0,                        // IFLA_EXT_MASK RTEXT_FILTER_SKIP_STATS
        ];
        assert_eq!(buf, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn netkit_dump_request_filters_by_kind() {
        let mut m = get_request(0, None);
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![NlaLinkInfo::Kind(
                InfoKind::Netkit,
            )]));
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let mut want = vec![0u8; 16];
        want.extend([8, 0, 29, 0, 8, 0, 0, 0]); // IFLA_EXT_MASK
        want.extend([16, 0, 18, 0]); // IFLA_LINKINFO
        want.extend([11, 0, 1, 0]); // IFLA_INFO_KIND
        want.extend(b"netkit\0\0");
        assert_eq!(buf, want);
    }

    #[test]
    fn decode_requires_a_name() {
        let err =
            LinkInfo::decode(LinkOp::Get, LinkRef::Index(1), LinkMessage::default()).unwrap_err();
        assert!(matches!(err, LinkError::MalformedReply { .. }));
    }

    // The following talk to the host kernel read-only (GETLINK on lo / a missing name, and a
    // kind-filtered dump); they create nothing.

    #[test]
    fn get_missing_link_is_not_found_with_errno() {
        let err = NetNs::current()
            .unwrap()
            .run_rtnl(|rtnl| async move { get_link_by_name(&rtnl, "nkc-absent-0").await })
            .unwrap()
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert_eq!(err.errno(), Some(Errno::ENODEV));
    }

    #[test]
    fn get_loopback_by_name_and_index_agree() {
        let (a, b) = NetNs::current()
            .unwrap()
            .run_rtnl(|rtnl| async move {
                let a = get_link_by_name(&rtnl, "lo").await.unwrap();
                let b = get_link_by_index(&rtnl, a.index).await.unwrap();
                (a, b)
            })
            .unwrap();
        assert_eq!(a.name, "lo");
        assert_eq!(a.index, b.index);
        assert!(a.kind.is_none() && a.netkit.is_none());
        assert!(a.num_rx_queues.unwrap_or(0) >= 1);
    }

    #[test]
    fn delete_attachment_of_absent_device_is_already_gone() {
        // GETLINK finds nothing, so no delete is ever sent.
        let marker = Marker::new("net", "netkit-cni-test-absent", "eth0").unwrap();
        let out = NetNs::current()
            .unwrap()
            .run_rtnl(|rtnl| async move { delete_attachment(&rtnl, &marker).await })
            .unwrap()
            .unwrap();
        assert_eq!(out, Deletion::AlreadyGone);
    }

    #[test]
    fn list_netkit_links_only_returns_netkit() {
        let links = NetNs::current()
            .unwrap()
            .run_rtnl(|rtnl| async move { list_netkit_links(&rtnl).await })
            .unwrap()
            .unwrap();
        assert!(links.iter().all(LinkInfo::is_netkit));
    }
}
