//! The `queue` object: queue-get / queue-dump replies, and the `lease` nest used by
//! queue-create.

use neli::types::{Buffer, GenlBuffer};

use super::attrs::{IoUringProviderInfoAttr, LeaseAttr, QueueAttr, QueueType};
use super::error::NetdevError;
use super::wire::{attr, children, get_s32, get_u32, get_uint, nest, AttrNest, RawAttr};
use neli::genl::Nlattr;

/// A queue of a device: `(id, type)`; ids are per device and per type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId {
    /// Queue index.
    pub id: u32,
    /// rx or tx.
    pub queue_type: QueueType,
}

impl QueueId {
    /// RX queue `id`.
    pub fn rx(id: u32) -> QueueId {
        QueueId {
            id,
            queue_type: QueueType::Rx,
        }
    }
}

/// The `lease` nest: which physical queue a virtual queue is bound to.
///
/// In a **queue-create request** it names the physical queue to lease: `ifindex` and `netns_id`
/// are resolved from the netns of the socket sending the request (the virtual device's netns);
/// `netns_id: None` means "the same netns", otherwise it is the nsid of the physical device's
/// netns *as assigned in the virtual device's netns* (see [`crate::kernel::nsid`]).
///
/// In a **queue-get reply for a physical queue** the kernel reports the other end: `ifindex` and
/// `queue` of the *virtual* device holding the lease, and `netns_id` = the nsid of that device's
/// netns as seen from the physical device's netns (absent when both are in the same netns). The
/// kernel allocates that nsid on the fly if none existed. Querying the virtual queue does not
/// return a lease nest (only memory-provider info of the leased physical queue).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// ifindex of the other device.
    pub ifindex: u32,
    /// Queue on the other device.
    pub queue: QueueId,
    /// nsid of the other device's netns; `None` = same netns. In replies the kernel may report
    /// -1 (NETNSA_NSID_NOT_ASSIGNED) when it failed to allocate one.
    pub netns_id: Option<i32>,
}

/// io_uring zero-copy RX memory provider information (`io-uring-provider-info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IoUringInfo {
    /// RX buffer length chosen at zcrx registration.
    pub rx_buf_len: Option<u64>,
}

/// A queue as reported by queue-get / queue-dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Queue index.
    pub id: u32,
    /// rx or tx.
    pub queue_type: QueueType,
    /// Device the queue belongs to.
    pub ifindex: u32,
    /// NAPI instance servicing the queue, if any.
    pub napi_id: Option<u32>,
    /// Bound dmabuf (devmem TCP) id, if any.
    pub dmabuf: Option<u32>,
    /// io_uring zcrx memory provider, if one is bound.
    pub io_uring: Option<IoUringInfo>,
    /// An AF_XDP socket pool is bound (the `xsk` nest is present).
    pub xsk: bool,
    /// Lease (reported on the physical queue, pointing at the virtual one).
    pub lease: Option<Lease>,
    /// Attributes not modelled above, from any nest level.
    pub unknown: Vec<RawAttr>,
}

impl Queue {
    /// The queue's `(id, type)`.
    pub fn queue_id(&self) -> QueueId {
        QueueId {
            id: self.id,
            queue_type: self.queue_type,
        }
    }
}

fn queue_id_attrs(
    op: &'static str,
    q: QueueId,
) -> Result<[Nlattr<QueueAttr, Buffer>; 2], NetdevError> {
    Ok([
        attr(op, QueueAttr::Id, q.id)?,
        attr(op, QueueAttr::Type, q.queue_type)?,
    ])
}

impl Lease {
    fn encode(&self, op: &'static str) -> Result<Nlattr<QueueAttr, Buffer>, NetdevError> {
        let queue = nest(op, LeaseAttr::Queue, &queue_id_attrs(op, self.queue)?)?;
        let mut inner = vec![attr(op, LeaseAttr::Ifindex, self.ifindex)?, queue];
        if let Some(nsid) = self.netns_id {
            inner.push(attr(op, LeaseAttr::NetnsId, nsid)?);
        }
        nest(op, QueueAttr::Lease, &inner)
    }
}

