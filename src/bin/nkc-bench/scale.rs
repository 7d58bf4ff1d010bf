//! Section 2: ADD with many pods present against ADD with none, ours and ptp's.

use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};

use crate::cni::{cni, Call, Pods};
use crate::stats::{of, pct, round3, summary, Report};
use crate::util::{Env, Plugin};

/// What [`scale`] found for one plugin in one round.
pub(crate) struct Scale {
    /// The probes' ADDs with no pods present, and with the pods present.
    pub(crate) empty: Vec<Call>,
    pub(crate) loaded: Vec<Call>,
    pub(crate) raw: Value,
}

/// Section 2 for one plugin: 20 ADD/DEL with no pods present, then `n` pods added, 20 ADD/DEL
/// again, then the `n` deleted. Own CPU time (IPAM's exec excluded) decides; wall and total CPU
/// are recorded beside it, and each tenth of the fill shows where growth happens.
pub(crate) fn scale(env: &Env, p: &Plugin, n: usize, round: usize) -> Result<Scale> {
    let tag = &format!("{}{round}", &p.name[..2]);
    let base = Pods::make(&format!("sclb{tag}"), 20)?;
    let probe = |round: &str| -> Result<Vec<Call>> {
        let mut v = Vec::new();
        for i in 0..20 {
            let cid = format!("sc{round}-{tag}-{i}");
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
            &format!("fill-{tag}-{i}"),
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
        cni(env, p, "DEL", &format!("fill-{tag}-{i}"), &fill.path(i))?;
    }
    let del_s = deleting.elapsed().as_secs_f64();
    Ok(Scale {
        raw: json!({"empty": summary(&empty), "loaded": summary(&loaded), "fill_add_own_p50_ms_by_tenth": tenths,
            "fill_netns_s": netns_s, "fill_del_s": del_s}),
        empty,
        loaded,
    })
}

/// Section 2 for both plugins: the scale goals, ours alone and ours against ptp's growth.
pub(crate) fn run(
    env: &Env,
    plugins: &[Plugin; 2],
    (n_scale, rounds): (usize, usize),
    rep: &mut Report,
    secs: &mut serde_json::Map<String, Value>,
    raw: &mut Value,
) -> Result<()> {
    // 2. Scale: ADD p50 with n_scale pods present vs none, ours and ptp's.
    eprintln!("[bench] 2. scale: ADD with {n_scale} pods present, each plugin");
    let t = Instant::now();
    // Round by round the plugins swap places: whichever goes second probes its empty node
    // while the first one's pods are still being torn down (netns cleanup runs on after the
    // last DEL), so neither may always be second.
    let mut empty: [Vec<Call>; 2] = Default::default();
    let mut loaded: [Vec<Call>; 2] = Default::default();
    let mut rounds_raw: [Vec<Value>; 2] = Default::default();
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let s = scale(env, &plugins[i], n_scale, round)?;
            empty[i].extend(s.empty);
            loaded[i].extend(s.loaded);
            rounds_raw[i].push(s.raw);
        }
    }
    let ratio = |i: usize| {
        pct(&mut of(&loaded[i], |c| c.own), 0.5) / pct(&mut of(&empty[i], |c| c.own), 0.5)
    };
    let (nk, pt) = (ratio(0), ratio(1));
    raw["scale"] = json!({"pods_present": n_scale, "rounds": rounds, "order": "round 0 ours first, then alternating",
        "netkit-cni": {"empty": summary(&empty[0]), "loaded": summary(&loaded[0]), "rounds": rounds_raw[0]},
        "ptp": {"empty": summary(&empty[1]), "loaded": summary(&loaded[1]), "rounds": rounds_raw[1]}});
    rep.goal("add_p50_scale", nk, "ratio", "<= 1.2", 1.2, true);
    rep.goal(
        "add_p50_scale_vs_ptp",
        nk / pt,
        "ratio",
        "<= 1.0",
        1.0,
        true,
    );
    rep.info(
        "add_p50_scale_ptp",
        json!(round3(pt)),
        &format!(
            "{pt:.3}: ptp's own-CPU ADD p50 with {n_scale} pods ÷ with none (ours: {nk:.3}), {rounds} round(s), the order alternating"
        ),
    );
    secs.insert("2-scale".into(), json!(t.elapsed().as_secs()));
    Ok(())
}
