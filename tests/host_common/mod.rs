//! The XDP dispatcher's BPF test helpers: `netkit_cni::testkit::host` (see tests/common).
#[allow(unused_imports)]
pub use netkit_cni::testkit::host::*;
