//! The plugin's network configuration (stdin), typed and validated.
//!
//! Every accepted top-level key is listed once in [`KEYS`] with the function that reads it, so
//! adding a key (e.g. `lease`, `xdp`) is one line there plus its field. Anything else is rejected
//! with code 2, as the spec allows, so typos like `"mtus"` fail loudly instead of being ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::cni::env::{matches_spec_identifier, NAME_MAX};
use crate::cni::error::{clip, render_str, render_value};
use crate::cni::result::FieldError;
use crate::cni::version::version_of_config;
use crate::cni::{codes, CniError, CniResult, CniVersion, Dns, IpCidr};
use crate::logging::LogLevel;
use crate::xdp::{
    DispatcherOptions, QueueRangeConfig, QueueRanges, XdpError, XdpMode, DEFAULT_BPFFS,
};

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

/// Where device-info files go unless the config says otherwise: the NPWG device-info spec's
/// directory for files written by CNI plugins (section 4.2; `devinfo/dp/` belongs to device
/// plugins).
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/cni";

/// Highest queue id a config may name. NICs have at most a few hundred RX queues; the bound
/// keeps a typo like `"0-4294967295"` from becoming a four-billion-entry set.
pub const MAX_QUEUE_ID: u32 = 65535;

/// Longest queue-list text accepted (`"1,3-5"`): far above any real pool, far below what would
/// cost time to read.
pub const MAX_QUEUE_LIST_LEN: usize = 4096;

/// Most leases one netkit device can hold: netkit allocates at most 1024 RX queues and queue 0
/// is the device's own.
pub const MAX_LEASES_PER_DEVICE: u32 = 1023;

/// A set of RX queue ids, written `"2-7"` or `"1,3-5"` (or as a JSON list of ids).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueSet(BTreeSet<u32>);

impl QueueSet {
    /// Parses `"2-7"`, `"1,3-5"`, `"4"`; spaces around items are allowed. `Err` says why.
    /// At most [`MAX_QUEUE_ID`]` + 1` ids in all (see [`QueueSet::parse_capped`]).
    pub fn parse(s: &str) -> Result<QueueSet, String> {
        Self::parse_capped(s, MAX_QUEUE_ID as usize + 1)
    }

    /// As [`QueueSet::parse`], refusing a text longer than [`MAX_QUEUE_LIST_LEN`] bytes and a
    /// list whose ranges add up to more than `cap` ids. Each range's size is computed with
    /// checked arithmetic and counted *before* it is expanded, so a hostile `"0-65535,0-65535,…"`
    /// costs no more than reading its text (overlapping ranges count twice).
    pub fn parse_capped(s: &str, cap: usize) -> Result<QueueSet, String> {
        if s.len() > MAX_QUEUE_LIST_LEN {
            return Err(format!(
                "{} bytes long; a queue list has at most {MAX_QUEUE_LIST_LEN}",
                s.len()
            ));
        }
        let mut set = BTreeSet::new();
        let mut total: usize = 0;
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                return Err("empty item (expected ids and ranges like \"1,3-5\")".into());
            }
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (queue_id(a.trim())?, queue_id(b.trim())?),
                None => {
                    let id = queue_id(item)?;
                    (id, id)
                }
            };
            if lo > hi {
                return Err(format!(
                    "range {:?} is reversed",
                    crate::logging::clip(item, 32)
                ));
            }
            total = (hi - lo)
                .checked_add(1)
                .and_then(|n| total.checked_add(n as usize))
                .filter(|t| *t <= cap)
                .ok_or_else(|| format!("names more than {cap} queues"))?;
            set.extend(lo..=hi);
        }
        Ok(QueueSet(set))
    }

    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> QueueSet {
        QueueSet(ids.into_iter().collect())
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// The ids below `limit` (a NIC's queue count).
    pub fn below(&self, limit: u32) -> QueueSet {
        QueueSet(self.0.range(..limit).copied().collect())
    }
}

/// Renders as compact ranges (`1,3-5`), the way operators write pools.
impl fmt::Display for QueueSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(lo) = ids.next() {
            let mut hi = lo;
            while ids.peek() == Some(&(hi + 1)) {
                hi = ids.next().unwrap();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

fn queue_id(s: &str) -> Result<u32, String> {
    // Only plain decimal digits: "+3" or " 3" parse as u32 but are not what anyone meant.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{:?} is not a queue id",
            crate::logging::clip(s, 32)
        ));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_QUEUE_ID => Ok(n),
        _ => Err(format!(
            "queue id {} is above {MAX_QUEUE_ID}",
            crate::logging::clip(s, 32)
        )),
    }
}

/// How many queues a pod gets, or exactly which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseQueues {
    /// Any `n` free queues of the pool.
    Count(u32),
    /// These physical queue ids, in this order.
    Ids(Vec<u32>),
}

/// CNI_ARGS key: how many queues the pod asks for.
pub const ARG_QUEUES: &str = "NETKIT_LEASE_QUEUES";
/// CNI_ARGS key: exactly which physical queues the pod asks for (`"3"`, `"3,5"`, `"3-5"`).
pub const ARG_QUEUE_IDS: &str = "NETKIT_LEASE_QUEUE_IDS";
/// runtimeConfig key: as [`ARG_QUEUES`] (a number).
pub const RC_QUEUES: &str = "netkitLeaseQueues";
/// runtimeConfig key: as [`ARG_QUEUE_IDS`] (a list of numbers).
pub const RC_QUEUE_IDS: &str = "netkitLeaseQueueIds";

/// The `lease` block: which NIC's RX queues are leased into pods, from which pool, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The physical NIC, by name in the node's (the plugin's) network namespace.
    pub master: String,
    /// What a pod gets when it asks for nothing itself (`queues`, default 1, or `queueIds`).
    pub queues: LeaseQueues,
    /// The admin's pool (`allowedQueues`). `None`: every RX queue of the master but queue 0,
    /// which stays with the host (it usually carries the node's own traffic).
    pub allowed_queues: Option<QueueSet>,
    /// Most queues one pod may ask for (`maxQueuesPerPod`).
    pub max_queues_per_pod: Option<u32>,
    /// Where the device-info file of each attachment is written (`deviceInfoDir`).
    pub device_info_dir: PathBuf,
    /// What the pod binds to its leased queues (`consumer`). `None`: not declared (AF_XDP when
    /// the network has an `xdp` block, see [`NetConf::lease_consumer`]).
    pub consumer: Option<LeaseConsumer>,
    /// The bpf file system whose NIC directory a memory-provider ADD locks (`bpffs`, default
    /// `/sys/fs/bpf`): the directory, and so the lock, the XDP dispatcher of a network with the
    /// same `xdp.bpffs` takes.
    pub bpffs: PathBuf,
    /// How the NIC is made to deliver the pod's frames, and only them, to its leased queues
    /// (`steering`; absent: [`Steering::default`], RSS checked but never written, no rules).
    pub steering: Steering,
}

/// `lease.steering`: RSS over the pool and the pod's ntuple rule. See docs/steering.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steering {
    pub rss: RssPolicy,
    pub match_on: SteerMatch,
    /// First ntuple rule location the plugin owns on the NIC (`ruleBase`, default
    /// [`DEFAULT_RULE_BASE`]): a pod whose first leased queue is `q` gets locations
    /// `ruleBase + RULES_PER_QUEUE * q ..`, so a rule's location names its queue without state.
    pub rule_base: u32,
}

impl Default for Steering {
    fn default() -> Self {
        Steering {
            rss: RssPolicy::Admin,
            match_on: SteerMatch::None,
            rule_base: DEFAULT_RULE_BASE,
        }
    }
}

