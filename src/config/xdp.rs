//! The `xdp` block: the per-queue dispatcher on the lease's master.

use std::path::PathBuf;

use serde_json::Value;

use super::{boolean, object, one_of, plain_absolute_path, string, uint_in, ConfigError};
use crate::bpf::pins::DEFAULT_BPFFS;
use crate::text::render_value;
use crate::xdp::{DispatcherOptions, QueueRangeConfig, QueueRanges, XdpError, XdpMode};

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

pub(super) fn xdp(v: &Value) -> Result<XdpConfig, ConfigError> {
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
