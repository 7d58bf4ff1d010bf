//! Spec versions and version negotiation.

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

use super::env::Command;
use super::error::CniError;
use crate::text::{render_str, render_value};

/// A CNI spec version this plugin speaks. 0.1.0/0.2.0 are not supported: they predate the rich
/// result type (interfaces list) that netkit pairs need to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const LATEST: CniVersion = CniVersion::V1_1_0;
    pub const SUPPORTED: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a version string; anything outside [`Self::SUPPORTED`] is code 1 naming it.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Self::SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::incompatible_version(
                    format!("unsupported cniVersion {}", render_str(s)),
                    format!("this plugin supports {}", supported_list()),
                )
            })
    }

    /// 0.3.x and 0.4.0 results carry `ips[].version`; 1.0.0 removed it.
    pub fn has_ip_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// Interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/`priority`/`table`/`scope`.
    pub fn has_1_1_fields(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn supported_list() -> String {
    let v: Vec<&str> = CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect();
    format!("[{}]", v.join(", "))
}

/// Reads `cniVersion` from a stdin config and checks it is supported: the first thing every
/// non-VERSION command does, before the rest of the config is interpreted under that version.
pub fn negotiate(stdin: &[u8]) -> Result<CniVersion, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::decode("failed to decode network config from stdin", e.to_string())
    })?;
    version_of_config(&value)
}

/// The `cniVersion` of an already-decoded config object.
pub fn version_of_config(config: &Value) -> Result<CniVersion, CniError> {
    let Some(obj) = config.as_object() else {
        return Err(CniError::decode(
            format!(
                "network config must be a JSON object, got {}",
                render_value(config)
            ),
            "",
        ));
    };
    match obj.get("cniVersion") {
        None | Some(Value::Null) => Err(CniError::invalid_config(
            "required field cniVersion is missing",
            format!("this plugin supports {}", supported_list()),
        )),
        Some(Value::String(s)) => CniVersion::parse(s),
        Some(other) => Err(CniError::invalid_config(
            format!(
                "field cniVersion must be a string, got {}",
                render_value(other)
            ),
            "",
        )),
    }
}

/// CHECK appeared in 0.4.0, STATUS and GC in 1.1.0; the spec forbids running them under an
/// older config version (libcni's skel refuses the same way, with code 1).
pub fn check_command_allowed(command: Command, version: CniVersion) -> Result<(), CniError> {
    let min = match command {
        Command::Check => CniVersion::V0_4_0,
        Command::Status | Command::Gc => CniVersion::V1_1_0,
        Command::Add | Command::Del | Command::Version => return Ok(()),
    };
    if version < min {
        return Err(CniError::incompatible_version(
            format!("CNI_COMMAND {command} is not allowed with cniVersion \"{version}\""),
            format!("{command} requires cniVersion {min} or later"),
        ));
    }
    Ok(())
}

