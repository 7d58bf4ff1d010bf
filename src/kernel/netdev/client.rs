//! The netdev generic netlink client: socket I/O around the pure encoders/decoders.

use neli::consts::genl::NlAttrType;
use neli::consts::nl::NlmF;

use neli::consts::socket::NlFamily;
use neli::types::{Buffer, GenlBuffer};
use nix::errno::Errno;

use super::attrs::{NetdevCmd, QueueType, FAMILY_NAME, FAMILY_VERSION};
use super::dev::{decode_dev, dev_get_attrs, Dev};
use super::error::NetdevError;
use super::family::{decode_family, encode_getfamily, Family, GENL_ID_CTRL};
use super::queue::{
    decode_created_id, decode_queue, queue_create_attrs, queue_dump_attrs, queue_get_attrs, Lease,
    Queue, QueueId,
};
use super::wire::{decode_body, encode_request};
use crate::kernel::netlink::{
    transact, DataMessage, KernelError, NetlinkError, SocketTransport, Transport,
};

/// Client for the `netdev` generic netlink family.
///
/// It acts in the network namespace its socket was created in: [`NetdevClient::open`] creates
/// the socket in the *calling thread's* netns, so open it on a thread that has already switched
/// to the pod netns (where the netkit peer lives) for queue-create, and in the host netns to
/// query the physical NIC. The family id is resolved once, in [`NetdevClient::open`] /
/// [`NetdevClient::with_transport`].
pub struct NetdevClient<T: Transport = SocketTransport> {
    transport: T,
    family: Family,
    seq: u32,
}

impl NetdevClient<SocketTransport> {
    /// Open a generic netlink socket in the current thread's netns and resolve the `netdev`
    /// family. Fails with [`NetdevError::FamilyNotFound`] on kernels without it.
    pub fn open() -> Result<Self, NetdevError> {
        let transport = SocketTransport::open(NlFamily::Generic)
            .map_err(|source| NetdevError::Io { op: "open", source })?;
        Self::with_transport(transport)
    }
}

impl<T: Transport> NetdevClient<T> {
    /// Resolve the `netdev` family over an existing transport.
    pub fn with_transport(mut transport: T) -> Result<Self, NetdevError> {
        let mut seq = 1;
        let req = encode_getfamily(FAMILY_NAME, seq)?;
        seq += 1;
        let replies = transact(&mut transport, &req).map_err(|e| match e {
            // ctrl_getfamily(): no such family (or not netns-aware and we are not in init_net).
            NetlinkError::Kernel(KernelError {
                errno: Errno::ENOENT,
                ..
            }) => NetdevError::FamilyNotFound,
            e => NetdevError::from_netlink("getfamily", e),
        })?;
        let family = match replies.as_slice() {
            [one] if one.msg_type == GENL_ID_CTRL => decode_family(&one.payload)?,
            _ => {
                return Err(NetdevError::malformed(
                    "getfamily",
                    format!("expected one controller reply, got {}", replies.len()),
                ))
            }
        };
        Ok(NetdevClient {
            transport,
            family,
            seq,
        })
    }

    /// The underlying transport (e.g. to inspect the socket).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The resolved family (id and the operations the kernel implements).
    pub fn family(&self) -> &Family {
        &self.family
    }

    /// Lease a physical RX queue into the virtual device `ifindex` (the netkit *peer*, in this
    /// client's netns) by creating a new queue on it. Returns the new queue's id on the virtual
    /// device.
    ///
    /// `lease.ifindex`/`lease.netns_id` name the physical device as seen from this client's
    /// netns; pass `netns_id: None` only when the physical device is in this same netns. Only
    /// [`QueueType::Rx`] is accepted by the kernel. The lease lasts until the virtual device is
    /// destroyed; there is no per-queue release. Errnos: see [`NetdevError`].
    pub fn queue_create(
        &mut self,
        ifindex: u32,
        queue_type: QueueType,
        lease: &Lease,
    ) -> Result<u32, NetdevError> {
        let attrs = queue_create_attrs(ifindex, queue_type, lease)?;
        self.do_one(NetdevCmd::QueueCreate, attrs, decode_created_id)
    }

