//! Leases for memory providers (`lease.consumer: "memory-provider"`) against the XDP dispatcher,
//! end to end with the plugin binary on a netdevsim NIC: the kernel refuses a memory provider on a
//! NIC carrying any XDP program (`__netif_mp_open_rxq`, net/core/netdev_rx_queue.c) and XDP on a
//! NIC with one bound (`dev_xdp_attach`, net/core/dev.c), so the plugin refuses to build that
//! trap: an MP network's ADD on a NIC with XDP (ours or anyone's), and the dispatcher's first
//! attach while MP leases exist.
//!
//! netdevsim has no queue memory-provider support (no io_uring zcrx, no devmem), so the bind
//! itself cannot run here: everything is tested up to it (the lease on the pair's peer exists,
//! the records and `inspect` say what it is for). The MP network shares the XDP network's
//! device-info directory and bpffs (`lease.bpffs` = `xdp.bpffs`), as the README asks.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use common::steering::*;
use common::xdp::*;
use common::*;
use serde_json::{json, Value};

const NIC_QUEUES: u32 = 6;

/// A pair network leasing one queue of the wire's NIC for a memory provider, with host-local
/// IPAM, writing its records where `xnet` writes its own.
struct MpNet {
    name: String,
    ipam_dir: PathBuf,
    conf: Value,
}

impl MpNet {
    fn new(w: &Wire, xnet: &XdpNet) -> MpNet {
        let name = unique("mpnet");
        let ipam_dir = std::env::temp_dir().join(unique("nkc-ipam-"));
        let conf = json!({
            "cniVersion": "1.1.0", "name": name, "type": "netkit-cni", "pairing": "pair",
            "lease": {"master": w.nic.ifname, "queueIds": [3], "allowedQueues": "1-4",
                      "consumer": "memory-provider", "deviceInfoDir": xnet.dir,
                      "bpffs": w.bpffs.path, "steering": steering("ip")},
            "ipam": {"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": ipam_dir},
        });
        MpNet {
            name,
            ipam_dir,
            conf,
        }
    }

    fn call(&self, w: &Wire, command: &str, cid: &str, pod: &Netns) -> PluginRun {
        run_plugin(
            Some(&w.node),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", pod.path().to_str().unwrap()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", CNI_PATH),
            ],
            &self.conf.to_string(),
        )
    }

    fn info_path(&self, xnet: &XdpNet, cid: &str) -> PathBuf {
        xnet.dir
            .join(format!("{}:{cid}:eth0-device.json", self.name))
    }

    fn reserved(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.ipam_dir.join(&self.name)) else {
            return vec![];
        };
        rd.map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

impl Drop for MpNet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.ipam_dir);
    }
}

/// Physical queue → lessee ifindex, from the kernel's own ynl.
fn leases(ynl: &Ynl, w: &Wire) -> Vec<(u64, u64)> {
    ynl.queue_dump(&w.node, w.nic.ifindex)
        .into_iter()
        .filter(|q| q["type"] == "rx")
        .filter_map(|q| Some((q["id"].as_u64()?, q["lease"]["ifindex"].as_u64()?)))
        .collect()
}

