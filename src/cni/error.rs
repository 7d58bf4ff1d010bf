//! The CNI error object: the one thing every failure path must end up as, since the runtime only
//! understands `{cniVersion, code, msg, details}` on stdout plus a non-zero exit.

use serde_json::{json, Value};

use crate::logging::LogError;

/// Well-known codes from the spec (0-99 are reserved), plus the plugin-specific ones (>= 100)
/// this plugin uses. Plugin-specific codes are registered here so two modules never reuse one.
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const PLUGIN_NOT_AVAILABLE_LIMITED: u32 = 51;
    /// First code free for plugin-specific use.
    pub const PLUGIN_SPECIFIC_MIN: u32 = 100;
    /// A delegated plugin (IPAM) failed without printing a usable CNI error object, so there is no
    /// code of its own to pass on.
    pub const DELEGATE_FAILED: u32 = 100;
    /// The kernel has no netkit (needs Linux ≥ 6.7 with CONFIG_NETKIT).
    pub const NETKIT_UNSUPPORTED: u32 = 101;
    /// A kernel operation failed; the message names the step and the errno.
    pub const KERNEL_FAILED: u32 = 102;
    /// The attachment (container id + ifname) already exists.
    pub const ALREADY_EXISTS: u32 = 103;
    /// CHECK found the attachment different from `prevResult`.
    pub const CHECK_FAILED: u32 = 104;
    /// The kernel cannot lease NIC queues (no netdev queue-create: Linux < 7.1).
    pub const LEASE_UNSUPPORTED: u32 = 105;
    /// The lease pool has fewer free queues than the pod needs; retrying later may succeed.
    pub const LEASE_POOL_EXHAUSTED: u32 = 106;
    /// A queue named explicitly (queueIds) is busy: leased, bound to AF_XDP or a memory provider.
    pub const LEASE_QUEUE_BUSY: u32 = 107;
    /// The kernel refused a lease; the message carries its extack (e.g. a virtual master, one
    /// without queue management).
    pub const LEASE_FAILED: u32 = 108;
    /// The device-info file could not be written, read or removed.
    pub const DEVICE_INFO_FAILED: u32 = 109;
    /// The XDP dispatcher on the master could not be attached, steered or released (bpffs not
    /// mounted, another XDP program on the NIC, a driver refusing XDP, …); the message names the
    /// step and the errno.
    pub const XDP_FAILED: u32 = 110;
    /// BPF host routing could not be set up or released; the message names the step, the bpffs
    /// path and the errno. (A config fault on the uplink is 7.)
    pub const HOST_ROUTING_FAILED: u32 = 111;
    /// A network whose leases are for a memory provider (`lease.consumer`) was refused: the
    /// master carries an XDP program (the message names the NIC and the program's owner).
    pub const MEMORY_PROVIDER_CONFLICT: u32 = 112;
    /// The NIC cannot steer the pod's frames, and only them, onto its leased queues
    /// (`lease.steering`): the default RSS context still spreads onto a queue of the pool
    /// (`rss: "admin"`), its RSS cannot be read, ntuple is off, or the driver lacks ntuple rules
    /// or RSS contexts. The message names the NIC, the queue or the missing feature, and the
    /// ethtool command that fixes it.
    pub const STEERING: u32 = 113;
}

/// A CNI error as defined by the spec. `msg` is the short line runtimes surface to users, so
/// every constructor call in this crate puts the offending field/variable and value in it;
/// `details` carries the longer explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", details_suffix(.details))]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

impl CniError {
    /// Any code, including one received from a delegated plugin that must be passed on unchanged.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn incompatible_version(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INCOMPATIBLE_VERSION, msg, details)
    }

    pub fn unsupported_field(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::UNSUPPORTED_FIELD, msg, details)
    }

    pub fn unknown_container(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::UNKNOWN_CONTAINER, msg, details)
    }

    pub fn invalid_env(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ENV, msg, details)
    }

    pub fn io(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::IO_FAILURE, msg, details)
    }

    pub fn decode(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::DECODE_FAILURE, msg, details)
    }

    pub fn invalid_config(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_CONFIG, msg, details)
    }

    pub fn try_again_later(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::TRY_AGAIN_LATER, msg, details)
    }

    pub fn plugin_not_available(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::PLUGIN_NOT_AVAILABLE, msg, details)
    }

    pub fn plugin_not_available_limited(
        msg: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self::new(codes::PLUGIN_NOT_AVAILABLE_LIMITED, msg, details)
    }

    /// A plugin-specific error. Codes below 100 are reserved by the spec, so passing one is a bug
    /// in the caller, not a runtime condition.
    pub fn plugin_specific(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        assert!(
            code >= codes::PLUGIN_SPECIFIC_MIN,
            "CNI error code {code} is reserved by the spec; plugin-specific codes start at 100"
        );
        Self::new(code, msg, details)
    }

    /// The spec's error object. `cni_version` is a plain string rather than a `CniVersion`
    /// because the spec says to echo the configuration's value, which may be one we reject.
    /// `details` is optional in the spec and omitted when empty, as libcni does.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }

    /// Reads an error object printed by another plugin. Returns `None` when `value` is not one
    /// (no integer `code` or no string `msg`), so callers can fall back to a generic error.
    pub fn from_json(value: &Value) -> Option<Self> {
        let obj = value.as_object()?;
        let code = u32::try_from(obj.get("code")?.as_u64()?).ok()?;
        let msg = obj.get("msg")?.as_str()?.to_owned();
        let details = obj
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Some(CniError { code, msg, details })
    }
}

