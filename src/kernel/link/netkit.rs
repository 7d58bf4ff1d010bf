//! Typed netkit attributes and the RTM_NEWLINK builders for netkit pairs and single devices.
//!
//! Which attribute goes where follows `netkit_new_link()` in `drivers/net/netkit.c` (7.3):
//!
//! * `IFLA_INFO_DATA` (mode, policy, peer policy, scrub, peer scrub, headroom, tailroom,
//!   pairing) is parsed once and applies to *both* devices of a pair: mode, headroom and
//!   tailroom are shared, `POLICY`/`SCRUB` go to the primary and `PEER_POLICY`/`PEER_SCRUB` to the
//!   peer.
//! * The peer is created by `rtnl_create_link(peer_net, ..., tbp)` where `tbp` is the
//!   `ifinfomsg` + attributes nested in `IFLA_NETKIT_PEER_INFO`. So the peer's `IFLA_IFNAME`,
//!   `IFLA_MTU`, `IFLA_NUM_RX_QUEUES`/`IFLA_NUM_TX_QUEUES`, `IFLA_ADDRESS` and its netns
//!   (`IFLA_NET_NS_FD`, resolved by `rtnl_get_peer_net`) all belong in the peer message. Without
//!   `PEER_INFO` the peer would inherit the top-level attributes instead.
//! * The peer's `ifi_flags` are ignored (`rtnl_configure_link(peer, NULL, ...)`): the peer is
//!   always created down and must be brought up from inside its namespace. The primary honours
//!   the top-level `ifi_flags`.
//! * `IFLA_IFALIAS` is only applied by `do_setlink`, never on creation, so the ownership marker
//!   needs a second request.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{DefaultNla, Nla};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoNetkit, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};

use super::{marker::validate_ifname, LinkError, Marker};

/// `NETKIT_NUM_RX_QUEUES_MAX` in netkit.c. `netkit_alloc` answers a larger request with a bare
/// EOPNOTSUPP and no extack, which is undiagnosable, so the builders check it up front.
pub const NETKIT_MAX_RX_QUEUES: u32 = 1024;
/// `NETKIT_NUM_TX_QUEUES_MAX` in netkit.c: netkit has exactly one TX queue.
pub const NETKIT_MAX_TX_QUEUES: u32 = 1;

// include/uapi/linux/if_link.h, enum { IFLA_NETKIT_... }: the attributes netlink-packet-route
// 0.34 has no variant for, or cannot carry every value of.
const IFLA_NETKIT_SCRUB: u16 = 6;
const IFLA_NETKIT_PEER_SCRUB: u16 = 7;
const IFLA_NETKIT_HEADROOM: u16 = 8;
const IFLA_NETKIT_TAILROOM: u16 = 9;
const IFLA_NETKIT_PAIRING: u16 = 10;

/// `enum netkit_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetkitMode {
    /// Ethernet device with a (random unless given) MAC; ARP enabled.
    L2,
    /// No L2 header, `IFF_NOARP`; the kernel default.
    #[default]
    L3,
    /// A value this crate does not know (decoded from a newer kernel).
    Other(u32),
}

/// `enum netkit_action` as a device's default policy when no BPF program is attached (or all
/// return `NETKIT_NEXT`). Only `PASS` and `DROP` are accepted by `netkit_check_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetkitPolicy {
    /// `NETKIT_PASS`: forward to the peer / the stack. The kernel default.
    #[default]
    Forward,
    /// `NETKIT_DROP`: drop everything until a program is attached.
    Blackhole,
    /// A value this crate does not know (decoded from a newer kernel).
    Other(u32),
}

/// `enum netkit_scrub`: whether `skb->mark`/`skb->priority` are cleared when crossing netns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetkitScrub {
    /// `NETKIT_SCRUB_NONE`: leave clearing to BPF programs.
    None,
    /// `NETKIT_SCRUB_DEFAULT`: clear on netns crossing. The kernel default.
    #[default]
    Default,
    /// A value this crate does not know (decoded from a newer kernel).
    Other(u32),
}

