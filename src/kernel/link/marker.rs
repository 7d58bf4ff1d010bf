//! The ownership marker stored in `IFLA_IFALIAS` of host-side devices, and the deterministic
//! host-side interface name.
//!
//! Together they make DEL and GC stateless: DEL recomputes the host name from
//! (container id, ifname) and deletes by name; GC dumps netkit links and parses the marker of
//! each to learn which attachment it belongs to.

use std::fmt;

use super::LinkError;

/// Prefix of every alias this plugin writes. An alias without it belongs to someone else.
const MARKER_PREFIX: &str = "netkit-cni/";

/// `IFNAMSIZ - 1`: the kernel's limit for interface names, excluding the NUL.
pub const IFNAME_MAX: usize = 15;

/// Longest alias the kernel takes from `IFLA_IFALIAS`: `netif_set_alias` rejects
/// `len >= IFALIASZ (256)` and the attribute is sent NUL-terminated, leaving 254 characters.
pub const ALIAS_MAX: usize = 254;

/// Prefix of derived host-side names; `nk` + 13 hex digits = 15 bytes = [`IFNAME_MAX`].
const HOST_NAME_PREFIX: &str = "nk";
const HOST_NAME_HEX_DIGITS: usize = IFNAME_MAX - HOST_NAME_PREFIX.len();