/// Attributes of a queue-create request, in netdev.yaml's order: ifindex, type, lease
/// { ifindex, queue { id, type }, netns-id }.
pub(crate) fn queue_create_attrs(
    ifindex: u32,
    queue_type: QueueType,
    lease: &Lease,
) -> Result<GenlBuffer<QueueAttr, Buffer>, NetdevError> {
    const OP: &str = "queue-create";
    // Reject what the kernel policy (NLA_POLICY_MIN) would answer with ERANGE, so a kernel
    // ERANGE unambiguously means "physical queue id out of range".
    if ifindex == 0 {
        return Err(NetdevError::InvalidRequest {
            op: OP,
            reason: "ifindex 0".into(),
        });
    }
    if lease.ifindex == 0 {
        return Err(NetdevError::InvalidRequest {
            op: OP,
            reason: "lease ifindex 0".into(),
        });
    }
    if let Some(nsid) = lease.netns_id.filter(|n| *n < 0) {
        return Err(NetdevError::InvalidRequest {
            op: OP,
            reason: format!("lease netns-id {nsid} is negative (not assigned?)"),
        });
    }
    let mut attrs = GenlBuffer::new();
    attrs.push(attr(OP, QueueAttr::Ifindex, ifindex)?);
    attrs.push(attr(OP, QueueAttr::Type, queue_type)?);
    attrs.push(lease.encode(OP)?);
    Ok(attrs)
}

/// Attributes of a queue-get (do) request: ifindex, type, id.
pub(crate) fn queue_get_attrs(
    ifindex: u32,
    q: QueueId,
) -> Result<GenlBuffer<QueueAttr, Buffer>, NetdevError> {
    const OP: &str = "queue-get";
    let mut attrs = GenlBuffer::new();
    attrs.push(attr(OP, QueueAttr::Ifindex, ifindex)?);
    attrs.push(attr(OP, QueueAttr::Type, q.queue_type)?);
    attrs.push(attr(OP, QueueAttr::Id, q.id)?);
    Ok(attrs)
}

/// Attributes of a queue-get dump request filtered to one device.
pub(crate) fn queue_dump_attrs(ifindex: u32) -> Result<GenlBuffer<QueueAttr, Buffer>, NetdevError> {
    let mut attrs = GenlBuffer::new();
    attrs.push(attr("queue-get", QueueAttr::Ifindex, ifindex)?);
    Ok(attrs)
}

/// Decode the attributes of a queue-create reply: the new queue's id.
pub(crate) fn decode_created_id(attrs: &GenlBuffer<u16, Buffer>) -> Result<u32, NetdevError> {
    const OP: &str = "queue-create";
    let mut id = None;
    for a in attrs.iter() {
        if QueueAttr::from(*a.nla_type().nla_type()) == QueueAttr::Id {
            id = Some(get_u32(OP, "id", a)?);
        }
    }
    id.ok_or_else(|| NetdevError::malformed(OP, "reply lacks the new queue id"))
}