/// `enum netkit_pairing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetkitPairing {
    /// `NETKIT_DEVICE_PAIR`: primary + peer. The kernel default.
    #[default]
    Pair,
    /// `NETKIT_DEVICE_SINGLE`: one device, no peer; the only mode supporting AF_XDP on leased
    /// queues.
    Single,
    /// A value this crate does not know (decoded from a newer kernel).
    Other(u32),
}

macro_rules! u32_enum {
    ($ty:ident { $($variant:ident = $value:expr),* $(,)? }) => {
        impl From<$ty> for u32 {
            fn from(v: $ty) -> u32 {
                match v { $($ty::$variant => $value,)* $ty::Other(raw) => raw }
            }
        }
        impl From<u32> for $ty {
            fn from(raw: u32) -> $ty {
                match raw { $($value => $ty::$variant,)* other => $ty::Other(other) }
            }
        }
    };
}

u32_enum!(NetkitMode { L2 = 0, L3 = 1 });
u32_enum!(NetkitPolicy { Forward = 0, Blackhole = 2 });
u32_enum!(NetkitScrub { None = 0, Default = 1 });
u32_enum!(NetkitPairing { Pair = 0, Single = 1 });

/// netkit `IFLA_INFO_DATA` attributes that netlink-packet-route 0.34 lacks
/// (`IFLA_NETKIT_PAIRING`) or encodes differently from the kernel (`HEADROOM`/`TAILROOM`: the
/// crate sends a 4-byte payload for these `NLA_U16` attributes, which makes `validate_nla`
/// log "attribute type 8 has an invalid length" for every pod). They travel as
/// [`InfoNetkit::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetkitExtAttr {
    Headroom(u16),
    Tailroom(u16),
    Pairing(NetkitPairing),
}

impl NetkitExtAttr {
    pub fn kind(&self) -> u16 {
        match self {
            Self::Headroom(_) => IFLA_NETKIT_HEADROOM,
            Self::Tailroom(_) => IFLA_NETKIT_TAILROOM,
            Self::Pairing(_) => IFLA_NETKIT_PAIRING,
        }
    }

    /// Decodes an attribute the crate left as [`InfoNetkit::Other`]; `None` if it is not one
    /// of ours or its payload has the wrong size.
    pub fn parse(nla: &DefaultNla) -> Option<NetkitExtAttr> {
        let mut value = vec![0u8; nla.value_len()];
        nla.emit_value(&mut value);
        match (nla.kind(), value.as_slice()) {
            (IFLA_NETKIT_HEADROOM, &[a, b]) => Some(Self::Headroom(u16::from_ne_bytes([a, b]))),
            (IFLA_NETKIT_TAILROOM, &[a, b]) => Some(Self::Tailroom(u16::from_ne_bytes([a, b]))),
            (IFLA_NETKIT_PAIRING, &[a, b, c, d]) => {
                Some(Self::Pairing(u32::from_ne_bytes([a, b, c, d]).into()))
            }
            _ => None,
        }
    }
}

impl From<NetkitExtAttr> for InfoNetkit {
    fn from(attr: NetkitExtAttr) -> InfoNetkit {
        let value = match attr {
            NetkitExtAttr::Headroom(v) | NetkitExtAttr::Tailroom(v) => v.to_ne_bytes().to_vec(),
            NetkitExtAttr::Pairing(p) => u32::from(p).to_ne_bytes().to_vec(),
        };
        InfoNetkit::Other(DefaultNla::new(attr.kind(), value))
    }
}

fn to_crate_policy(p: NetkitPolicy) -> netlink_packet_route::link::NetkitPolicy {
    u32::from(p).into()
}

fn to_crate_mode(m: NetkitMode) -> netlink_packet_route::link::NetkitMode {
    u32::from(m).into()
}

