//! Socket I/O around the pure encoders: [`EthtoolClient`] for RSS over generic netlink, and
//! [`Ioctl`] for ntuple rules and the ntuple flag over `SIOCETHTOOL`.

use std::os::fd::{AsRawFd, OwnedFd};

use neli::consts::nl::NlmF;
use neli::consts::socket::NlFamily;
use neli::types::{Buffer, GenlBuffer};
use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::attrs::*;
use super::error::EthtoolError;
use super::ntuple::{self, FlowRule, RuleTable};
use super::rss::{self, Rss};
use crate::kernel::netdev::family::{decode_family, encode_getfamily, Family, GENL_ID_CTRL};
use crate::kernel::netdev::wire::{decode_body, encode_request};
use crate::kernel::netlink::{
    transact, DataMessage, KernelError, NetlinkError, SocketTransport, Transport,
};

/// Client for the `ethtool` generic netlink family's RSS operations, acting in the netns its
/// socket was opened in.
pub struct EthtoolClient<T: Transport = SocketTransport> {
    transport: T,
    family: Family,
    seq: u32,
}

impl EthtoolClient<SocketTransport> {
    /// Open a generic netlink socket in the calling thread's netns and resolve `ethtool`.
    pub fn open() -> Result<Self, EthtoolError> {
        let t = SocketTransport::open(NlFamily::Generic)
            .map_err(|source| EthtoolError::Io { op: "open", source })?;
        Self::with_transport(t)
    }
}

impl<T: Transport> EthtoolClient<T> {
    pub fn with_transport(mut transport: T) -> Result<Self, EthtoolError> {
        let req = encode_getfamily(FAMILY_NAME, 1)?;
        let replies = transact(&mut transport, &req).map_err(|e| match e {
            NetlinkError::Kernel(KernelError {
                errno: Errno::ENOENT,
                ..
            }) => EthtoolError::FamilyNotFound,
            e => EthtoolError::from_netlink("getfamily", 0, e),
        })?;
        let family = match replies.as_slice() {
            [one] if one.msg_type == GENL_ID_CTRL => decode_family(&one.payload)?,
            _ => {
                return Err(EthtoolError::malformed(
                    "getfamily",
                    format!("expected one controller reply, got {}", replies.len()),
                ))
            }
        };
        Ok(EthtoolClient {
            transport,
            family,
            seq: 2,
        })
    }

    /// The default context (0) or context `context` of `ifindex`.
    pub fn rss_get(&mut self, ifindex: u32, context: u32) -> Result<Rss, EthtoolError> {
        let cmd = EthtoolCmd::RssGet;
        let replies = self.request(cmd, ifindex, false, rss::rss_get_attrs(ifindex, context)?)?;
        let mut r = self.one(cmd, cmd, &replies)?;
        r.context = context;
        Ok(r)
    }

    /// Every context of `ifindex`, the default one first (rss-get dump with `start-context`).
    pub fn rss_dump(&mut self, ifindex: u32) -> Result<Vec<Rss>, EthtoolError> {
        let cmd = EthtoolCmd::RssGet;
        let replies = self.request(cmd, ifindex, true, rss::rss_get_attrs(ifindex, 0)?)?;
        let mut out = Vec::new();
        for m in &replies {
            let body = self.body(cmd, cmd, m)?;
            out.push(rss::decode_rss(cmd.name(), &body)?);
        }
        Ok(out)
    }

    /// Write `context`'s whole table.
    pub fn rss_set(
        &mut self,
        ifindex: u32,
        context: u32,
        table: &[u32],
    ) -> Result<(), EthtoolError> {
        self.request(
            EthtoolCmd::RssSet,
            ifindex,
            false,
            rss::rss_set_attrs(ifindex, context, table)?,
        )?;
        Ok(())
    }

    /// Create a context over `table`; returns its id.
    pub fn rss_create(&mut self, ifindex: u32, table: &[u32]) -> Result<u32, EthtoolError> {
        let cmd = EthtoolCmd::RssCreateAct;
        let replies = self.request(cmd, ifindex, false, rss::rss_create_attrs(ifindex, table)?)?;
        let r = self.one(cmd, EthtoolCmd::RssCreateActReply, &replies)?;
        if r.context == 0 {
            return Err(EthtoolError::malformed(
                cmd.name(),
                "reply names no context",
            ));
        }
        Ok(r.context)
    }

