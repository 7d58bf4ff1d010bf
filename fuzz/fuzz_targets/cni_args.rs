//! CNI_ARGS: `CniArgs::parse` on arbitrary text, then the whole environment parse with the raw
//! bytes as CNI_ARGS (as a runtime would pass them, including non-UTF-8).
//!
//! An accepted string keeps every non-empty `;`-segment as one `KEY=VALUE` pair with a non-empty
//! key, in order; errors are code 4, name CNI_ARGS and are bounded.
#![no_main]

#[path = "common.rs"]
mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use netkit_cni::cni::{CniArgs, CniEnv};
use netkit_cni::config::KNOWN_ARGS;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        match CniArgs::parse(s) {
            Ok(args) => {
                assert_eq!(args.as_str(), s);
                let segments: Vec<&str> = s.split(';').filter(|p| !p.is_empty()).collect();
                let rebuilt: Vec<String> = args
                    .pairs()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                assert_eq!(rebuilt, segments);
                for (k, _) in args.pairs() {
                    assert!(
                        !k.is_empty() && !k.contains('=') && !k.contains(';'),
                        "{k:?}"
                    );
                    let last = args.pairs().iter().rev().find(|(k2, _)| k2 == k).unwrap();
                    assert_eq!(args.get(k), Some(last.1.as_str()));
                }
                if let Err(e) = args.check_known(KNOWN_ARGS) {
                    assert!(!args.ignore_unknown());
                    common::check_error(&e, &[4], data.len());
                }
            }
            Err(e) => {
                common::check_error(&e, &[4], data.len());
                assert!(e.msg.contains("CNI_ARGS"), "{}", e.msg);
            }
        }
    }

    let lookup = |k: &str| -> Option<OsString> {
        match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("ctr-fuzz".into()),
            "CNI_NETNS" => Some("/var/run/netns/ctr-fuzz".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/usr/lib/cni".into()),
            "CNI_ARGS" => Some(OsString::from_vec(data.to_vec())),
            _ => None,
        }
    };
    match CniEnv::from_os_lookup(lookup) {
        Ok(env) => assert_eq!(env.args.as_str().as_bytes(), data),
        Err(e) => {
            common::check_error(&e, &[4], data.len());
            assert!(e.msg.contains("CNI_ARGS"), "{}", e.msg);
        }
    }
});
