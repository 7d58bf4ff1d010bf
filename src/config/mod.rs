//! The plugin's network configuration (stdin), typed and validated: the config layer.
//!
//! It sits above the kernel, BPF, XDP and host-routing modules (it names their values: netkit
//! modes, XDP modes, pin owners) and above the CNI protocol (it reads `cniVersion` and
//! `prevResult` with it), and below `plugin`, which acts on it. One file per block: `lease`
//! (with steering), `xdp`, `host_routing`, and `args` (the pod's CNI_ARGS and runtimeConfig
//! keys).
//!
//! Every accepted top-level key is listed once in [`KEYS`] with the function that reads it, so
//! adding a key (e.g. `lease`, `xdp`) is one line there plus its field. Anything else is rejected
//! with code 2, as the spec allows, so typos like `"mtus"` fail loudly instead of being ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::cni::env::{matches_spec_identifier, NAME_MAX};
use crate::cni::request::NetworkConfig;
use crate::cni::result::FieldError;
use crate::cni::version::version_of_config;
use crate::cni::{codes, CniError, CniResult, CniVersion, Dns};
use crate::logging::LogLevel;
use crate::text::{clip, render_str, render_value};

mod args;
mod host_routing;
mod lease;
mod xdp;

pub use args::{ARG_QUEUES, ARG_QUEUE_IDS, KNOWN_ARGS, RC_QUEUES, RC_QUEUE_IDS};
use host_routing::host_routing;
pub use host_routing::{HostRoutingConfig, MAX_BYPASS_PREFIXES};
use lease::lease;
pub use lease::{
    LeaseConfig, LeaseConsumer, LeaseQueues, QueueSet, RssPolicy, SteerMatch, Steering,
    DEFAULT_DEVICE_INFO_DIR, DEFAULT_RULE_BASE, MAX_LEASES_PER_DEVICE, MAX_QUEUE_ID,
    MAX_QUEUE_LIST_LEN, MAX_RULE_BASE, RULES_PER_QUEUE,
};
use xdp::xdp;
pub use xdp::XdpConfig;

/// The `type` this plugin is installed as.
pub const PLUGIN_TYPE: &str = "netkit-cni";

// netkit's mode, default policy and scrubbing are the kernel's own enums (`enum netkit_mode`,
// `netkit_action`, `netkit_scrub`): the config names their values, it does not restate them.
pub use crate::kernel::link::{NetkitMode as Mode, NetkitPolicy as Policy, NetkitScrub as Scrub};

/// Whether the host side gets a netkit pair (needs addresses, hence IPAM) or a single device.
/// A config choice, not the kernel's `enum netkit_pairing`: it decides IPAM and the host side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pairing {
    #[default]
    Pair,
    Single,
}

/// The `ipam` block. Only `type` is ours to check; the rest belongs to the IPAM plugin, which
/// reads it from the full config on its own stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    pub plugin_type: String,
    pub raw: Map<String, Value>,
}