    /// Delete `context`. Already gone (`ENOENT`) is `Ok(false)`.
    pub fn rss_delete(&mut self, ifindex: u32, context: u32) -> Result<bool, EthtoolError> {
        match self.request(
            EthtoolCmd::RssDeleteAct,
            ifindex,
            false,
            rss::rss_delete_attrs(ifindex, context)?,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn one(
        &self,
        cmd: EthtoolCmd,
        reply: EthtoolCmd,
        replies: &[DataMessage],
    ) -> Result<Rss, EthtoolError> {
        match replies {
            [one] => rss::decode_rss(cmd.name(), &self.body(cmd, reply, one)?),
            _ => Err(EthtoolError::malformed(
                cmd.name(),
                format!("expected one reply, got {}", replies.len()),
            )),
        }
    }

    fn request(
        &mut self,
        cmd: EthtoolCmd,
        ifindex: u32,
        dump: bool,
        attrs: GenlBuffer<RssAttr, Buffer>,
    ) -> Result<Vec<DataMessage>, EthtoolError> {
        let want = if dump {
            crate::kernel::netdev::attrs::GENL_CMD_CAP_DUMP
        } else {
            crate::kernel::netdev::attrs::GENL_CMD_CAP_DO
        };
        let n = u32::from(u8::from(cmd));
        if !self
            .family
            .ops
            .iter()
            .any(|op| op.cmd == n && op.flags & want != 0)
        {
            return Err(EthtoolError::OperationNotSupported { op: cmd.name() });
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
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
        transact(&mut self.transport, &req)
            .map_err(|e| EthtoolError::from_netlink(cmd.name(), ifindex, e))
    }

    fn body(
        &self,
        cmd: EthtoolCmd,
        reply: EthtoolCmd,
        m: &DataMessage,
    ) -> Result<GenlBuffer<u16, Buffer>, EthtoolError> {
        if m.msg_type != self.family.id {
            return Err(EthtoolError::malformed(
                cmd.name(),
                format!(
                    "reply type {} is not the ethtool family id {}",
                    m.msg_type, self.family.id
                ),
            ));
        }
        let body = decode_body(cmd.name(), &m.payload)?;
        if body.cmd != u8::from(reply) {
            return Err(EthtoolError::malformed(
                cmd.name(),
                format!("reply command {} is not {}", body.cmd, u8::from(reply)),
            ));
        }
        Ok(body.attrs)
    }
}

/// `struct ifreq` as SIOCETHTOOL reads it: the name, then a pointer to the command's struct.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The ethtool ioctl on one NIC, by name, in the netns of the calling thread (its socket's).
pub struct Ioctl {
    sock: OwnedFd,
    ifname: String,
}

impl Ioctl {
    pub fn open(ifname: &str) -> Result<Ioctl, EthtoolError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
            return Err(EthtoolError::InvalidRequest {
                op: "ioctl",
                reason: format!("interface name {ifname:?}"),
            });
        }
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| EthtoolError::Io {
            op: "ioctl socket",
            source: e.into(),
        })?;
        Ok(Ioctl {
            sock,
            ifname: ifname.to_string(),
        })
    }

    /// Run ethtool command `buf` (its first u32 is the command) in place.
    fn call(&self, op: &'static str, buf: &mut [u8]) -> Result<(), EthtoolError> {
        let mut ifr = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data: buf.as_mut_ptr().cast(),
            _pad: [0; 16],
        };
        for (d, s) in ifr.name.iter_mut().zip(self.ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCETHTOOL reads an ifreq whose ifr_data points at a buffer the kernel reads
        // and writes within the size the command implies; every buffer here is at least
        // `struct ethtool_rxnfc` (GRXCLSRLALL: plus rule_cnt locations), which bounds it.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
        if rc < 0 {
            return Err(EthtoolError::Ioctl {
                op,
                ifname: self.ifname.clone(),
                errno: Errno::last(),
            });
        }
        Ok(())
    }

    /// Whether ntuple filtering is on (`ETH_FLAG_NTUPLE` of ETHTOOL_GFLAGS, which mirrors
    /// `NETIF_F_NTUPLE`).
    pub fn ntuple_enabled(&self) -> Result<bool, EthtoolError> {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&ETHTOOL_GFLAGS.to_ne_bytes());
        self.call("GFLAGS", &mut b)?;
        let data = u32::from_ne_bytes(b[4..8].try_into().expect("4 bytes"));
        Ok(data & ETH_FLAG_NTUPLE != 0)
    }

    /// The rule table: size and locations in use.
    pub fn rules(&self) -> Result<RuleTable, EthtoolError> {
        let mut b = ntuple::rxnfc_cmd(ETHTOOL_GRXCLSRLCNT);
        self.call("GRXCLSRLCNT", &mut b)?;
        let (size, count) = ntuple::decode_count(&b)?;
        if count == 0 {
            return Ok(RuleTable {
                size,
                locations: vec![],
            });
        }
        let mut b = ntuple::rxnfc_all(count, size);
        self.call("GRXCLSRLALL", &mut b)?;
        ntuple::decode_all(&b)
    }

    /// The rule at `location`: `Ok(None)` when there is none (`ENOENT`/`EINVAL`) or it is of a
    /// shape the plugin never writes.
    pub fn rule(&self, location: u32) -> Result<Option<FlowRule>, EthtoolError> {
        let mut b = ntuple::rxnfc_at(ETHTOOL_GRXCLSRULE, location);
        match self.call("GRXCLSRULE", &mut b) {
            Ok(()) => ntuple::decode_rule(&b),
            Err(e) if matches!(e.errno(), Some(Errno::ENOENT | Errno::EINVAL)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn insert(&self, rule: &FlowRule) -> Result<(), EthtoolError> {
        let mut b = ntuple::rxnfc_insert(rule);
        self.call("SRXCLSRLINS", &mut b)
    }

    /// Delete the rule at `location`. Already gone (`ENOENT`, or `EINVAL` from drivers that
    /// check the location first) is `Ok(false)`.
    pub fn delete(&self, location: u32) -> Result<bool, EthtoolError> {
        let mut b = ntuple::rxnfc_at(ETHTOOL_SRXCLSRLDEL, location);
        match self.call("SRXCLSRLDEL", &mut b) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.errno(), Some(Errno::ENOENT | Errno::EINVAL)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
