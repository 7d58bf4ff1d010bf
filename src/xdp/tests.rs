//! Unprivileged unit tests: path derivation, id validation, and the Rust constants against the
//! compiled BPF object (opening a skeleton parses the ELF only, no bpf(2) calls).

use std::mem::MaybeUninit;
use std::path::Path;

use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::AsRawLibbpf;
use libbpf_rs::MapType;

use super::paths::{NicKey, NicPaths, PodId};
use super::skel::types::{nkc_action, nkc_queue, nkc_stats};
use super::skel::DispatcherSkelBuilder;
use super::{XdpError, MAX_QUEUES, MAX_VQUEUES};

fn invalid(r: Result<PodId, XdpError>) -> &'static str {
    match r {
        Err(XdpError::InvalidId { what, .. }) => what,
        other => panic!("expected InvalidId, got {other:?}"),
    }
}

#[test]
fn nic_dir_names_differ_by_netns_and_ifindex() {
    let a = NicKey {
        netns_cookie: 1,
        ifindex: 12,
    };
    let b = NicKey {
        netns_cookie: 11,
        ifindex: 2,
    };
    let c = NicKey {
        netns_cookie: 1,
        ifindex: 2,
    };
    assert_eq!(a.dir_name(), "netns1-if12");
    assert_ne!(a.dir_name(), b.dir_name());
    assert_ne!(a.dir_name(), c.dir_name());
    assert_ne!(b.dir_name(), c.dir_name());
}

#[test]
fn nic_and_pod_paths() {
    let nic = NicKey {
        netns_cookie: 4097,
        ifindex: 3,
    };
    let p = NicPaths::new(Path::new("/sys/fs/bpf"), &nic);
    assert_eq!(p.dir, Path::new("/sys/fs/bpf/netkit-cni/netns4097-if3"));
    assert_eq!(
        p.link(),
        Path::new("/sys/fs/bpf/netkit-cni/netns4097-if3/link")
    );
    let pod = PodId::new("a1b2c3", "eth0").unwrap();
    assert_eq!(
        p.pod_xskmap(&pod),
        Path::new("/sys/fs/bpf/netkit-cni/netns4097-if3/pods/a1b2c3/eth0/xsks")
    );
    assert_eq!(
        p.pod_dir(&pod),
        Path::new("/sys/fs/bpf/netkit-cni/netns4097-if3/pods/a1b2c3/eth0")
    );
    assert_eq!(pod.to_string(), "a1b2c3/eth0");
}

#[test]
fn pod_paths_do_not_alias() {
    // With a flat "<cid>-<ifname>" name these two would collide; nested directories do not.
    let p = NicPaths::new(
        Path::new("/b"),
        &NicKey {
            netns_cookie: 1,
            ifindex: 1,
        },
    );
    let x = PodId::new("a-b", "c").unwrap();
    let y = PodId::new("a", "b-c").unwrap();
    assert_ne!(p.pod_xskmap(&x), p.pod_xskmap(&y));
}

