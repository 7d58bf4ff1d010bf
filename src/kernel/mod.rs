//! The kernel-facing layer: the two netlink transports (`rtnl`, rtnetlink; `netlink`,
//! generic netlink) with the one `KernelError`, and what the plugin asks of the kernel
//! through them: netkit devices (`link`), addresses, routes, the netdev family's queue
//! leases (`netdev`), the NIC's flow steering (`ethtool`), netns handles and ids, per-netns sysctls. Nothing here knows CNI.

pub mod addr;
pub mod ethtool;
pub mod link;
pub mod netdev;
pub mod netlink;
pub mod netns;
pub mod nsid;
pub mod route;
pub mod rtnl;
pub mod sysctl;