fn netkit_in(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// A refused MP ADD left nothing: no device on either side, no lease, no record, no address.
fn mp_left_nothing(ynl: &Ynl, w: &Wire, xnet: &XdpNet, mp: &MpNet, cid: &str, pod: &Netns) {
    assert_eq!(netkit_in(&w.node), Vec::<String>::new(), "host side left");
    assert_eq!(netkit_in(pod), Vec::<String>::new(), "pod side left");
    assert!(
        !leases(ynl, w).iter().any(|(q, _)| *q == 3),
        "queue 3 still leased: {:?}",
        leases(ynl, w)
    );
    assert!(!mp.info_path(xnet, cid).exists(), "device-info record left");
    assert_eq!(
        mp.reserved(),
        Vec::<String>::new(),
        "address still reserved"
    );
    let rules = w.rules();
    assert!(
        rules.iter().all(|r| r.dst_ip.is_none()),
        "the MP pod's address rule is left: {rules:#?}"
    );
}

/// An XDP program that passes everything, named `name`, attached to `ifindex` in `ns` through a
/// bpf_link; detached when the returned fd is closed.
fn attach_foreign_xdp(ns: &Netns, ifindex: u32, name: &'static str) -> OwnedFd {
    ns.run(move || {
        use libbpf_rs::libbpf_sys as s;
        let insn = |code: u32, imm: i32| s::bpf_insn {
            code: code as u8,
            _bitfield_align_1: [],
            _bitfield_1: s::bpf_insn::new_bitfield_1(0, 0),
            off: 0,
            imm,
        };
        let insns = [
            insn(s::BPF_ALU64 | s::BPF_MOV | s::BPF_K, 2), // XDP_PASS
            insn(s::BPF_JMP | s::BPF_EXIT, 0),
        ];
        let lic = std::ffi::CString::new("GPL").unwrap();
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid instructions, name and license for the duration of the call.
        let prog = unsafe {
            s::bpf_prog_load(
                s::BPF_PROG_TYPE_XDP,
                cname.as_ptr(),
                lic.as_ptr(),
                insns.as_ptr(),
                2,
                std::ptr::null_mut(),
            )
        };
        assert!(prog >= 0, "load the foreign XDP program: errno {}", -prog);
        // SAFETY: a new fd we own.
        let prog = unsafe { OwnedFd::from_raw_fd(prog) };
        let opts = s::bpf_link_create_opts {
            sz: std::mem::size_of::<s::bpf_link_create_opts>() as _,
            flags: s::XDP_FLAGS_SKB_MODE,
            ..Default::default()
        };
        // SAFETY: valid program fd and options.
        let link =
            unsafe { s::bpf_link_create(prog.as_raw_fd(), ifindex as i32, s::BPF_XDP, &opts) };
        assert!(link >= 0, "attach the foreign XDP program: errno {}", -link);
        // SAFETY: a new fd we own.
        unsafe { OwnedFd::from_raw_fd(link) }
    })
}

/// The node's `inspect --json` report, reading this test's bpffs and device-info directory.
fn inspect_report(w: &Wire, xnet: &XdpNet) -> Value {
    inspect_json(
        &w.node,
        &[
            "--bpffs",
            w.bpffs.path.to_str().unwrap(),
            "--device-info-dir",
            xnet.dir.to_str().unwrap(),
        ],
    )
}

fn inspect_queue(report: &Value, nic: &str, id: u64) -> Value {
    let n = report["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == nic)
        .unwrap_or_else(|| panic!("{nic} not in {report:#}"));
    n["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("queue {id} not in {n:#}"))
}

#[test]
fn memory_provider_add_is_refused_on_a_nic_with_our_dispatcher_or_a_foreign_xdp_program() {
    let w = wire(NIC_QUEUES);
    let ynl = Ynl::new();
    let xnet = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let mp = MpNet::new(&w, &xnet);
    let (xpod, mpod) = (Netns::new("pod"), Netns::new("pod"));

    // (1) Our dispatcher, attached by an AF_XDP network's ADD.
    xnet.call(&w, "ADD", "x1", Some(&xpod), "NETKIT_LEASE_QUEUE_IDS=2")
        .ok("XDP ADD");
    let prog = w
        .node
        .xdp_prog_id(&w.nic.ifname)
        .expect("dispatcher attached");
    let e = mp
        .call(&w, "ADD", "m1", &mpod)
        .err("MP ADD on a NIC with the dispatcher");
    assert_eq!(e["code"], 112, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("lease master {}", w.nic.ifname))
            && msg.contains(&format!("netkit-cni XDP dispatcher (program id {prog}")),
        "names the NIC and our dispatcher: {e}"
    );
    mp_left_nothing(&ynl, &w, &xnet, &mp, "m1", &mpod);
    assert_eq!(
        w.bpffs
            .plugin_entries()
            .iter()
            .filter(|e| !e.contains('/'))
            .count(),
        1,
        "only the dispatcher's NIC directory: {:?}",
        w.bpffs.plugin_entries()
    );
    xnet.call(&w, "DEL", "x1", Some(&xpod), "").ok("XDP DEL");
    assert_eq!(
        w.node.xdp_prog_id(&w.nic.ifname),
        None,
        "dispatcher detached"
    );

    // (2) Someone else's program, in generic mode.
    let link = attach_foreign_xdp(&w.node, w.nic.ifindex, "nkc_test_fw");
    let foreign = w
        .node
        .xdp_prog_id(&w.nic.ifname)
        .expect("foreign program attached");
    let e = mp
        .call(&w, "ADD", "m2", &mpod)
        .err("MP ADD on a NIC with a foreign program");
    assert_eq!(e["code"], 112, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&w.nic.ifname)
            && msg.contains(&format!(
                "XDP program id {foreign} name \"nkc_test_fw\" (generic mode), not netkit-cni's"
            )),
        "names the NIC and the foreign program: {e}"
    );
    mp_left_nothing(&ynl, &w, &xnet, &mp, "m2", &mpod);
    assert_eq!(
        w.bpffs.plugin_entries(),
        Vec::<String>::new(),
        "the MP ADD's lock directory is removed again"
    );
    drop(link);
    assert_eq!(w.node.xdp_prog_id(&w.nic.ifname), None);

    // (5) Without XDP on the NIC: pair + lease + memory provider goes through, up to the bind
    // netdevsim cannot do. The lease is on the pair's peer, in the pod.
    let r = mp
        .call(&w, "ADD", "m3", &mpod)
        .ok("MP ADD without XDP")
        .json();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 2, "{r}");
    let peer = mpod.ifindex("eth0") as u64;
    assert!(
        leases(&ynl, &w).contains(&(3, peer)),
        "queue 3 leased to the peer: {:?}",
        leases(&ynl, &w)
    );
    let q = ynl.queue_get(&w.node, w.nic.ifindex, 3);
    assert!(
        q.get("io-uring").is_none() && q.get("dmabuf").is_none(),
        "nothing bound yet: {q}"
    );
    // `match: ip`: the pod's IPAM address is steered to its queue, as ethtool reads it.
    let addr = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let rules = w.rules();
    let rule = rules
        .iter()
        .find(|r| r.dst_ip.as_deref() == Some(addr))
        .unwrap_or_else(|| panic!("no ntuple rule for {addr}: {rules:#?}"));
    assert_steers(&w.node, &w.nic.ifname, rule, &[3]);
    mp.call(&w, "DEL", "m3", &mpod).ok("MP DEL");
    mp_left_nothing(&ynl, &w, &xnet, &mp, "m3", &mpod);
}

#[test]
fn the_dispatcher_is_not_attached_while_memory_provider_leases_exist() {
    let w = wire(NIC_QUEUES);
    let ynl = Ynl::new();
    let xnet = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let mp = MpNet::new(&w, &xnet);
    let (xpod, mpod) = (Netns::new("pod"), Netns::new("pod"));

    mp.call(&w, "ADD", "m1", &mpod).ok("MP ADD");
    let rec: Value =
        serde_json::from_slice(&std::fs::read(mp.info_path(&xnet, "m1")).unwrap()).unwrap();
    assert_eq!(rec["netkit-lease"]["consumer"], "memory-provider", "{rec}");

    // (3) The XDP network's first ADD would attach the dispatcher: refused, naming the lease.
    let e = xnet
        .call(&w, "ADD", "x1", Some(&xpod), "NETKIT_LEASE_QUEUE_IDS=2")
        .err("XDP ADD while an MP lease exists");
    assert_eq!(e["code"], 110, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("netkit-cni/{}/m1/eth0", mp.name))
            && msg.contains("3->1")
            && msg.contains("memory provider"),
        "names the MP lease: {e}"
    );
    assert_eq!(w.node.xdp_prog_id(&w.nic.ifname), None, "no XDP attached");
    assert_eq!(
        w.bpffs.plugin_entries(),
        Vec::<String>::new(),
        "no dispatcher directory left"
    );
    assert_eq!(
        netkit_in(&xpod),
        Vec::<String>::new(),
        "XDP pod's device rolled back"
    );
    assert_eq!(
        leases(&ynl, &w)
            .into_iter()
            .map(|(q, _)| q)
            .collect::<Vec<_>>(),
        vec![3],
        "only the MP lease is left"
    );

    // (4) inspect says what each lease is for.
    let report = inspect_report(&w, &xnet);
    let q3 = inspect_queue(&report, &w.nic.ifname, 3);
    assert_eq!(q3["lease"]["consumer"], "memory-provider", "{q3}");
    assert_eq!(q3["lease"]["container_id"], "m1", "{q3}");

    // After the MP pod's DEL the XDP network works, and its lease says af-xdp.
    mp.call(&w, "DEL", "m1", &mpod).ok("MP DEL");
    xnet.call(&w, "ADD", "x1", Some(&xpod), "NETKIT_LEASE_QUEUE_IDS=2")
        .ok("XDP ADD after the MP DEL");
    assert!(
        w.node.xdp_prog_id(&w.nic.ifname).is_some(),
        "dispatcher attached"
    );
    assert_eq!(xnet.info("x1")["consumer"], "af-xdp");
    let q2 = inspect_queue(&inspect_report(&w, &xnet), &w.nic.ifname, 2);
    assert_eq!(q2["lease"]["consumer"], "af-xdp", "{q2}");
    let table = inspect(
        &w.node,
        &[
            "--bpffs",
            w.bpffs.path.to_str().unwrap(),
            "--device-info-dir",
            xnet.dir.to_str().unwrap(),
        ],
    );
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("CONSUMER") && table.contains(" af-xdp "),
        "{table}"
    );

    // A second XDP pod only opens the attached dispatcher; an MP ADD is now refused.
    let e = mp
        .call(&w, "ADD", "m2", &mpod)
        .err("MP ADD with the dispatcher back");
    assert_eq!(e["code"], 112, "{e}");
    xnet.call(&w, "DEL", "x1", Some(&xpod), "").ok("XDP DEL");
    assert_eq!(w.node.xdp_prog_id(&w.nic.ifname), None);
}
