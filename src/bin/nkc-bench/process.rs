//! Section 6: the process cost of VERSION (CPU time, wall time, peak RSS), ours against ptp's.
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::cni::wait_rusage;
use crate::stats::{ms, pct, round3, Report};
use crate::util::Plugin;

/// Section 6. `add_rss` is section 1's ADD peak RSS p50 (KiB) of ours and ptp's, when it ran.
pub(crate) fn run(
    plugins: &[Plugin; 2],
    add_rss: Option<(f64, f64)>,
    rep: &mut Report,
    secs: &mut serde_json::Map<String, Value>,
    raw: &mut Value,
) -> Result<()> {
    // 6. Process cost: VERSION wall time and peak RSS, ours vs ptp (each process alone, no
    // IPAM), alternating between the two; ADD's peak RSS comes from section 1.
    eprintln!("[bench] 6. process cost of VERSION");
    let t = Instant::now();
    // A child's ru_maxrss starts from the memory it shares with the bench until exec (the
    // kernel records the old mm's peak at exec), so the bench's own peak would floor both
    // plugins' figures: section 5b's socket buffers (16 MiB) did, once. Reset it first
    // (`clear_refs` 5: the peak RSS); what the bench holds now is small.
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the bench's peak RSS")?;
    let mut wall: [Vec<f64>; 2] = Default::default();
    let mut cpu: [Vec<f64>; 2] = Default::default();
    let mut rss: [Vec<f64>; 2] = Default::default();
    for i in 0..30 {
        for k in 0..2 {
            let j = (i + k) % 2;
            let start = Instant::now();
            let child = Command::new(&plugins[j].bin)
                .env_clear()
                .env("CNI_COMMAND", "VERSION")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let out = wait_rusage(child)?;
            wall[j].push(ms(start.elapsed()));
            ensure!(out.status.success(), "{} VERSION failed", plugins[j].name);
            rss[j].push(out.max_rss_kib as f64);
            cpu[j].push(out.cpu_us as f64 / 1e3);
        }
    }
    let (nk_ver, pt_ver) = (pct(&mut wall[0], 0.5), pct(&mut wall[1], 0.5));
    let (nk_rss, pt_rss) = (pct(&mut rss[0], 0.5), pct(&mut rss[1], 0.5));
    raw["process"] = json!({"netkit-cni": {"version_p50_ms": nk_ver, "version_max_rss_kib_p50": nk_rss}, "ptp": {"version_p50_ms": pt_ver, "version_max_rss_kib_p50": pt_rss}});
    let (nk_cpu, pt_cpu) = (pct(&mut cpu[0], 0.5), pct(&mut cpu[1], 0.5));
    raw["process"]["netkit-cni"]["version_cpu_p50_ms"] = json!(nk_cpu);
    raw["process"]["ptp"]["version_cpu_p50_ms"] = json!(pt_cpu);
    // The process's own CPU time (exec, loader, run): under icount its instruction count.
    rep.goal("version_cpu", nk_cpu / pt_cpu, "ratio", "<= 0.3", 0.3, true);
    rep.info(
        "version_wall",
        json!(round3(nk_ver / pt_ver)),
        &format!(
            "{:.3}: VERSION wall p50, {nk_ver:.3} ms ÷ ptp's {pt_ver:.3} ms",
            nk_ver / pt_ver
        ),
    );
    rep.info(
        "version_rss_ratio",
        json!(round3(nk_rss / pt_rss)),
        &format!(
            "{:.3}: VERSION peak RSS p50, {nk_rss} KiB ÷ ptp's {pt_rss} KiB",
            nk_rss / pt_rss
        ),
    );
    if let Some((nk, pt)) = add_rss {
        raw["process"]["netkit-cni"]["add_max_rss_kib_p50"] = json!(nk);
        raw["process"]["ptp"]["add_max_rss_kib_p50"] = json!(pt);
        rep.info("add_rss_ratio", json!(round3(nk / pt)), &format!("{:.3}: ADD peak RSS p50 of the plugin process (section 1), {nk} KiB ÷ ptp's {pt} KiB", nk / pt));
    }
    secs.insert("6-process".into(), json!(t.elapsed().as_secs()));
    Ok(())
}