/// One entry of GC's still-valid attachment list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub args: Option<Map<String, Value>>,
    pub ip_masq: bool,
    pub ipam: Option<IpamConfig>,
    pub dns: Option<Dns>,
    pub runtime_config: Option<Map<String, Value>>,
    pub prev_result: Option<CniResult>,
    pub capabilities: Option<BTreeMap<String, bool>>,
    /// GC only. libcni sends the list under both `cni.dev/valid-attachments` (the spec's name)
    /// and `cni.dev/attachments` (an earlier draft's); the spec's name wins if both are present.
    pub valid_attachments: Option<Vec<Attachment>>,

    pub mode: Mode,
    pub pairing: Pairing,
    pub mtu: Option<u32>,
    pub headroom: Option<u16>,
    pub tailroom: Option<u16>,
    pub policy: Policy,
    pub peer_policy: Policy,
    pub scrub: Scrub,
    pub peer_scrub: Scrub,
    pub log_file: Option<PathBuf>,
    pub log_level: LogLevel,
    /// NIC RX queues leased into the pod's netkit device; required for `pairing: single`.
    pub lease: Option<LeaseConfig>,
    /// Steer the leased queues to the pod's AF_XDP sockets with the per-queue dispatcher on the
    /// master; needs `lease` and `pairing: single`.
    pub xdp: Option<XdpConfig>,
    /// BPF host routing between the pod's pair and an uplink NIC (`hostRouting`); `None` (or
    /// `mode: kernel`) keeps the kernel's routing and forwarding, the default.
    pub host_routing: Option<HostRoutingConfig>,

    /// The config exactly as decoded; delegated plugins must get the complete config.
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to decode network config: {0}")]
    Decode(String),
    #[error("network config must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("unsupported field {} (value {value}) in network config", render_str(.key))]
    UnsupportedField { key: String, value: String },
    #[error("{}: {reason}", field_message(.field, .value.as_deref()))]
    InvalidField {
        field: String,
        value: Option<String>,
        reason: String,
    },
    /// From version negotiation (code 1 or 7) or prevResult decoding (code 6): already a CNI
    /// error with the right code.
    #[error("{0}")]
    Cni(CniError),
}

fn field_message(field: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("invalid value {v} for field {field}"),
        None => format!("field {field} is missing"),
    }
}

impl ConfigError {
    pub fn code(&self) -> u32 {
        match self {
            ConfigError::Decode(_) | ConfigError::NotAnObject(_) => codes::DECODE_FAILURE,
            ConfigError::UnsupportedField { .. } => codes::UNSUPPORTED_FIELD,
            ConfigError::InvalidField { .. } => codes::INVALID_CONFIG,
            ConfigError::Cni(e) => e.code,
        }
    }

    fn invalid(field: impl Into<String>, value: &Value, reason: impl Into<String>) -> Self {
        ConfigError::InvalidField {
            field: field.into(),
            value: Some(render_value(value)),
            reason: reason.into(),
        }
    }

    fn missing(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::InvalidField {
            field: field.into(),
            value: None,
            reason: reason.into(),
        }
    }
}

impl From<FieldError> for ConfigError {
    fn from(e: FieldError) -> Self {
        ConfigError::InvalidField {
            field: e.field,
            value: e.value,
            reason: e.why,
        }
    }
}

impl From<ConfigError> for CniError {
    fn from(e: ConfigError) -> Self {
        let code = e.code();
        match e {
            ConfigError::Cni(e) => e,
            ConfigError::InvalidField {
                field,
                value,
                reason,
            } => CniError::new(code, field_message(&field, value.as_deref()), reason),
            ConfigError::Decode(reason) => {
                CniError::new(code, "failed to decode network config", reason)
            }
            other => CniError::new(code, other.to_string(), ""),
        }
    }
}

type Apply = fn(&mut NetConf, &Value) -> Result<(), ConfigError>;

