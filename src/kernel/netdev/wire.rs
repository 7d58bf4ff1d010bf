//! Generic netlink encoding and decoding with neli, independent of any socket.

use std::io::Cursor;

use neli::consts::genl::{Cmd, NlAttrType};
use neli::consts::nl::NlmF;
use neli::genl::{
    AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, Nlattr, NlattrBuilder, NoUserHeader,
};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::types::{Buffer, GenlBuffer};
use neli::{FromBytesWithInput, Size, ToBytes};

use super::error::NetdevError;

/// Where an attribute this crate does not model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrNest {
    /// Top level of a `dev` object.
    Dev,
    /// Top level of a `queue` object.
    Queue,
    /// Inside `queue.lease`.
    QueueLease,
    /// Inside `queue.lease.queue`.
    QueueLeaseQueue,
    /// Inside `queue.io-uring`.
    QueueIoUring,
    /// Inside `queue.xsk` (the xsk-info set has no attributes yet).
    QueueXsk,
    /// Top level of an ethtool `rss` object ([`crate::kernel::ethtool::rss`]).
    EthtoolRss,
}

/// An attribute the decoder does not know, kept verbatim so nothing the kernel reports is lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    /// The nest it was found in.
    pub nest: AttrNest,
    /// `nla_type` as on the wire, including the `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER` bits.
    pub nla_type: u16,
    /// Payload, without padding.
    pub payload: Vec<u8>,
}

impl RawAttr {
    /// Attribute type without the flag bits.
    pub fn kind(&self) -> u16 {
        self.nla_type & 0x3fff
    }

    pub(crate) fn from_nlattr(nest: AttrNest, attr: &Nlattr<u16, Buffer>) -> RawAttr {
        RawAttr {
            nest,
            nla_type: u16::from(attr.nla_type()),
            payload: attr.nla_payload().as_ref().to_vec(),
        }
    }
}

/// Build a scalar (or string) attribute.
pub(crate) fn attr<A, P>(
    op: &'static str,
    kind: A,
    payload: P,
) -> Result<Nlattr<A, Buffer>, NetdevError>
where
    A: NlAttrType,
    P: Size + ToBytes,
{
    let ty = AttrTypeBuilder::default()
        .nla_type(kind)
        .build()
        .map_err(|e| NetdevError::Encode {
            op,
            reason: e.to_string(),
        })?;
    NlattrBuilder::default()
        .nla_type(ty)
        .nla_payload(payload)
        .build()
        .map_err(|e| NetdevError::Encode {
            op,
            reason: e.to_string(),
        })
}

/// Build a nest (`NLA_F_NESTED` set, which strict kernel policies require) holding `children`.
pub(crate) fn nest<A, C>(
    op: &'static str,
    kind: A,
    children: &[Nlattr<C, Buffer>],
) -> Result<Nlattr<A, Buffer>, NetdevError>
where
    A: NlAttrType,
    C: NlAttrType,
{
    let ty = AttrTypeBuilder::default()
        .nla_type(kind)
        .nla_nested(true)
        .build()
        .map_err(|e| NetdevError::Encode {
            op,
            reason: e.to_string(),
        })?;
    let mut outer = NlattrBuilder::default()
        .nla_type(ty)
        .nla_payload(Vec::<u8>::new())
        .build()
        .map_err(|e| NetdevError::Encode {
            op,
            reason: e.to_string(),
        })?;
    for child in children {
        outer = outer.nest(child).map_err(|e| NetdevError::Encode {
            op,
            reason: e.to_string(),
        })?;
    }
    Ok(outer)
}

