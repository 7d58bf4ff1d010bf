//! The binary as a runtime sees it when the input is wrong: every failure is the spec's error
//! object on stdout, with the spec's code, and a non-zero exit. No privileges needed: all of
//! these fail before the plugin touches the kernel.

mod common;

use common::run_plugin;
use serde_json::Value;

const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"n","type":"netkit-cni","ipam":{"type":"host-local","subnet":"10.9.0.0/24"}}"#;

fn add_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    for (k, v) in extra {
        env.retain(|(e, _)| e != k);
        if !v.is_empty() {
            env.push((k, v));
        }
    }
    env
}

fn error_of(env: &[(&str, &str)], stdin: &str) -> Value {
    let r = run_plugin(None, env, stdin);
    assert_eq!(
        r.status.code(),
        Some(1),
        "stdout: {} stderr: {}",
        r.stdout,
        r.stderr
    );
    let v: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", r.stdout));
    assert!(
        v["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "error without msg: {v}"
    );
    v
}

#[test]
fn malformed_json_is_a_decode_error() {
    let v = error_of(&add_env(&[]), "{bad");
    assert_eq!(v["code"], 6, "{v}");
}

#[test]
fn unknown_cni_version_is_code_1_naming_it() {
    let v = error_of(&add_env(&[]), &GOOD.replace("1.0.0", "9.9.9"));
    assert_eq!(v["code"], 1, "{v}");
    assert!(v.to_string().contains("9.9.9"), "{v}");
}

#[test]
fn missing_netns_on_add_is_code_4_naming_it() {
    let v = error_of(&add_env(&[("CNI_NETNS", "")]), GOOD);
    assert_eq!(v["code"], 4, "{v}");
    assert!(v.to_string().contains("CNI_NETNS"), "{v}");
}

#[test]
fn unknown_config_key_is_code_2_naming_it() {
    let v = error_of(
        &add_env(&[]),
        &GOOD.replace("\"name\"", "\"bogusKey\":1,\"name\""),
    );
    assert_eq!(v["code"], 2, "{v}");
    assert!(v.to_string().contains("bogusKey"), "{v}");
}

#[test]
fn bad_mode_is_code_7_naming_field_and_value() {
    let v = error_of(
        &add_env(&[]),
        &GOOD.replace("\"name\"", "\"mode\":\"l4\",\"name\""),
    );
    assert_eq!(v["code"], 7, "{v}");
    let s = v.to_string();
    assert!(s.contains("mode") && s.contains("l4"), "{v}");
}

#[test]
fn ifname_with_slash_is_code_4() {
    let v = error_of(&add_env(&[("CNI_IFNAME", "../eth0")]), GOOD);
    assert_eq!(v["code"], 4, "{v}");
    assert!(v.to_string().contains("CNI_IFNAME"), "{v}");
}

#[test]
fn version_lists_every_supported_version() {
    let r = run_plugin(
        None,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.1.0"}"#,
    );
    assert!(r.status.success(), "{}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    let sup: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for want in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(sup.contains(&want), "{want} missing from {sup:?}");
    }
}

#[test]
fn nothing_goes_to_stdout_but_the_error_object() {
    let r = run_plugin(None, &add_env(&[("CNI_CONTAINERID", "../../etc")]), GOOD);
    assert_eq!(
        r.stdout.trim().lines().count(),
        1,
        "stdout must hold exactly the error object: {:?}",
        r.stdout
    );
    assert_eq!(
        serde_json::from_str::<Value>(r.stdout.trim()).unwrap()["code"],
        4
    );
}

// The admin side (no CNI_COMMAND): `inspect`'s command line. Only failures that happen before
// the kernel is asked anything are checked here; the report itself is tested in the VM
// (tests/vm_inspect.rs).

fn admin(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::plugin_bin())
        .args(args)
        .env_remove("CNI_COMMAND")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn help_lists_inspect_and_version_still_works() {
    let out = admin(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("netkit-cni inspect [--json] [--master IFNAME] [--bpffs PATH]"),
        "{help}"
    );
    assert!(help.contains("--version"), "{help}");
    let out = admin(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("netkit-cni "));
    let out = admin(&["inspect", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in ["--json", "--master IFNAME", "--bpffs PATH"] {
        assert!(
            help.contains(opt),
            "{opt} missing from inspect --help: {help}"
        );
    }
}

#[test]
fn inspect_bad_arguments_exit_2_naming_them() {
    for (args, named) in [
        (&["inspect", "--bogus"][..], "--bogus"),
        (&["inspect", "--master"][..], "--master"),
        (&["inspect", "--bpffs"][..], "--bpffs"),
        (&["inspect", "--master", "bad/name"][..], "--master"),
        (&["inspect", "--json", "--json"][..], "--json"),
    ] {
        let out = admin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(named),
            "{args:?}: stderr must name {named}: {err}"
        );
    }
    let out = admin(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("frobnicate"));
}

#[test]
fn control_and_format_characters_in_cni_ifname_are_code_4() {
    for bad in [
        "e\u{1b}[2J",
        "e\u{b}x",
        "e\u{7f}",
        "e\u{202e}x",
        "e\u{2066}x",
    ] {
        let env = add_env(&[("CNI_IFNAME", bad)]);
        let v = error_of(&env, GOOD);
        assert_eq!(v["code"], 4, "{bad:?}: {v}");
        assert!(v["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{v}");
    }
}

/// A device-info file whose name carries terminal escapes (anyone who may write
/// `deviceInfoDir` can create one) never reaches the terminal through `inspect`'s text output.
#[test]
fn inspect_prints_no_escape_from_a_device_info_file_name() {
    let dir = std::env::temp_dir().join(format!("nkc-cli-esc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "net:c1:\u{1b}[31mX\u{1b}[8m-device.json",
        "net:c1:e\u{202e}x-device.json",
    ] {
        std::fs::write(dir.join(name), b"not json").unwrap();
    }
    let out = admin(&["inspect", "--device-info-dir", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
        "raw escape in inspect's output: {text:?}"
    );
}
