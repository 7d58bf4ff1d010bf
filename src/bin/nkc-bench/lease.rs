//! Section 3: what a queue lease and XDP steering add to an ADD.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::cni::{cni, cni_call, Pods};
use crate::fixtures::{Bpffs, Nsim};
use crate::stats::{pct, round3, Report};
use crate::util::{Env, Plugin};

/// Section 3, lease cost: ADD p50 (own CPU ms: IPAM's exec excluded) of four netkit-cni networks on one netdevsim NIC, interleaved pod by
/// pod, each pod deleted right after (the pool never runs out): `pair` (plain), `pair` + a
/// 4-queue lease, `single` + the lease, `single` + the lease + XDP, every lease steered. An
/// anchor pod of the XDP network holds one queue throughout, so the dispatcher stays attached
/// as on a node with pods (its first attach is measured on its own at the end: the
/// `lease_xdp_first_add_cost_ms` goal, against `pair`).
pub(crate) fn lease_cost(
    env: &Env,
    ours: &Path,
    n: usize,
    rep: &mut Report,
    raw: &mut Value,
) -> Result<()> {
    const QUEUES: u32 = 4;
    // Queue 0 stays the host's; 1-8 are the pool: the anchor's one and a pod's four fit.
    let nic = Nsim::new(&env.node, 9, 0)?;
    let bpffs = Bpffs::new("lease")?;
    let ipam = |subnet: &str| json!({"type": "host-local", "subnet": subnet, "dataDir": env.data});
    // Steered as a deployment steers (docs/steering.md): the pool out of the default RSS
    // context, the pod's address to an RSS context over its queues. Its cost is part of the
    // lease's.
    let lease = json!({"master": nic.ifname, "queues": QUEUES, "allowedQueues": "1-8",
        "deviceInfoDir": env.data.join("devinfo"),
        "steering": {"rss": "exclude-pool", "match": "ip"}});
    let conf = |name: &str, subnet: &str, extra: Value| {
        let mut c = json!({"cniVersion": "1.0.0", "name": name, "type": "netkit-cni", "ipam": ipam(subnet)});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let plugins = [
        Plugin {
            name: "pair",
            bin: ours.to_path_buf(),
            conf: conf("nkb-pair", "10.140.0.0/16", json!({})),
        },
        Plugin {
            name: "pair+lease4",
            bin: ours.to_path_buf(),
            conf: conf("nkb-plse", "10.141.0.0/16", json!({"lease": lease})),
        },
        Plugin {
            name: "single+lease4",
            bin: ours.to_path_buf(),
            conf: conf(
                "nkb-slse",
                "10.142.0.0/16",
                json!({"pairing": "single", "lease": lease}),
            ),
        },
        Plugin {
            name: "single+lease4+xdp",
            bin: ours.to_path_buf(),
            conf: conf(
                "nkb-sxdp",
                "10.143.0.0/16",
                json!({"pairing": "single", "lease": lease, "xdp": {"bpffs": bpffs.path}}),
            ),
        },
    ];
    // One pod netns per network, reused: DEL removes the pod's device.
    let pods = Pods::make("nkcblse", plugins.len())?;
    let anchor = Pods::make("nkcblanc", 1)?;
    let xdp = &plugins[3];
    cni_call(
        env,
        xdp,
        "ADD",
        "anchor",
        &anchor.path(0),
        "NETKIT_LEASE_QUEUES=1",
        &[],
    )
    .context("anchor pod")?;
    let mut add: Vec<Vec<f64>> = vec![Vec::new(); plugins.len()];
    // A new order every round (fixed seed): what one DEL leaves for the kernel to finish (link
    // events, RCU) lands on whichever ADD follows, so no network may always follow the same one.
    let mut seed: u64 = 0x6e6b_6362_656e_6368;
    for i in 0..n {
        let mut order: Vec<usize> = (0..plugins.len()).collect();
        for k in (1..order.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(k, ((seed >> 33) % (k as u64 + 1)) as usize);
        }
        for j in order {
            let cid = format!("lease-{j}-{i}");
            add[j].push(cni(env, &plugins[j], "ADD", &cid, &pods.path(j))?.own);
            cni(env, &plugins[j], "DEL", &cid, &pods.path(j))?;
        }
    }
    // Without the anchor, every ADD of the XDP network is the NIC's first: it loads, attaches
    // and pins the dispatcher, and its DEL detaches it again.
    cni(env, xdp, "DEL", "anchor", &anchor.path(0))?;
    let mut first = Vec::new();
    for i in 0..n.div_ceil(4).max(3) {
        let cid = format!("first-{i}");
        first.push(cni(env, xdp, "ADD", &cid, &pods.path(3))?.own);
        cni(env, xdp, "DEL", &cid, &pods.path(3))?;
    }
    // The same comparison pod by pod within each round, robust to load that drifts over the run.
    let mut paired: Vec<f64> = add[3].iter().zip(&add[0]).map(|(x, p)| x - p).collect();
    let paired_p50 = pct(&mut paired, 0.5);
    let p50: Vec<f64> = add.iter_mut().map(|v| pct(v, 0.5)).collect();
    let p99: Vec<f64> = add.iter_mut().map(|v| pct(v, 0.99)).collect();
    let first_p50 = pct(&mut first, 0.5);
    let mut per = serde_json::Map::new();
    let mut dat = String::from("# config add_p50_own_cpu_ms\n");
    for (i, p) in plugins.iter().enumerate() {
        per.insert(
            p.name.into(),
            json!({"add_own_p50_ms": p50[i], "add_own_p99_ms": p99[i]}),
        );
        dat.push_str(&format!("{} {:.3}\n", p.name, p50[i]));
    }
    dat.push_str(&format!("xdp-first-attach {first_p50:.3}\n"));
    std::fs::write(env.out_dir.join("lease.dat"), dat)?;
    raw["lease"] = json!({"pods_per_config": n, "nic_rx_queues": 9, "queues_per_pod": QUEUES, "configs": per, "xdp_first_attach_add_own_p50_ms": first_p50, "xdp_first_attach_samples": first.len()});
    rep.goal(
        "lease_xdp_add_cost_ms",
        p50[3] - p50[0],
        "ms",
        "<= 2 ms",
        2.0,
        true,
    );
    let d = first_p50 - p50[0];
    rep.goal(
        "lease_xdp_first_add_cost_ms",
        d,
        "ms",
        "<= 2.5 ms",
        2.5,
        true,
    );
    rep.info("lease_xdp_add_cost_paired_ms", json!(round3(paired_p50)), &format!("{paired_p50:.3} ms: median over rounds of (single + lease + XDP − pair), the same rounds' pods"));
    let d = p50[1] - p50[0];
    rep.info(
        "lease_add_cost_ms",
        json!(round3(d)),
        &format!("{d:.3} ms: own-CPU ADD p50 of pair + {QUEUES}-queue lease − pair"),
    );
    let d = p50[3] - p50[2];
    rep.info("xdp_add_cost_ms", json!(round3(d)), &format!("{d:.3} ms: own-CPU ADD p50 of single + lease + XDP − single + lease (dispatcher already attached)"));
    let d = first_p50 - p50[2];
    rep.info("xdp_first_attach_add_cost_ms", json!(round3(d)), &format!("{d:.3} ms: the NIC's first XDP ADD (loads and attaches the dispatcher) − single + lease"));
    Ok(())
}
