//! Throwaway kernel fixtures of the sections that need more than a pod: a netns, a private bpffs, a
//! netdevsim NIC, and the far netns wired to the node's NIC. Each is the tests' fixture from the
//! crate's fixture library (`netkit_cni::testkit`), under the names and `Result`s the sections
//! were written against: a fixture that cannot be made fails its section, not the whole run.

use std::ops::Deref;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use netkit_cni::testkit;

use crate::afxdp::link_of;
use crate::util::{netns_fd, sh, Env};

/// A network namespace made for one section (`lo` up), deleted on drop. `.0` is its name.
pub(crate) struct NetnsGuard(pub(crate) String, #[allow(dead_code)] testkit::Netns); // .1: held for its drop

impl NetnsGuard {
    pub(crate) fn new(name: String) -> Result<NetnsGuard> {
        let ns = testkit::Netns::try_named(&name).map_err(|e| anyhow!(e))?;
        Ok(NetnsGuard(name, ns))
    }
}

/// A private bpf file system under the temp dir (`ip netns exec` would hide one under /sys),
/// unmounted on drop; `.path` through [`Deref`].
pub(crate) struct Bpffs(testkit::Bpffs);

impl Bpffs {
    /// `_tag` named the mount point once; testkit's names are unique by themselves.
    pub(crate) fn new(_tag: &str) -> Result<Bpffs> {
        testkit::Bpffs::try_new().map(Bpffs).map_err(|e| anyhow!(e))
    }
}

impl Deref for Bpffs {
    type Target = testkit::Bpffs;
    fn deref(&self) -> &testkit::Bpffs {
        &self.0
    }
}

/// A netdevsim device standing in for a physical NIC with `queues` RX/TX queues, moved into the
/// netns `node` and brought up; removed (with everything leased from it) on drop. `.id`,
/// `.ifname`, `.ifindex` through [`Deref`].
pub(crate) struct Nsim(testkit::Netdevsim);

impl Nsim {
    /// `_slot` told apart the devices of one run once; testkit numbers them by itself.
    pub(crate) fn new(node: &str, queues: u32, _slot: u32) -> Result<Nsim> {
        testkit::Netdevsim::try_in(node, queues)
            .map(Nsim)
            .map_err(|e| anyhow!(e))
    }
}

impl Deref for Nsim {
    type Target = testkit::Netdevsim;
    fn deref(&self) -> &testkit::Netdevsim {
        &self.0
    }
}

/// The node's "physical" NIC wired back to back to a peer NIC in a far netns: frames the peer
/// sends on TX queue q arrive on the NIC. Sections 5b and 5c flood from it; 5d routes through it.
pub(crate) struct FarWire {
    pub(crate) far: NetnsGuard,
    pub(crate) far_fd: OwnedFd,
    pub(crate) nic: Nsim,
    pub(crate) peer: Nsim,
    pub(crate) nic_ifindex: u32,
    pub(crate) nic_mac: String,
    pub(crate) peer_ifindex: u32,
    pub(crate) peer_mac: String,
}

impl FarWire {
    /// `far_name`: the far netns's name (a section's own, with the pid). `ipv6`: whether the
    /// far netns keeps IPv6; a far side that sends only a flood turns it off, so that no IPv6
    /// chatter of its own (router and neighbour solicitations) lands on a measured queue.
    pub(crate) fn new(env: &Env, far_name: String, queues: u32, ipv6: bool) -> Result<FarWire> {
        let far = NetnsGuard::new(far_name)?;
        if !ipv6 {
            sh(&[
                "ip",
                "netns",
                "exec",
                &far.0,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        let nic = Nsim::new(&env.node, queues, 1)?;
        let peer = Nsim::new(&far.0, queues, 2)?;
        let (nic_ifindex, nic_mac) = link_of(&env.node, &nic.ifname)?;
        let (peer_ifindex, peer_mac) = link_of(&far.0, &peer.ifname)?;
        let far_fd = netns_fd(&far.0)?;
        // The kernel resolves "fd:ifindex" against the writer's fd table.
        std::fs::write(
            "/sys/bus/netdevsim/link_device",
            format!(
                "{}:{nic_ifindex} {}:{peer_ifindex}",
                env.node_fd.as_raw_fd(),
                far_fd.as_raw_fd()
            ),
        )
        .context("wiring the two netdevsim devices (link_device)")?;
        Ok(FarWire {
            far,
            far_fd,
            nic,
            peer,
            nic_ifindex,
            nic_mac,
            peer_ifindex,
            peer_mac,
        })
    }
}