/// Decode the attributes of one queue-get reply message.
pub(crate) fn decode_queue(attrs: &GenlBuffer<u16, Buffer>) -> Result<Queue, NetdevError> {
    const OP: &str = "queue-get";
    let (mut id, mut queue_type, mut ifindex) = (None, None, None);
    let mut q = Queue {
        id: 0,
        queue_type: QueueType::Rx,
        ifindex: 0,
        napi_id: None,
        dmabuf: None,
        io_uring: None,
        xsk: false,
        lease: None,
        unknown: Vec::new(),
    };
    for a in attrs.iter() {
        match QueueAttr::from(*a.nla_type().nla_type()) {
            QueueAttr::Id => id = Some(get_u32(OP, "id", a)?),
            QueueAttr::Type => queue_type = Some(QueueType::from(get_u32(OP, "type", a)?)),
            QueueAttr::Ifindex => ifindex = Some(get_u32(OP, "ifindex", a)?),
            QueueAttr::NapiId => q.napi_id = Some(get_u32(OP, "napi-id", a)?),
            QueueAttr::Dmabuf => q.dmabuf = Some(get_u32(OP, "dmabuf", a)?),
            QueueAttr::IoUring => {
                let mut info = IoUringInfo::default();
                for c in children(OP, "io-uring", a)?.iter() {
                    match IoUringProviderInfoAttr::from(*c.nla_type().nla_type()) {
                        IoUringProviderInfoAttr::RxBufLen => {
                            info.rx_buf_len = Some(get_uint(OP, "io-uring.rx-buf-len", c)?)
                        }
                        IoUringProviderInfoAttr::UnrecognizedConst(_) => q
                            .unknown
                            .push(RawAttr::from_nlattr(AttrNest::QueueIoUring, c)),
                    }
                }
                q.io_uring = Some(info);
            }
            QueueAttr::Xsk => {
                q.xsk = true;
                for c in children(OP, "xsk", a)?.iter() {
                    q.unknown.push(RawAttr::from_nlattr(AttrNest::QueueXsk, c));
                }
            }
            QueueAttr::Lease => q.lease = Some(decode_lease(a, &mut q.unknown)?),
            QueueAttr::UnrecognizedConst(_) => {
                q.unknown.push(RawAttr::from_nlattr(AttrNest::Queue, a))
            }
        }
    }
    q.id = id.ok_or_else(|| NetdevError::malformed(OP, "queue without id"))?;
    q.queue_type = queue_type.ok_or_else(|| NetdevError::malformed(OP, "queue without type"))?;
    q.ifindex = ifindex.ok_or_else(|| NetdevError::malformed(OP, "queue without ifindex"))?;
    Ok(q)
}

fn decode_lease(a: &Nlattr<u16, Buffer>, unknown: &mut Vec<RawAttr>) -> Result<Lease, NetdevError> {
    const OP: &str = "queue-get";
    let (mut ifindex, mut queue, mut netns_id) = (None, None, None);
    for c in children(OP, "lease", a)?.iter() {
        match LeaseAttr::from(*c.nla_type().nla_type()) {
            LeaseAttr::Ifindex => ifindex = Some(get_u32(OP, "lease.ifindex", c)?),
            LeaseAttr::NetnsId => netns_id = Some(get_s32(OP, "lease.netns-id", c)?),
            LeaseAttr::Queue => {
                let (mut id, mut queue_type) = (None, None);
                for g in children(OP, "lease.queue", c)?.iter() {
                    match QueueAttr::from(*g.nla_type().nla_type()) {
                        QueueAttr::Id => id = Some(get_u32(OP, "lease.queue.id", g)?),
                        QueueAttr::Type => {
                            queue_type = Some(QueueType::from(get_u32(OP, "lease.queue.type", g)?))
                        }
                        _ => unknown.push(RawAttr::from_nlattr(AttrNest::QueueLeaseQueue, g)),
                    }
                }
                queue = Some(QueueId {
                    id: id.ok_or_else(|| NetdevError::malformed(OP, "lease.queue without id"))?,
                    queue_type: queue_type
                        .ok_or_else(|| NetdevError::malformed(OP, "lease.queue without type"))?,
                });
            }
            LeaseAttr::UnrecognizedConst(_) => {
                unknown.push(RawAttr::from_nlattr(AttrNest::QueueLease, c))
            }
        }
    }
    Ok(Lease {
        ifindex: ifindex.ok_or_else(|| NetdevError::malformed(OP, "lease without ifindex"))?,
        queue: queue.ok_or_else(|| NetdevError::malformed(OP, "lease without queue"))?,
        // Kept as reported, including -1 (NETNSA_NSID_NOT_ASSIGNED: different netns, but the
        // kernel could not allocate an id), which must not be mistaken for "same netns".
        netns_id,
    })
}
