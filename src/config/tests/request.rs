//! The parse layer ([`crate::cni::request::parse_request`]) with this config: what it checks
//! and in which order.

use super::*;
use crate::cni::request::{parse_request, Invocation};
use crate::cni::Command;
use crate::cni::IfName;
use std::collections::HashMap;
use std::ffi::OsString;
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

fn config() -> Value {
    json!({"cniVersion": "1.1.0", "name": "pods", "type": "netkit-cni",
           "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}})
}

fn parse(env: &HashMap<String, OsString>, stdin: &Value) -> Result<Invocation<NetConf>, CniError> {
    parse_request(|k| env.get(k).cloned(), stdin.to_string().as_bytes())
}

#[test]
fn add_request_parses() {
    let Invocation::Network { env, conf: c } = parse(&add_env(), &config()).unwrap() else {
        panic!("not a network request")
    };
    assert_eq!(env.command, Command::Add);
    assert_eq!(env.ifname, Some(IfName::parse("eth0").unwrap()));
    assert_eq!(c.cni_version, CniVersion::V1_1_0);
    assert_eq!(c.raw, config());
}

#[test]
fn version_needs_no_config() {
    let env = vars(&[("CNI_COMMAND", "VERSION")]);
    let r = parse_request::<NetConf>(|k| env.get(k).cloned(), b"").unwrap();
    let Invocation::Version { response } = r else {
        panic!("not a VERSION request")
    };
    assert_eq!(response["cniVersion"], "1.1.0");
}

#[test]
fn environment_errors_come_before_config_errors() {
    let mut env = add_env();
    env.remove("CNI_IFNAME");
    let err = parse_request::<NetConf>(|k| env.get(k).cloned(), b"{garbage").unwrap_err();
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
    let err = parse(&env, &config()).unwrap_err();
    assert_eq!(err.code, 4);
    assert!(
        err.msg.contains("CNI_IFNAME") && err.msg.contains("UTF-8"),
        "{}",
        err.msg
    );
    // A variable the command does not read is not looked at.
    let mut env = vars(&[("CNI_COMMAND", "VERSION")]);
    env.insert("CNI_IFNAME".into(), OsString::from_vec(b"\xff".to_vec()));
    parse_request::<NetConf>(|k| env.get(k).cloned(), b"").unwrap();
}

#[test]
fn command_gated_by_config_version_before_keys() {
    let mut env = add_env();
    env.insert("CNI_COMMAND".into(), "GC".into());
    let mut c = config();
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
    let err = parse(&env, &config()).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(err.msg.contains("prevResult"), "{}", err.msg);
    let mut c = config();
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
    let err = parse(&env, &config()).unwrap_err();
    assert_eq!(err.code, 4);
    assert!(err.msg.contains("\"FOO\""), "{}", err.msg);
    env.insert("CNI_ARGS".into(), "IgnoreUnknown=1;FOO=1".into());
    parse(&env, &config()).unwrap();
    // A config error is reported first.
    env.insert("CNI_ARGS".into(), "FOO=1".into());
    let mut c = config();
    c["mtu"] = json!(1);
    assert_eq!(parse(&env, &c).unwrap_err().code, 7);
}