/// Every top-level key this plugin accepts, with its reader. Null values are treated as absent
/// and never reach a reader.
// Kept one entry per line (rustfmt would split them) so the table reads as the list of keys.
#[rustfmt::skip]
const KEYS: &[(&str, Apply)] = &[
    // Read before all others (it decides how prevResult is parsed); listed so it is accepted.
    ("cniVersion", |_, _| Ok(())),
    ("cniVersions", |_, v| str_list(v, "cniVersions").map(drop)),
    ("name", |c, v| put(&mut c.name, network_name(v))),
    ("type", |_, v| plugin_type(v)),
    ("disableCheck", |c, v| put(&mut c.disable_check, libcni_bool(v, "disableCheck"))),
    ("disableGC", |c, v| put(&mut c.disable_gc, libcni_bool(v, "disableGC"))),
    ("args", |c, v| put(&mut c.args, object(v, "args").cloned().map(Some))),
    ("ipMasq", |c, v| put(&mut c.ip_masq, boolean(v, "ipMasq"))),
    ("ipam", |c, v| put(&mut c.ipam, ipam(v).map(Some))),
    ("dns", |c, v| put(&mut c.dns, dns(v).map(Some))),
    ("runtimeConfig", |c, v| put(&mut c.runtime_config, object(v, "runtimeConfig").cloned().map(Some))),
    ("prevResult", |c, v| put(&mut c.prev_result, prev_result(v, c.cni_version).map(Some))),
    ("capabilities", |c, v| put(&mut c.capabilities, capabilities(v).map(Some))),
    (VALID_ATTACHMENTS, |c, v| put(&mut c.valid_attachments, attachments(v, VALID_ATTACHMENTS).map(Some))),
    // Applied before VALID_ATTACHMENTS (see NetConf::from_value), which then overrides it.
    (ATTACHMENTS_OLD, |c, v| put(&mut c.valid_attachments, attachments(v, ATTACHMENTS_OLD).map(Some))),
    ("mode", |c, v| put(&mut c.mode, one_of(v, "mode", MODES))),
    ("pairing", |c, v| put(&mut c.pairing, one_of(v, "pairing", PAIRINGS))),
    ("mtu", |c, v| put(&mut c.mtu, uint_in(v, "mtu", 68, 65535).map(|n| Some(n as u32)))),
    ("headroom", |c, v| put(&mut c.headroom, uint_in(v, "headroom", 0, 65535).map(|n| Some(n as u16)))),
    ("tailroom", |c, v| put(&mut c.tailroom, uint_in(v, "tailroom", 0, 65535).map(|n| Some(n as u16)))),
    ("policy", |c, v| put(&mut c.policy, one_of(v, "policy", POLICIES))),
    ("peerPolicy", |c, v| put(&mut c.peer_policy, one_of(v, "peerPolicy", POLICIES))),
    ("scrub", |c, v| put(&mut c.scrub, one_of(v, "scrub", SCRUBS))),
    ("peerScrub", |c, v| put(&mut c.peer_scrub, one_of(v, "peerScrub", SCRUBS))),
    ("logFile", |c, v| put(&mut c.log_file, log_file(v).map(Some))),
    ("logLevel", |c, v| put(&mut c.log_level, one_of(v, "logLevel", LOG_LEVELS))),
    ("lease", |c, v| put(&mut c.lease, lease(v).map(Some))),
    ("xdp", |c, v| put(&mut c.xdp, xdp(v).map(Some))),
    ("hostRouting", |c, v| put(&mut c.host_routing, host_routing(v))),
];

const MODES: &[(&str, Mode)] = &[("l3", Mode::L3), ("l2", Mode::L2)];
const PAIRINGS: &[(&str, Pairing)] = &[("pair", Pairing::Pair), ("single", Pairing::Single)];
const POLICIES: &[(&str, Policy)] = &[
    ("forward", Policy::Forward),
    ("blackhole", Policy::Blackhole),
];
const SCRUBS: &[(&str, Scrub)] = &[("default", Scrub::Default), ("none", Scrub::None)];
const LOG_LEVELS: &[(&str, LogLevel)] = &[
    ("error", LogLevel::Error),
    ("warn", LogLevel::Warn),
    ("info", LogLevel::Info),
    ("debug", LogLevel::Debug),
];

fn put<T>(slot: &mut T, value: Result<T, ConfigError>) -> Result<(), ConfigError> {
    *slot = value?;
    Ok(())
}

const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
const ATTACHMENTS_OLD: &str = "cni.dev/attachments";

impl NetConf {
    /// What the leased queues are for: `lease.consumer` as declared, else AF_XDP when the
    /// network steers them with the dispatcher (`xdp`), else not declared.
    pub fn lease_consumer(&self) -> Option<LeaseConsumer> {
        let declared = self.lease.as_ref().and_then(|l| l.consumer);
        declared.or(self.xdp.as_ref().map(|_| LeaseConsumer::AfXdp))
    }

