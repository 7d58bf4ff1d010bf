//! Command and attribute numbers of the `netdev` generic netlink family.
//!
//! Numbers come from `Documentation/netlink/specs/netdev.yaml` (rendered into
//! `include/uapi/linux/netdev.h`) of Linux 7.3. Every enum is a `neli_enum`, so a value this
//! crate does not know decodes to `UnrecognizedConst(n)` instead of failing; decoders keep such
//! attributes as [`RawAttr`](super::RawAttr).

use neli::neli_enum;

/// `NETDEV_FAMILY_NAME`.
pub const FAMILY_NAME: &str = "netdev";
/// `NETDEV_FAMILY_VERSION`, sent in every request's genlmsghdr.
pub const FAMILY_VERSION: u8 = 1;

/// `NETDEV_CMD_*`.
#[neli_enum(serialized_type = "u8")]
pub enum NetdevCmd {
    DevGet = 1,
    DevAddNtf = 2,
    DevDelNtf = 3,
    DevChangeNtf = 4,
    PagePoolGet = 5,
    PagePoolAddNtf = 6,
    PagePoolDelNtf = 7,
    PagePoolChangeNtf = 8,
    PagePoolStatsGet = 9,
    QueueGet = 10,
    NapiGet = 11,
    QstatsGet = 12,
    BindRx = 13,
    NapiSet = 14,
    BindTx = 15,
    QueueCreate = 16,
}
impl neli::consts::genl::Cmd for NetdevCmd {}

impl NetdevCmd {
    /// The operation's name in netdev.yaml, used in errors.
    pub fn name(self) -> &'static str {
        match self {
            NetdevCmd::DevGet => "dev-get",
            NetdevCmd::DevAddNtf => "dev-add-ntf",
            NetdevCmd::DevDelNtf => "dev-del-ntf",
            NetdevCmd::DevChangeNtf => "dev-change-ntf",
            NetdevCmd::PagePoolGet => "page-pool-get",
            NetdevCmd::PagePoolAddNtf => "page-pool-add-ntf",
            NetdevCmd::PagePoolDelNtf => "page-pool-del-ntf",
            NetdevCmd::PagePoolChangeNtf => "page-pool-change-ntf",
            NetdevCmd::PagePoolStatsGet => "page-pool-stats-get",
            NetdevCmd::QueueGet => "queue-get",
            NetdevCmd::NapiGet => "napi-get",
            NetdevCmd::QstatsGet => "qstats-get",
            NetdevCmd::BindRx => "bind-rx",
            NetdevCmd::NapiSet => "napi-set",
            NetdevCmd::BindTx => "bind-tx",
            NetdevCmd::QueueCreate => "queue-create",
            NetdevCmd::UnrecognizedConst(_) => "unknown",
        }
    }
}

/// Attribute set `dev` (`NETDEV_A_DEV_*`).
#[neli_enum(serialized_type = "u16")]
pub enum DevAttr {
    Ifindex = 1,
    /// Alignment padding before u64 attributes on architectures that need it.
    Pad = 2,
    XdpFeatures = 3,
    XdpZcMaxSegs = 4,
    XdpRxMetadataFeatures = 5,
    XskFeatures = 6,
}
impl neli::consts::genl::NlAttrType for DevAttr {}

/// Attribute set `queue` (`NETDEV_A_QUEUE_*`). The `queue-id` set (the queue nest inside a
/// lease) is a subset of it: only `Id` and `Type`.
#[neli_enum(serialized_type = "u16")]
pub enum QueueAttr {
    Id = 1,
    Ifindex = 2,
    Type = 3,
    NapiId = 4,
    Dmabuf = 5,
    IoUring = 6,
    Xsk = 7,
    Lease = 8,
}
impl neli::consts::genl::NlAttrType for QueueAttr {}

/// Attribute set `lease` (`NETDEV_A_LEASE_*`).
#[neli_enum(serialized_type = "u16")]
pub enum LeaseAttr {
    Ifindex = 1,
    Queue = 2,
    NetnsId = 3,
}
impl neli::consts::genl::NlAttrType for LeaseAttr {}

/// Attribute set `io-uring-provider-info` (`NETDEV_A_IO_URING_PROVIDER_INFO_*`).
#[neli_enum(serialized_type = "u16")]
pub enum IoUringProviderInfoAttr {
    RxBufLen = 1,
}
impl neli::consts::genl::NlAttrType for IoUringProviderInfoAttr {}

/// `enum netdev_queue_type`. Unknown values are preserved as `UnrecognizedConst`.
#[neli_enum(serialized_type = "u32")]
pub enum QueueType {
    Rx = 0,
    Tx = 1,
}

/// `enum netdev_xdp_act` bits of [`Dev::xdp_features`](super::Dev::xdp_features).
pub mod xdp_act {
    /// XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX.
    pub const BASIC: u64 = 1;
    /// XDP_REDIRECT.
    pub const REDIRECT: u64 = 2;
    /// Implements ndo_xdp_xmit (can be an XDP_REDIRECT target).
    pub const NDO_XMIT: u64 = 4;
    /// AF_XDP zero-copy.
    pub const XSK_ZEROCOPY: u64 = 8;
    /// XDP hardware offload.
    pub const HW_OFFLOAD: u64 = 16;
    /// Multi-buffer XDP in the driver's NAPI path.
    pub const RX_SG: u64 = 32;
    /// Multi-buffer ndo_xdp_xmit.
    pub const NDO_XMIT_SG: u64 = 64;
}

/// `enum netdev_xdp_rx_metadata` bits.
pub mod xdp_rx_metadata {
    /// bpf_xdp_metadata_rx_timestamp().
    pub const TIMESTAMP: u64 = 1;
    /// bpf_xdp_metadata_rx_hash().
    pub const HASH: u64 = 2;
    /// bpf_xdp_metadata_rx_vlan_tag().
    pub const VLAN_TAG: u64 = 4;
}

/// `enum netdev_xsk_flags` bits.
pub mod xsk_flags {
    /// HW TX timestamps.
    pub const TX_TIMESTAMP: u64 = 1;
    /// L3 checksum offload.
    pub const TX_CHECKSUM: u64 = 2;
    /// Launch time offload.
    pub const TX_LAUNCH_TIME_FIFO: u64 = 4;
}

/// Attributes of the per-operation nests inside `CTRL_ATTR_OPS` (`CTRL_ATTR_OP_*`); neli only
/// has the top-level controller attributes.
#[neli_enum(serialized_type = "u16")]
pub enum CtrlAttrOp {
    Id = 1,
    Flags = 2,
}
impl neli::consts::genl::NlAttrType for CtrlAttrOp {}

/// `GENL_CMD_CAP_DO`: the operation has a do handler.
pub const GENL_CMD_CAP_DO: u32 = 0x02;
/// `GENL_CMD_CAP_DUMP`: the operation has a dump handler.
pub const GENL_CMD_CAP_DUMP: u32 = 0x04;
/// `GENL_ADMIN_PERM`: needs CAP_NET_ADMIN in the initial user namespace.
pub const GENL_ADMIN_PERM: u32 = 0x01;
/// `GENL_UNS_ADMIN_PERM`: needs CAP_NET_ADMIN in the netns' user namespace.
pub const GENL_UNS_ADMIN_PERM: u32 = 0x10;