    /// Get one queue. The kernel answers `ENOENT` if the device is down, `EINVAL` if the queue
    /// id is beyond the device's real queue count, `ENODEV` for an unknown ifindex.
    pub fn queue_get(
        &mut self,
        ifindex: u32,
        id: u32,
        queue_type: QueueType,
    ) -> Result<Queue, NetdevError> {
        let attrs = queue_get_attrs(ifindex, QueueId { id, queue_type })?;
        self.do_one(NetdevCmd::QueueGet, attrs, decode_queue)
    }

    /// All real RX then TX queues of a device. A device that is down yields an empty list (the
    /// kernel skips it), an unknown ifindex `ENODEV`.
    pub fn queue_dump(&mut self, ifindex: u32) -> Result<Vec<Queue>, NetdevError> {
        let cmd = NetdevCmd::QueueGet;
        let attrs = queue_dump_attrs(ifindex)?;
        let replies = self.request(cmd, true, attrs)?;
        replies
            .iter()
            .map(|m| decode_queue(&self.body(cmd, m)?.attrs))
            .collect()
    }

    /// XDP / AF_XDP capabilities of a device.
    pub fn dev_get(&mut self, ifindex: u32) -> Result<Dev, NetdevError> {
        let attrs = dev_get_attrs(ifindex)?;
        self.do_one(NetdevCmd::DevGet, attrs, decode_dev)
    }

    /// A "do" request answered by exactly one message, decoded by `decode`.
    fn do_one<A: NlAttrType, R>(
        &mut self,
        cmd: NetdevCmd,
        attrs: GenlBuffer<A, Buffer>,
        decode: impl FnOnce(&GenlBuffer<u16, Buffer>) -> Result<R, NetdevError>,
    ) -> Result<R, NetdevError> {
        let replies = self.request(cmd, false, attrs)?;
        match replies.as_slice() {
            [one] => decode(&self.body(cmd, one)?.attrs),
            _ => Err(NetdevError::malformed(
                cmd.name(),
                format!("expected one reply, got {}", replies.len()),
            )),
        }
    }

    /// Check the kernel implements `cmd`, encode with the next sequence number, exchange.
    fn request<A: NlAttrType>(
        &mut self,
        cmd: NetdevCmd,
        dump: bool,
        attrs: GenlBuffer<A, Buffer>,
    ) -> Result<Vec<DataMessage>, NetdevError> {
        if !self.family.supports(cmd, dump) {
            return Err(NetdevError::OperationNotSupported { op: cmd.name() });
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        // No NLM_F_ACK on a dump: the kernel never acknowledges one, it ends with NLMSG_DONE.
        let flags = if dump {
            NlmF::REQUEST | NlmF::DUMP
        } else {
            NlmF::REQUEST | NlmF::ACK
        };
        let req = encode_request(
            cmd.name(),
            self.family.id,
            flags,
            seq,
            cmd,
            FAMILY_VERSION,
            attrs,
        )?;
        transact(&mut self.transport, &req).map_err(|e| NetdevError::from_netlink(cmd.name(), e))
    }

    /// Check a reply message belongs to the family and the command, and decode its body.
    fn body(&self, cmd: NetdevCmd, m: &DataMessage) -> Result<super::wire::GenlBody, NetdevError> {
        if m.msg_type != self.family.id {
            return Err(NetdevError::malformed(
                cmd.name(),
                format!(
                    "reply type {} is not the netdev family id {}",
                    m.msg_type, self.family.id
                ),
            ));
        }
        let body = decode_body(cmd.name(), &m.payload)?;
        if body.cmd != u8::from(cmd) {
            return Err(NetdevError::malformed(
                cmd.name(),
                format!("reply command {} is not {}", body.cmd, u8::from(cmd)),
            ));
        }
        Ok(body)
    }
}
