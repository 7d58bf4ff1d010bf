//! Section 7: callgrind's instruction counts of one ADD and one DEL.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::cni::{cni, cni_call, Pods};
use crate::stats::{round3, Report};
use crate::util::{have, Env, Plugin, CNI_PATH};

/// Section 7's reference: callgrind's instruction count of one ADD and one DEL (pair +
/// host-local, this harness) of the plugin as it was before the profiling changes (commit
/// 6f9a352; docs/benchmarks.md). Measured with NKC_BENCH_BASELINE_PLUGIN pointing at that build.
pub(crate) const INSTRUCTIONS_BEFORE: (&str, u64, u64) = ("6f9a352", 1_068_375, 749_786);

/// callgrind's instruction count of one invocation (the plugin process only: callgrind does not
/// follow host-local), its profile kept in OUT_DIR for callgrind_annotate.
pub(crate) fn instructions(
    env: &Env,
    p: &Plugin,
    cmd: &str,
    cid: &str,
    netns: &str,
    tag: &str,
) -> Result<u64> {
    let prof = env.out_dir.join(format!("callgrind-{tag}.out"));
    let log = env.out_dir.join(format!("callgrind-{tag}.log"));
    let wrap = [
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        "--vgdb=no".into(),
        format!("--callgrind-out-file={}", prof.display()),
        format!("--log-file={}", log.display()),
    ];
    cni_call(env, p, cmd, cid, netns, "", &wrap)?;
    let text = std::fs::read_to_string(&log)?;
    text.lines()
        .find_map(|l| l.split("Collected : ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no instruction count in {}", log.display()))
}

/// Section 7: instructions of one ADD and one DEL (pair + host-local) under callgrind, after a warm-up
/// ADD/DEL; also of NKC_BENCH_BASELINE_PLUGIN when set.
pub(crate) fn add_instructions(
    env: &Env,
    p: &Plugin,
    rep: &mut Report,
    raw: &mut Value,
) -> Result<()> {
    ensure!(
        have("valgrind"),
        "valgrind is not installed (Debian package valgrind)"
    );
    let pod = Pods::make("nkcbcg", 1)?;
    let mut bins = vec![("current", p.bin.clone())];
    if let Some(b) = std::env::var_os("NKC_BENCH_BASELINE_PLUGIN") {
        let copy = Path::new(CNI_PATH).join("netkit-cni-baseline");
        std::fs::copy(&b, &copy)
            .with_context(|| format!("NKC_BENCH_BASELINE_PLUGIN {}", Path::new(&b).display()))?;
        bins.push(("baseline", copy));
    }
    let mut counts = serde_json::Map::new();
    for (tag, bin) in &bins {
        let q = Plugin {
            name: p.name,
            bin: bin.clone(),
            conf: p.conf.clone(),
        };
        cni(env, &q, "ADD", &format!("cg-warm-{tag}"), &pod.path(0))?;
        cni(env, &q, "DEL", &format!("cg-warm-{tag}"), &pod.path(0))?;
        let add = instructions(
            env,
            &q,
            "ADD",
            &format!("cg-{tag}"),
            &pod.path(0),
            &format!("{tag}-add"),
        )?;
        let del = instructions(
            env,
            &q,
            "DEL",
            &format!("cg-{tag}"),
            &pod.path(0),
            &format!("{tag}-del"),
        )?;
        counts.insert((*tag).into(), json!({"add": add, "del": del}));
    }
    let (commit, add_before, del_before) = INSTRUCTIONS_BEFORE;
    let now = &counts["current"];
    let text = format!(
        "one ADD {} / DEL {} instructions; before the profiling changes (commit {commit}): ADD {add_before} / DEL {del_before}",
        now["add"], now["del"]
    );
    rep.info("add_instructions", json!({"add": now["add"], "del": now["del"], "before": {"commit": commit, "add": add_before, "del": del_before}}), &text);
    let add_ir = now["add"].as_u64().context("ADD instruction count")?;
    raw["instructions"] = Value::Object(counts);
    clock_check(env, p, &pod, add_ir, rep, raw)
}

/// The independent check of the clock (section 7, one vCPU online): callgrind's count of the
/// instructions one VERSION and one ADD execute in user space, against the same process's
/// user CPU time under icount (shift=0: 1 ns per instruction) as wait4 reports it, averaged over
/// `CALLS` calls. They differ by construction, and the figures say by how much: the kernel's
/// user/system split of a task's exact `sum_exec_runtime` is tick-sampled (cputime_adjust in
/// kernel/sched/cputime.c), and a task that no tick found in kernel mode has all of its time,
/// exec and page faults included, reported as user time.
fn clock_check(
    env: &Env,
    p: &Plugin,
    pod: &Pods,
    add_ir: u64,
    rep: &mut Report,
    raw: &mut Value,
) -> Result<()> {
    const CALLS: usize = 40;
    let version_ir = instructions(env, p, "VERSION", "cg-version", &pod.path(0), "version")?;
    let (mut v_user, mut v_cpu, mut a_user, mut a_cpu) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..CALLS {
        let v = cni_call(env, p, "VERSION", "clk-v", &pod.path(0), "", &[])?;
        v_user += v.user_ms;
        v_cpu += v.cpu_ms;
        let cid = format!("clk-{i}");
        let a = cni_call(env, p, "ADD", &cid, &pod.path(0), "", &[])?;
        a_user += a.user_ms - a.ipam_user_ms;
        a_cpu += a.cpu_ms - a.ipam_ms;
        cni(env, p, "DEL", &cid, &pod.path(0))?;
    }
    let n = CALLS as f64;
    // ms of icount guest time = 10^6 instructions.
    let row = |ir: u64, user: f64, cpu: f64| {
        json!({"callgrind_user_instructions": ir, "user_ms_mean": round3(user / n), "cpu_ms_mean": round3(cpu / n),
            "user_time_over_callgrind": round3(user / n * 1e6 / ir as f64),
            "cpu_time_over_callgrind": round3(cpu / n * 1e6 / ir as f64)})
    };
    let (v, a) = (row(version_ir, v_user, v_cpu), row(add_ir, a_user, a_cpu));
    rep.info(
        "clock_check",
        json!({"version": v, "add": a, "calls": CALLS}),
        &format!(
            "user CPU time under icount ÷ callgrind's user-space instructions (1 ns each), mean of {CALLS} calls: VERSION {} ({} ms vs {} M), ADD {} ({} ms vs {} M); all CPU time ÷ the same: VERSION {}, ADD {}",
            v["user_time_over_callgrind"], v["user_ms_mean"], round3(version_ir as f64 / 1e6),
            a["user_time_over_callgrind"], a["user_ms_mean"], round3(add_ir as f64 / 1e6),
            v["cpu_time_over_callgrind"], a["cpu_time_over_callgrind"]
        ),
    );
    raw["clock_check"] = json!({"version": v, "add": a, "calls": CALLS});
    Ok(())
}
