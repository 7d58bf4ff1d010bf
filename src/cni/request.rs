//! The parse layer: everything the plugin checks about a request before it acts on it, in the
//! order it checks it, as one function. The binary calls it first; `tests/corpus.rs` and the
//! fuzz targets call it alone. It reads nothing but its arguments and touches neither the kernel
//! nor the filesystem, so a request it rejects has changed nothing.

use std::ffi::OsString;

use serde_json::Value;

use crate::cni::config::{ConfigError, NetConf};
use crate::cni::version::version_of_config;
use crate::cni::{check_command_allowed, version_response, CniEnv, CniError, Command};

/// CNI_ARGS keys accepted without `IgnoreUnknown=1`. CNI_ARGS is passed on unchanged to the IPAM
/// delegate, so keys meant for it must get through us: `IP` is host-local's request for a fixed
/// address, and the `K8S_POD_*` keys are what Kubernetes runtimes send for every pod.
pub const KNOWN_ARGS: &[&str] = &[
    // A pod's lease request (bounded by the admin's lease block).
    crate::cni::config::ARG_QUEUES,
    crate::cni::config::ARG_QUEUE_IDS,
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// A request that passed the parse layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// CNI_COMMAND=VERSION: `response` is the whole answer to print. VERSION reads no other
    /// variable and needs no config, so nothing else was checked.
    Version { response: Value },
    /// Every other command, with its validated environment and config (prevResult included).
    /// The config is boxed to keep the enum small; it is built once per invocation.
    Network { env: CniEnv, conf: Box<NetConf> },
}

/// Parses and validates one invocation: `env` looks up a variable of the process environment
/// (the binary passes `std::env::var_os`), `stdin` is the complete standard input.
///
/// Order, so that the error reported is the one that explains the others: the environment (the
/// command decides what else is needed), then the config's `cniVersion` (it decides whether the
/// command exists and how `prevResult` is read, and an unsupported version must win over keys a
/// newer spec may have added), then the rest of the config, then CNI_ARGS keys.
pub fn parse_request(
    env: impl Fn(&str) -> Option<OsString>,
    stdin: &[u8],
) -> Result<Invocation, CniError> {
    let env = CniEnv::from_os_lookup(env)?;
    if env.command == Command::Version {
        return Ok(Invocation::Version {
            response: version_response(stdin)?,
        });
    }
    let value: Value =
        serde_json::from_slice(stdin).map_err(|e| ConfigError::Decode(e.to_string()))?;
    let version = version_of_config(&value)?;
    check_command_allowed(env.command, version)?;
    let conf = NetConf::from_value(value)?;
    if env.command == Command::Check && conf.prev_result.is_none() {
        // CHECK compares the attachment with what ADD reported; without it there is nothing
        // to check against (the reference plugins refuse the same way).
        return Err(CniError::invalid_config(
            "field prevResult is missing",
            "CHECK needs the result of the ADD it checks in prevResult",
        ));
    }
    env.args.check_known(KNOWN_ARGS)?;
    Ok(Invocation::Network {
        env,
        conf: Box::new(conf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::{CniVersion, IfName};
    use serde_json::json;
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect()
    }

    fn add_env() -> HashMap<String, OsString> {
        vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-1"),
            ("CNI_NETNS", "/var/run/netns/ctr-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ])
    }

    fn conf() -> Value {
        json!({"cniVersion": "1.1.0", "name": "pods", "type": "netkit-cni",
               "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}})
    }

    fn parse(env: &HashMap<String, OsString>, stdin: &Value) -> Result<Invocation, CniError> {
        parse_request(|k| env.get(k).cloned(), stdin.to_string().as_bytes())
    }

    #[test]
    fn add_request_parses() {
        let Invocation::Network { env, conf: c } = parse(&add_env(), &conf()).unwrap() else {
            panic!("not a network request")
        };
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.ifname, Some(IfName::parse("eth0").unwrap()));
        assert_eq!(c.cni_version, CniVersion::V1_1_0);
        assert_eq!(c.raw, conf());
    }

    #[test]
    fn version_needs_no_config() {
        let env = vars(&[("CNI_COMMAND", "VERSION")]);
        let r = parse_request(|k| env.get(k).cloned(), b"").unwrap();
        let Invocation::Version { response } = r else {
            panic!("not a VERSION request")
        };
        assert_eq!(response["cniVersion"], "1.1.0");
    }

    #[test]
    fn environment_errors_come_before_config_errors() {
        let mut env = add_env();
        env.remove("CNI_IFNAME");
        let err = parse_request(|k| env.get(k).cloned(), b"{garbage").unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_IFNAME"), "{}", err.msg);
    }

    #[test]
    fn non_utf8_variable_is_code_4_naming_it() {
        let mut env = add_env();
        env.insert(
            "CNI_IFNAME".into(),
            OsString::from_vec(b"eth\xff0".to_vec()),
        );
        let err = parse(&env, &conf()).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("CNI_IFNAME") && err.msg.contains("UTF-8"),
            "{}",
            err.msg
        );
        // A variable the command does not read is not looked at.
        let mut env = vars(&[("CNI_COMMAND", "VERSION")]);
        env.insert("CNI_IFNAME".into(), OsString::from_vec(b"\xff".to_vec()));
        parse_request(|k| env.get(k).cloned(), b"").unwrap();
    }

    #[test]
    fn command_gated_by_config_version_before_keys() {
        let mut env = add_env();
        env.insert("CNI_COMMAND".into(), "GC".into());
        let mut c = conf();
        c["cniVersion"] = json!("1.0.0");
        c["futureKey"] = json!(1);
        let err = parse(&env, &c).unwrap_err();
        assert_eq!(err.code, 1);
        assert!(err.msg.contains("GC"), "{}", err.msg);
    }

    #[test]
    fn check_needs_prev_result() {
        let mut env = add_env();
        env.insert("CNI_COMMAND".into(), "CHECK".into());
        let err = parse(&env, &conf()).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("prevResult"), "{}", err.msg);
        let mut c = conf();
        c["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5/16"}]});
        parse(&env, &c).unwrap();
    }

    #[test]
    fn cni_args_keys_are_checked_after_the_config() {
        let mut env = add_env();
        env.insert(
            "CNI_ARGS".into(),
            "K8S_POD_NAME=web-0;IP=10.1.0.9;FOO=1".into(),
        );
        let err = parse(&env, &conf()).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("\"FOO\""), "{}", err.msg);
        env.insert("CNI_ARGS".into(), "IgnoreUnknown=1;FOO=1".into());
        parse(&env, &conf()).unwrap();
        // A config error is reported first.
        env.insert("CNI_ARGS".into(), "FOO=1".into());
        let mut c = conf();
        c["mtu"] = json!(1);
        assert_eq!(parse(&env, &c).unwrap_err().code, 7);
    }
}