    /// Parses the config from stdin bytes: malformed JSON is code 6, an unsupported `cniVersion`
    /// code 1, an unknown key code 2, a bad value code 7 (see [`ConfigError::code`]).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, ConfigError> {
        let value: Value =
            serde_json::from_slice(stdin).map_err(|e| ConfigError::Decode(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<NetConf, ConfigError> {
        let Some(obj) = value.as_object() else {
            return Err(ConfigError::NotAnObject(render_value(&value)));
        };
        let cni_version = version_of_config(&value).map_err(ConfigError::Cni)?;
        let mut conf = NetConf {
            cni_version,
            name: String::new(),
            disable_check: false,
            disable_gc: false,
            args: None,
            ip_masq: false,
            ipam: None,
            dns: None,
            runtime_config: None,
            prev_result: None,
            capabilities: None,
            valid_attachments: None,
            mode: Mode::default(),
            pairing: Pairing::default(),
            mtu: None,
            headroom: None,
            tailroom: None,
            policy: Policy::default(),
            peer_policy: Policy::default(),
            scrub: Scrub::default(),
            peer_scrub: Scrub::default(),
            log_file: None,
            log_level: LogLevel::DEFAULT,
            lease: None,
            xdp: None,
            host_routing: None,
            raw: Value::Null,
        };
        // The spec's name is applied after the draft name whatever the key order, so it wins.
        let mut deferred = None;
        for (key, v) in obj {
            let Some((_, apply)) = KEYS.iter().find(|(k, _)| k == key) else {
                return Err(ConfigError::UnsupportedField {
                    key: key.clone(),
                    value: render_value(v),
                });
            };
            if v.is_null() {
                continue;
            }
            if key == VALID_ATTACHMENTS {
                deferred = Some((apply, v));
                continue;
            }
            apply(&mut conf, v)?;
        }
        if let Some((apply, v)) = deferred {
            apply(&mut conf, v)?;
        }

        if conf.name.is_empty() {
            return Err(ConfigError::missing("name", "the network name is required"));
        }
        if matches!(obj.get("type"), None | Some(Value::Null)) {
            return Err(ConfigError::missing(
                "type",
                format!("must be {PLUGIN_TYPE:?}"),
            ));
        }
        if conf.pairing == Pairing::Pair && conf.ipam.is_none() {
            return Err(ConfigError::missing(
                "ipam",
                "pairing \"pair\" needs an ipam block to address the pair; use pairing \"single\" to go without",
            ));
        }
        if conf.pairing == Pairing::Single && conf.lease.is_none() {
            return Err(ConfigError::missing(
                "lease",
                "pairing \"single\" creates a lease-only device: name the NIC to lease from in a lease block",
            ));
        }
        if let Some(x) = obj.get("xdp").filter(|v| !v.is_null()) {
            if conf.lease.is_none() {
                return Err(ConfigError::invalid(
                    "xdp",
                    x,
                    "the dispatcher steers leased queues: it needs a lease block naming the NIC",
                ));
            }
            // The kernel proxies AF_XDP pools through leases only on netkit single devices
            // (netkit.c refuses XSK pools on a pair), so a pair's queue steered to a pod would
            // drop every frame: no socket can ever bind there.
            if conf.pairing != Pairing::Single {
                return Err(ConfigError::invalid(
                    "xdp",
                    x,
                    "AF_XDP through a leased queue needs pairing \"single\" (the kernel binds AF_XDP pools only to netkit single devices)",
                ));
            }
        }
        if conf
            .lease
            .as_ref()
            .is_some_and(|l| l.consumer == Some(LeaseConsumer::MemoryProvider))
        {
            let field = || obj["lease"]["consumer"].clone();
            // A trap by construction: the dispatcher is an XDP program on the master, and the
            // kernel refuses a memory provider on a NIC with any XDP program
            // (__netif_mp_open_rxq, net/core/netdev_rx_queue.c), and XDP on a NIC with one bound
            // (dev_xdp_attach, net/core/dev.c).
            if obj.get("xdp").is_some_and(|v| !v.is_null()) {
                return Err(ConfigError::invalid(
                    "lease.consumer",
                    &field(),
                    "a memory provider cannot be bound to a queue of a NIC carrying an XDP program (the kernel refuses it), and the xdp block attaches one: drop one of the two",
                ));
            }
            // The flow reaches the pod's socket through the pair's peer (bpf_redirect_peer, as
            // in tools/testing/selftests/drivers/net/hw/nk_qlease.py); a single device has no
            // pod-side stack the physical queue's packets could reach.
            if conf.pairing != Pairing::Pair {
                return Err(ConfigError::invalid(
                    "lease.consumer",
                    &field(),
                    "a memory provider's flows reach the pod's socket through the peer of a pair: it needs pairing \"pair\"",
                ));
            }
        }
        if let Some(h) = obj.get("hostRouting").filter(|v| !v.is_null()) {
            // The programs move packets between the NIC and the host side of a pair; a single
            // device has no host side (and no peer to bpf_redirect_peer() into).
            if conf.host_routing.is_some() && conf.pairing != Pairing::Pair {
                return Err(ConfigError::invalid(
                    "hostRouting",
                    h,
                    "BPF host routing needs pairing \"pair\" (it redirects into the pair's pod side)",
                ));
            }
            // netkit consults peerPolicy only while no program is attached to the peer hook
            // (netkit_xmit(): the programs' verdict replaces nk->policy), so the egress
            // program would silently turn a blackholed pod's traffic back on.
            if conf.host_routing.is_some() && conf.peer_policy == Policy::Blackhole {
                return Err(ConfigError::invalid(
                    "hostRouting",
                    h,
                    "BPF host routing attaches a program to the pod's transmit, which overrides peerPolicy \"blackhole\"; drop one of them",
                ));
            }
        }
        conf.raw = value;
        Ok(conf)
    }

    /// The complete config as delegated plugins must receive it on stdin.
    pub fn raw_bytes(&self) -> Vec<u8> {
        // Serializing a Value that came from JSON cannot fail.
        serde_json::to_vec(&self.raw).expect("serializing a serde_json::Value")
    }
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected a string"))
}

fn boolean(v: &Value, field: &str) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected true or false"))
}

/// libcni itself accepts "true"/"false" strings for disableCheck/disableGC, so configs written
/// that way work with every runtime; rejecting them here would be the odd one out.
fn libcni_bool(v: &Value, field: &str) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ConfigError::invalid(field, v, "expected true or false")),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected a JSON object"))
}

