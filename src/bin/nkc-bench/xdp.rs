//! Section 4: the XDP dispatcher's per-packet cost (BPF_PROG_TEST_RUN) against a bare program and
//! libxdp's dispatcher.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use netkit_cni::xdp::testrun::verdict::{XDP_DROP, XDP_PASS, XDP_REDIRECT};
use netkit_cni::xdp::testrun::{
    attach_xdp, ns_per_packet, test_run_xdp, verdict_program, xsk_redirect_program, XdpInput,
};
use netkit_cni::xdp::{Dispatcher, DispatcherOptions, PodId, QueueRanges};
use netkit_cni::xsk::{Xsk, XskConfig};
use serde_json::{json, Value};

use crate::fixtures::{Bpffs, NetnsGuard};
use crate::stats::{round3, Report};
use crate::util::{enter_in_child, have, in_netns, netns_fd, scratch, sh, Env};

/// The XDP_PASS object handed to xdp-loader (bpf/bench_pass.bpf.c, compiled by build.rs).
pub(crate) const BENCH_PASS_OBJ: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bench_pass.bpf.o"));

/// libxdp's multi-program dispatcher: `xdp-loader load -m skb` of one XDP_PASS program on
/// `ifname` (in the netns `ns`), with libxdp's pins under `pins`. Returns the dispatcher's program
/// (opened by id) and its id, or why there is none.
pub(crate) fn libxdp_dispatcher(
    ns: &str,
    ifname: &str,
    pins: &Path,
) -> std::result::Result<(OwnedFd, u64), String> {
    if !have("xdp-loader") {
        return Err("xdp-loader is not installed (Debian package xdp-tools)".into());
    }
    let obj = scratch().join("bench_pass.bpf.o");
    std::fs::write(&obj, BENCH_PASS_OBJ).map_err(|e| format!("writing {}: {e}", obj.display()))?;
    std::fs::create_dir_all(pins).map_err(|e| format!("{}: {e}", pins.display()))?;
    let fd = netns_fd(ns).map_err(|e| e.to_string())?;
    let mut c = Command::new("xdp-loader");
    c.args(["load", "-m", "skb", ifname])
        .arg(&obj)
        .env("LIBXDP_BPFFS", pins);
    enter_in_child(&mut c, fd.as_fd());
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running xdp-loader: {e}"))?;
    let _ = std::fs::remove_file(&obj);
    if !out.status.success() {
        return Err(format!(
            "xdp-loader load failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let link = sh(&["ip", "-n", ns, "-j", "-d", "link", "show", "dev", ifname])
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&link).map_err(|e| format!("ip -j link: {e}"))?;
    let prog = &v[0]["xdp"]["prog"];
    let (Some(id), Some(name)) = (prog["id"].as_u64(), prog["name"].as_str()) else {
        return Err(format!(
            "no XDP program on {ifname} after xdp-loader load: {}",
            v[0]["xdp"]
        ));
    };
    if name != "xdp_dispatcher" {
        return Err(format!("libxdp attached {name} directly, without its dispatcher (its multi-program mode failed its kernel compatibility check)"));
    }
    // SAFETY: plain syscall wrapper; a non-negative return is a new fd we own.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id as u32) };
    if fd < 0 {
        return Err(format!(
            "BPF_PROG_GET_FD_BY_ID {id}: {}",
            std::io::Error::from_raw_os_error(-fd)
        ));
    }
    // SAFETY: fd is a fresh program fd owned by nobody else.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, id))
}

/// Section 4, XDP dispatcher cost with BPF_PROG_TEST_RUN, in a throwaway netns, every program attached
/// to a veth of its own (see `attach_xdp` on direct vs indirect calls): a bare XDP_PASS, our
/// dispatcher on a pass queue and on a pod queue (redirect into the pod's XSKMAP, a real AF_XDP
/// socket in it), the canonical AF_XDP redirect program (the pod path's fair baseline), and
/// libxdp's dispatcher with one XDP_PASS program. Best of `rounds` alternating rounds each.
pub(crate) fn xdp_cost(env: &Env, rounds: u32, rep: &mut Report, raw: &mut Value) -> Result<()> {
    const REPEAT: u32 = 1_000_000;
    let ns = NetnsGuard::new(format!("nkcbxdp{}", std::process::id()))?;
    let veth = |a: &str, b: &str, q: &str| -> Result<u32> {
        sh(&[
            "ip",
            "-n",
            &ns.0,
            "link",
            "add",
            a,
            "numtxqueues",
            q,
            "numrxqueues",
            q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            q,
            "numrxqueues",
            q,
        ])?;
        sh(&["ip", "-n", &ns.0, "link", "set", a, "up"])?;
        sh(&["ip", "-n", &ns.0, "link", "set", b, "up"])?;
        let v: Value =
            serde_json::from_str(&sh(&["ip", "-n", &ns.0, "-j", "link", "show", "dev", a])?)?;
        v[0]["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .context("ifindex")
    };
    let disp_if = veth("xdisp0", "xdisp1", "8")?;
    let bare_if = veth("xbare0", "xbare1", "1")?;
    let canon_if = veth("xcanon0", "xcanon1", "1")?;
    veth("xlibxdp0", "xlibxdp1", "1")?;
    let bpffs = Bpffs::new("xdp")?;
    let libxdp = libxdp_dispatcher(&ns.0, "xlibxdp0", &bpffs.path.join("libxdp"));
    let pins = bpffs.path.clone();
    let fd = netns_fd(&ns.0)?;
    let libxdp_fd = libxdp.as_ref().ok().map(|(f, _)| f.as_fd());
    let jit_dir = env.out_dir.join("xdp-jit");
    std::fs::create_dir_all(&jit_dir)?;
    let best = in_netns(fd.as_fd(), move || {
        let opts = DispatcherOptions {
            bpffs: pins.clone(),
            ..Default::default()
        };
        let (d, _) =
            Dispatcher::attach_or_open(&opts, disp_if, &QueueRanges::from_json("[]", &pins)?)?;
        let h = d.set_queue_pod(2, &PodId::new("nkc-bench", "eth0")?, 0)?;
        let xsk = Xsk::bind(
            disp_if,
            0,
            &XskConfig {
                frames: 64,
                ring_size: 32,
                ..Default::default()
            },
        )?;
        xsk.insert_into(&h.xskmap_pin, 0)?;
        let disp = d.program()?;
        let bare = verdict_program(XDP_PASS, false)?;
        let _bare_link = attach_xdp(bare.as_fd(), bare_if)?;
        let flat = libbpf_rs::MapHandle::create(
            libbpf_rs::MapType::Xskmap,
            Some("nkcb_xsks"),
            4,
            4,
            8,
            &libbpf_rs::libbpf_sys::bpf_map_create_opts {
                sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
                ..Default::default()
            },
        )?;
        libbpf_rs::MapCore::update(
            &flat,
            &2u32.to_ne_bytes(),
            &(xsk.fd().as_raw_fd() as u32).to_ne_bytes(),
            libbpf_rs::MapFlags::ANY,
        )?;
        let canon = xsk_redirect_program(flat.as_fd(), XDP_DROP)?;
        let _canon_link = attach_xdp(canon.as_fd(), canon_if)?;
        let pass_in = XdpInput::on_queue(disp_if, 0);
        let pod_in = XdpInput::on_queue(disp_if, 2);
        let mut progs: Vec<(&str, BorrowedFd<'_>, &XdpInput, u32)> = vec![
            ("bare", bare.as_fd(), &pass_in, XDP_PASS),
            ("ours-pass", disp.as_fd(), &pass_in, XDP_PASS),
            ("ours-pod", disp.as_fd(), &pod_in, XDP_REDIRECT),
            ("xsk-redirect", canon.as_fd(), &pod_in, XDP_REDIRECT),
        ];
        if let Some(l) = libxdp_fd {
            progs.push(("libxdp", l, &pass_in, XDP_PASS));
        }
        for (name, prog, input, want) in &progs {
            let got = test_run_xdp(*prog, input, 1)?.retval;
            ensure!(got == *want, "{name}: verdict {got}, expected {want}");
        }
        // The JIT's code of each program, so the added instructions can be read one by one
        // (docs/benchmarks.md): under the icount clock a ns/pkt figure is an instruction count.
        // Debian's bpftool has no libbfd and then refuses `dump jited` altogether, so the JIT
        // image comes from BPF_OBJ_GET_INFO_BY_FD and is disassembled with binutils' objdump. A
        // dump that fails leaves its reason in the file, not the section.
        for (name, prog, _, _) in &progs {
            let id = libbpf_rs::Program::id_from_fd(*prog)?.to_string();
            let xlated = sh(&["bpftool", "prog", "dump", "xlated", "id", &id])
                .unwrap_or_else(|e| format!("{e:#}"));
            std::fs::write(jit_dir.join(format!("{name}.xlated.txt")), xlated)?;
            let bin = jit_dir.join(format!("{name}.jited.bin"));
            let bin_s = bin.to_string_lossy();
            let jited = netkit_cni::xdp::testrun::jited_image(*prog)
                .map_err(anyhow::Error::from)
                .and_then(|image| Ok(std::fs::write(&bin, image)?))
                .and_then(|_| sh(&["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", &bin_s]))
                .unwrap_or_else(|e| format!("{e:#}"));
            std::fs::write(jit_dir.join(format!("{name}.jited.txt")), jited)?;
        }
        let mut best = vec![f64::INFINITY; progs.len()];
        for _ in 0..rounds.max(1) {
            for (i, (_, prog, input, _)) in progs.iter().enumerate() {
                best[i] = best[i].min(ns_per_packet(*prog, input, REPEAT, 1)?);
            }
        }
        Ok(progs
            .iter()
            .map(|p| p.0.to_string())
            .zip(best)
            .collect::<BTreeMap<String, f64>>())
    })?;
    let mut dat = String::from("# program ns_per_packet\n");
    for name in ["bare", "ours-pass", "ours-pod", "xsk-redirect", "libxdp"] {
        if let Some(v) = best.get(name) {
            dat.push_str(&format!("{name} {v:.3}\n"));
        }
    }
    std::fs::write(env.out_dir.join("xdp.dat"), dat)?;
    let ours_pass = best["ours-pass"] - best["bare"];
    let ours_pod = best["ours-pod"] - best["xsk-redirect"];
    raw["xdp"] = json!({"repeat": REPEAT, "rounds": rounds, "ns_per_packet": best,
        "libxdp": match &libxdp { Ok((_, id)) => json!({"dispatcher_prog_id": id}), Err(e) => json!({"error": e}) }});
    // Under the icount clock one guest ns is one instruction: the floor of a per-queue decision is
    // about 8 (load the queue index through the rxq pointer, bound it, load the entry, branch).
    rep.goal(
        "xdp_added_ns_pass",
        ours_pass,
        "ns/pkt",
        "<= 10",
        10.0,
        true,
    );
    rep.goal("xdp_added_ns_pod", ours_pod, "ns/pkt", "<= 15", 15.0, true);
    let d = best["ours-pod"] - best["bare"];
    rep.info(
        "xdp_pod_vs_bare_pass_ns",
        json!(round3(d)),
        &format!("{d:.3} ns/pkt: our pod path (redirect included) − bare XDP_PASS"),
    );
    match best.get("libxdp") {
        Some(l) => {
            let theirs = l - best["bare"];
            rep.info(
                "libxdp_added_ns",
                json!(round3(theirs)),
                &format!(
                    "{theirs:.3} ns/pkt: libxdp's dispatcher with one program − bare XDP_PASS"
                ),
            );
            // Beside ours, not a goal: libxdp's dispatcher makes no per-queue decision.
            rep.info("xdp_added_vs_libxdp", json!(round3(ours_pass / theirs)), &format!("{:.3}: ours (pass path) ÷ libxdp's added cost; libxdp decides nothing per queue", ours_pass / theirs));
        }
        None => {
            let why = libxdp
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_else(|| "libxdp was not measured".into());
            rep.info(
                "xdp_added_vs_libxdp",
                json!(null),
                &format!("not measured: {why}"),
            );
        }
    }
    Ok(())
}
