//! Numbers of the `ethtool` generic netlink family and of the ethtool ioctl, from Linux 7.3's
//! include/uapi/linux/ethtool_netlink_generated.h (rendered from
//! Documentation/netlink/specs/ethtool.yaml) and include/uapi/linux/ethtool.h.

use neli::neli_enum;

/// `ETHTOOL_GENL_NAME`.
pub const FAMILY_NAME: &str = "ethtool";
/// `ETHTOOL_GENL_VERSION`.
pub const FAMILY_VERSION: u8 = 1;

/// The `ETHTOOL_MSG_*` user (request) messages this client sends, and the kernel's replies
/// (the kernel numbers its replies in a separate enum).
#[neli_enum(serialized_type = "u8")]
pub enum EthtoolCmd {
    /// `ETHTOOL_MSG_RSS_GET` (38); its reply `ETHTOOL_MSG_RSS_GET_REPLY` is also 38.
    RssGet = 38,
    /// `ETHTOOL_MSG_RSS_SET`.
    RssSet = 48,
    /// `ETHTOOL_MSG_RSS_CREATE_ACT`.
    RssCreateAct = 49,
    /// `ETHTOOL_MSG_RSS_DELETE_ACT`.
    RssDeleteAct = 50,
    /// `ETHTOOL_MSG_RSS_CREATE_ACT_REPLY` (kernel enum).
    RssCreateActReply = 51,
}
impl neli::consts::genl::Cmd for EthtoolCmd {}

impl EthtoolCmd {
    /// The operation's name in ethtool.yaml, used in errors.
    pub fn name(self) -> &'static str {
        match self {
            EthtoolCmd::RssGet => "rss-get",
            EthtoolCmd::RssSet => "rss-set",
            EthtoolCmd::RssCreateAct => "rss-create-act",
            EthtoolCmd::RssDeleteAct => "rss-delete-act",
            EthtoolCmd::RssCreateActReply => "rss-create-act reply",
            EthtoolCmd::UnrecognizedConst(_) => "unknown",
        }
    }
}

/// `ETHTOOL_A_HEADER_*`.
#[neli_enum(serialized_type = "u16")]
pub enum HeaderAttr {
    DevIndex = 1,
    DevName = 2,
    Flags = 3,
    PhyIndex = 4,
}
impl neli::consts::genl::NlAttrType for HeaderAttr {}

/// `ETHTOOL_A_RSS_*`.
#[neli_enum(serialized_type = "u16")]
pub enum RssAttr {
    Header = 1,
    Context = 2,
    Hfunc = 3,
    Indir = 4,
    Hkey = 5,
    InputXfrm = 6,
    StartContext = 7,
    FlowHash = 8,
}
impl neli::consts::genl::NlAttrType for RssAttr {}

/// `SIOCETHTOOL` (include/uapi/linux/sockios.h).
pub const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GFLAGS`: legacy flags, `ETH_FLAG_NTUPLE` mirrors `NETIF_F_NTUPLE` (net/ethtool/ioctl.c,
/// `__ethtool_get_flags`).
pub const ETHTOOL_GFLAGS: u32 = 0x25;
/// `ETH_FLAG_NTUPLE`.
pub const ETH_FLAG_NTUPLE: u32 = 1 << 27;
pub const ETHTOOL_GRXRINGS: u32 = 0x2d;
pub const ETHTOOL_GRXCLSRLCNT: u32 = 0x2e;
pub const ETHTOOL_GRXCLSRULE: u32 = 0x2f;
pub const ETHTOOL_GRXCLSRLALL: u32 = 0x30;
pub const ETHTOOL_SRXCLSRLDEL: u32 = 0x31;
pub const ETHTOOL_SRXCLSRLINS: u32 = 0x32;

/// `struct ethtool_rxnfc` is 192 bytes on 64-bit and 32-bit x86 alike (its `u64` members are
/// 8-aligned; `rule_locs[]` is a flexible array after it).
pub const RXNFC_LEN: usize = 192;
/// Offsets in `struct ethtool_rxnfc` (checked against the header with a C compiler).
pub const RXNFC_CMD: usize = 0;
pub const RXNFC_FLOW_TYPE: usize = 4;
pub const RXNFC_DATA: usize = 8;
pub const RXNFC_FS: usize = 16;
/// `rule_cnt` and `rss_context` share this slot (a union).
pub const RXNFC_RULE_CNT: usize = 184;
pub const RXNFC_RULE_LOCS: usize = 188;
/// Offsets in `struct ethtool_rx_flow_spec`.
pub const FS_FLOW_TYPE: usize = 0;
pub const FS_H_U: usize = 4;
pub const FS_M_U: usize = 76;
pub const FS_RING_COOKIE: usize = 152;
pub const FS_LOCATION: usize = 160;
/// Flow types.
pub const ETHER_FLOW: u32 = 0x12;
pub const IP_USER_FLOW: u32 = 0x0d;
pub const IPV6_USER_FLOW: u32 = 0x0e;
/// `FLOW_RSS`: the action is an RSS context (`rss_context`), `ring_cookie` an offset into it.
pub const FLOW_RSS: u32 = 0x2000_0000;
/// `FLOW_EXT` | `FLOW_MAC_EXT`: flags, never set by this client, masked when decoding.
pub const FLOW_FLAGS: u32 = 0x8000_0000 | 0x4000_0000 | FLOW_RSS;
/// `RX_CLS_FLOW_DISC`.
pub const RX_CLS_FLOW_DISC: u64 = u64::MAX;
/// `RX_CLS_LOC_SPECIAL`: set in `data` of GRXCLSRLCNT when the driver picks locations itself.
pub const RX_CLS_LOC_SPECIAL: u32 = 0x8000_0000;
/// `ETH_RX_NFC_IP4`: `ip_ver` of an IPv4 user flow.
pub const ETH_RX_NFC_IP4: u8 = 1;
