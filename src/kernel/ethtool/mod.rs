//! The NIC's flow steering through ethtool: RSS contexts over generic netlink ([`rss`], the
//! `ethtool` family's rss-get / rss-set / rss-create-act / rss-delete-act), ntuple rules and
//! the ntuple feature flag through the `SIOCETHTOOL` ioctl ([`ntuple`]: the kernel has no netlink
//! message for rules yet), and the NIC's unicast filter ([`fdb`]: RTM_NEWNEIGH, AF_BRIDGE,
//! NTF_SELF, what `bridge fdb add <mac> dev <nic> self` sends).
//!
//! rust-netlink's `ethtool` crate (0.2) has no RSS messages and nothing for ntuple, so this is
//! the project's own client, on the same neli helpers as [`crate::kernel::netdev`]. Every
//! encoder and decoder is pure and tested byte-for-byte without a kernel (`tests`); the
//! clients only move bytes. Kernel failures keep the errno and the extack.
//!
//! Everything here acts in the network namespace of the thread that opens the socket: the node
//! netns, where the NIC is.

pub mod attrs;
pub mod client;
pub mod error;
pub mod fdb;
pub mod ntuple;
pub mod rss;

#[cfg(all(test, target_endian = "little"))]
mod tests;

pub use client::EthtoolClient;
pub use error::EthtoolError;
pub use ntuple::{FlowMatch, FlowRule, RuleAction, RuleTable};
pub use rss::Rss;