/// A log file that cannot be opened is an I/O failure of the invocation (code 5) naming the
/// config key. Here rather than in `logging`, which sits below the protocol layer.
impl From<LogError> for CniError {
    fn from(e: LogError) -> Self {
        match &e {
            LogError::Open { path, .. } => CniError::io(
                format!("cannot open logFile {:?}", path.display().to_string()),
                e.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_use_spec_codes() {
        let cases = [
            (CniError::incompatible_version("m", ""), 1),
            (CniError::unsupported_field("m", ""), 2),
            (CniError::unknown_container("m", ""), 3),
            (CniError::invalid_env("m", ""), 4),
            (CniError::io("m", ""), 5),
            (CniError::decode("m", ""), 6),
            (CniError::invalid_config("m", ""), 7),
            (CniError::try_again_later("m", ""), 11),
            (CniError::plugin_not_available("m", ""), 50),
            (CniError::plugin_not_available_limited("m", ""), 51),
            (CniError::plugin_specific(123, "m", ""), 123),
        ];
        for (err, code) in cases {
            assert_eq!(err.code, code, "{err:?}");
        }
    }

    #[test]
    #[should_panic(expected = "reserved by the spec")]
    fn plugin_specific_rejects_reserved_codes() {
        let _ = CniError::plugin_specific(7, "m", "");
    }

    #[test]
    fn to_json_matches_spec_shape() {
        let err = CniError::invalid_config(
            "Invalid Configuration",
            "Network 192.168.0.0/31 too small to allocate from.",
        );
        let expected: Value = serde_json::from_str(
            r#"{
                "cniVersion": "1.1.0",
                "code": 7,
                "msg": "Invalid Configuration",
                "details": "Network 192.168.0.0/31 too small to allocate from."
            }"#,
        )
        .unwrap();
        assert_eq!(err.to_json("1.1.0"), expected);
    }

    #[test]
    fn to_json_omits_empty_details_and_echoes_version_verbatim() {
        let err = CniError::incompatible_version("unsupported cniVersion \"9.9.9\"", "");
        let expected: Value = serde_json::from_str(
            r#"{"cniVersion": "9.9.9", "code": 1, "msg": "unsupported cniVersion \"9.9.9\""}"#,
        )
        .unwrap();
        assert_eq!(err.to_json("9.9.9"), expected);
    }

    #[test]
    fn from_json_reads_foreign_error_objects() {
        let v: Value =
            serde_json::from_str(r#"{"code": 4, "msg": "unknown CNI_COMMAND: STATUS"}"#).unwrap();
        assert_eq!(
            CniError::from_json(&v),
            Some(CniError::new(4, "unknown CNI_COMMAND: STATUS", ""))
        );
        let v: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","code": 11, "msg": "busy", "details": "try later"}"#,
        )
        .unwrap();
        assert_eq!(
            CniError::from_json(&v),
            Some(CniError::new(11, "busy", "try later"))
        );
        for bad in [
            r#"{"msg": "x"}"#,
            r#"{"code": "4", "msg": "x"}"#,
            r#"{"code": 4}"#,
            "[]",
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert_eq!(CniError::from_json(&v), None, "{bad}");
        }
    }

    #[test]
    fn display_includes_details_only_when_present() {
        assert_eq!(CniError::io("read failed", "").to_string(), "read failed");
        assert_eq!(
            CniError::io("read failed", "EOF").to_string(),
            "read failed: EOF"
        );
    }

    #[test]
    fn unopenable_log_file_is_code_5_naming_log_file() {
        // A directory cannot be opened for appending (logging's own test opens one for real).
        let dir = std::env::temp_dir();
        let err = crate::logging::Logger::file(&dir, crate::logging::LogLevel::Info).unwrap_err();
        let cni: CniError = err.into();
        assert_eq!(cni.code, 5);
        assert!(cni.msg.contains("logFile"), "{}", cni.msg);
    }
}