fn scrub_attr(peer: bool, s: NetkitScrub) -> InfoNetkit {
    // The crate's NetkitScrub cannot carry unknown values, so those go out raw.
    let kind = if peer {
        IFLA_NETKIT_PEER_SCRUB
    } else {
        IFLA_NETKIT_SCRUB
    };
    match s {
        NetkitScrub::None | NetkitScrub::Default => {
            let v = if s == NetkitScrub::None {
                netlink_packet_route::link::NetkitScrub::None
            } else {
                netlink_packet_route::link::NetkitScrub::Default
            };
            if peer {
                InfoNetkit::PeerScrub(v)
            } else {
                InfoNetkit::Scrub(v)
            }
        }
        NetkitScrub::Other(raw) => {
            InfoNetkit::Other(DefaultNla::new(kind, raw.to_ne_bytes().to_vec()))
        }
    }
}

fn check_queues(what: &'static str, n: u32, max: u32) -> Result<u32, LinkError> {
    if n == 0 || n > max {
        return Err(LinkError::InvalidArgument {
            what,
            value: n.to_string(),
            reason: if max == 1 {
                "netkit supports exactly 1 TX queue"
            } else {
                "netkit supports 1..=1024 RX queues"
            },
        });
    }
    Ok(n)
}

/// Builder for a netkit pair: the primary (host side) in the namespace of the rtnetlink socket
/// that sends the request, the peer created directly inside `peer_netns`.
#[derive(Debug, Clone)]
pub struct NetkitPair<'fd> {
    host_name: String,
    peer_name: String,
    peer_netns: BorrowedFd<'fd>,
    mode: NetkitMode,
    policy: NetkitPolicy,
    peer_policy: NetkitPolicy,
    scrub: NetkitScrub,
    peer_scrub: NetkitScrub,
    headroom: Option<u16>,
    tailroom: Option<u16>,
    mtu: Option<u32>,
    peer_num_rx_queues: Option<u32>,
    peer_num_tx_queues: Option<u32>,
    host_up: bool,
}