#[test]
fn container_ids_follow_the_cni_grammar() {
    for ok in ["a", "0", "abc-DEF_1.2", &"f".repeat(64), &"a".repeat(255)] {
        PodId::new(ok, "eth0").unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    for bad in [
        "",
        ".",
        "..",
        "-a",
        "_a",
        ".a",
        "a/b",
        "a b",
        "a:b",
        "é",
        "a\0",
        &"a".repeat(256),
    ] {
        assert_eq!(invalid(PodId::new(bad, "eth0")), "container id", "{bad:?}");
    }
}

#[test]
fn interface_names_follow_the_kernel_rules() {
    for ok in ["eth0", "a", "net1.100", "x-y_z@", &"n".repeat(15)] {
        PodId::new("c1", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a:b",
        "a b",
        "a\tb",
        "a\0",
        &"n".repeat(16),
    ] {
        assert_eq!(invalid(PodId::new("c1", bad)), "interface name", "{bad:?}");
    }
}

#[test]
fn shared_types_have_the_c_layout() {
    // Generated from BTF by libbpf-cargo; these pin the ABI the pinned maps carry across
    // upgrades: changing them needs a migration, not just a rebuild.
    assert_eq!(std::mem::size_of::<nkc_queue>(), 8);
    assert_eq!(std::mem::size_of::<nkc_stats>(), 48);
    assert_eq!(nkc_action::NKC_ACTION_PASS.0, 0);
    assert_eq!(nkc_action::NKC_ACTION_DROP.0, 1);
    assert_eq!(nkc_action::NKC_ACTION_POD.0, 2);
    assert_eq!(nkc_action::NKC_ACTION_PROGRAM.0, 3);
    // An all-zero entry (a queue never written) must mean pass.
    assert_eq!(nkc_queue::default().action, nkc_action::NKC_ACTION_PASS);
    assert_eq!(std::mem::offset_of!(nkc_queue, vqueue), 0);
    assert_eq!(std::mem::offset_of!(nkc_queue, action), 4);
    assert_eq!(std::mem::offset_of!(nkc_queue, base), 5);
    assert_eq!(std::mem::offset_of!(nkc_queue, reserved), 6);
    assert_eq!(std::mem::size_of::<nkc_queue>(), super::table::ENTRY);
}

#[test]
fn queue_entries_pack_into_the_word_the_dispatcher_loads() {
    use super::table::{pack, unpack};
    let e = nkc_queue {
        vqueue: 0x0102_0304,
        action: nkc_action::NKC_ACTION_POD,
        base: nkc_action::NKC_ACTION_DROP,
        reserved: 0,
    };
    // The packed word is the struct's own memory image, i.e. what a 64-bit load of the C
    // struct yields on this machine.
    // SAFETY: both are 8 bytes of plain data.
    let image: u64 = unsafe { std::mem::transmute(e) };
    assert_eq!(pack(&e), image);
    let back = unpack(pack(&e));
    assert_eq!(
        (back.vqueue, back.action, back.base, back.reserved),
        (e.vqueue, e.action, e.base, 0)
    );
    assert_eq!(pack(&nkc_queue::default()), 0);
}

#[test]
fn rust_constants_match_the_bpf_object() {
    let mut obj = MaybeUninit::uninit();
    let open = DispatcherSkelBuilder::default()
        .open(&mut obj)
        .expect("open embedded object");
    let m = &open.maps;
    // The queue table is the `.data.queues` global: one value of MAX_QUEUES entries.
    assert_eq!(m.data_queues.max_entries(), 1);
    assert_eq!(
        m.data_queues.value_size() as usize,
        MAX_QUEUES as usize * std::mem::size_of::<nkc_queue>()
    );
    assert_eq!(
        m.data_queues_data.as_ref().expect("table").nkc_queues.len(),
        MAX_QUEUES as usize
    );
    assert_eq!(m.pod_xsks.max_entries(), MAX_QUEUES);
    assert_eq!(m.pod_xsks.map_type(), MapType::ArrayOfMaps);
    assert_eq!(m.programs.max_entries(), MAX_QUEUES);
    assert_eq!(m.programs.map_type(), MapType::ProgArray);
    assert_eq!(m.stats.max_entries(), MAX_QUEUES);
    assert_eq!(
        m.stats.value_size() as usize,
        std::mem::size_of::<nkc_stats>()
    );
    // The inner map template: pod XSKMAPs the loader creates must match it exactly.
    // SAFETY: the open object owns the map; the inner map pointer lives as long.
    let inner = unsafe {
        libbpf_rs::libbpf_sys::bpf_map__inner_map(m.pod_xsks.as_libbpf_object().as_ptr())
    };
    assert!(!inner.is_null(), "pod_xsks has no inner map template");
    // SAFETY: non-null map pointer of the open object.
    let (ty, max) = unsafe {
        (
            libbpf_rs::libbpf_sys::bpf_map__type(inner),
            libbpf_rs::libbpf_sys::bpf_map__max_entries(inner),
        )
    };
    assert_eq!(ty, libbpf_rs::libbpf_sys::BPF_MAP_TYPE_XSKMAP);
    assert_eq!(max, MAX_VQUEUES);
    // The statistics knob defaults to off.
    assert!(
        !open
            .maps
            .rodata_data
            .as_ref()
            .expect("rodata")
            .nkc_stats_enabled
    );
}
