//! The one IP prefix value: an address with a prefix length. The CNI protocol carries it
//! ("CIDR notation" in results and IPAM output) and the kernel layer configures it (interface
//! addresses, route destinations), so it sits below both.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::text::render_str;

/// An address with prefix length, as the spec's "CIDR notation" fields carry it. Host bits are
/// kept (`10.1.0.5/16` is an interface address, not a network), so this is not a network type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpCidr {
    /// `None` when the prefix is longer than the address family allows.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(IpCidr { addr, prefix_len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// A single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> IpCidr {
        IpCidr {
            addr,
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The prefix with host bits cleared.
    pub fn network(&self) -> IpCidr {
        let len = u32::from(self.prefix_len);
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        IpCidr {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// No host bits set (required of route destinations).
    pub fn is_network(&self) -> bool {
        self.network() == *self
    }
}

impl FromStr for IpCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or("missing /prefix-length")?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{} is not an IP address", render_str(addr)))?;
        // Digits only: u8's parser would also take "+8".
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("prefix length {} is not a number", render_str(len)));
        }
        let len: u8 = len
            .parse()
            .map_err(|_| format!("prefix length {} is out of range", render_str(len)))?;
        IpCidr::new(addr, len).ok_or_else(|| format!("prefix length {len} is out of range"))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(
            p("10.0.0.5/24").addr(),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(p("10.0.0.5/24").prefix_len(), 24);
        assert_eq!(IpCidr::host("fd00::1".parse().unwrap()).prefix_len(), 128);
        assert_eq!(IpCidr::host("10.1.2.3".parse().unwrap()).prefix_len(), 32);
        assert_eq!(p("fd00::1/64").to_string(), "fd00::1/64");
        for bad in [
            "10.0.0.1/33",
            "fd00::/129",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "x/8",
            "10.0.0.1/a",
            "10.0.0.1",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn network() {
        assert_eq!(p("10.1.2.3/24").network(), p("10.1.2.0/24"));
        assert_eq!(p("10.1.2.3/0").network(), p("0.0.0.0/0"));
        assert_eq!(p("10.1.2.3/32").network(), p("10.1.2.3/32"));
        assert_eq!(p("fd00::1:2/112").network(), p("fd00::1:0/112"));
        assert_eq!(p("fd00::1/0").network(), p("::/0"));
        assert!(p("10.1.2.0/24").is_network() && !p("10.1.2.3/24").is_network());
    }
}