/// Default `steering.ruleBase`: the start of the rule table. The admin's own rules go above
/// the plugin's range (`ruleBase + RULES_PER_QUEUE * <NIC's RX queues>`) or below `ruleBase`.
pub const DEFAULT_RULE_BASE: u32 = 0;
/// Rule locations reserved per physical queue: one per pod address (`match: ip`) or one MAC.
pub const RULES_PER_QUEUE: u32 = 4;
/// Highest `steering.ruleBase`: keeps every location of a 1024-queue NIC inside a u32 and below
/// `RX_CLS_LOC_SPECIAL` (include/uapi/linux/ethtool.h).
pub const MAX_RULE_BASE: u32 = 1 << 24;

/// `steering.rss`: who keeps the pool out of the NIC's default RSS context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssPolicy {
    /// The admin (`ethtool -X`); ADD refuses a queue the default context still spreads onto.
    Admin,
    /// The plugin writes the default context's table over the queues outside the pool.
    ExcludePool,
}

impl RssPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RssPolicy::Admin => "admin",
            RssPolicy::ExcludePool => "exclude-pool",
        }
    }
}

/// `steering.match`: which frames the pod's rule sends to its leased queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerMatch {
    /// No rule: the admin steers.
    None,
    /// Destination MAC = the pod interface's MAC (runtimeConfig `mac`, else the device's own).
    Mac,
    /// Destination IP = each of the pod's IPAM addresses.
    Ip,
}

impl SteerMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            SteerMatch::None => "none",
            SteerMatch::Mac => "mac",
            SteerMatch::Ip => "ip",
        }
    }
}

const RSS_POLICIES: &[(&str, RssPolicy)] = &[
    ("admin", RssPolicy::Admin),
    ("exclude-pool", RssPolicy::ExcludePool),
];
const STEER_MATCHES: &[(&str, SteerMatch)] = &[
    ("none", SteerMatch::None),
    ("mac", SteerMatch::Mac),
    ("ip", SteerMatch::Ip),
];
const STEERING_KEYS: &[&str] = &["rss", "match", "ruleBase"];

/// The `lease.steering` block. An unknown key is an invalid value of the block (code 7), as the
/// block is ours end to end: a misspelt `rss` must not silently leave the pool in RSS.
fn steering(v: &Value) -> Result<Steering, ConfigError> {
    let obj = object(v, "lease.steering")?;
    if let Some((k, val)) = obj
        .iter()
        .find(|(k, _)| !STEERING_KEYS.contains(&k.as_str()))
    {
        return Err(ConfigError::invalid(
            format!("lease.steering.{k}"),
            val,
            format!("unknown key; expected one of {}", STEERING_KEYS.join(", ")),
        ));
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let mut s = Steering::default();
    if let Some(r) = get("rss") {
        s.rss = one_of(r, "lease.steering.rss", RSS_POLICIES)?;
    }
    if let Some(m) = get("match") {
        s.match_on = one_of(m, "lease.steering.match", STEER_MATCHES)?;
    }
    if let Some(b) = get("ruleBase") {
        s.rule_base = uint_in(b, "lease.steering.ruleBase", 0, u64::from(MAX_RULE_BASE))? as u32;
    }
    Ok(s)
}

/// `lease.consumer`: what the pod binds to its leased queues. The kernel makes the two exclusive
/// per NIC: a memory provider cannot be bound while the NIC carries any XDP program
/// (`__netif_mp_open_rxq`, net/core/netdev_rx_queue.c: "unable to custom memory provider to
/// device with XDP program attached", checked on the *physical* NIC, since
/// `netif_mp_open_rxq` follows the lease from the netkit queue to it first), and no XDP program
/// can be attached while one is bound (`dev_xdp_attach`, net/core/dev.c: "unable to install XDP
/// to device using memory provider"). See docs/memory-providers.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseConsumer {
    /// AF_XDP sockets, fed by the XDP dispatcher (`xdp` block) or by the admin's own program.
    AfXdp,
    /// A page-pool memory provider (io_uring zero-copy receive, devmem TCP) bound to the leased
    /// queue through the pod's netkit device.
    MemoryProvider,
}

impl LeaseConsumer {
    /// The config and device-info spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseConsumer::AfXdp => "af-xdp",
            LeaseConsumer::MemoryProvider => "memory-provider",
        }
    }

    /// The device-info spelling back (`None` for anything else).
    pub fn parse(s: &str) -> Option<LeaseConsumer> {
        LEASE_CONSUMERS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
    }
}

const LEASE_CONSUMERS: &[(&str, LeaseConsumer)] = &[
    ("af-xdp", LeaseConsumer::AfXdp),
    ("memory-provider", LeaseConsumer::MemoryProvider),
];

impl LeaseConfig {
    /// The pool as configured, for messages: the explicit set, or a description of the default.
    pub fn pool_description(&self) -> String {
        match &self.allowed_queues {
            Some(set) => format!("allowedQueues {set}"),
            None => "every RX queue but 0 (default pool)".into(),
        }
    }

    /// Whether `id` is in the admin's pool (the NIC's range is checked separately).
    pub fn allows(&self, id: u32) -> bool {
        match &self.allowed_queues {
            Some(set) => set.contains(id),
            None => id != 0,
        }
    }
}

const LEASE_KEYS: &[&str] = &[
    "master",
    "queues",
    "queueIds",
    "allowedQueues",
    "maxQueuesPerPod",
    "deviceInfoDir",
    "consumer",
    "bpffs",
    "steering",
];

fn lease(v: &Value) -> Result<LeaseConfig, ConfigError> {
    let obj = object(v, "lease")?;
    if let Some((k, val)) = obj.iter().find(|(k, _)| !LEASE_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::UnsupportedField {
            key: format!("lease.{k}"),
            value: render_value(val),
        });
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());

    let master =
        match get("master") {
            None => return Err(ConfigError::missing(
                "lease.master",
                "the physical NIC (by name in the node's network namespace) to lease queues from",
            )),
            Some(m) => {
                let s = string(m, "lease.master")?;
                if let Err(e) = crate::kernel::link::validate_ifname(s) {
                    return Err(ConfigError::invalid("lease.master", m, e.to_string()));
                }
                s.to_owned()
            }
        };

    let max_leases = u64::from(MAX_LEASES_PER_DEVICE);
    let queues = match (get("queues"), get("queueIds")) {
        (Some(_), Some(ids)) => {
            return Err(ConfigError::invalid(
                "lease.queueIds",
                ids,
                "give either lease.queues (a count) or lease.queueIds (exact ids), not both",
            ))
        }
        (Some(n), None) => LeaseQueues::Count(uint_in(n, "lease.queues", 1, max_leases)? as u32),
        (None, Some(ids)) => LeaseQueues::Ids(queue_id_list(ids, "lease.queueIds")?),
        (None, None) => LeaseQueues::Count(1),
    };

    let allowed_queues = match get("allowedQueues") {
        None => None,
        Some(a) => {
            let set = match a {
                Value::String(s) => QueueSet::parse(s)
                    .map_err(|why| ConfigError::invalid("lease.allowedQueues", a, why))?,
                Value::Array(_) => QueueSet::from_ids(queue_id_list(a, "lease.allowedQueues")?),
                _ => {
                    return Err(ConfigError::invalid(
                        "lease.allowedQueues",
                        a,
                        "expected a string like \"2-7\" or \"1,3-5\", or a list of queue ids",
                    ))
                }
            };
            Some(set)
        }
    };

    let max_queues_per_pod = get("maxQueuesPerPod")
        .map(|m| uint_in(m, "lease.maxQueuesPerPod", 1, max_leases).map(|n| n as u32))
        .transpose()?;

    let device_info_dir = match get("deviceInfoDir") {
        None => PathBuf::from(DEFAULT_DEVICE_INFO_DIR),
        Some(d) => plain_absolute_path(d, "lease.deviceInfoDir")?,
    };

    let consumer = get("consumer")
        .map(|c| one_of(c, "lease.consumer", LEASE_CONSUMERS))
        .transpose()?;

    let bpffs = match get("bpffs") {
        None => PathBuf::from(DEFAULT_BPFFS),
        Some(b) => plain_absolute_path(b, "lease.bpffs")?,
    };

    let steering = get("steering")
        .map(steering)
        .transpose()?
        .unwrap_or_default();

    let conf = LeaseConfig {
        master,
        queues,
        allowed_queues,
        max_queues_per_pod,
        device_info_dir,
        consumer,
        bpffs,
        steering,
    };
    lease_consistency(&conf, obj)?;
    Ok(conf)
}