fn str_list(v: &Value, field: &str) -> Result<Vec<String>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected a list of strings"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| string(item, &format!("{field}[{i}]")).map(str::to_owned))
        .collect()
}

fn one_of<T: Copy>(v: &Value, field: &str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    let expected = || {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        format!("expected one of {}", names.join(", "))
    };
    let s = v
        .as_str()
        .ok_or_else(|| ConfigError::invalid(field, v, expected()))?;
    choices
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| ConfigError::invalid(field, v, expected()))
}

fn uint_in(v: &Value, field: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    v.as_u64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ConfigError::invalid(field, v, format!("expected an integer in {min}..={max}"))
        })
}

/// The spec's pattern, and short enough to name a file: IPAM plugins and runtimes name
/// directories and cache files after the network (host-local's `dataDir/<name>`), so a longer
/// name would pass here only to fail with ENAMETOOLONG in the middle of an ADD.
fn network_name(v: &Value) -> Result<String, ConfigError> {
    let s = string(v, "name")?;
    if !matches_spec_identifier(s) {
        return Err(ConfigError::invalid(
            "name",
            v,
            r"must match ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$",
        ));
    }
    if s.len() > NAME_MAX {
        return Err(ConfigError::invalid(
            "name",
            v,
            format!("must be at most {NAME_MAX} bytes, is {}", s.len()),
        ));
    }
    Ok(s.to_owned())
}

fn plugin_type(v: &Value) -> Result<(), ConfigError> {
    match v.as_str() {
        Some(PLUGIN_TYPE) => Ok(()),
        _ => Err(ConfigError::invalid(
            "type",
            v,
            format!("this plugin is {PLUGIN_TYPE:?}"),
        )),
    }
}

