//! The network config as read from stdin: `NetConf::parse` on arbitrary bytes.
//!
//! Beyond "no panic": an error has a config code (1 version, 2 unknown key, 6 decode, 7 value)
//! and bounded text; an accepted config serialized for a delegate (`raw_bytes`) parses back to
//! the same config, so IPAM sees exactly what we validated.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use netkit_cni::cni::CniError;
use netkit_cni::config::NetConf;

fuzz_target!(|data: &[u8]| {
    match NetConf::parse(data) {
        Ok(conf) => {
            let again = NetConf::parse(&conf.raw_bytes())
                .unwrap_or_else(|e| panic!("raw_bytes of an accepted config fails: {e}"));
            assert_eq!(again, conf);
        }
        Err(e) => {
            let code = e.code();
            let cni = CniError::from(e);
            assert_eq!(cni.code, code);
            common::check_error(&cni, &[1, 2, 6, 7], data.len());
        }
    }
});