/// The admin's own defaults must fit the admin's own pool and cap; a pod's request is checked
/// against the same rules at ADD time.
fn lease_consistency(c: &LeaseConfig, obj: &Map<String, Value>) -> Result<(), ConfigError> {
    let field = |k: &str| obj.get(k).cloned().unwrap_or(Value::Null);
    if c.allowed_queues.as_ref().is_some_and(QueueSet::is_empty) {
        return Err(ConfigError::invalid(
            "lease.allowedQueues",
            &field("allowedQueues"),
            "the pool is empty",
        ));
    }
    let cap = c.max_queues_per_pod.unwrap_or(MAX_LEASES_PER_DEVICE);
    match &c.queues {
        LeaseQueues::Count(n) => {
            if *n > cap {
                return Err(ConfigError::invalid(
                    "lease.queues",
                    &field("queues"),
                    format!("more than maxQueuesPerPod {cap}"),
                ));
            }
            if let Some(pool) = &c.allowed_queues {
                if *n as usize > pool.len() {
                    return Err(ConfigError::invalid(
                        "lease.queues",
                        &field("queues"),
                        format!(
                            "more than the {} queue(s) in allowedQueues {pool}",
                            pool.len()
                        ),
                    ));
                }
            }
        }
        LeaseQueues::Ids(ids) => {
            if ids.len() as u32 > cap {
                return Err(ConfigError::invalid(
                    "lease.queueIds",
                    &field("queueIds"),
                    format!("{} queues, more than maxQueuesPerPod {cap}", ids.len()),
                ));
            }
            if let Some(id) = ids.iter().find(|id| !c.allows(**id)) {
                return Err(ConfigError::invalid(
                    "lease.queueIds",
                    &field("queueIds"),
                    format!("queue {id} is outside the pool: {}", c.pool_description()),
                ));
            }
        }
    }
    Ok(())
}

/// The `xdp` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The bpf file system to pin under (`bpffs`, default `/sys/fs/bpf`).
    pub bpffs: PathBuf,
    /// Attach mode (`mode`: `auto`, the default, `native` or `generic`).
    pub mode: XdpMode,
    /// Per-queue counters (`stats`, default false).
    pub stats: bool,
    /// Multi-buffer aware dispatcher (`frags`, default false): needed on an MTU above a page.
    pub frags: bool,
    /// What the queues not leased to a pod do (`ranges`, default: all pass).
    pub ranges: QueueRanges,
    /// Owner, group and mode of each pod's XSKMAP pin (`podMap`), default root 0600.
    pub pod_map: Option<crate::xdp::PinAccess>,
}

impl XdpConfig {
    pub fn options(&self) -> DispatcherOptions {
        DispatcherOptions {
            bpffs: self.bpffs.clone(),
            mode: self.mode,
            stats: self.stats,
            frags: self.frags,
            pod_map_access: self.pod_map,
        }
    }
}

const XDP_KEYS: &[&str] = &["bpffs", "mode", "stats", "frags", "ranges", "podMap"];

/// `xdp.podMap`: `{"uid": 107, "gid": 107, "mode": "0660"}`. The mode is octal text and may
/// grant read and write only (no execute, setuid, setgid or sticky bits).
fn pod_map_access(v: &Value) -> Result<crate::xdp::PinAccess, ConfigError> {
    let obj = object(v, "xdp.podMap")?;
    if let Some((k, val)) = obj
        .iter()
        .find(|(k, _)| !["uid", "gid", "mode"].contains(&k.as_str()))
    {
        return Err(ConfigError::UnsupportedField {
            key: format!("xdp.podMap.{k}"),
            value: render_value(val),
        });
    }
    let id = |k: &str| -> Result<u32, ConfigError> {
        let field = format!("xdp.podMap.{k}");
        let v = obj
            .get(k)
            .ok_or_else(|| ConfigError::invalid(&field, &Value::Null, "required"))?;
        // u32::MAX is (uid_t)-1, "no change" to chown(2).
        Ok(uint_in(v, &field, 0, u64::from(u32::MAX - 1))? as u32)
    };
    let (uid, gid) = (id("uid")?, id("gid")?);
    let mode = match obj.get("mode") {
        None => 0o600,
        Some(m) => {
            let s = string(m, "xdp.podMap.mode")?;
            let digits = s.strip_prefix('0').filter(|d| d.len() == 3).unwrap_or(s);
            match u32::from_str_radix(digits, 8) {
                Ok(n) if digits.len() == 3 && n & !0o666 == 0 => n,
                _ => {
                    return Err(ConfigError::invalid(
                        "xdp.podMap.mode",
                        m,
                        "expected octal permission bits within 0666, e.g. \"0660\"",
                    ))
                }
            }
        }
    };
    Ok(crate::xdp::PinAccess { uid, gid, mode })
}
const XDP_MODES: &[(&str, XdpMode)] = &[
    ("auto", XdpMode::Auto),
    ("native", XdpMode::Native),
    ("generic", XdpMode::Generic),
];

fn xdp(v: &Value) -> Result<XdpConfig, ConfigError> {
    let obj = object(v, "xdp")?;
    if let Some((k, val)) = obj.iter().find(|(k, _)| !XDP_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::UnsupportedField {
            key: format!("xdp.{k}"),
            value: render_value(val),
        });
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let bpffs = match get("bpffs") {
        None => PathBuf::from(DEFAULT_BPFFS),
        // Pins and the per-NIC lock live under it.
        Some(b) => plain_absolute_path(b, "xdp.bpffs")?,
    };
    let mode = get("mode")
        .map(|m| one_of(m, "xdp.mode", XDP_MODES))
        .transpose()?
        .unwrap_or_default();
    let stats = get("stats")
        .map(|b| boolean(b, "xdp.stats"))
        .transpose()?
        .unwrap_or(false);
    let frags = get("frags")
        .map(|b| boolean(b, "xdp.frags"))
        .transpose()?
        .unwrap_or(false);
    let ranges = match get("ranges") {
        None => QueueRanges::all_pass(),
        Some(r) => {
            let entries: Vec<QueueRangeConfig> =
                serde_json::from_value(r.clone()).map_err(|e| {
                    ConfigError::invalid(
                        "xdp.ranges",
                        r,
                        format!("expected a list of {{\"queues\", \"action\", \"program\"}}: {e}"),
                    )
                })?;
            QueueRanges::new(&entries, &bpffs).map_err(|e| match e {
                XdpError::InvalidConfig {
                    entry: Some(i),
                    reason,
                } => ConfigError::invalid(
                    format!("xdp.ranges[{i}]"),
                    &r.get(i).cloned().unwrap_or(Value::Null),
                    reason,
                ),
                other => ConfigError::invalid("xdp.ranges", r, other.to_string()),
            })?
        }
    };
    let pod_map = get("podMap").map(pod_map_access).transpose()?;
    Ok(XdpConfig {
        bpffs,
        mode,
        stats,
        frags,
        ranges,
        pod_map,
    })
}

/// The `hostRouting` block with `mode: bpf` (see `src/hostrouting/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoutingConfig {
    /// The physical NIC (by name, in the node's netns) whose tcx ingress redirects into pods
    /// and through which pods' bypassing traffic leaves.
    pub uplink: String,
    /// Remote prefixes whose traffic with the pods skips the node's stack (and so netfilter)
    /// in both directions. Empty (the default): nothing bypasses, every packet takes the
    /// kernel's path exactly as without the block.
    pub bypass: Vec<IpCidr>,
    /// The bpf file system to pin under (`<bpffs>/netkit-cni/`).
    pub bpffs: PathBuf,
}

