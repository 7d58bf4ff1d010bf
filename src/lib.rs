//! netkit-cni: a CNI plugin that wires pods to the host with netkit devices, leases physical NIC
//! RX queues into them, and steers leased queues to the pod's AF_XDP sockets with XDP.
//!
//! The binary (`src/main.rs`) is the only place that uses `anyhow`; every module here has its own
//! typed error so callers can tell kernel errnos apart (DEL must know ENOENT from EBUSY).

// Layering, lowest first: a module imports only from the rows above its own, never from its own
// row or below (check: `grep -rn 'crate::' src/<module>`), so there are no import cycles.
//   text, safefs, logging, failpoint, cli_args   no crate imports
//   ip                                           text
//   cni (the protocol), kernel                   ip, logging, text
//   bpf (bpf(2), bpffs pins, skeletons)          safefs
//   xdp, xsk, hostrouting                        bpf, safefs, text; hostrouting also cni, ip, logging
//   config (the plugin's configuration)          everything above; names their values
//   ipam                                         cni, config, logging, text
//   plugin                                       everything above
//   inspect, qemu                                plugin and below
//   testkit (feature), main.rs, src/bin          anything

pub mod bpf;
pub mod cli_args;
pub mod cni;
pub mod config;
pub mod failpoint;
pub mod hostrouting;
pub mod inspect;
pub mod ip;
pub mod ipam;
pub mod kernel;
pub mod logging;
pub mod plugin;
pub mod qemu;
pub mod safefs;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub mod xdp;
pub mod xsk;
