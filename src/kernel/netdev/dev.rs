//! The `dev` object (dev-get): XDP / AF_XDP capabilities of a device.
//!
//! Queue *counts* are not part of this object in netdev.yaml; they come from rtnetlink
//! (IFLA_NUM_RX_QUEUES / IFLA_REAL_NUM_RX_QUEUES) or from counting a queue dump of an up device.

use neli::types::{Buffer, GenlBuffer};

use super::attrs::{xdp_act, DevAttr};
use super::error::NetdevError;
use super::wire::{attr, get_u32, get_u64, AttrNest, RawAttr};

/// A device as reported by dev-get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev {
    /// ifindex.
    pub ifindex: u32,
    /// `xdp-features`: bitmask of [`xdp_act`] bits.
    pub xdp_features: u64,
    /// `xdp-zc-max-segs`: only reported when the device supports AF_XDP zero-copy.
    pub xdp_zc_max_segs: Option<u32>,
    /// `xdp-rx-metadata-features`: bitmask of [`super::attrs::xdp_rx_metadata`] bits.
    pub xdp_rx_metadata_features: u64,
    /// `xsk-features`: bitmask of [`super::attrs::xsk_flags`] bits.
    pub xsk_features: u64,
    /// Attributes not modelled above.
    pub unknown: Vec<RawAttr>,
}

impl Dev {
    /// The device implements ndo_xdp_xmit, i.e. it can be an XDP_REDIRECT target.
    pub fn is_redirect_target(&self) -> bool {
        self.xdp_features & xdp_act::NDO_XMIT != 0
    }

    /// The device supports AF_XDP zero-copy.
    pub fn supports_xsk_zerocopy(&self) -> bool {
        self.xdp_features & xdp_act::XSK_ZEROCOPY != 0
    }
}

/// Attributes of a dev-get (do) request.
pub(crate) fn dev_get_attrs(ifindex: u32) -> Result<GenlBuffer<DevAttr, Buffer>, NetdevError> {
    let mut attrs = GenlBuffer::new();
    attrs.push(attr("dev-get", DevAttr::Ifindex, ifindex)?);
    Ok(attrs)
}

/// Decode the attributes of a dev-get reply.
pub(crate) fn decode_dev(attrs: &GenlBuffer<u16, Buffer>) -> Result<Dev, NetdevError> {
    const OP: &str = "dev-get";
    let mut ifindex = None;
    let mut dev = Dev {
        ifindex: 0,
        xdp_features: 0,
        xdp_zc_max_segs: None,
        xdp_rx_metadata_features: 0,
        xsk_features: 0,
        unknown: Vec::new(),
    };
    for a in attrs.iter() {
        match DevAttr::from(*a.nla_type().nla_type()) {
            DevAttr::Ifindex => ifindex = Some(get_u32(OP, "ifindex", a)?),
            DevAttr::Pad => {}
            DevAttr::XdpFeatures => dev.xdp_features = get_u64(OP, "xdp-features", a)?,
            DevAttr::XdpZcMaxSegs => dev.xdp_zc_max_segs = Some(get_u32(OP, "xdp-zc-max-segs", a)?),
            DevAttr::XdpRxMetadataFeatures => {
                dev.xdp_rx_metadata_features = get_u64(OP, "xdp-rx-metadata-features", a)?
            }
            DevAttr::XskFeatures => dev.xsk_features = get_u64(OP, "xsk-features", a)?,
            DevAttr::UnrecognizedConst(_) => {
                dev.unknown.push(RawAttr::from_nlattr(AttrNest::Dev, a))
            }
        }
    }
    dev.ifindex = ifindex.ok_or_else(|| NetdevError::malformed(OP, "dev without ifindex"))?;
    Ok(dev)
}