const HOST_ROUTING_KEYS: &[&str] = &["mode", "uplink", "bypass", "bpffs"];
/// Bypass prefixes per network: the LPM trie holds at most this many (bpf/host_routing.h).
pub const MAX_BYPASS_PREFIXES: usize = 256;

/// `hostRouting`: `{"mode": "bpf", "uplink": "ens1f0", "bypass": ["10.0.0.0/8"]}`. `mode` is
/// `kernel` (the default: the block changes nothing, `None`) or `bpf`.
fn host_routing(v: &Value) -> Result<Option<HostRoutingConfig>, ConfigError> {
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

/// A non-empty JSON list of distinct queue ids.
fn queue_id_list(v: &Value, field: &str) -> Result<Vec<u32>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected a list of queue ids"))?;
    if items.is_empty() {
        return Err(ConfigError::invalid(field, v, "the list is empty"));
    }
    if items.len() > MAX_LEASES_PER_DEVICE as usize && field == "lease.queueIds" {
        return Err(ConfigError::invalid(
            field,
            v,
            format!("a netkit device holds at most {MAX_LEASES_PER_DEVICE} leases"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = uint_in(item, &format!("{field}[{i}]"), 0, u64::from(MAX_QUEUE_ID))? as u32;
        if !seen.insert(id) {
            return Err(ConfigError::invalid(
                field,
                v,
                format!("queue {id} is listed twice"),
            ));
        }
        out.push(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "pods",
            "type": "netkit-cni",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}
        })
    }

    fn with(key: &str, v: Value) -> Value {
        let mut c = base();
        c[key] = v;
        c
    }

    fn parse(v: Value) -> Result<NetConf, ConfigError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_1_0);
        assert_eq!(c.name, "pods");
        assert_eq!(c.mode, Mode::L3);
        assert_eq!(c.pairing, Pairing::Pair);
        assert_eq!(
            (c.policy, c.peer_policy),
            (Policy::Forward, Policy::Forward)
        );
        assert_eq!((c.scrub, c.peer_scrub), (Scrub::Default, Scrub::Default));
        assert_eq!((c.mtu, c.headroom, c.tailroom), (None, None, None));
        assert_eq!(c.log_level, LogLevel::Warn);
        assert_eq!(c.log_file, None);
        assert!(!c.disable_check && !c.disable_gc && !c.ip_masq);
        assert_eq!(c.ipam.as_ref().unwrap().plugin_type, "host-local");
        assert_eq!(c.ipam.unwrap().raw["subnet"], "10.1.0.0/16");
        assert_eq!(c.raw, base());
    }

    #[test]
    fn full_config_parses_every_key() {
        let v = json!({
            "cniVersion": "1.0.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "vm-net.1",
            "type": "netkit-cni",
            "disableCheck": true,
            "disableGC": "True",
            "args": {"labels": {"app": "x"}},
            "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]},
            "dns": {"nameservers": ["10.0.0.10", "fd00::10"], "search": ["svc.cluster.local"],
                    "domain": "cluster.local", "options": ["ndots:5"]},
            "runtimeConfig": {"mac": "02:00:00:00:00:01"},
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24"}]},
            "capabilities": {"mac": true, "ips": false},
            "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerID": "abc", "ifname": "eth0"}],
            "mode": "l2",
            "pairing": "single",
            "mtu": 9000,
            "headroom": 256,
            "tailroom": 0,
            "policy": "blackhole",
            "peerPolicy": "forward",
            "scrub": "none",
            "peerScrub": "default",
            "logFile": "/var/log/netkit-cni.log",
            "logLevel": "debug",
            "lease": {"master": "eth1", "queues": 2, "allowedQueues": "2-7", "maxQueuesPerPod": 4,
                      "deviceInfoDir": "/run/devinfo"}
        });
        let c = parse(v.clone()).unwrap();
        assert_eq!(c.raw, v);
        let raw_back: Value = serde_json::from_slice(&c.raw_bytes()).unwrap();
        assert_eq!(raw_back, v);
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name, "vm-net.1");
        assert!(c.disable_check && c.disable_gc && c.ip_masq);
        assert_eq!(c.args.unwrap()["labels"]["app"], "x");
        let dns = c.dns.unwrap();
        assert_eq!(dns.nameservers, vec!["10.0.0.10", "fd00::10"]);
        assert_eq!(dns.domain.as_deref(), Some("cluster.local"));
        assert_eq!(c.runtime_config.unwrap()["mac"], "02:00:00:00:00:01");
        assert_eq!(
            c.prev_result.unwrap().ips[0].address.to_string(),
            "10.9.0.2/24"
        );
        let caps = c.capabilities.unwrap();
        assert_eq!((caps["mac"], caps["ips"]), (true, false));
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into()
            }]
        );
        assert_eq!((c.mode, c.pairing), (Mode::L2, Pairing::Single));
        assert_eq!(
            (c.mtu, c.headroom, c.tailroom),
            (Some(9000), Some(256), Some(0))
        );
        assert_eq!(
            (c.policy, c.peer_policy),
            (Policy::Blackhole, Policy::Forward)
        );
        assert_eq!((c.scrub, c.peer_scrub), (Scrub::None, Scrub::Default));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/netkit-cni.log")));
        assert_eq!(c.log_level, LogLevel::Debug);
        let lease = c.lease.unwrap();
        assert_eq!(lease.master, "eth1");
        assert_eq!(lease.queues, LeaseQueues::Count(2));
        assert_eq!(lease.allowed_queues.unwrap().to_string(), "2-7");
        assert_eq!(lease.max_queues_per_pod, Some(4));
        assert_eq!(lease.device_info_dir, PathBuf::from("/run/devinfo"));
    }

    #[test]
    fn single_mode_may_omit_ipam_and_pair_mode_may_not() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("ipam");
        v["pairing"] = json!("single");
        v["lease"] = json!({"master": "eth1"});
        assert!(parse(v.clone()).unwrap().ipam.is_none());

        v["pairing"] = json!("pair");
        let err = parse(v.clone()).unwrap_err();
        assert_eq!(err.code(), 7);
        let cni: CniError = err.into();
        assert!(cni.msg.contains("ipam"), "{}", cni.msg);

        v.as_object_mut().unwrap().remove("pairing");
        assert_eq!(parse(v).unwrap_err().code(), 7, "pair is the default");
    }

    #[test]
    fn attachments_old_key_is_accepted_and_spec_key_wins() {
        let mut v = base();
        v["cni.dev/attachments"] = json!([{"containerID": "old", "ifname": "eth0"}]);
        assert_eq!(
            parse(v.clone()).unwrap().valid_attachments.unwrap()[0].container_id,
            "old"
        );
        v["cni.dev/valid-attachments"] = json!([{"containerID": "new", "ifname": "eth1"}]);
        let list = parse(v).unwrap().valid_attachments.unwrap();
        assert_eq!(
            list,
            vec![Attachment {
                container_id: "new".into(),
                ifname: "eth1".into()
            }]
        );
    }

    #[test]
    fn null_optional_keys_count_as_absent() {
        let mut v = with("mtu", Value::Null);
        v["prevResult"] = Value::Null;
        let c = parse(v).unwrap();
        assert_eq!((c.mtu, c.prev_result), (None, None));
    }

    #[test]
    fn boundary_values_accepted() {
        assert_eq!(parse(with("mtu", json!(68))).unwrap().mtu, Some(68));
        assert_eq!(parse(with("mtu", json!(65535))).unwrap().mtu, Some(65535));
        assert_eq!(
            parse(with("headroom", json!(65535))).unwrap().headroom,
            Some(65535)
        );
        assert!(
            !parse(with("disableCheck", json!("FALSE")))
                .unwrap()
                .disable_check
        );
    }

    /// (key, value, code, text the message must contain besides the field name)
    fn bad_cases() -> Vec<(&'static str, Value, u32, &'static str)> {
        vec![
            ("mode", json!("l4"), 7, "\"l4\""),
            ("mode", json!("L3"), 7, "\"L3\""),
            ("mode", json!(3), 7, "3"),
            ("pairing", json!("triple"), 7, "\"triple\""),
            ("mtu", json!(67), 7, "67"),
            ("mtu", json!(65536), 7, "65536"),
            ("mtu", json!(-1), 7, "-1"),
            ("mtu", json!(1500.5), 7, "1500.5"),
            ("mtu", json!("1500"), 7, "\"1500\""),
            ("headroom", json!(65536), 7, "65536"),
            ("tailroom", json!(-5), 7, "-5"),
            ("tailroom", json!(true), 7, "true"),
            ("policy", json!("drop"), 7, "\"drop\""),
            ("peerPolicy", json!("accept"), 7, "\"accept\""),
            ("scrub", json!("all"), 7, "\"all\""),
            ("peerScrub", json!(false), 7, "false"),
            ("logFile", json!("relative/log"), 7, "\"relative/log\""),
            ("logFile", json!(""), 7, "\"\""),
            ("logFile", json!(7), 7, "7"),
            ("logLevel", json!("trace"), 7, "\"trace\""),
            ("logLevel", json!("DEBUG"), 7, "\"DEBUG\""),
            ("name", json!("bad/name"), 7, "\"bad/name\""),
            ("name", json!(".hidden"), 7, "\".hidden\""),
            ("name", json!(""), 7, "\"\""),
            ("name", json!(42), 7, "42"),
            ("name", json!("n".repeat(256)), 7, "nnnnnnnn"),
            ("type", json!("bridge"), 7, "\"bridge\""),
            ("type", json!(["netkit-cni"]), 7, "netkit-cni"),
            ("disableCheck", json!("yes"), 7, "\"yes\""),
            ("disableGC", json!(1), 7, "1"),
            ("ipMasq", json!("true"), 7, "\"true\""),
            ("args", json!("K=V"), 7, "\"K=V\""),
            ("runtimeConfig", json!([]), 7, "[]"),
            ("capabilities", json!(["mac"]), 7, "mac"),
            ("ipam", json!("host-local"), 7, "\"host-local\""),
            ("dns", json!(["10.0.0.1"]), 7, "10.0.0.1"),
            ("cniVersions", json!("1.0.0"), 7, "\"1.0.0\""),
            ("cni.dev/valid-attachments", json!({}), 7, "{}"),
            ("cni.dev/attachments", json!("abc"), 7, "\"abc\""),
        ]
    }

    #[test]
    fn bad_values_are_code_7_naming_field_and_value() {
        for (key, value, code, text) in bad_cases() {
            let err = parse(with(key, value.clone())).unwrap_err();
            assert_eq!(err.code(), code, "{key}={value}: {err}");
            let cni: CniError = err.into();
            assert_eq!(cni.code, code);
            assert!(
                cni.msg.contains(&format!("field {key}")),
                "{key}={value}: msg {:?}",
                cni.msg
            );
            assert!(
                cni.msg.contains(text),
                "{key}={value}: msg {:?} lacks {text}",
                cni.msg
            );
        }
    }

    #[test]
    fn nested_bad_values_name_the_nested_field() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "ipam",
                json!({"subnet": "10.0.0.0/8"}),
                "ipam.type",
                "missing",
            ),
            ("ipam", json!({"type": 5}), "ipam.type", "5"),
            ("ipam", json!({"type": ""}), "ipam.type", "\"\""),
            (
                "ipam",
                json!({"type": "../../bin/sh"}),
                "ipam.type",
                "\"../../bin/sh\"",
            ),
            (
                "ipam",
                json!({"type": "/usr/bin/evil"}),
                "ipam.type",
                "\"/usr/bin/evil\"",
            ),
            ("ipam", json!({"type": "a..b"}), "ipam.type", "\"a..b\""),
            (
                "dns",
                json!({"nameservers": ["not-an-ip"]}),
                "dns.nameservers[0]",
                "\"not-an-ip\"",
            ),
            (
                "dns",
                json!({"nameservers": "10.0.0.1"}),
                "dns.nameservers",
                "\"10.0.0.1\"",
            ),
            ("dns", json!({"domain": 3}), "dns.domain", "3"),
            ("dns", json!({"search": [1]}), "dns.search[0]", "1"),
            (
                "capabilities",
                json!({"mac": "yes"}),
                "capabilities.mac",
                "\"yes\"",
            ),
            ("cniVersions", json!(["1.0.0", 1]), "cniVersions[1]", "1"),
            (
                "cni.dev/valid-attachments",
                json!([{"containerID": "a"}]),
                "cni.dev/valid-attachments[0].ifname",
                "missing",
            ),
            (
                "cni.dev/valid-attachments",
                json!([{"containerID": 1, "ifname": "eth0"}]),
                "cni.dev/valid-attachments[0].containerID",
                "1",
            ),
            (
                "cni.dev/valid-attachments",
                json!(["abc"]),
                "cni.dev/valid-attachments[0]",
                "\"abc\"",
            ),
        ];
        for (key, value, field, text) in cases {
            let err = parse(with(key, value.clone())).unwrap_err();
            assert_eq!(err.code(), 7, "{key}={value}: {err}");
            let cni: CniError = err.into();
            assert!(
                cni.msg.contains(&format!("field {field}")),
                "{key}={value}: msg {:?}",
                cni.msg
            );
            assert!(
                cni.msg.contains(text),
                "{key}={value}: msg {:?} lacks {text}",
                cni.msg
            );
        }
    }

    #[test]
    fn unknown_keys_are_code_2_naming_key_and_value() {
        for (key, value) in [
            ("mtus", json!(1500)),
            ("leases", json!({"queues": 2})),
            ("Mode", json!("l3")),
            ("bogus", Value::Null),
        ] {
            let err = parse(with(key, value.clone())).unwrap_err();
            assert_eq!(err.code(), 2, "{key}");
            let cni: CniError = err.into();
            assert_eq!(cni.code, 2);
            assert!(cni.msg.contains(&format!("{key:?}")), "{}", cni.msg);
            assert!(cni.msg.contains(&render_value(&value)), "{}", cni.msg);
        }
    }

    #[test]
    fn missing_required_keys_are_code_7() {
        for key in ["name", "type"] {
            let mut v = base();
            v.as_object_mut().unwrap().remove(key);
            let cni: CniError = parse(v).unwrap_err().into();
            assert_eq!(cni.code, 7, "{key}");
            assert!(
                cni.msg.contains(&format!("field {key} is missing")),
                "{}",
                cni.msg
            );
        }
        let cni: CniError = parse(with("type", Value::Null)).unwrap_err().into();
        assert!(cni.msg.contains("field type"), "{}", cni.msg);
    }

    #[test]
    fn version_errors() {
        let cni: CniError = parse(with("cniVersion", json!("0.2.0")))
            .unwrap_err()
            .into();
        assert_eq!(cni.code, 1);
        assert!(cni.msg.contains("\"0.2.0\""), "{}", cni.msg);

        let mut v = base();
        v.as_object_mut().unwrap().remove("cniVersion");
        let cni: CniError = parse(v).unwrap_err().into();
        assert_eq!(cni.code, 7);
        assert!(cni.msg.contains("cniVersion"), "{}", cni.msg);

        // An unsupported version wins over keys it may have introduced.
        let mut v = with("cniVersion", json!("2.0.0"));
        v["newKey"] = json!(1);
        assert_eq!(parse(v).unwrap_err().code(), 1);
    }

    #[test]
    fn malformed_json_is_code_6() {
        for bad in [&b"{"[..], b"", b"{\"name\": }", b"nul"] {
            let err = NetConf::parse(bad).unwrap_err();
            assert_eq!(err.code(), 6, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(CniError::from(err).code, 6);
        }
        for not_obj in ["[]", "\"conf\"", "42", "null"] {
            let err = NetConf::parse(not_obj.as_bytes()).unwrap_err();
            assert_eq!(err.code(), 6, "{not_obj}");
            assert!(CniError::from(err).msg.contains(not_obj), "{not_obj}");
        }
    }

    #[test]
    fn prev_result_is_parsed_under_the_config_version() {
        let prev = json!({"ips": [{"version": "4", "address": "10.1.0.5/16"}]});
        let mut v = with("prevResult", prev.clone());
        v["cniVersion"] = json!("0.4.0");
        assert_eq!(parse(v).unwrap().prev_result.unwrap().ips.len(), 1);

        // The same 0.4.0-shaped result under a 1.0.0 config is rejected, naming the field.
        let mut v = with("prevResult", prev);
        v["cniVersion"] = json!("1.0.0");
        let cni: CniError = parse(v).unwrap_err().into();
        assert_eq!(cni.code, 6);
        assert!(cni.msg.contains("prevResult.ips[0].version"), "{}", cni.msg);

        let cni: CniError = parse(with("prevResult", json!({"cniVersion": "1.0.0"})))
            .unwrap_err()
            .into();
        assert!(
            cni.msg.contains("prevResult.cniVersion") && cni.msg.contains("\"1.0.0\""),
            "{}",
            cni.msg
        );
    }

    fn xdp_conf(block: Value, pairing: &str) -> Result<NetConf, CniError> {
        let mut v = with("lease", json!({"master": "ens1f0"}));
        v["pairing"] = json!(pairing);
        v["xdp"] = block;
        parse(v).map_err(CniError::from)
    }

    #[test]
    fn xdp_block_defaults_and_fields() {
        let x = xdp_conf(json!({}), "single").unwrap().xdp.unwrap();
        assert_eq!(x.bpffs, PathBuf::from("/sys/fs/bpf"));
        assert_eq!((x.mode, x.stats, x.frags), (XdpMode::Auto, false, false));
        assert_eq!(x.ranges, QueueRanges::all_pass());
        let x = xdp_conf(
            json!({"bpffs": "/run/bpf", "mode": "generic", "stats": true,
                   "ranges": [{"queues": "6-7", "action": "drop"}, {"queues": "0", "action": "program", "program": "/run/bpf/fw/prog"}]}),
            "single",
        )
        .unwrap()
        .xdp
        .unwrap();
        assert_eq!((x.mode, x.stats), (XdpMode::Generic, true));
        assert_eq!(x.ranges.ranges().len(), 2);
        assert_eq!(x.options().bpffs, PathBuf::from("/run/bpf"));
        assert_eq!(x.options().pod_map_access, None);
        let x = xdp_conf(
            json!({"podMap": {"uid": 107, "gid": 108, "mode": "0660"}}),
            "single",
        )
        .unwrap()
        .xdp
        .unwrap();
        assert_eq!(
            x.options().pod_map_access,
            Some(crate::xdp::PinAccess {
                uid: 107,
                gid: 108,
                mode: 0o660
            })
        );
        let x = xdp_conf(json!({"podMap": {"uid": 0, "gid": 108}}), "single")
            .unwrap()
            .xdp
            .unwrap();
        assert_eq!(x.options().pod_map_access.unwrap().mode, 0o600);
    }

    #[test]
    fn bad_xdp_blocks_name_the_field_and_value() {
        let cases = [
            (
                json!({"ranges": [{"queues": "0-3", "action": "drop"}, {"queues": "2", "action": "pass"}]}),
                "xdp.ranges[1]",
                "overlap",
            ),
            (
                json!({"ranges": [{"queues": "0", "action": "program", "program": "/etc/passwd"}]}),
                "xdp.ranges[0]",
                "/etc/passwd",
            ),
            (
                json!({"ranges": [{"queues": "0", "action": "program", "program": "/sys/fs/bpf/../../etc/x"}]}),
                "xdp.ranges[0]",
                "etc/x",
            ),
            (
                json!({"ranges": [{"queues": "5-2", "action": "drop"}]}),
                "xdp.ranges[0]",
                "5-2",
            ),
            (
                json!({"ranges": [{"queues": "0", "action": "redirect"}]}),
                "xdp.ranges",
                "redirect",
            ),
            (json!({"ranges": "0-3"}), "xdp.ranges", "0-3"),
            (json!({"bpffs": "sys/fs/bpf"}), "xdp.bpffs", "sys/fs/bpf"),
            (json!({"bpffs": "/sys/fs/bpf/../../tmp"}), "xdp.bpffs", ".."),
            (
                json!({"bpffs": "/sys/fs/./bpf"}),
                "xdp.bpffs",
                "/sys/fs/./bpf",
            ),
            (
                json!({"podMap": {"uid": 107, "gid": 107, "mode": "0755"}}),
                "xdp.podMap.mode",
                "0755",
            ),
            (
                json!({"podMap": {"uid": 107, "gid": 107, "mode": "4660"}}),
                "xdp.podMap.mode",
                "4660",
            ),
            (
                json!({"podMap": {"uid": 107, "gid": 107, "mode": 660}}),
                "xdp.podMap.mode",
                "660",
            ),
            (
                json!({"podMap": {"uid": -1, "gid": 107}}),
                "xdp.podMap.uid",
                "-1",
            ),
            (
                json!({"podMap": {"uid": 4294967295u64, "gid": 107}}),
                "xdp.podMap.uid",
                "4294967295",
            ),
            (
                json!({"podMap": {"gid": 107}}),
                "xdp.podMap.uid",
                "required",
            ),
            (json!({"mode": "offload"}), "xdp.mode", "offload"),
            (json!({"stats": "yes"}), "xdp.stats", "yes"),
        ];
        for (block, field, value) in cases {
            let e = xdp_conf(block.clone(), "single").unwrap_err();
            assert_eq!(e.code, codes::INVALID_CONFIG, "{block}: {}", e.msg);
            assert!(
                e.msg.contains(field) && (e.msg.contains(value) || e.details.contains(value)),
                "{block}: {} / {}",
                e.msg,
                e.details
            );
        }
        let e = xdp_conf(json!({"ranges": [], "colour": 1}), "single").unwrap_err();
        assert_eq!(e.code, codes::UNSUPPORTED_FIELD);
        assert!(e.msg.contains("xdp.colour"), "{}", e.msg);
    }

    #[test]
    fn xdp_needs_a_lease_and_a_single_device() {
        let mut pair = with("lease", json!({"master": "ens1f0"}));
        pair["xdp"] = json!({});
        let e = CniError::from(parse(pair).unwrap_err());
        assert!(
            e.msg.contains("field xdp") && e.details.contains("single"),
            "{} / {}",
            e.msg,
            e.details
        );
        let e = CniError::from(parse(with("xdp", json!({}))).unwrap_err());
        assert!(
            e.msg.contains("field xdp") && e.details.contains("lease"),
            "{} / {}",
            e.msg,
            e.details
        );
    }

    #[test]
    fn lease_consumer_is_declared_defaulted_and_trap_combinations_refused() {
        // Default: not declared, AF_XDP once the dispatcher steers the leases.
        let c = parse(with("lease", json!({"master": "ens1f0"}))).unwrap();
        assert_eq!(
            (c.lease.as_ref().unwrap().consumer, c.lease_consumer()),
            (None, None)
        );
        let c = xdp_conf(json!({}), "single").unwrap();
        assert_eq!(c.lease_consumer(), Some(LeaseConsumer::AfXdp));
        let c = parse(with(
            "lease",
            json!({"master": "ens1f0", "consumer": "memory-provider"}),
        ))
        .unwrap();
        assert_eq!(c.lease_consumer(), Some(LeaseConsumer::MemoryProvider));
        let c = parse(with(
            "lease",
            json!({"master": "ens1f0", "consumer": "af-xdp"}),
        ))
        .unwrap();
        assert_eq!(c.lease_consumer(), Some(LeaseConsumer::AfXdp));
        assert_eq!(
            c.lease.as_ref().unwrap().bpffs,
            PathBuf::from(DEFAULT_BPFFS)
        );
        let c = parse(with(
            "lease",
            json!({"master": "ens1f0", "bpffs": "/run/bpf"}),
        ))
        .unwrap();
        assert_eq!(c.lease.unwrap().bpffs, PathBuf::from("/run/bpf"));
        let e = CniError::from(
            parse(with(
                "lease",
                json!({"master": "ens1f0", "bpffs": "run/bpf"}),
            ))
            .unwrap_err(),
        );
        assert!(
            e.code == codes::INVALID_CONFIG && e.msg.contains("lease.bpffs"),
            "{}",
            e.msg
        );
        for (s, k) in LEASE_CONSUMERS {
            assert_eq!((LeaseConsumer::parse(s), k.as_str()), (Some(*k), *s));
        }

        // An unknown kind names the field and the value.
        let e = CniError::from(
            parse(with(
                "lease",
                json!({"master": "ens1f0", "consumer": "dpdk"}),
            ))
            .unwrap_err(),
        );
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(
            e.msg.contains("lease.consumer")
                && (e.msg.contains("dpdk") || e.details.contains("dpdk")),
            "{} / {}",
            e.msg,
            e.details
        );

        // memory-provider with the dispatcher: the kernel would refuse the bind.
        let mut v = with(
            "lease",
            json!({"master": "ens1f0", "consumer": "memory-provider"}),
        );
        v["pairing"] = json!("single");
        v["xdp"] = json!({});
        let e = CniError::from(parse(v).unwrap_err());
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(
            e.msg.contains("lease.consumer") && e.msg.contains("memory-provider"),
            "{}",
            e.msg
        );
        assert!(e.details.contains("XDP"), "{}", e.details);

        // memory-provider on a single device: no peer to reach the socket through.
        let mut v = with(
            "lease",
            json!({"master": "ens1f0", "consumer": "memory-provider"}),
        );
        v["pairing"] = json!("single");
        let e = CniError::from(parse(v).unwrap_err());
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(
            e.msg.contains("lease.consumer") && e.details.contains("pair"),
            "{} / {}",
            e.msg,
            e.details
        );
    }

    fn lease(block: Value) -> Result<LeaseConfig, CniError> {
        parse(with("lease", block))
            .map(|c| c.lease.unwrap())
            .map_err(CniError::from)
    }

    #[test]
    fn lease_block_defaults() {
        let l = lease(json!({"master": "ens1f0"})).unwrap();
        assert_eq!(l.queues, LeaseQueues::Count(1));
        assert_eq!(l.allowed_queues, None);
        assert_eq!(l.max_queues_per_pod, None);
        assert_eq!(l.device_info_dir, PathBuf::from(DEFAULT_DEVICE_INFO_DIR));
        assert!(!l.allows(0) && l.allows(1) && l.allows(MAX_QUEUE_ID));
        let l = lease(json!({"master": "ens1f0", "queueIds": [3, 1], "allowedQueues": [1, 3, 9]}))
            .unwrap();
        assert_eq!(l.queues, LeaseQueues::Ids(vec![3, 1]), "order is kept");
        assert_eq!(l.allowed_queues.unwrap().to_string(), "1,3,9");
    }

    #[test]
    fn steering_block_defaults_values_and_refusals() {
        // No block, an empty block and a block with one key: every missing key takes its default.
        let d = Steering {
            rss: RssPolicy::Admin,
            match_on: SteerMatch::None,
            rule_base: DEFAULT_RULE_BASE,
        };
        assert_eq!(lease(json!({"master": "ens1f0"})).unwrap().steering, d);
        assert_eq!(
            lease(json!({"master": "ens1f0", "steering": {}}))
                .unwrap()
                .steering,
            d
        );
        let s = lease(json!({"master": "ens1f0", "steering": {"match": "mac"}}))
            .unwrap()
            .steering;
        assert_eq!((s.rss, s.match_on), (RssPolicy::Admin, SteerMatch::Mac));
        let s = lease(json!({"master": "ens1f0", "allowedQueues": "2-7",
            "steering": {"rss": "exclude-pool", "match": "ip", "ruleBase": 64}}))
        .unwrap()
        .steering;
        assert_eq!(
            (s.rss, s.match_on, s.rule_base),
            (RssPolicy::ExcludePool, SteerMatch::Ip, 64)
        );
        assert_eq!(
            (RssPolicy::ExcludePool.as_str(), SteerMatch::Ip.as_str()),
            ("exclude-pool", "ip")
        );
        // Unknown keys and values: code 7, naming the field and the value.
        for (block, field, value) in [
            (
                json!({"rss": "exclude"}),
                "lease.steering.rss",
                "\"exclude\"",
            ),
            (json!({"match": "vlan"}), "lease.steering.match", "\"vlan\""),
            (json!({"match": 1}), "lease.steering.match", "1"),
            (json!({"rsss": "admin"}), "lease.steering.rsss", "\"admin\""),
            (json!({"ruleBase": -1}), "lease.steering.ruleBase", "-1"),
            (json!("mac"), "lease.steering", "\"mac\""),
        ] {
            let e = lease(json!({"master": "ens1f0", "steering": block.clone()})).unwrap_err();
            assert_eq!(e.code, codes::INVALID_CONFIG, "{block}: {e:?}");
            assert!(
                e.msg.contains(field) && e.msg.contains(value),
                "{block}: {}",
                e.msg
            );
        }
    }

    #[test]
    fn single_pairing_needs_a_lease_block() {
        let mut v = with("pairing", json!("single"));
        let err: CniError = parse(v.clone()).unwrap_err().into();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("field lease is missing"), "{}", err.msg);
        v["lease"] = json!({"master": "eth1"});
        assert!(parse(v).is_ok());
    }

    #[test]
    fn queue_sets_parse_and_render_as_ranges() {
        for (text, ids, shown) in [
            ("2-7", vec![2, 3, 4, 5, 6, 7], "2-7"),
            ("1,3-5", vec![1, 3, 4, 5], "1,3-5"),
            (" 4 , 0 ", vec![0, 4], "0,4"),
            ("5-5,1", vec![1, 5], "1,5"),
        ] {
            let set = QueueSet::parse(text).unwrap();
            assert_eq!(set.iter().collect::<Vec<_>>(), ids, "{text}");
            assert_eq!(set.to_string(), shown, "{text}");
        }
        for bad in [
            "",
            "1,,2",
            "7-2",
            "a",
            "-3",
            "1-",
            "+4",
            "70000",
            "0-4294967295",
        ] {
            assert!(QueueSet::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(QueueSet::default().to_string(), "(none)");
        assert_eq!(QueueSet::parse("0-9").unwrap().below(4).to_string(), "0-3");
    }

    #[test]
    fn bad_lease_blocks_are_code_7_naming_the_nested_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({}), "lease.master", "missing"),
            (json!({"master": ""}), "lease.master", "\"\""),
            (json!({"master": "a/b"}), "lease.master", "\"a/b\""),
            (
                json!({"master": "averyveryverylongname"}),
                "lease.master",
                "15 bytes",
            ),
            (json!({"master": 3}), "lease.master", "3"),
            (json!({"master": "e", "queues": 0}), "lease.queues", "0"),
            (
                json!({"master": "e", "queues": 1024}),
                "lease.queues",
                "1024",
            ),
            (
                json!({"master": "e", "queues": 2, "queueIds": [1]}),
                "lease.queueIds",
                "not both",
            ),
            (
                json!({"master": "e", "queueIds": []}),
                "lease.queueIds",
                "empty",
            ),
            (
                json!({"master": "e", "queueIds": [1, 1]}),
                "lease.queueIds",
                "twice",
            ),
            (
                json!({"master": "e", "queueIds": [-1]}),
                "lease.queueIds[0]",
                "-1",
            ),
            (
                json!({"master": "e", "queueIds": [0]}),
                "lease.queueIds",
                "queue 0 is outside the pool",
            ),
            (
                json!({"master": "e", "queueIds": [5], "allowedQueues": "1-4"}),
                "lease.queueIds",
                "queue 5",
            ),
            (
                json!({"master": "e", "allowedQueues": "7-2"}),
                "lease.allowedQueues",
                "reversed",
            ),
            (
                json!({"master": "e", "allowedQueues": 3}),
                "lease.allowedQueues",
                "3",
            ),
            (
                json!({"master": "e", "allowedQueues": []}),
                "lease.allowedQueues",
                "empty",
            ),
            (
                json!({"master": "e", "queues": 3, "allowedQueues": "1-2"}),
                "lease.queues",
                "allowedQueues 1-2",
            ),
            (
                json!({"master": "e", "queues": 3, "maxQueuesPerPod": 2}),
                "lease.queues",
                "maxQueuesPerPod 2",
            ),
            (
                json!({"master": "e", "queueIds": [1, 2], "maxQueuesPerPod": 1}),
                "lease.queueIds",
                "maxQueuesPerPod 1",
            ),
            (
                json!({"master": "e", "maxQueuesPerPod": 0}),
                "lease.maxQueuesPerPod",
                "0",
            ),
            (
                json!({"master": "e", "deviceInfoDir": "rel/dir"}),
                "lease.deviceInfoDir",
                "absolute",
            ),
            (json!("eth1"), "lease", "\"eth1\""),
        ];
        for (block, field, text) in cases {
            let err = lease(block.clone()).unwrap_err();
            assert_eq!(err.code, 7, "{block}: {err:?}");
            assert!(
                err.msg.contains(&format!("field {field}")),
                "{block}: {:?}",
                err.msg
            );
            assert!(
                err.msg.contains(text) || err.details.contains(text),
                "{block}: {err:?} lacks {text}"
            );
        }
        let err = lease(json!({"master": "e", "queus": 2})).unwrap_err();
        assert_eq!(err.code, 2, "a typo inside the block is an unknown field");
        assert!(err.msg.contains("lease.queus"), "{}", err.msg);
    }

    #[test]
    fn raw_bytes_parse_back_to_the_same_config() {
        // Found by fuzzing (fuzz/fuzz_targets/config.rs): with serde_json's default, not
        // correctly rounded, float parsing, 99999999999199999990999 read as one f64 and its
        // re-serialization as another, so a delegate got numbers we never validated.
        let input = br#"{"cniVersion":"1.1.0","name":"n","type":"netkit-cni",
            "ipam":{"type":"host-local","x":99999999999199999990999,
                    "y":9.99999999992e22,"z":0.1,"w":-1.7976931348623157e308}}"#;
        let c = NetConf::parse(input).unwrap();
        let again = NetConf::parse(&c.raw_bytes()).unwrap();
        assert_eq!(again, c);
        assert_eq!(again.raw_bytes(), c.raw_bytes());
    }

    #[test]
    fn key_table_has_no_duplicates() {
        let mut keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn log_level_choices_match_the_logger() {
        assert_eq!(LOG_LEVELS.len(), LogLevel::ALL.len());
        for (name, level) in LOG_LEVELS {
            assert_eq!(LogLevel::parse(name), Some(*level));
            assert_eq!(
                parse(with("logLevel", json!(name))).unwrap().log_level,
                *level
            );
        }
    }

    fn hr_conf(block: Value) -> Result<NetConf, CniError> {
        parse(with("hostRouting", block)).map_err(CniError::from)
    }

    #[test]
    fn host_routing_defaults_to_kernel_routing() {
        assert_eq!(parse(base()).unwrap().host_routing, None);
        assert_eq!(hr_conf(json!({})).unwrap().host_routing, None);
        assert_eq!(
            hr_conf(json!({"mode": "kernel"})).unwrap().host_routing,
            None
        );
        assert_eq!(hr_conf(Value::Null).unwrap().host_routing, None);
    }

    #[test]
    fn host_routing_bpf_block_parses() {
        let h = hr_conf(json!({"mode": "bpf", "uplink": "ens1f0"}))
            .unwrap()
            .host_routing
            .unwrap();
        assert_eq!(h.uplink, "ens1f0");
        assert!(h.bypass.is_empty(), "nothing bypasses unless named");
        assert_eq!(h.bpffs, PathBuf::from("/sys/fs/bpf"));
        let h = hr_conf(json!({"mode": "bpf", "uplink": "ens1f0", "bpffs": "/run/bpf",
                               "bypass": ["10.0.0.0/8", "fd00:1::/64", "192.0.2.7/32", "0.0.0.0/0"]}))
        .unwrap()
        .host_routing
        .unwrap();
        let shown: Vec<String> = h.bypass.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "fd00:1::/64", "192.0.2.7/32", "0.0.0.0/0"]
        );
        assert_eq!(h.bpffs, PathBuf::from("/run/bpf"));
    }

    #[test]
    fn host_routing_bad_values_name_field_and_value() {
        let cases: Vec<(Value, u32, &str)> = vec![
            (json!("bpf"), 7, "hostRouting"),
            (json!({"mode": "ebpf"}), 7, "field hostRouting.mode"),
            (
                json!({"mode": "bpf"}),
                7,
                "field hostRouting.uplink is missing",
            ),
            (
                json!({"mode": "bpf", "uplink": "a/b"}),
                7,
                "\"a/b\" for field hostRouting.uplink",
            ),
            (
                json!({"mode": "bpf", "uplink": "averyveryverylongname"}),
                7,
                "hostRouting.uplink",
            ),
            (json!({"mode": "bpf", "uplink": 3}), 7, "hostRouting.uplink"),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypass": "10.0.0.0/8"}),
                7,
                "field hostRouting.bypass",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.0"]}),
                7,
                "\"10.0.0.0\" for field hostRouting.bypass[0]",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.0/8", "10.1.0.0/33"]}),
                7,
                "hostRouting.bypass[1]",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.1/8"]}),
                7,
                "host bits set; the prefix is 10.0.0.0/8",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypass": ["fd00::1/64"]}),
                7,
                "fd00::/64",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypass": ["10.0.0.0/8", "10.0.0.0/8"]}),
                7,
                "listed twice",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bpffs": "relative"}),
                7,
                "hostRouting.bpffs",
            ),
            (
                json!({"mode": "kernel", "uplink": "e0"}),
                7,
                "only meaningful with hostRouting.mode",
            ),
            (
                json!({"mode": "bpf", "uplink": "e0", "bypas": []}),
                2,
                "hostRouting.bypas",
            ),
        ];
        for (block, code, needle) in cases {
            let e = hr_conf(block.clone()).unwrap_err();
            assert_eq!(e.code, code, "{block}: {e:?}");
            let text = format!("{} {}", e.msg, e.details);
            assert!(text.contains(needle), "{block}: {text:?} lacks {needle:?}");
        }
        let many: Vec<String> = (0..=MAX_BYPASS_PREFIXES)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let e = hr_conf(json!({"mode": "bpf", "uplink": "e0", "bypass": many})).unwrap_err();
        assert!(e.details.contains("at most 256"), "{e:?}");
    }

    #[test]
    fn host_routing_needs_a_pair() {
        let mut v = with("hostRouting", json!({"mode": "bpf", "uplink": "ens1f0"}));
        v["pairing"] = json!("single");
        v["lease"] = json!({"master": "ens1f0"});
        let e = CniError::from(parse(v.clone()).unwrap_err());
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("field hostRouting"), "{e:?}");
        assert!(e.details.contains("pairing \"pair\""), "{e:?}");
        let mut b = with("hostRouting", json!({"mode": "bpf", "uplink": "ens1f0"}));
        b["peerPolicy"] = json!("blackhole");
        let e = CniError::from(parse(b).unwrap_err());
        assert_eq!(e.code, 7);
        assert!(e.details.contains("peerPolicy"), "{e:?}");
        // mode kernel changes nothing, so it is accepted with any pairing.
        v["hostRouting"] = json!({"mode": "kernel"});
        assert_eq!(parse(v).unwrap().host_routing, None);
    }
}
