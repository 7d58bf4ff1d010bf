//! RSS contexts (ethtool.yaml, attribute set `rss`): the indirection table of the default
//! context (0) or of an additional one, and their encoders/decoders.
//!
//! Kernel behaviour relied on (net/ethtool/rss.c, Linux 7.3):
//! - rss-get answers `indir` as the driver's whole table, one `u32` queue id per entry; a
//!   driver without RSS answers no `indir` (`indir_size` 0).
//! - rss-set and rss-create-act take an `indir` whose length divides the driver's table size
//!   (`rss_set_prep_indir`: "size (%d) mismatch with device indir table"); this client always
//!   sends the full table. Entries must be below the NIC's RX ring count.
//! - rss-create-act without `context` lets the kernel allocate the id and answers it
//!   (`ETHTOOL_MSG_RSS_CREATE_ACT_REPLY` with `context`); `EOPNOTSUPP` when the driver has no
//!   `create_rxfh_context`.
//! - rss-delete-act answers `ENOENT` for an unknown context and `EBUSY` while an ntuple rule
//!   points at it (`ethtool_check_rss_ctx_busy`): delete the rule first.

use neli::types::{Buffer, GenlBuffer};

use super::attrs::{HeaderAttr, RssAttr};
use super::error::EthtoolError;
use crate::kernel::netdev::wire::{attr, children, get_u32, nest};
use crate::kernel::netdev::RawAttr;

/// One RSS context as rss-get reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rss {
    /// 0: the default context.
    pub context: u32,
    /// The indirection table: entry i is the RX queue of hash bucket i. Empty when the driver
    /// reports none.
    pub indir: Vec<u32>,
    /// `hfunc` (ETH_RSS_HASH_* bit), 0 when not reported.
    pub hfunc: u32,
    /// The hash key, when reported.
    pub hkey: Vec<u8>,
    /// Attributes this client does not model (`input-xfrm`, `flow-hash`, …), kept verbatim.
    pub unknown: Vec<RawAttr>,
}

impl Rss {
    /// The queues the table spreads onto, ascending, each once.
    pub fn queues(&self) -> Vec<u32> {
        let mut q = self.indir.clone();
        q.sort_unstable();
        q.dedup();
        q
    }
}

/// The request header: the device by ifindex (the caller's netns).
fn header(
    op: &'static str,
    ifindex: u32,
) -> Result<neli::genl::Nlattr<RssAttr, Buffer>, EthtoolError> {
    Ok(nest(
        op,
        RssAttr::Header,
        &[attr(op, HeaderAttr::DevIndex, ifindex)?],
    )?)
}

fn indir_bytes(table: &[u32]) -> Vec<u8> {
    table.iter().flat_map(|q| q.to_ne_bytes()).collect()
}

/// rss-get of `context` (0: the default one) on `ifindex`.
pub fn rss_get_attrs(
    ifindex: u32,
    context: u32,
) -> Result<GenlBuffer<RssAttr, Buffer>, EthtoolError> {
    const OP: &str = "rss-get";
    let mut a = GenlBuffer::new();
    a.push(header(OP, ifindex)?);
    if context != 0 {
        a.push(attr(OP, RssAttr::Context, context)?);
    }
    Ok(a)
}

/// rss-set of `context`'s whole indirection table.
pub fn rss_set_attrs(
    ifindex: u32,
    context: u32,
    table: &[u32],
) -> Result<GenlBuffer<RssAttr, Buffer>, EthtoolError> {
    const OP: &str = "rss-set";
    if table.is_empty() {
        // An empty indir resets the default table to "equal over all queues": never what a
        // caller of this function means.
        return Err(EthtoolError::InvalidRequest {
            op: OP,
            reason: "empty indirection table".into(),
        });
    }
    let mut a = GenlBuffer::new();
    a.push(header(OP, ifindex)?);
    if context != 0 {
        a.push(attr(OP, RssAttr::Context, context)?);
    }
    a.push(attr(OP, RssAttr::Indir, indir_bytes(table))?);
    Ok(a)
}

/// rss-create-act: a new context with this table, its id chosen by the kernel.
pub fn rss_create_attrs(
    ifindex: u32,
    table: &[u32],
) -> Result<GenlBuffer<RssAttr, Buffer>, EthtoolError> {
    const OP: &str = "rss-create-act";
    if table.is_empty() {
        return Err(EthtoolError::InvalidRequest {
            op: OP,
            reason: "empty indirection table".into(),
        });
    }
    let mut a = GenlBuffer::new();
    a.push(header(OP, ifindex)?);
    a.push(attr(OP, RssAttr::Indir, indir_bytes(table))?);
    Ok(a)
}

/// rss-delete-act of `context` (never 0: the default context cannot be deleted).
pub fn rss_delete_attrs(
    ifindex: u32,
    context: u32,
) -> Result<GenlBuffer<RssAttr, Buffer>, EthtoolError> {
    const OP: &str = "rss-delete-act";
    if context == 0 {
        return Err(EthtoolError::InvalidRequest {
            op: OP,
            reason: "context 0 is the default context".into(),
        });
    }
    let mut a = GenlBuffer::new();
    a.push(header(OP, ifindex)?);
    a.push(attr(OP, RssAttr::Context, context)?);
    Ok(a)
}

/// Decode an rss-get reply (or an rss-create-act reply, same attribute set).
pub fn decode_rss(op: &'static str, attrs: &GenlBuffer<u16, Buffer>) -> Result<Rss, EthtoolError> {
    let mut r = Rss::default();
    for a in attrs.iter() {
        let kind = *a.nla_type().nla_type();
        match RssAttr::from(kind) {
            RssAttr::Header => {
                // Only checked to be a well-formed nest: the device is the one asked for.
                children(op, "rss.header", a)?;
            }
            RssAttr::Context => r.context = get_u32(op, "rss.context", a)?,
            RssAttr::Hfunc => r.hfunc = get_u32(op, "rss.hfunc", a)?,
            RssAttr::Indir => {
                let p = a.nla_payload().as_ref();
                if p.len() % 4 != 0 {
                    return Err(EthtoolError::malformed(
                        op,
                        format!("rss.indir: {} bytes, not a u32 array", p.len()),
                    ));
                }
                r.indir = p
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
                    .collect();
            }
            RssAttr::Hkey => r.hkey = a.nla_payload().as_ref().to_vec(),
            _ => r.unknown.push(RawAttr {
                nest: crate::kernel::netdev::AttrNest::EthtoolRss,
                nla_type: kind,
                payload: a.nla_payload().as_ref().to_vec(),
            }),
        }
    }
    Ok(r)
}

/// The default context's table that keeps `pool` out of RSS on a NIC with `rx_queues` RX
/// queues and a `size`-entry table: entry i = the i-th queue outside the pool, round robin
/// (what `ethtool -X <nic> equal N` writes when the pool is the tail N..). `None` when no queue
/// is left outside the pool.
pub fn table_excluding(size: usize, rx_queues: u32, pool: &[u32]) -> Option<Vec<u32>> {
    let outside: Vec<u32> = (0..rx_queues).filter(|q| !pool.contains(q)).collect();
    if outside.is_empty() {
        return None;
    }
    Some((0..size).map(|i| outside[i % outside.len()]).collect())
}

/// A context's table over exactly `queues` (ascending), `size` entries, round robin.
pub fn table_over(size: usize, queues: &[u32]) -> Vec<u32> {
    if queues.is_empty() {
        return vec![];
    }
    (0..size).map(|i| queues[i % queues.len()]).collect()
}
