//! The CNI protocol (spec 1.1.0, also speaking 0.3.0, 0.3.1, 0.4.0 and 1.0.0): environment,
//! version negotiation, results, the error object and the parse layer. Pure data handling; no
//! syscalls. It imports nothing above `ip`, `text` and `logging`: the plugin's own config
//! (`src/config/`) builds on it, and the parse layer reads that config through a trait
//! ([`request::NetworkConfig`]).
//!
//! Our own types, not the design card's `cni-plugin` crate: that crate stops at spec 1.0 (no GC,
//! no STATUS, no `cni.dev/valid-attachments`) and its repository is archived.

pub mod env;
pub mod error;
pub mod request;
pub mod result;
pub mod version;

pub use env::{CniArgs, CniEnv, Command, ContainerId, IfName};
pub use error::{codes, CniError};
pub use result::{CniResult, Dns, Interface, IpCidr, IpConfig, Route};
pub use version::{check_command_allowed, negotiate, version_response, CniVersion};

/// `spec.podCIDR` of a Kubernetes Node object (JSON), and only that field: it must be a CIDR
/// with its host bits clear, since the installer writes it into the conflist as host-local's
/// subnet. The message names what is wrong (no such field, not a string, not a CIDR).
pub fn node_pod_cidr(node: &[u8]) -> Result<IpCidr, String> {
    let v: serde_json::Value =
        serde_json::from_slice(node).map_err(|e| format!("the Node object is not JSON: {e}"))?;
    let name = v["metadata"]["name"].as_str().unwrap_or("?");
    let raw = match &v["spec"]["podCIDR"] {
        serde_json::Value::Null => {
            return Err(format!(
            "node {} has no spec.podCIDR: run the controller manager with --allocate-node-cidrs",
            crate::logging::escaped(&crate::logging::clip(name, 64))
        ))
        }
        serde_json::Value::String(s) => s.as_str(),
        other => return Err(format!("spec.podCIDR is not a string: {other}")),
    };
    let shown = || crate::logging::escaped(&crate::logging::clip(raw, 64));
    let c: IpCidr = raw
        .parse()
        .map_err(|e| format!("spec.podCIDR {:?} is not a CIDR: {e}", shown()))?;
    if !c.is_network() {
        return Err(format!(
            "spec.podCIDR {:?} has host bits set (the prefix is {})",
            shown(),
            c.network()
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod node_tests {
    use super::*;

    #[test]
    fn only_spec_pod_cidr_counts_and_it_must_be_a_cidr() {
        // The annotation comes first, as metadata does in what the API server serves.
        let node = br#"{"metadata":{"name":"w1","annotations":{"podCIDR":"0.0.0.0/0"}},"spec":{"podCIDR":"10.244.3.0/24"}}"#;
        assert_eq!(node_pod_cidr(node).unwrap().to_string(), "10.244.3.0/24");
        let v6 = br#"{"metadata":{"name":"w1"},"spec":{"podCIDR":"fd00:244:3::/64"}}"#;
        assert_eq!(node_pod_cidr(v6).unwrap().to_string(), "fd00:244:3::/64");
        let none =
            br#"{"metadata":{"name":"w1","annotations":{"podCIDR":"10.0.0.0/8"}},"spec":{}}"#;
        assert!(node_pod_cidr(none).unwrap_err().contains("no spec.podCIDR"));
        for bad in [
            r#""10.244.3.1/24""#,
            r##""10.244.3.0/24#g; s#x""##,
            r#""10.244.3.0""#,
            r#""10.244.3.0/33""#,
            r#""a\nb""#,
            "24",
        ] {
            let n = format!(r#"{{"metadata":{{"name":"w1"}},"spec":{{"podCIDR":{bad}}}}}"#);
            let e = node_pod_cidr(n.as_bytes()).unwrap_err();
            assert!(
                e.contains("spec.podCIDR") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        assert!(node_pod_cidr(b"not json").is_err());
    }
}
