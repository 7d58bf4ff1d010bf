//! The NIC's own unicast address filter: `bridge fdb add|del <mac> dev <nic> self`.
//!
//! A NIC that is not promiscuous drops frames for a MAC it was not told about; a pod whose
//! frames are steered by destination MAC needs its MAC in the NIC's filter. On a device that is
//! no bridge port, RTM_NEWNEIGH with AF_BRIDGE and NTF_SELF reaches the driver's `ndo_fdb_add`
//! or the default `ndo_dflt_fdb_add` (net/core/rtnetlink.c), which accepts only
//! `NUD_PERMANENT` entries and adds a unicast address with `dev_uc_add_excl` (`EEXIST` when it
//! is there already); RTM_DELNEIGH removes it with `dev_uc_del` (`ENOENT` when it is not).
//!
//! Encoded by hand (a fixed 12-byte `struct ndmsg` and one attribute) so the bytes are tested
//! without a kernel; sent over [`crate::kernel::netlink::SocketTransport`].

use crate::kernel::netlink::{transact, NetlinkError, SocketTransport, Transport};

use super::error::EthtoolError;

const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_BRIDGE: u8 = 7;
const NUD_PERMANENT: u16 = 0x80;
const NTF_SELF: u8 = 0x02;
const NDA_LLADDR: u16 = 2;

/// RTM_NEWNEIGH (`add`) or RTM_DELNEIGH of `mac` on `ifindex`'s own filter.
pub fn encode(add: bool, ifindex: u32, mac: &[u8; 6], seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    let len: u32 = 16 + 12 + 12; // nlmsghdr + ndmsg + NDA_LLADDR (4 + 6, padded to 12)
    b.extend_from_slice(&len.to_ne_bytes());
    let (ty, flags) = if add {
        (
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        (RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK)
    };
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
                                              // struct ndmsg: family, pad1, pad2, ifindex, state, flags, type.
    b.push(AF_BRIDGE);
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
    b.push(NTF_SELF);
    b.push(0);
    // NDA_LLADDR.
    b.extend_from_slice(&10u16.to_ne_bytes());
    b.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
    b.extend_from_slice(mac);
    b.extend_from_slice(&[0, 0]);
    b
}

/// Add (`add`) or remove `mac` on `ifindex` over `t`. Adding what is there (`EEXIST`) and
/// removing what is not (`ENOENT`) succeed: both are the state asked for. Returns whether the
/// call changed the filter.
pub fn set<T: Transport>(
    t: &mut T,
    add: bool,
    ifindex: u32,
    mac: &[u8; 6],
) -> Result<bool, EthtoolError> {
    let op = if add { "fdb add" } else { "fdb del" };
    match transact(t, &encode(add, ifindex, mac, 1)) {
        Ok(_) => Ok(true),
        Err(NetlinkError::Kernel(k))
            if (add && k.errno == nix::errno::Errno::EEXIST)
                || (!add && k.errno == nix::errno::Errno::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(EthtoolError::from_netlink(op, ifindex, e)),
    }
}

/// [`set`] over a fresh rtnetlink socket in the calling thread's netns.
pub fn set_in_current_netns(add: bool, ifindex: u32, mac: &[u8; 6]) -> Result<bool, EthtoolError> {
    let mut t = SocketTransport::open(neli::consts::socket::NlFamily::Route)
        .map_err(|source| EthtoolError::Io { op: "fdb", source })?;
    set(&mut t, add, ifindex, mac)
}
