//! Helpers for the XDP dispatcher's BPF tests (cargo feature `host-tests`): BPF and veth, no
//! netkit. They run in the VM by default (scripts/vm-tests), because a host's kernel may refuse
//! what they do; NKC_TESTS_ON_HOST=1 runs them on a capable host as root.
//!
//! Every test builds a private world: a quiet throwaway netns ([`Netns::quiet`], deleted on drop)
//! holding a veth pair with 8 RX queues, and a private bpffs mount (unmounted on drop); both come
//! from the rest of the fixture library (`testkit`). This module adds only what the BPF tests need.

pub use super::{unique, xdp_prog_id_in, KernelOk, Netns};

use std::path::Path;

use crate::xsk::{Xsk, XskConfig};
use libbpf_rs::MapCore;

/// Fails loudly (never skips): a privileged test that silently passed unprivileged would prove
/// nothing.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these BPF tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for mounts): run them in \
         the VM with `make host-test` (or as root on a capable host: NKC_TESTS_ON_HOST=1 make host-test)"
    );
}

/// A copy-mode AF_XDP socket on `ifindex`/`queue` (calling thread's netns) with a small UMEM:
/// enough for the tests, which bind several at once.
pub fn bind_xsk(ifindex: u32, queue: u32) -> Xsk {
    let config = XskConfig {
        frames: 64,
        ring_size: 32,
        ..XskConfig::default()
    };
    Xsk::bind(ifindex, queue, &config).kernel("binding an AF_XDP socket")
}

/// Remove slot `slot` of the map pinned at `pin`.
pub fn delete_slot(pin: &Path, slot: u32) {
    let map = libbpf_rs::MapHandle::from_pinned_path(pin)
        .unwrap_or_else(|e| panic!("open {}: {e}", pin.display()));
    map.delete(&slot.to_ne_bytes())
        .unwrap_or_else(|e| panic!("delete {} slot {slot}: {e}", pin.display()));
}