/// Serialise a complete generic netlink request: nlmsghdr (port id 0: addressed to the kernel)
/// + genlmsghdr + attributes.
pub(crate) fn encode_request<C, A>(
    op: &'static str,
    family_id: u16,
    flags: NlmF,
    seq: u32,
    cmd: C,
    version: u8,
    attrs: GenlBuffer<A, Buffer>,
) -> Result<Vec<u8>, NetdevError>
where
    C: Cmd,
    A: NlAttrType,
{
    let enc = |e: &dyn std::fmt::Display| NetdevError::Encode {
        op,
        reason: e.to_string(),
    };
    let genl = GenlmsghdrBuilder::<C, A, NoUserHeader>::default()
        .cmd(cmd)
        .version(version)
        .attrs(attrs)
        .build()
        .map_err(|e| enc(&e))?;
    let msg = NlmsghdrBuilder::default()
        .nl_type(family_id)
        .nl_flags(flags)
        .nl_seq(seq)
        .nl_pid(0)
        .nl_payload(NlPayload::Payload(genl))
        .build()
        .map_err(|e| enc(&e))?;
    let mut cur = Cursor::new(Vec::with_capacity(msg.padded_size()));
    msg.to_bytes(&mut cur).map_err(|e| enc(&e))?;
    Ok(cur.into_inner())
}

/// A decoded generic netlink message body.
pub(crate) struct GenlBody {
    pub cmd: u8,
    pub attrs: GenlBuffer<u16, Buffer>,
}

/// Decode the payload of a generic netlink message (everything after the nlmsghdr).
pub(crate) fn decode_body(op: &'static str, payload: &[u8]) -> Result<GenlBody, NetdevError> {
    let genl =
        Genlmsghdr::<u8, u16>::from_bytes_with_input(&mut Cursor::new(payload), payload.len())
            .map_err(|e| NetdevError::malformed(op, format!("genlmsghdr/attributes: {e}")))?;
    Ok(GenlBody {
        cmd: *genl.cmd(),
        attrs: genl.attrs().iter().cloned().collect(),
    })
}

/// Parse the payload of a nest attribute into its child attributes.
pub(crate) fn children(
    op: &'static str,
    what: &str,
    attr: &Nlattr<u16, Buffer>,
) -> Result<GenlBuffer<u16, Buffer>, NetdevError> {
    let p = attr.nla_payload().as_ref();
    GenlBuffer::<u16, Buffer>::from_bytes_with_input(&mut Cursor::new(p), p.len())
        .map_err(|e| NetdevError::malformed(op, format!("nest {what}: {e}")))
}

/// Exactly-4-byte unsigned attribute (`u32`).
pub(crate) fn get_u32(
    op: &'static str,
    what: &str,
    attr: &Nlattr<u16, Buffer>,
) -> Result<u32, NetdevError> {
    let p = attr.nla_payload().as_ref();
    let arr: [u8; 4] = p.try_into().map_err(|_| {
        NetdevError::malformed(op, format!("{what}: expected 4 bytes, got {}", p.len()))
    })?;
    Ok(u32::from_ne_bytes(arr))
}

/// Exactly-4-byte signed attribute (`s32`).
pub(crate) fn get_s32(
    op: &'static str,
    what: &str,
    attr: &Nlattr<u16, Buffer>,
) -> Result<i32, NetdevError> {
    get_u32(op, what, attr).map(|v| v as i32)
}

/// Exactly-8-byte unsigned attribute (`u64`).
pub(crate) fn get_u64(
    op: &'static str,
    what: &str,
    attr: &Nlattr<u16, Buffer>,
) -> Result<u64, NetdevError> {
    let p = attr.nla_payload().as_ref();
    let arr: [u8; 8] = p.try_into().map_err(|_| {
        NetdevError::malformed(op, format!("{what}: expected 8 bytes, got {}", p.len()))
    })?;
    Ok(u64::from_ne_bytes(arr))
}

/// Variable-width unsigned attribute (`uint`, `nla_put_uint()`): 4 bytes if the value fits,
/// else 8.
pub(crate) fn get_uint(
    op: &'static str,
    what: &str,
    attr: &Nlattr<u16, Buffer>,
) -> Result<u64, NetdevError> {
    match attr.nla_payload().len() {
        4 => get_u32(op, what, attr).map(u64::from),
        8 => get_u64(op, what, attr),
        n => Err(NetdevError::malformed(
            op,
            format!("{what}: uint of {n} bytes"),
        )),
    }
}
