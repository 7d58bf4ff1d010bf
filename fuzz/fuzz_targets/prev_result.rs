//! Results (`prevResult`, IPAM output): `CniResult::from_json_at` across every version. The first
//! input byte picks the version, the rest is the JSON document.
//!
//! Errors are code 6, name `prevResult` and are bounded. An accepted result, written in any
//! version with `to_json`, reads back in that version as itself minus what the version cannot
//! carry (the 1.1.0-only interface and route fields): the conversion a chained plugin and the
//! IPAM fallback rely on.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use netkit_cni::cni::{CniResult, CniVersion, Route};
use serde_json::Value;

/// `r` as it survives a trip through `version`.
fn as_carried_by(r: &CniResult, version: CniVersion) -> CniResult {
    let mut r = r.clone();
    if !version.has_1_1_fields() {
        for i in &mut r.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for route in &mut r.routes {
            *route = Route::new(route.dst, route.gw);
        }
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let versions = CniVersion::SUPPORTED;
    let version = versions[usize::from(selector) % versions.len()];
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    match CniResult::from_json_at(&value, version, "prevResult") {
        Err(e) => {
            common::check_error(&e, &[6], json.len());
            assert!(e.msg.contains("prevResult"), "{}", e.msg);
        }
        Ok(r) => {
            for v in versions {
                let out = r.to_json(v);
                let back = CniResult::from_json(&out, v)
                    .unwrap_or_else(|e| panic!("{v} output does not read back: {e}\n{out}"));
                assert_eq!(back, as_carried_by(&r, v), "through {v}: {out}");
            }
        }
    }
});