/// Checks `name` the way the kernel's `dev_valid_name` does, so bad names fail before a
/// netlink round trip with a precise message instead of a bare EINVAL.
pub fn validate_ifname(name: &str) -> Result<(), LinkError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > IFNAME_MAX {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is a path component")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || crate::text::kernel_isspace(b))
    {
        Some("contains '/', ':' or whitespace")
    } else if name.chars().any(crate::logging::is_unsafe_char) {
        // The kernel takes them (`dev_valid_name` refuses only '/', ':' and isspace()), but a
        // name is printed by inspect, `ip` and logs: no control or bidi/format character (an
        // escape sequence, U+202E) may ride along in a marker.
        Some("contains a control or format character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LinkError::InvalidArgument {
            what: "interface name",
            value: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a CNI container id against the spec's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. This also
/// guarantees the id contains no '/', which the marker format relies on.
pub fn validate_container_id(id: &str) -> Result<(), LinkError> {
    let mut bytes = id.bytes();
    let ok = match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() => {
            bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(LinkError::InvalidArgument {
            what: "container id",
            value: id.to_string(),
            reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        })
    }
}

/// Identifies the CNI attachment (network name, container id, interface name inside the pod)
/// that owns a device. Rendered as `netkit-cni/<network>/<containerid>/<ifname>`.
///
/// The network name is part of it because GC is per network: the runtime's list of valid
/// attachments for network A says nothing about network B's devices on the same node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Marker {
    network: String,
    container_id: String,
    ifname: String,
}

impl Marker {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Result<Marker, LinkError> {
        // The spec gives network names the same alphabet as container ids; neither has '/'.
        validate_container_id(network).map_err(|_| LinkError::InvalidArgument {
            what: "network name",
            value: network.to_string(),
            reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        })?;
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        let marker = Marker {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        let len = marker.to_string().len();
        if len > ALIAS_MAX {
            return Err(LinkError::InvalidArgument {
                what: "container id",
                value: container_id.to_string(),
                reason: "too long: the marker would exceed the kernel's 254-byte alias limit",
            });
        }
        Ok(marker)
    }

    /// Parses an interface alias. `None` means the alias is not a well-formed marker of ours;
    /// GC must leave such devices alone.
    pub fn parse(alias: &str) -> Option<Marker> {
        let rest = alias.strip_prefix(MARKER_PREFIX)?;
        // No part may contain '/', so there are exactly two separators.
        let (network, rest) = rest.split_once('/')?;
        let (container_id, ifname) = rest.split_once('/')?;
        Marker::new(network, container_id, ifname).ok()
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The host-side device name for this attachment: `nk` followed by the top 52 bits of a
    /// 64-bit hash of (container id, ifname), as 13 lowercase hex digits — exactly 15 bytes.
    /// The network name is left out on purpose: one pod cannot hold two interfaces with the
    /// same name, so (container id, ifname) is already unique on a node.
    ///
    /// Stability: DEL after an upgrade must find devices an older version created, so this
    /// function's output for a given input must never change (a test pins known values).
    ///
    /// Collisions: with 52 bits, the chance that any two of n attachments on one host collide
    /// is about n²/2⁵³ — ~3e-11 for 500 pods, ~1e-8 for 10 000. Container ids are chosen by the
    /// runtime, but even an adversary choosing them only gets a collision, not a takeover: the
    /// create then fails with EEXIST, and the existing device's marker (not its name) says
    /// whose it is, so DEL/GC never act on a device whose marker differs.
    ///
    /// The kernel's own default netkit names are `nk%d`; ours never collide with them in
    /// practice (13 digits, with leading zeros allowed, vs. a decimal counter).
    pub fn host_ifname(&self) -> String {
        let hash = stable_hash64(&[self.container_id.as_bytes(), self.ifname.as_bytes()]);
        let hex = format!("{hash:016x}");
        format!("{HOST_NAME_PREFIX}{}", &hex[..HOST_NAME_HEX_DIGITS])
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MARKER_PREFIX}{}/{}/{}",
            self.network, self.container_id, self.ifname
        )
    }
}

/// FNV-1a over the parts, each followed by a 0 byte (which neither a container id nor an
/// ifname can contain, so ("ab","c") and ("a","bc") differ), then the murmur3 64-bit finalizer
/// so every output bit depends on every input bit before the result is truncated.
///
/// Hand-written on purpose: `std`'s `DefaultHasher` is explicitly not stable across Rust
/// releases, and the name must be.
fn stable_hash64(parts: &[&[u8]]) -> u64 {
    let mut joined = Vec::new();
    for part in parts {
        joined.extend_from_slice(part);
        joined.push(0);
    }
    fmix64(fnv1a64(&joined))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "3f2a9c1e7b4d4f0a9e8d7c6b5a493827161514131211100f0e0d0c0b0a090807";

    #[test]
    fn marker_round_trips() {
        let m = Marker::new("net", CID, "eth0").unwrap();
        let alias = m.to_string();
        assert_eq!(alias, format!("netkit-cni/net/{CID}/eth0"));
        assert_eq!(Marker::parse(&alias), Some(m));
    }

    #[test]
    fn marker_parse_rejects_foreign_and_malformed_aliases() {
        for alias in [
            "",
            "netkit-cni/",
            "netkit-cni/net/abc",            // no ifname
            "netkit-cni/net/abc/",           // empty ifname
            "netkit-cni/net//eth0",          // empty container id
            "netkit-cni/abc/eth0",           // no network name
            "netkit-cni/net/-abc/eth0",      // id must start alphanumeric
            "netkit-cni/-net/abc/eth0",      // network must start alphanumeric
            "netkit-cni/net/abc/eth0/extra", // '/' in ifname
            "netkit-cni/net/abc/eth 0",      // whitespace in ifname
            "netkit-cni/net/abc/e\u{1b}[2J", // an escape sequence
            "netkit-cni/net/abc/e\u{b}x",    // \v, and every other C0 byte
            "netkit-cni/net/abc/e\u{1}x",
            "netkit-cni/net/abc/e\u{7f}x",         // DEL
            "netkit-cni/net/abc/e\u{85}x",         // C1
            "netkit-cni/net/abc/e\u{202e}x",       // a bidi override
            "netkit-cni/net/abc/e\u{2066}x",       // a bidi isolate
            "netkit-cni/net/abc/sixteen-chars-xx", // ifname > 15 bytes
            "cilium/abc/eth0",
            "Netkit-cni/abc/eth0",
        ] {
            assert_eq!(Marker::parse(alias), None, "{alias:?}");
        }
        assert!(Marker::parse("netkit-cni/n.e_t-1/a.b_c-D/net1").is_some());
    }

    #[test]
    fn marker_respects_alias_limit() {
        let ifname = "fifteen-bytes-x";
        let fits = "a".repeat(ALIAS_MAX - MARKER_PREFIX.len() - "net/".len() - 1 - ifname.len());
        assert_eq!(
            Marker::new("net", &fits, ifname).unwrap().to_string().len(),
            ALIAS_MAX
        );
        let too_long = format!("{fits}a");
        assert!(matches!(
            Marker::new("net", &too_long, ifname),
            Err(LinkError::InvalidArgument {
                what: "container id",
                ..
            })
        ));
    }

    #[test]
    fn ifname_validation_matches_kernel_rules() {
        for ok in ["eth0", "net1", "a", "fifteen-bytes-x", "eth0.100", "nk-é"] {
            validate_ifname(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "",
            ".",
            "..",
            "sixteen-bytes-xx",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0b",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_ifname_is_short_deterministic_and_input_sensitive() {
        let a = Marker::new("net", CID, "eth0").unwrap();
        let name = a.host_ifname();
        assert_eq!(name.len(), IFNAME_MAX);
        validate_ifname(&name).unwrap();
        assert!(name.starts_with("nk"));
        assert!(name[2..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(name, Marker::new("net", CID, "eth0").unwrap().host_ifname());

        assert_ne!(name, Marker::new("net", CID, "eth1").unwrap().host_ifname());
        assert_ne!(
            name,
            Marker::new("net", &CID[1..], "eth0").unwrap().host_ifname()
        );
        // The separator keeps the split point significant.
        assert_ne!(
            Marker::new("net", "ab", "c").unwrap().host_ifname(),
            Marker::new("net", "a", "bc").unwrap().host_ifname()
        );
    }

    #[test]
    fn host_ifname_has_no_collisions_in_a_large_sample() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000u32 {
            let m = Marker::new("net", &format!("{i:064x}"), "eth0").unwrap();
            assert!(seen.insert(m.host_ifname()), "collision at {i}");
        }
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Pins the derivation (values computed by an independent implementation): if this fails,
    /// DEL would stop finding devices created by earlier versions. Do not update the expected
    /// values; fix the change instead.
    #[test]
    fn host_ifname_is_stable_across_versions() {
        assert_eq!(
            Marker::new("net", CID, "eth0").unwrap().host_ifname(),
            "nk96128c575a98c"
        );
        assert_eq!(
            Marker::new("net", "a", "eth0").unwrap().host_ifname(),
            "nk0d7ff874b1bc1"
        );
    }
}