/// Rejects IPAM types that would make the CNI_PATH lookup leave its directories. The IPAM
/// module checks again (it can be used without a NetConf); this catches it at config time.
pub(crate) fn ipam_type_problem(t: &str) -> Option<&'static str> {
    if t.is_empty() {
        Some("must not be empty")
    } else if t.contains('/') || t.contains("..") || t.contains('\0') {
        Some("must be a plain executable name (no '/', '..' or NUL)")
    } else {
        None
    }
}

fn ipam(v: &Value) -> Result<IpamConfig, ConfigError> {
    let obj = object(v, "ipam")?;
    let t = match obj.get("type") {
        None | Some(Value::Null) => {
            return Err(ConfigError::missing(
                "ipam.type",
                "the IPAM plugin to delegate to",
            ))
        }
        Some(t) => t,
    };
    let s = string(t, "ipam.type")?;
    if let Some(why) = ipam_type_problem(s) {
        return Err(ConfigError::invalid("ipam.type", t, why));
    }
    Ok(IpamConfig {
        plugin_type: s.to_owned(),
        raw: obj.clone(),
    })
}

fn dns(v: &Value) -> Result<Dns, ConfigError> {
    let dns = Dns::parse(v, "dns")?;
    // Unlike results (passed through), this is the admin's own input: catch typos here.
    for (i, ns) in dns.nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            return Err(ConfigError::invalid(
                format!("dns.nameservers[{i}]"),
                &Value::String(ns.clone()),
                "expected an IPv4 or IPv6 address",
            ));
        }
    }
    Ok(dns)
}

fn prev_result(v: &Value, version: CniVersion) -> Result<CniResult, ConfigError> {
    CniResult::from_json_at(v, version, "prevResult").map_err(ConfigError::Cni)
}

fn capabilities(v: &Value) -> Result<BTreeMap<String, bool>, ConfigError> {
    object(v, "capabilities")?
        .iter()
        // The key is the runtime's choice, so it is clipped like any echoed input.
        .map(|(k, b)| Ok((k.clone(), boolean(b, &format!("capabilities.{}", clip(k)))?)))
        .collect()
}

fn attachments(v: &Value, field: &str) -> Result<Vec<Attachment>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{field}[{i}]");
            let o = object(item, &path)?;
            let get = |key: &str| {
                let f = format!("{path}.{key}");
                match o.get(key) {
                    None | Some(Value::Null) => Err(ConfigError::missing(f, "required field")),
                    Some(s) => string(s, &f).map(str::to_owned),
                }
            };
            Ok(Attachment {
                container_id: get("containerID")?,
                ifname: get("ifname")?,
            })
        })
        .collect()
}

fn log_file(v: &Value) -> Result<PathBuf, ConfigError> {
    plain_absolute_path(v, "logFile")
}

/// A path the plugin writes under as root (`logFile`, `lease.deviceInfoDir`, `xdp.bpffs`): only
/// a plain absolute path — no `.` or `..` component, no NUL — so no input can point the writes
/// somewhere else through `..`.
fn plain_absolute_path(v: &Value, field: &str) -> Result<PathBuf, ConfigError> {
    let s = string(v, field)?;
    let p = std::path::Path::new(s);
    let plain = p.is_absolute()
        && p.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)))
        // Path::components() drops a "." in the middle; the text must not have one either.
        && !s.split('/').any(|c| c == "." || c == "..");
    if !plain || s.contains('\0') {
        return Err(ConfigError::invalid(
            field,
            v,
            "must be an absolute path without \".\" or \"..\"",
        ));
    }
    Ok(PathBuf::from(s))
}

/// The parse layer ([`crate::cni::request::parse_request`]) reads the config through this, so
/// the protocol layer does not import the layer above it.
impl NetworkConfig for NetConf {
    const KNOWN_ARGS: &'static [&'static str] = KNOWN_ARGS;

    fn parse_value(value: Value) -> Result<Self, CniError> {
        Ok(NetConf::from_value(value)?)
    }

    fn has_prev_result(&self) -> bool {
        self.prev_result.is_some()
    }
}

#[cfg(test)]
mod tests;
