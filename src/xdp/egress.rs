//! Egress: can the node enforce policy on what a pod *sends* through its AF_XDP sockets?
//!
//! Receive is covered: every frame of a leased queue passes the dispatcher on the physical NIC
//! before it reaches the pod's XSKMAP. Transmit is not: an AF_XDP socket bound (through the
//! lease) to the NIC's queue hands its TX descriptors to the driver, and no BPF program runs on
//! that path — neither tc egress (no skb in zero-copy mode) nor XDP. A hook for it has been
//! proposed upstream but is not in the kernel this plugin targets. The probe below looks for one
//! in the running kernel's BTF rather than assuming, so that STATUS tells the operator the truth
//! on whatever kernel the node runs.
//!
//! How: every BPF attach point has an entry in the kernel's `enum bpf_attach_type`, which
//! `/sys/kernel/btf/vmlinux` describes. An AF_XDP transmit hook would add one naming XSK; today
//! none does (the XDP-related ones are `BPF_XDP`, `BPF_XDP_DEVMAP`, `BPF_XDP_CPUMAP`).

use std::ffi::{CStr, CString};

use libbpf_rs::libbpf_sys as sys;

/// What the running kernel offers for AF_XDP transmit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressHook {
    /// The kernel has an attach type for AF_XDP transmit: its name in `enum bpf_attach_type`.
    Available(String),
    /// No such attach type: what the pod sends through AF_XDP cannot be filtered on the node.
    Unavailable {
        /// How many attach types the kernel has (shows the probe read a real enum).
        attach_types: usize,
    },
    /// The kernel's BTF could not be read (no `/sys/kernel/btf/vmlinux`), so it is unknown.
    Unknown(String),
}

impl EgressHook {
    /// One line for STATUS and the logs.
    pub fn describe(&self) -> String {
        match self {
            EgressHook::Available(name) => format!("the kernel has an AF_XDP transmit hook ({name}); netkit-cni does not attach to it yet"),
            EgressHook::Unavailable { attach_types } => format!(
                "egress policy for AF_XDP is unavailable: none of the kernel's {attach_types} BPF attach types hooks AF_XDP transmit, so frames a pod sends through its leased queues bypass every node filter"
            ),
            EgressHook::Unknown(why) => format!("egress policy for AF_XDP is unknown: {why}"),
        }
    }
}

/// Whether a `bpf_attach_type` enumerator names an AF_XDP transmit hook.
fn is_xsk_tx_hook(name: &str) -> bool {
    name.contains("XSK")
}

/// Look for an AF_XDP transmit attach type in the running kernel's BTF.
pub fn probe() -> EgressHook {
    match attach_type_names() {
        Ok(names) => match names.iter().find(|n| is_xsk_tx_hook(n)) {
            Some(n) => EgressHook::Available(n.clone()),
            None => EgressHook::Unavailable {
                attach_types: names.len(),
            },
        },
        Err(why) => EgressHook::Unknown(why),
    }
}

/// The enumerator names of the kernel's `enum bpf_attach_type`.
fn attach_type_names() -> Result<Vec<String>, String> {
    // SAFETY: libbpf returns an owned btf object or an error pointer/NULL; it is freed below and
    // only read in between, through libbpf's accessors and the enum's member array, whose length
    // (vlen) the type itself gives.
    unsafe {
        let btf = sys::btf__load_vmlinux_btf();
        if btf.is_null() || sys::libbpf_get_error(btf.cast()) != 0 {
            return Err("cannot load the kernel's BTF (/sys/kernel/btf/vmlinux)".into());
        }
        let name = CString::new("bpf_attach_type").expect("no NUL");
        let id = sys::btf__find_by_name_kind(btf, name.as_ptr(), sys::BTF_KIND_ENUM);
        let out = if id < 0 {
            Err("the kernel's BTF has no enum bpf_attach_type".into())
        } else {
            let t = sys::btf__type_by_id(btf, id as u32);
            let vlen = ((*t).info & 0xffff) as usize;
            let members = t.add(1).cast::<sys::btf_enum>();
            let mut names = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let m = *members.add(i);
                let p = sys::btf__name_by_offset(btf, m.name_off);
                if !p.is_null() {
                    names.push(CStr::from_ptr(p).to_string_lossy().into_owned());
                }
            }
            Ok(names)
        };
        sys::btf__free(btf);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_xsk_attach_type_counts_as_a_transmit_hook() {
        assert!(!is_xsk_tx_hook("BPF_XDP"));
        assert!(!is_xsk_tx_hook("BPF_XDP_DEVMAP"));
        assert!(!is_xsk_tx_hook("BPF_TCX_EGRESS"));
        assert!(is_xsk_tx_hook("BPF_XSK_TX"));
    }

    /// Reads the build machine's own kernel BTF: the enum must be found and be the real one.
    #[test]
    fn the_probe_reads_the_running_kernels_attach_types() {
        match probe() {
            EgressHook::Unavailable { attach_types } => {
                assert!(attach_types > 30, "only {attach_types} attach types read")
            }
            EgressHook::Available(n) => assert!(n.contains("XSK")),
            EgressHook::Unknown(why) => panic!("the probe could not read this kernel's BTF: {why}"),
        }
    }
}