impl<'fd> NetkitPair<'fd> {
    pub fn new(
        host_name: &str,
        peer_name: &str,
        peer_netns: BorrowedFd<'fd>,
    ) -> Result<NetkitPair<'fd>, LinkError> {
        validate_ifname(host_name)?;
        validate_ifname(peer_name)?;
        Ok(Self::with_valid_names(
            host_name.to_string(),
            peer_name.to_string(),
            peer_netns,
        ))
    }

    /// The pair for a CNI attachment: host side named [`Marker::host_ifname`], peer named the
    /// CNI ifname. Both names come from a validated [`Marker`], so this cannot fail.
    pub fn for_attachment(marker: &Marker, peer_netns: BorrowedFd<'fd>) -> NetkitPair<'fd> {
        Self::with_valid_names(
            marker.host_ifname(),
            marker.ifname().to_string(),
            peer_netns,
        )
    }

    fn with_valid_names(host_name: String, peer_name: String, peer_netns: BorrowedFd<'fd>) -> Self {
        NetkitPair {
            host_name,
            peer_name,
            peer_netns,
            mode: NetkitMode::default(),
            policy: NetkitPolicy::default(),
            peer_policy: NetkitPolicy::default(),
            scrub: NetkitScrub::default(),
            peer_scrub: NetkitScrub::default(),
            headroom: None,
            tailroom: None,
            mtu: None,
            peer_num_rx_queues: None,
            peer_num_tx_queues: None,
            host_up: false,
        }
    }

    pub fn mode(mut self, mode: NetkitMode) -> Self {
        self.mode = mode;
        self
    }
    /// Default policy of the primary (host side).
    pub fn policy(mut self, policy: NetkitPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Default policy of the peer (pod side).
    pub fn peer_policy(mut self, policy: NetkitPolicy) -> Self {
        self.peer_policy = policy;
        self
    }
    pub fn scrub(mut self, scrub: NetkitScrub) -> Self {
        self.scrub = scrub;
        self
    }
    pub fn peer_scrub(mut self, scrub: NetkitScrub) -> Self {
        self.peer_scrub = scrub;
        self
    }
    /// Extra headroom for both devices (0 = kernel default).
    pub fn headroom(mut self, bytes: u16) -> Self {
        self.headroom = Some(bytes);
        self
    }
    /// Extra tailroom for both devices (0 = kernel default).
    pub fn tailroom(mut self, bytes: u16) -> Self {
        self.tailroom = Some(bytes);
        self
    }
    /// MTU of both devices (sent at top level for the primary and in the peer message).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    /// Allocated RX queues of the peer. Only queue 0 is real at creation; every lease of a
    /// physical queue to the peer adds one real queue, so this must exceed the number of
    /// leases planned. The primary cannot lease and keeps the default of 1.
    pub fn peer_num_rx_queues(mut self, n: u32) -> Result<Self, LinkError> {
        self.peer_num_rx_queues =
            Some(check_queues("peer num_rx_queues", n, NETKIT_MAX_RX_QUEUES)?);
        Ok(self)
    }
    /// Allocated TX queues of the peer; netkit only accepts 1.
    pub fn peer_num_tx_queues(mut self, n: u32) -> Result<Self, LinkError> {
        self.peer_num_tx_queues =
            Some(check_queues("peer num_tx_queues", n, NETKIT_MAX_TX_QUEUES)?);
        Ok(self)
    }
    /// Create the primary administratively up (the peer is always created down).
    pub fn host_up(mut self, up: bool) -> Self {
        self.host_up = up;
        self
    }

    pub fn host_name(&self) -> &str {
        &self.host_name
    }
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    /// The RTM_NEWLINK payload. Policies, scrub and mode are always sent explicitly so the
    /// result does not depend on kernel defaults.
    pub fn message(&self) -> LinkMessage {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(self.peer_name.clone()));
        if let Some(mtu) = self.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(n) = self.peer_num_tx_queues {
            peer.attributes.push(LinkAttribute::NumTxQueues(n));
        }
        if let Some(n) = self.peer_num_rx_queues {
            peer.attributes.push(LinkAttribute::NumRxQueues(n));
        }
        peer.attributes
            .push(LinkAttribute::NetNsFd(self.peer_netns.as_raw_fd()));

        let mut data = vec![
            InfoNetkit::Peer(peer),
            InfoNetkit::Mode(to_crate_mode(self.mode)),
            InfoNetkit::Policy(to_crate_policy(self.policy)),
            InfoNetkit::PeerPolicy(to_crate_policy(self.peer_policy)),
            scrub_attr(false, self.scrub),
            scrub_attr(true, self.peer_scrub),
        ];
        push_room(&mut data, self.headroom, self.tailroom);

        let mut msg = LinkMessage::default();
        if self.host_up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        msg.attributes
            .push(LinkAttribute::IfName(self.host_name.clone()));
        if let Some(mtu) = self.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(link_info(data));
        msg
    }
}

/// Builder for a single netkit device (`IFLA_NETKIT_PAIRING = NETKIT_DEVICE_SINGLE`) created
/// directly in `netns` via a top-level `IFLA_NET_NS_FD`.
///
/// netkit rejects a single device with peer info, peer policy/scrub, scrub, or a non-PASS
/// policy (EOPNOTSUPP), so this builder has no such setters.
#[derive(Debug, Clone)]
pub struct NetkitSingle<'fd> {
    name: String,
    netns: BorrowedFd<'fd>,
    mode: NetkitMode,
    headroom: Option<u16>,
    tailroom: Option<u16>,
    mtu: Option<u32>,
    num_rx_queues: Option<u32>,
    up: bool,
}