/// The VERSION command's output. The spec says `cniVersion` echoes the input's value (even one
/// we do not support: the runtime compares it against `supportedVersions` itself); empty stdin
/// means the runtime sent no config, so we answer with our latest.
pub fn version_response(stdin: &[u8]) -> Result<Value, CniError> {
    let requested = if stdin.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::decode("failed to decode VERSION input from stdin", e.to_string())
        })?;
        match value.get("cniVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(CniError::decode(
                    format!(
                        "field cniVersion must be a string, got {}",
                        render_value(other)
                    ),
                    "",
                ))
            }
        }
    };
    let supported: Vec<&str> = CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect();
    Ok(json!({
        "cniVersion": requested.as_deref().unwrap_or(CniVersion::LATEST.as_str()),
        "supportedVersions": supported,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_every_supported_version_and_round_trips() {
        for v in CniVersion::SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()).unwrap(), v);
            assert_eq!(v.to_string().parse::<CniVersion>().unwrap(), v);
        }
    }

    #[test]
    fn parse_rejects_unknown_versions_with_code_1_naming_them() {
        for bad in ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "1.0", "", "v1.0.0"] {
            let err = CniVersion::parse(bad).unwrap_err();
            assert_eq!(err.code, 1, "{bad}");
            assert!(err.msg.contains(&format!("{bad:?}")), "{bad}: {}", err.msg);
            assert!(err.details.contains("1.1.0"), "{}", err.details);
        }
    }

    #[test]
    fn versions_are_ordered() {
        assert!(CniVersion::V0_3_0 < CniVersion::V0_3_1);
        assert!(CniVersion::V0_4_0 < CniVersion::V1_0_0);
        assert!(CniVersion::V1_0_0 < CniVersion::V1_1_0);
        assert!(CniVersion::V0_4_0.has_ip_version_field());
        assert!(!CniVersion::V1_0_0.has_ip_version_field());
        assert!(!CniVersion::V1_0_0.has_1_1_fields());
        assert!(CniVersion::V1_1_0.has_1_1_fields());
    }

    #[test]
    fn negotiate_reads_cni_version_from_config() {
        let v = negotiate(br#"{"cniVersion":"0.4.0","name":"n","type":"netkit-cni"}"#).unwrap();
        assert_eq!(v, CniVersion::V0_4_0);
    }

    #[test]
    fn negotiate_errors() {
        let err = negotiate(br#"{"cniVersion":"0.2.0"}"#).unwrap_err();
        assert_eq!(err.code, 1);
        assert!(err.msg.contains("\"0.2.0\""), "{}", err.msg);

        let err = negotiate(b"{not json").unwrap_err();
        assert_eq!(err.code, 6);

        let err = negotiate(b"[1,2]").unwrap_err();
        assert_eq!(err.code, 6);
        assert!(err.msg.contains("[1,2]"), "{}", err.msg);

        let err = negotiate(br#"{"name":"n"}"#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("cniVersion"), "{}", err.msg);

        let err = negotiate(br#"{"cniVersion": 1.0}"#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(
            err.msg.contains("cniVersion") && err.msg.contains("1.0"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn commands_gated_by_version() {
        let err = check_command_allowed(Command::Check, CniVersion::V0_3_1).unwrap_err();
        assert_eq!(err.code, 1);
        assert!(
            err.msg.contains("CHECK") && err.msg.contains("0.3.1"),
            "{}",
            err.msg
        );
        check_command_allowed(Command::Check, CniVersion::V0_4_0).unwrap();

        for cmd in [Command::Gc, Command::Status] {
            let err = check_command_allowed(cmd, CniVersion::V1_0_0).unwrap_err();
            assert_eq!(err.code, 1);
            assert!(err.msg.contains(&cmd.to_string()), "{}", err.msg);
            check_command_allowed(cmd, CniVersion::V1_1_0).unwrap();
        }
        for v in CniVersion::SUPPORTED {
            check_command_allowed(Command::Add, v).unwrap();
            check_command_allowed(Command::Del, v).unwrap();
        }
    }

    #[test]
    fn version_response_echoes_requested_version() {
        let expected: Value = serde_json::from_str(
            r#"{"cniVersion": "0.4.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}"#,
        )
        .unwrap();
        assert_eq!(
            version_response(br#"{"cniVersion":"0.4.0"}"#).unwrap(),
            expected
        );

        // An unsupported request is still echoed: the runtime does the comparison.
        let out = version_response(br#"{"cniVersion":"0.1.0"}"#).unwrap();
        assert_eq!(out["cniVersion"], "0.1.0");
    }

    #[test]
    fn version_response_defaults_to_latest() {
        let expected: Value = serde_json::from_str(
            r#"{"cniVersion": "1.1.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}"#,
        )
        .unwrap();
        assert_eq!(version_response(b"").unwrap(), expected);
        assert_eq!(version_response(b" \n").unwrap(), expected);
        assert_eq!(version_response(b"{}").unwrap(), expected);
        assert_eq!(version_response(br#"{"cniVersion":""}"#).unwrap(), expected);
    }

    #[test]
    fn version_response_rejects_garbage() {
        assert_eq!(version_response(b"nope").unwrap_err().code, 6);
        let err = version_response(br#"{"cniVersion":[1]}"#).unwrap_err();
        assert_eq!(err.code, 6);
        assert!(
            err.msg.contains("cniVersion") && err.msg.contains("[1]"),
            "{}",
            err.msg
        );
    }
}
