//! Section 7: callgrind's instruction counts of one ADD and one DEL.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::cni::{cni, cni_call, Pods};
use crate::stats::Report;
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
    raw["instructions"] = Value::Object(counts);
    Ok(())
}