impl<'fd> NetkitSingle<'fd> {
    pub fn new(name: &str, netns: BorrowedFd<'fd>) -> Result<NetkitSingle<'fd>, LinkError> {
        validate_ifname(name)?;
        Ok(NetkitSingle {
            name: name.to_string(),
            netns,
            mode: NetkitMode::default(),
            headroom: None,
            tailroom: None,
            mtu: None,
            num_rx_queues: None,
            up: false,
        })
    }
    pub fn mode(mut self, mode: NetkitMode) -> Self {
        self.mode = mode;
        self
    }
    pub fn headroom(mut self, bytes: u16) -> Self {
        self.headroom = Some(bytes);
        self
    }
    pub fn tailroom(mut self, bytes: u16) -> Self {
        self.tailroom = Some(bytes);
        self
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    /// Allocated RX queues: 1 real queue plus room for leases (see [`NetkitPair::peer_num_rx_queues`]).
    pub fn num_rx_queues(mut self, n: u32) -> Result<Self, LinkError> {
        self.num_rx_queues = Some(check_queues("num_rx_queues", n, NETKIT_MAX_RX_QUEUES)?);
        Ok(self)
    }
    /// Create the device administratively up.
    pub fn up(mut self, up: bool) -> Self {
        self.up = up;
        self
    }
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn message(&self) -> LinkMessage {
        let mut data = vec![
            InfoNetkit::Mode(to_crate_mode(self.mode)),
            NetkitExtAttr::Pairing(NetkitPairing::Single).into(),
        ];
        push_room(&mut data, self.headroom, self.tailroom);

        let mut msg = LinkMessage::default();
        if self.up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        msg.attributes
            .push(LinkAttribute::IfName(self.name.clone()));
        if let Some(mtu) = self.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(n) = self.num_rx_queues {
            msg.attributes.push(LinkAttribute::NumRxQueues(n));
        }
        msg.attributes
            .push(LinkAttribute::NetNsFd(self.netns.as_raw_fd()));
        msg.attributes.push(link_info(data));
        msg
    }
}

fn push_room(data: &mut Vec<InfoNetkit>, headroom: Option<u16>, tailroom: Option<u16>) {
    if let Some(h) = headroom {
        data.push(NetkitExtAttr::Headroom(h).into());
    }
    if let Some(t) = tailroom {
        data.push(NetkitExtAttr::Tailroom(t).into());
    }
}

fn link_info(data: Vec<InfoNetkit>) -> LinkAttribute {
    LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Netkit),
        LinkInfo::Data(InfoData::Netkit(data)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
    use netlink_packet_route::RouteNetlinkMessage;

    /// Serializes `msg` as the kernel would receive it: nlmsghdr (seq 1, port 0) + payload.
    fn wire(msg: LinkMessage) -> Vec<u8> {
        let mut nl = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        nl.header.sequence_number = 1;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        buf
    }

    /// `struct nlattr` header, little endian (the test host's byte order).
    fn nla(len: u16, kind: u16) -> [u8; 4] {
        let l = len.to_le_bytes();
        let k = kind.to_le_bytes();
        [l[0], l[1], k[0], k[1]]
    }

    fn fd(raw: i32) -> BorrowedFd<'static> {
        // SAFETY: the fd is only copied into the message as a number; it is never used.
        unsafe { BorrowedFd::borrow_raw(raw) }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn pair_message_bytes() {
        let msg = NetkitPair::new("nk96128c575a98c", "eth0", fd(7))
            .unwrap()
            .mode(NetkitMode::L2)
            .policy(NetkitPolicy::Forward)
            .peer_policy(NetkitPolicy::Blackhole)
            .scrub(NetkitScrub::Default)
            .peer_scrub(NetkitScrub::None)
            .headroom(64)
            .tailroom(32)
            .mtu(1500)
            .peer_num_rx_queues(5)
            .unwrap()
            .peer_num_tx_queues(1)
            .unwrap()
            .host_up(true)
            .message();

        let mut want: Vec<u8> = Vec::new();
        // struct nlmsghdr: len 200, RTM_NEWLINK (16), REQUEST|ACK|EXCL|CREATE (0x605), seq 1, pid 0
        want.extend([200, 0, 0, 0, 16, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0]);
        // struct ifinfomsg: AF_UNSPEC, pad, type 0, index 0, flags IFF_UP, change IFF_UP
        want.extend([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        want.extend(nla(20, 3)); // IFLA_IFNAME
        want.extend(b"nk96128c575a98c\0");
        want.extend(nla(8, 4)); // IFLA_MTU
        want.extend(1500u32.to_le_bytes());
        want.extend(nla(140, 18)); // IFLA_LINKINFO
        want.extend(nla(11, 1)); // IFLA_INFO_KIND
        want.extend(b"netkit\0\0"); // + 1 byte padding
        want.extend(nla(124, 2)); // IFLA_INFO_DATA
        want.extend(nla(64, 1)); // IFLA_NETKIT_PEER_INFO: ifinfomsg + peer attributes
        want.extend([0u8; 16]); //   peer ifinfomsg (flags ignored by the kernel anyway)
        want.extend(nla(9, 3)); //   IFLA_IFNAME
        want.extend(b"eth0\0\0\0\0");
        want.extend(nla(8, 4)); //   IFLA_MTU
        want.extend(1500u32.to_le_bytes());
        want.extend(nla(8, 31)); //   IFLA_NUM_TX_QUEUES
        want.extend(1u32.to_le_bytes());
        want.extend(nla(8, 32)); //   IFLA_NUM_RX_QUEUES
        want.extend(5u32.to_le_bytes());
        want.extend(nla(8, 28)); //   IFLA_NET_NS_FD
        want.extend(7u32.to_le_bytes());
        want.extend(nla(8, 5)); // IFLA_NETKIT_MODE = NETKIT_L2
        want.extend(0u32.to_le_bytes());
        want.extend(nla(8, 3)); // IFLA_NETKIT_POLICY = NETKIT_PASS
        want.extend(0u32.to_le_bytes());
        want.extend(nla(8, 4)); // IFLA_NETKIT_PEER_POLICY = NETKIT_DROP
        want.extend(2u32.to_le_bytes());
        want.extend(nla(8, 6)); // IFLA_NETKIT_SCRUB = NETKIT_SCRUB_DEFAULT
        want.extend(1u32.to_le_bytes());
        want.extend(nla(8, 7)); // IFLA_NETKIT_PEER_SCRUB = NETKIT_SCRUB_NONE
        want.extend(0u32.to_le_bytes());
        want.extend(nla(6, 8)); // IFLA_NETKIT_HEADROOM (NLA_U16: 2 bytes + 2 padding)
        want.extend([64, 0, 0, 0]);
        want.extend(nla(6, 9)); // IFLA_NETKIT_TAILROOM
        want.extend([32, 0, 0, 0]);
        assert_eq!(want.len(), 200);

        assert_eq!(wire(msg), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn minimal_pair_carries_netns_only_in_peer_message() {
        let msg = NetkitPair::new("host0", "eth0", fd(3)).unwrap().message();
        let mut want: Vec<u8> = Vec::new();
        want.extend([144, 0, 0, 0, 16, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([0u8; 16]);
        want.extend(nla(10, 3));
        want.extend(b"host0\0\0\0");
        want.extend(nla(100, 18));
        want.extend(nla(11, 1));
        want.extend(b"netkit\0\0");
        want.extend(nla(84, 2));
        want.extend(nla(40, 1));
        want.extend([0u8; 16]);
        want.extend(nla(9, 3));
        want.extend(b"eth0\0\0\0\0");
        want.extend(nla(8, 28));
        want.extend(3u32.to_le_bytes());
        for (kind, value) in [(5u16, 1u32), (3, 0), (4, 0), (6, 1), (7, 1)] {
            want.extend(nla(8, kind));
            want.extend(value.to_le_bytes());
        }
        assert_eq!(wire(msg), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn single_message_bytes() {
        let msg = NetkitSingle::new("nk0", fd(9))
            .unwrap()
            .mode(NetkitMode::L3)
            .num_rx_queues(17)
            .unwrap()
            .headroom(128)
            .mtu(9000)
            .message();

        let mut want: Vec<u8> = Vec::new();
        want.extend([108, 0, 0, 0, 16, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([0u8; 16]); // ifinfomsg, device created down
        want.extend(nla(8, 3)); // IFLA_IFNAME
        want.extend(b"nk0\0");
        want.extend(nla(8, 4)); // IFLA_MTU
        want.extend(9000u32.to_le_bytes());
        want.extend(nla(8, 32)); // IFLA_NUM_RX_QUEUES
        want.extend(17u32.to_le_bytes());
        want.extend(nla(8, 28)); // IFLA_NET_NS_FD at top level: the device itself moves
        want.extend(9u32.to_le_bytes());
        want.extend(nla(44, 18)); // IFLA_LINKINFO
        want.extend(nla(11, 1));
        want.extend(b"netkit\0\0");
        want.extend(nla(28, 2)); // IFLA_INFO_DATA: no peer info, no policy, no scrub
        want.extend(nla(8, 5)); // IFLA_NETKIT_MODE = NETKIT_L3
        want.extend(1u32.to_le_bytes());
        want.extend(nla(8, 10)); // IFLA_NETKIT_PAIRING = NETKIT_DEVICE_SINGLE
        want.extend(1u32.to_le_bytes());
        want.extend(nla(6, 8)); // IFLA_NETKIT_HEADROOM
        want.extend([128, 0, 0, 0]);
        assert_eq!(want.len(), 108);

        assert_eq!(wire(msg), want);
    }

    #[test]
    fn ext_attr_bytes_and_round_trip() {
        use netlink_packet_core::Emitable;
        for (attr, bytes) in [
            (
                NetkitExtAttr::Pairing(NetkitPairing::Single),
                vec![8u8, 0, 10, 0, 1, 0, 0, 0],
            ),
            (
                NetkitExtAttr::Pairing(NetkitPairing::Pair),
                vec![8, 0, 10, 0, 0, 0, 0, 0],
            ),
            (
                NetkitExtAttr::Headroom(0x0102),
                vec![6, 0, 8, 0, 0x02, 0x01, 0, 0],
            ),
            (NetkitExtAttr::Tailroom(7), vec![6, 0, 9, 0, 7, 0, 0, 0]),
        ] {
            let info: InfoNetkit = attr.into();
            let mut buf = vec![0xffu8; info.buffer_len()];
            info.emit(&mut buf);
            if cfg!(target_endian = "little") {
                assert_eq!(buf, bytes, "{attr:?}");
            }
            let InfoNetkit::Other(nla) = info else {
                panic!("must be Other")
            };
            assert_eq!(NetkitExtAttr::parse(&nla), Some(attr));
        }
        // Wrong payload size is not misread.
        assert_eq!(NetkitExtAttr::parse(&DefaultNla::new(10, vec![1, 0])), None);
        assert_eq!(
            NetkitExtAttr::parse(&DefaultNla::new(11, vec![1, 0, 0, 0])),
            None
        );
    }

    #[test]
    fn enum_values_match_if_link_h() {
        assert_eq!(u32::from(NetkitMode::L2), 0);
        assert_eq!(u32::from(NetkitMode::L3), 1);
        assert_eq!(u32::from(NetkitPolicy::Forward), 0);
        assert_eq!(u32::from(NetkitPolicy::Blackhole), 2);
        assert_eq!(NetkitPolicy::from(7), NetkitPolicy::Other(7)); // NETKIT_REDIRECT
        assert_eq!(u32::from(NetkitScrub::None), 0);
        assert_eq!(u32::from(NetkitScrub::Default), 1);
        assert_eq!(NetkitPairing::from(1), NetkitPairing::Single);
        assert_eq!(u32::from(NetkitPairing::Other(9)), 9);
    }

    #[test]
    fn queue_counts_are_checked_against_netkit_limits() {
        let p = || NetkitPair::new("h", "p", fd(3)).unwrap();
        assert!(p().peer_num_rx_queues(0).is_err());
        assert!(p().peer_num_rx_queues(1024).is_ok());
        assert!(p().peer_num_rx_queues(1025).is_err());
        assert!(p().peer_num_tx_queues(1).is_ok());
        assert!(p().peer_num_tx_queues(2).is_err());
        assert!(NetkitSingle::new("s", fd(3))
            .unwrap()
            .num_rx_queues(1025)
            .is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(NetkitPair::new("sixteen-bytes-xx", "eth0", fd(3)).is_err());
        assert!(NetkitPair::new("host0", "a/b", fd(3)).is_err());
        assert!(NetkitSingle::new("", fd(3)).is_err());
    }

    #[test]
    fn for_attachment_derives_names_from_marker() {
        let m = Marker::new("net", "abc", "net1").unwrap();
        let pair = NetkitPair::for_attachment(&m, fd(3));
        assert_eq!(pair.host_name(), m.host_ifname());
        assert_eq!(pair.peer_name(), "net1");
    }
}
