//! Client for the kernel's `netdev` generic netlink family (Documentation/netlink/specs/netdev.yaml):
//! queue leasing (queue-create), queue inspection (queue-get do/dump) and device XDP
//! capabilities (dev-get).
//!
//! Layout: [`attrs`] holds the numbers from netdev.yaml, [`queue`] / [`dev`] the objects and
//! their (pure, byte-level) encoders and decoders, [`family`] the controller lookup, [`client`]
//! the socket I/O, [`error`] the typed errors. Encoding/decoding never touches a socket, so it is
//! unit-tested byte-for-byte on the host; [`NetdevClient`] can be driven by any
//! [`Transport`](crate::kernel::netlink::Transport), e.g. a real socket in the VM test bed.
//!
//! Namespace rules (Linux 7.3, `netdev_nl_queue_create_doit`): queue-create is sent in the netns
//! of the *virtual* device (the netkit peer inside the pod); `lease.ifindex` is the physical
//! device's ifindex in *its* netns and `lease.netns-id` is the nsid of that netns as assigned in
//! the virtual device's netns (omit it when both are in the same netns). Both the operation and
//! the netns-id attribute require CAP_NET_ADMIN in the initial user namespace.

pub mod attrs;
pub mod client;
pub mod dev;
pub mod error;
pub mod family;
pub mod queue;
pub mod wire;

#[cfg(all(test, target_endian = "little"))]
mod tests;

pub use attrs::{NetdevCmd, QueueType};
pub use client::NetdevClient;
pub use dev::Dev;
pub use error::NetdevError;
pub use family::{Family, FamilyOp};
pub use queue::{IoUringInfo, Lease, Queue, QueueId};
pub use wire::{AttrNest, RawAttr};
