//! ntuple (RX classification) rules and the ntuple feature flag, through the `SIOCETHTOOL`
//! ioctl: the kernel has no netlink message for rules (net/ethtool/ioctl.c,
//! `ethtool_set_rxnfc` / `ethtool_get_rxnfc`).
//!
//! A rule is a `struct ethtool_rxnfc` (include/uapi/linux/ethtool.h) carrying a
//! `struct ethtool_rx_flow_spec`: the flow type and its header fields (`h_u`) with a mask
//! (`m_u`, set bits are compared), the action (`ring_cookie`: a queue, or with `FLOW_RSS` an
//! offset into the RSS context `rss_context`) and the location in the driver's table. This
//! module encodes and decodes those 192 bytes; [`super::client::rxnfc_ioctl`] moves them.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::attrs::*;
use super::error::EthtoolError;

/// What a rule matches: the destination only, as the plugin steers by destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMatch {
    /// `ETHER_FLOW`, `h_dest`.
    EtherDst([u8; 6]),
    /// `IP_USER_FLOW` (IPv4), `ip4dst`.
    Ip4Dst(Ipv4Addr),
    /// `IPV6_USER_FLOW`, `ip6dst`.
    Ip6Dst(Ipv6Addr),
}

impl std::fmt::Display for FlowMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowMatch::EtherDst(m) => write!(f, "ether dst {}", mac_string(m)),
            FlowMatch::Ip4Dst(a) => write!(f, "ip4 dst {a}"),
            FlowMatch::Ip6Dst(a) => write!(f, "ip6 dst {a}"),
        }
    }
}

/// Where matching frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// One RX queue.
    Queue(u32),
    /// An RSS context (`FLOW_RSS`, ring offset 0).
    Context(u32),
    /// Dropped (`RX_CLS_FLOW_DISC`); never written by the plugin, decoded so CHECK can name it.
    Drop,
}

impl std::fmt::Display for RuleAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleAction::Queue(q) => write!(f, "queue {q}"),
            RuleAction::Context(c) => write!(f, "context {c}"),
            RuleAction::Drop => write!(f, "drop"),
        }
    }
}

/// One rule at a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRule {
    pub location: u32,
    pub matches: FlowMatch,
    pub action: RuleAction,
}

impl std::fmt::Display for FlowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {}: {} -> {}",
            self.location, self.matches, self.action
        )
    }
}

/// The rule table as GRXCLSRLCNT / GRXCLSRLALL report it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleTable {
    /// Table size (`data`, without `RX_CLS_LOC_SPECIAL`).
    pub size: u32,
    /// Locations in use.
    pub locations: Vec<u32>,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}
fn get_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}
fn get_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}

/// An `ethtool_rxnfc` with only `cmd` set (GRXCLSRLCNT, GRXRINGS).
pub fn rxnfc_cmd(cmd: u32) -> Vec<u8> {
    let mut b = vec![0u8; RXNFC_LEN];
    put_u32(&mut b, RXNFC_CMD, cmd);
    b
}

/// GRXCLSRULE of `location`, and SRXCLSRLDEL of it (same layout: only `fs.location` matters).
pub fn rxnfc_at(cmd: u32, location: u32) -> Vec<u8> {
    let mut b = rxnfc_cmd(cmd);
    put_u32(&mut b, RXNFC_FS + FS_LOCATION, location);
    b
}

/// GRXCLSRLALL for `count` rules: the struct and room for `count` locations after it.
pub fn rxnfc_all(count: u32, size: u32) -> Vec<u8> {
    let mut b = rxnfc_cmd(ETHTOOL_GRXCLSRLALL);
    put_u32(&mut b, RXNFC_DATA, size);
    put_u32(&mut b, RXNFC_RULE_CNT, count);
    b.resize(RXNFC_RULE_LOCS + 4 * count as usize, 0);
    b
}

