//! Section 2: ADD with many pods present against ADD with none, ours and ptp's.

use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};

use crate::cni::{cni, Call, Pods};
use crate::stats::{of, pct, round3, summary, Report};
use crate::util::{Env, Plugin};

/// What [`scale`] found for one plugin.
pub(crate) struct Scale {
    /// Own-CPU ADD p50 with the pods present ÷ without.
    pub(crate) ratio: f64,
    pub(crate) raw: Value,
}

/// Section 2 for one plugin: 20 ADD/DEL with no pods present, then `n` pods added, 20 ADD/DEL
/// again, then the `n` deleted. Own CPU time (IPAM's exec excluded) decides; wall and total CPU
/// are recorded beside it, and each tenth of the fill shows where growth happens.
pub(crate) fn scale(env: &Env, p: &Plugin, n: usize) -> Result<Scale> {
    let tag = &p.name[..2];
    let base = Pods::make(&format!("sclb{tag}"), 20)?;
    let probe = |round: &str| -> Result<Vec<Call>> {
        let mut v = Vec::new();
        for i in 0..20 {
            let cid = format!("sc{round}-{}-{i}", p.name);
            v.push(cni(env, p, "ADD", &cid, &base.path(i))?);
            cni(env, p, "DEL", &cid, &base.path(i))?;
        }
        Ok(v)
    };
    let empty = probe("0")?;
    let made = Instant::now();
    let fill = Pods::make(&format!("sclf{tag}"), n)?;
    let netns_s = made.elapsed().as_secs_f64();
    let mut fill_add = Vec::new();
    for i in 0..n {
        fill_add.push(cni(
            env,
            p,
            "ADD",
            &format!("fill-{}-{i}", p.name),
            &fill.path(i),
        )?);
    }
    let tenths: Vec<f64> = fill_add
        .chunks(n.div_ceil(10))
        .map(|c| round3(pct(&mut of(c, |c| c.own), 0.5)))
        .collect();
    let loaded = probe("1")?;
    let deleting = Instant::now();
    for i in 0..n {
        cni(
            env,
            p,
            "DEL",
            &format!("fill-{}-{i}", p.name),
            &fill.path(i),
        )?;
    }
    let del_s = deleting.elapsed().as_secs_f64();
    let ratio = pct(&mut of(&loaded, |c| c.own), 0.5) / pct(&mut of(&empty, |c| c.own), 0.5);
    Ok(Scale {
        ratio,
        raw: json!({"empty": summary(&empty), "loaded": summary(&loaded), "fill_add_own_p50_ms_by_tenth": tenths,
            "fill_netns_s": netns_s, "fill_del_s": del_s}),
    })
}

/// Section 2 for both plugins: the scale goals, ours alone and ours against ptp's growth.
pub(crate) fn run(
    env: &Env,
    plugins: &[Plugin; 2],
    n_scale: usize,
    rep: &mut Report,
    secs: &mut serde_json::Map<String, Value>,
    raw: &mut Value,
) -> Result<()> {
    // 2. Scale: ADD p50 with n_scale pods present vs none, ours and ptp's.
    eprintln!("[bench] 2. scale: ADD with {n_scale} pods present, each plugin");
    let t = Instant::now();
    let nk = scale(env, &plugins[0], n_scale)?;
    let pt = scale(env, &plugins[1], n_scale)?;
    raw["scale"] = json!({"pods_present": n_scale, "netkit-cni": nk.raw, "ptp": pt.raw});
    rep.goal("add_p50_scale", nk.ratio, "ratio", "<= 1.2", 1.2, true);
    rep.goal(
        "add_p50_scale_vs_ptp",
        nk.ratio / pt.ratio,
        "ratio",
        "<= 1.0",
        1.0,
        true,
    );
    rep.info(
        "add_p50_scale_ptp",
        json!(round3(pt.ratio)),
        &format!(
            "{:.3}: ptp's own-CPU ADD p50 with {n_scale} pods ÷ with none (ours: {:.3})",
            pt.ratio, nk.ratio
        ),
    );
    secs.insert("2-scale".into(), json!(t.elapsed().as_secs()));
    Ok(())
}
