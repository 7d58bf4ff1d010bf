//! The `hostRouting` block. Its value type lives with the programs it configures
//! ([`crate::hostrouting`], a layer below), so they need not import the config layer.

use std::path::PathBuf;

use serde_json::Value;

use super::{object, one_of, plain_absolute_path, string, ConfigError};
use crate::bpf::pins::DEFAULT_BPFFS;
use crate::ip::IpCidr;
use crate::text::render_value;

pub use crate::hostrouting::HostRoutingConfig;

const HOST_ROUTING_KEYS: &[&str] = &["mode", "uplink", "bypass", "bpffs"];
/// Bypass prefixes per network: the LPM trie holds at most this many (bpf/host_routing.h).
pub const MAX_BYPASS_PREFIXES: usize = 256;

/// `hostRouting`: `{"mode": "bpf", "uplink": "ens1f0", "bypass": ["10.0.0.0/8"]}`. `mode` is
/// `kernel` (the default: the block changes nothing, `None`) or `bpf`.
pub(super) fn host_routing(v: &Value) -> Result<Option<HostRoutingConfig>, ConfigError> {
    let obj = object(v, "hostRouting")?;
    if let Some((k, val)) = obj
        .iter()
        .find(|(k, _)| !HOST_ROUTING_KEYS.contains(&k.as_str()))
    {
        return Err(ConfigError::UnsupportedField {
            key: format!("hostRouting.{k}"),
            value: render_value(val),
        });
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let bpf = match get("mode") {
        None => false,
        Some(m) => one_of(m, "hostRouting.mode", &[("kernel", false), ("bpf", true)])?,
    };
    if !bpf {
        // Keys that only mean something to the BPF mode are refused rather than ignored: an
        // admin who wrote an uplink expects it to be used.
        if let Some(k) = ["uplink", "bypass", "bpffs"]
            .into_iter()
            .find(|k| get(k).is_some())
        {
            return Err(ConfigError::invalid(
                format!("hostRouting.{k}"),
                get(k).expect("found"),
                "only meaningful with hostRouting.mode \"bpf\"",
            ));
        }
        return Ok(None);
    }
    let uplink = match get("uplink") {
        None => {
            return Err(ConfigError::missing(
                "hostRouting.uplink",
                "BPF host routing needs the physical NIC (by name in the node's network namespace) that carries the pods' traffic",
            ))
        }
        Some(u) => {
            let s = string(u, "hostRouting.uplink")?;
            if let Err(e) = crate::kernel::link::validate_ifname(s) {
                return Err(ConfigError::invalid("hostRouting.uplink", u, e.to_string()));
            }
            s.to_owned()
        }
    };
    let bypass = match get("bypass") {
        None => Vec::new(),
        Some(b) => {
            let Some(items) = b.as_array() else {
                return Err(ConfigError::invalid(
                    "hostRouting.bypass",
                    b,
                    "expected a list of CIDRs like \"10.0.0.0/8\"",
                ));
            };
            if items.len() > MAX_BYPASS_PREFIXES {
                return Err(ConfigError::invalid(
                    "hostRouting.bypass",
                    b,
                    format!("at most {MAX_BYPASS_PREFIXES} prefixes"),
                ));
            }
            let mut out: Vec<IpCidr> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let field = format!("hostRouting.bypass[{i}]");
                let s = string(item, &field)?;
                let c: IpCidr = s.parse().map_err(|why| {
                    ConfigError::invalid(
                        &field,
                        item,
                        format!("{why}; expected a CIDR like \"10.0.0.0/8\" or \"fd00::/64\""),
                    )
                })?;
                if !c.is_network() {
                    return Err(ConfigError::invalid(
                        &field,
                        item,
                        format!("host bits set; the prefix is {}", c.network()),
                    ));
                }
                if out.contains(&c) {
                    return Err(ConfigError::invalid(&field, item, "listed twice"));
                }
                out.push(c);
            }
            out
        }
    };
    let bpffs = match get("bpffs") {
        None => PathBuf::from(DEFAULT_BPFFS),
        Some(b) => plain_absolute_path(b, "hostRouting.bpffs")?,
    };
    Ok(Some(HostRoutingConfig {
        uplink,
        bypass,
        bpffs,
    }))
}
