//! netkit-cni: a CNI plugin that wires pods to the host with netkit devices, leases physical NIC
//! RX queues into them, and steers leased queues to the pod's AF_XDP sockets with XDP.
//!
//! The binary (`src/main.rs`) is the only place that uses `anyhow`; every module here has its own
//! typed error so callers can tell kernel errnos apart (DEL must know ENOENT from EBUSY).

pub mod addr;
pub mod cli_args;
pub mod cni;
pub mod config;
pub mod failpoint;
pub mod hostrouting;
pub mod inspect;
pub mod ip;
pub mod ipam;
pub mod link;
pub mod logging;
pub mod netdev;
pub mod netlink;
pub mod netns;
pub mod nsid;
pub mod plugin;
pub mod qemu;
pub mod request;
pub mod route;
pub mod rtnl;
pub mod safefs;
pub mod sysctl;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod xdp;
pub mod xsk;
