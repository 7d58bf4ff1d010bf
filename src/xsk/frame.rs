//! Ethernet/IPv4/UDP frames for the AF_XDP tools: built to be sent through an [`super::Xsk`],
//! and described one line each when received.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// IPv4 ethertype.
pub const ETH_P_IP: u16 = 0x0800;
const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const IPPROTO_UDP: u8 = 17;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    /// Six colon-separated hex octets.
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || format!("{s:?} is not a MAC address (six hex octets separated by colons)");
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(mac))
    }
}

/// An Ethernet/IPv4/UDP frame to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: &'a [u8],
}

impl UdpFrame<'_> {
    /// The frame's bytes: TTL 64, don't-fragment, a correct IPv4 header checksum and UDP
    /// checksum 0 ("none", which IPv4 allows). `None` if the payload does not fit an IPv4
    /// packet.
    pub fn build(&self) -> Option<Vec<u8>> {
        let udp_len = u16::try_from(UDP_HLEN + self.payload.len()).ok()?;
        let ip_len = u16::try_from(IPV4_HLEN + usize::from(udp_len)).ok()?;
        let mut f = Vec::with_capacity(ETH_HLEN + usize::from(ip_len));
        f.extend_from_slice(&self.dst_mac.0);
        f.extend_from_slice(&self.src_mac.0);
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let ip = f.len();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&ip_len.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
        f.extend_from_slice(&self.src_ip.octets());
        f.extend_from_slice(&self.dst_ip.octets());
        let csum = ipv4_checksum(&f[ip..ip + IPV4_HLEN]);
        f[ip + 10..ip + 12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(self.payload);
        Some(f)
    }
}

/// The Internet checksum (RFC 1071) of `header`; over a header whose checksum field holds the
/// right value, it is 0.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a received frame is, as far as the tools care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Ethernet source.
    pub src_mac: Mac,
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// Ethertype.
    pub ethertype: u16,
    /// For IPv4: source, destination, protocol.
    pub ipv4: Option<(Ipv4Addr, Ipv4Addr, u8)>,
    /// For IPv4/UDP: source port, destination port, payload (cut to the UDP length).
    pub udp: Option<(u16, u16, &'a [u8])>,
}

/// Parse the Ethernet header and, for an unfragmented-looking IPv4/UDP frame, the layers
/// above. `None` when the frame is shorter than an Ethernet header.
pub fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    if frame.len() < ETH_HLEN {
        return None;
    }
    let mac = |o: usize| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&frame[o..o + 6]);
        Mac(m)
    };
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut p = Parsed {
        src_mac: mac(6),
        dst_mac: mac(0),
        ethertype,
        ipv4: None,
        udp: None,
    };
    let ip = &frame[ETH_HLEN..];
    if ethertype != ETH_P_IP || ip.len() < IPV4_HLEN || ip[0] >> 4 != 4 {
        return Some(p);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    p.ipv4 = Some((addr(12), addr(16), proto));
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if proto != IPPROTO_UDP || ihl < IPV4_HLEN || total < ihl + UDP_HLEN {
        return Some(p);
    }
    let udp = &ip[ihl..total];
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).clamp(UDP_HLEN, udp.len());
    p.udp = Some((
        u16::from_be_bytes([udp[0], udp[1]]),
        u16::from_be_bytes([udp[2], udp[3]]),
        &udp[UDP_HLEN..len],
    ));
    Some(p)
}

/// One line for a frame: length, MACs, ethertype, and for IPv4/UDP the addresses, ports and
/// the payload (quoted when it is printable ASCII, else its length).
pub fn describe(frame: &[u8]) -> String {
    let mut s = format!("len={}", frame.len());
    let Some(p) = parse(frame) else {
        s.push_str(" runt");
        return s;
    };
    let _ = write!(
        s,
        " src={} dst={} ethertype={:#06x}",
        p.src_mac, p.dst_mac, p.ethertype
    );
    match (p.ipv4, p.udp) {
        (Some((src, dst, _)), Some((sport, dport, payload))) => {
            let _ = write!(s, " udp {src}:{sport} > {dst}:{dport}");
            if payload.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                let _ = write!(s, " payload={:?}", String::from_utf8_lossy(payload));
            } else {
                let _ = write!(s, " payload={} bytes", payload.len());
            }
        }
        (Some((src, dst, proto)), None) => {
            let _ = write!(s, " ipv4 {src} > {dst} proto={proto}");
        }
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        UdpFrame {
            src_mac: "02:00:00:00:00:01".parse().unwrap(),
            dst_mac: "ff:ff:ff:ff:ff:ff".parse().unwrap(),
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 40000,
            dst_port: 5000,
            payload,
        }
        .build()
        .unwrap()
    }

    #[test]
    fn built_frame_has_the_right_lengths_and_a_valid_ip_checksum() {
        let f = frame(b"hello");
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 33, "IPv4 total length");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 13, "UDP length");
        assert_eq!(
            ipv4_checksum(&f[14..34]),
            0,
            "header with its checksum must sum to 0"
        );
        assert_ne!(&f[24..26], &[0, 0]);
    }

    #[test]
    fn checksum_matches_a_known_header() {
        // The worked example from the Wikipedia article on the IPv4 header checksum.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }

    #[test]
    fn describe_round_trips_what_build_wrote() {
        let line = describe(&frame(b"hi there"));
        assert_eq!(
            line,
            "len=50 src=02:00:00:00:00:01 dst=ff:ff:ff:ff:ff:ff ethertype=0x0800 udp 10.0.0.1:40000 > 10.0.0.2:5000 payload=\"hi there\""
        );
        assert!(describe(&frame(&[0, 1, 2])).ends_with("payload=3 bytes"));
        assert_eq!(describe(&[0; 10]), "len=10 runt");
        let mut arp = frame(b"x");
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(
            describe(&arp).ends_with("ethertype=0x0806"),
            "{}",
            describe(&arp)
        );
    }

    #[test]
    fn truncated_udp_is_not_read_past_the_frame() {
        let mut f = frame(b"abcdef");
        f.truncate(14 + 20 + 8 + 2);
        let p = parse(&f).unwrap();
        assert_eq!(p.udp.unwrap().2, b"ab");
        f.truncate(14 + 20 + 4);
        assert_eq!(parse(&f).unwrap().udp, None);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            "0a:b:0c:0d:0e:ff".parse::<Mac>().unwrap().to_string(),
            "0a:0b:0c:0d:0e:ff"
        );
        for bad in [
            "",
            "0a:0b:0c:0d:0e",
            "0a:0b:0c:0d:0e:0f:10",
            "0a:0b:0c:0d:0e:zz",
            "0a:0b:0c:0d:0e:100",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