/// SRXCLSRLINS of `rule`.
pub fn rxnfc_insert(rule: &FlowRule) -> Vec<u8> {
    let mut b = rxnfc_cmd(ETHTOOL_SRXCLSRLINS);
    let fs = RXNFC_FS;
    let (h, m) = (fs + FS_H_U, fs + FS_M_U);
    let flow_type = match rule.matches {
        FlowMatch::EtherDst(mac) => {
            // struct ethhdr: h_dest first.
            b[h..h + 6].copy_from_slice(&mac);
            b[m..m + 6].copy_from_slice(&[0xff; 6]);
            ETHER_FLOW
        }
        FlowMatch::Ip4Dst(a) => {
            // struct ethtool_usrip4_spec: ip4src, ip4dst, l4_4_bytes, tos, ip_ver, proto.
            b[h + 4..h + 8].copy_from_slice(&a.octets());
            b[m + 4..m + 8].copy_from_slice(&[0xff; 4]);
            // ip_ver must be ETH_RX_NFC_IP4 and is not masked (ethtool's own encoding).
            b[h + 13] = ETH_RX_NFC_IP4;
            IP_USER_FLOW
        }
        FlowMatch::Ip6Dst(a) => {
            // struct ethtool_usrip6_spec: ip6src[4], ip6dst[4], ...
            b[h + 16..h + 32].copy_from_slice(&a.octets());
            b[m + 16..m + 32].copy_from_slice(&[0xff; 16]);
            IPV6_USER_FLOW
        }
    };
    let (flags, cookie) = match rule.action {
        RuleAction::Queue(q) => (0, u64::from(q)),
        RuleAction::Context(c) => {
            put_u32(&mut b, RXNFC_RULE_CNT, c);
            (FLOW_RSS, 0)
        }
        RuleAction::Drop => (0, RX_CLS_FLOW_DISC),
    };
    put_u32(&mut b, fs + FS_FLOW_TYPE, flow_type | flags);
    put_u64(&mut b, fs + FS_RING_COOKIE, cookie);
    put_u32(&mut b, fs + FS_LOCATION, rule.location);
    b
}

/// Decode a GRXCLSRULE answer. A rule of a shape the plugin never writes (other flow types,
/// other fields masked in) is `Ok(None)`: it is not the plugin's.
pub fn decode_rule(b: &[u8]) -> Result<Option<FlowRule>, EthtoolError> {
    const OP: &str = "GRXCLSRULE";
    if b.len() < RXNFC_LEN {
        return Err(EthtoolError::malformed(OP, format!("{} bytes", b.len())));
    }
    let fs = RXNFC_FS;
    let (h, m) = (fs + FS_H_U, fs + FS_M_U);
    let ft = get_u32(b, fs + FS_FLOW_TYPE);
    let location = get_u32(b, fs + FS_LOCATION);
    // Only the destination may be masked in, as this module writes it.
    let mask_only = |lo: usize, hi: usize| {
        b[m..m + 52].iter().enumerate().all(|(i, v)| {
            if (lo..hi).contains(&i) {
                *v == 0xff
            } else {
                *v == 0
            }
        })
    };
    let matches = match ft & !FLOW_FLAGS {
        ETHER_FLOW if mask_only(0, 6) => {
            FlowMatch::EtherDst(b[h..h + 6].try_into().expect("6 bytes"))
        }
        IP_USER_FLOW if mask_only(4, 8) => {
            let o: [u8; 4] = b[h + 4..h + 8].try_into().expect("4 bytes");
            FlowMatch::Ip4Dst(Ipv4Addr::from(o))
        }
        IPV6_USER_FLOW if mask_only(16, 32) => {
            let o: [u8; 16] = b[h + 16..h + 32].try_into().expect("16 bytes");
            FlowMatch::Ip6Dst(Ipv6Addr::from(o))
        }
        _ => return Ok(None),
    };
    let cookie = get_u64(b, fs + FS_RING_COOKIE);
    let action = if ft & FLOW_RSS != 0 {
        RuleAction::Context(get_u32(b, RXNFC_RULE_CNT))
    } else if cookie == RX_CLS_FLOW_DISC {
        RuleAction::Drop
    } else {
        // The low 32 bits are the queue; bits 32-39 a VF, which the plugin never sets.
        if cookie >> 32 != 0 {
            return Ok(None);
        }
        RuleAction::Queue(cookie as u32)
    };
    Ok(Some(FlowRule {
        location,
        matches,
        action,
    }))
}

/// Decode a GRXCLSRLCNT answer: (table size, rules in use).
pub fn decode_count(b: &[u8]) -> Result<(u32, u32), EthtoolError> {
    if b.len() < RXNFC_LEN {
        return Err(EthtoolError::malformed(
            "GRXCLSRLCNT",
            format!("{} bytes", b.len()),
        ));
    }
    Ok((
        get_u32(b, RXNFC_DATA) & !RX_CLS_LOC_SPECIAL,
        get_u32(b, RXNFC_RULE_CNT),
    ))
}

/// Decode a GRXCLSRLALL answer: the locations in use.
pub fn decode_all(b: &[u8]) -> Result<RuleTable, EthtoolError> {
    const OP: &str = "GRXCLSRLALL";
    if b.len() < RXNFC_RULE_LOCS {
        return Err(EthtoolError::malformed(OP, format!("{} bytes", b.len())));
    }
    let count = get_u32(b, RXNFC_RULE_CNT) as usize;
    let end = RXNFC_RULE_LOCS + 4 * count;
    if b.len() < end {
        return Err(EthtoolError::malformed(
            OP,
            format!("{count} rules do not fit {} bytes", b.len()),
        ));
    }
    Ok(RuleTable {
        size: get_u32(b, RXNFC_DATA) & !RX_CLS_LOC_SPECIAL,
        locations: b[RXNFC_RULE_LOCS..end]
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    })
}
