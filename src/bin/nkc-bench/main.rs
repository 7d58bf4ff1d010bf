//! `make bench`: netkit-cni against Debian's reference `ptp` plugin (veth), both with host-local
//! IPAM, in the same VM and the same run, interleaved so that machine noise hits both alike.
//! scripts/bench boots the VM with QEMU's icount clock by default: the guest's clock then counts
//! executed instructions, so every figure is an instruction count (a cost model: instructions, not
//! cache misses) that reproduces whatever the host's load. ADD/DEL goals use each plugin process's
//! own CPU time (wait4 rusage) less its IPAM exec's (scripts/lib/ipam-wrap.c).
//!
//! Sections (numbered as in docs/benchmarks.md): 1 ADD/DEL latency (sequential and
//! parallel), 2 scale, 3 lease cost, 4 XDP dispatcher cost, 5 data path (5b: AF_XDP receive rate
//! through a lease; 5c: DPDK testpmd through a lease against af_packet in a ptp pod; 5d: far → pod
//! through the NIC, BPF host routing against ptp), 6 process
//! cost, 7 ADD/DEL instruction counts (callgrind). A section that cannot run (a tool missing, a
//! kernel refusing) records its goals as "not measured" with the reason; it never invents a figure.
//!
//! Usage (inside the VM, as root): nkc-bench OUT_DIR [--quick]
//! Writes OUT_DIR/results.json (with a top-level "ratios" object), OUT_DIR/results.md and the
//! chart data OUT_DIR/{latency,lease,xdp,datapath,afxdp,dpdk,far}.dat.
//! NKC_BENCH_BASELINE_PLUGIN=<binary> also counts the instructions of another build of the
//! plugin (e.g. an older commit) in section 7.

mod afxdp;
mod cni;
mod datapath;
mod dpdk;
mod far;
mod fixtures;
mod instructions;
mod latency;
mod lease;
mod process;
mod scale;
mod stats;
mod util;
mod xdp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::afxdp::AfxdpCounts;
use crate::datapath::DataPathCounts;
use crate::dpdk::DpdkCounts;
use crate::far::FarCounts;
use crate::stats::{section, Report};
use crate::util::{
    netns_add, netns_del, netns_fd, online_cpus, scratch, sh, Env, OneCpu, Plugin, CNI_PATH,
    DEBIAN_CNI, IPAM_REAL, IPAM_RECORDS,
};

/// Every goal by section, so that a skipped section still lists its goals in results.json.
const GOALS: [(&str, &[(&str, &str)]); 11] = [
    (
        "1",
        &[
            ("add_p50_seq", "<= 0.5"),
            ("add_p99_seq", "<= 0.5"),
            ("del_p50_seq", "<= 0.5"),
            ("del_p99_seq", "<= 0.5"),
            ("add_p50_par", "<= 0.5"),
            ("add_p99_par", "<= 0.5"),
            ("del_p50_par", "<= 0.5"),
            ("del_p99_par", "<= 0.5"),
        ],
    ),
    ("1d", &[("add_batch32_guest_time", "<= 1.0")]),
    (
        "2",
        &[
            ("add_p50_scale", "<= 1.2"),
            ("add_p50_scale_vs_ptp", "<= 1.0"),
        ],
    ),
    (
        "3",
        &[
            ("lease_xdp_add_cost_ms", "<= 2 ms"),
            ("lease_xdp_first_add_cost_ms", "<= 2.5 ms"),
        ],
    ),
    (
        "4",
        &[
            ("xdp_added_ns_pass", "<= 10"),
            ("xdp_added_ns_pod", "<= 15"),
        ],
    ),
    (
        "5",
        &[
            ("datapath_tcp_throughput", ">= 1.2"),
            ("datapath_rr_latency_p50", "<= 0.9"),
        ],
    ),
    ("5b", &[("afxdp_rx_lease_vs_direct", ">= 0.95")]),
    (
        "5c",
        &[
            ("dpdk_afxdp_vs_afpacket_pps", ">= 1.37"),
            ("dpdk_afxdp_vs_afpacket_rr_p50", "<= 0.7"),
        ],
    ),
    (
        "5d",
        &[
            ("far_udp64_pps", ">= 1.3"),
            ("far_rr_latency_p50", "<= 0.90"),
            ("far_tcp_throughput", ">= 1.0"),
        ],
    ),
    ("6", &[("version_cpu", "<= 0.3")]),
    ("7", &[]),
];

/// The goals of section `n` (empty for a section without goals).
fn goals_of(n: &str) -> &'static [(&'static str, &'static str)] {
    GOALS.iter().find(|(s, _)| *s == n).map_or(&[], |(_, g)| *g)
}

/// How much each section does: `--quick` checks the harness, the full counts decide goals.
struct Counts {
    /// Section 1: sequential pods per plugin; 1b: parallel pods per plugin; 1d: batches of
    /// `par` concurrent ADDs per plugin.
    seq: usize,
    par: usize,
    batch: usize,
    /// Section 2: pods present, and rounds (the plugins' order alternates round by round).
    scale: usize,
    scale_rounds: usize,
    /// Section 3: pods per network; section 4: alternating rounds of 1e6 packets per program.
    lease: usize,
    xdp_rounds: u32,
    /// Section 5: iperf3 seconds and runs per plugin, request/response turns per plugin and
    /// round trips per turn.
    dp: DataPathCounts,
    /// Section 5b: window and rounds per socket.
    afxdp: AfxdpCounts,
    /// Section 5c: window and rounds per testpmd.
    dpdk: DpdkCounts,
    /// Section 5d: far → pod through the NIC.
    far: FarCounts,
}

impl Counts {
    fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                seq: 20,
                par: 8,
                batch: 2,
                scale: 50,
                scale_rounds: 2,
                lease: 6,
                xdp_rounds: 2,
                dp: DataPathCounts {
                    secs: 2,
                    rounds: 2,
                    rr_rounds: 10,
                    rr: 100,
                },
                afxdp: AfxdpCounts {
                    secs: 1.0,
                    rounds: 3,
                },
                dpdk: DpdkCounts {
                    secs: 1.0,
                    rounds: 3,
                },
                far: FarCounts {
                    udp_secs: 0.5,
                    udp_rounds: 2,
                    rr_rounds: 4,
                    rr: 100,
                    tcp_secs: 1,
                    tcp_rounds: 1,
                },
            }
        } else {
            Counts {
                seq: 200,
                par: 32,
                batch: 5,
                scale: 500,
                scale_rounds: 2,
                lease: 30,
                xdp_rounds: 5,
                dp: DataPathCounts {
                    secs: 5,
                    rounds: 3,
                    rr_rounds: 30,
                    rr: 200,
                },
                // 5b and 5c: rates over windows of guest time, which under icount are
                // instruction budgets, so 5 and 3 rounds decide (the 9 x 3 s of the wall-clock
                // days cost ~70 s of guest time, i.e. ~10 min of a run's wall time).
                afxdp: AfxdpCounts {
                    secs: 2.0,
                    rounds: 5,
                },
                dpdk: DpdkCounts {
                    secs: 2.0,
                    rounds: 3,
                },
                // Under icount the figures reproduce to ~1 %: a few rounds decide the goals,
                // and the section stays under ~60 s of guest time.
                far: FarCounts {
                    udp_secs: 1.0,
                    udp_rounds: 5,
                    rr_rounds: 10,
                    rr: 200,
                    tcp_secs: 3,
                    tcp_rounds: 2,
                },
            }
        }
    }
}

/// Copies the plugins into CNI_PATH (a tmpfs), host-local behind ipam-wrap, makes the node
/// netns and the scratch directory. Returns the environment and the two plugins, ours first.
fn prepare(out_dir: &Path) -> Result<(Env, [Plugin; 2])> {
    std::fs::create_dir_all(out_dir)?;
    for stale in [
        "latency.dat",
        "lease.dat",
        "xdp.dat",
        "datapath.dat",
        "afxdp.dat",
        "dpdk.dat",
        "far.dat",
    ] {
        let _ = std::fs::remove_file(out_dir.join(stale));
    }

    let me = std::env::current_exe()?;
    // NKC_BENCH_PLUGIN: the plugin build to measure; scripts/bench passes its static-pie build
    // (no dynamic loader at exec; see scripts/bench). Default: the one beside this binary.
    let built = match std::env::var_os("NKC_BENCH_PLUGIN") {
        Some(p) => PathBuf::from(p),
        None => me
            .parent()
            .context("bench binary has a directory")?
            .join("netkit-cni"),
    };
    if !built.exists() {
        bail!(
            "{} missing: build the plugin in the same profile",
            built.display()
        );
    }
    std::fs::create_dir_all(CNI_PATH)?;
    if sh(&["findmnt", "-n", "-o", "FSTYPE", "--target", CNI_PATH])?.trim() != "tmpfs" {
        bail!("{CNI_PATH} is not on a tmpfs: the copies would not be on equal footing");
    }
    let ours = Path::new(CNI_PATH).join("netkit-cni");
    std::fs::copy(&built, &ours)?;
    std::fs::copy(
        Path::new(DEBIAN_CNI).join("ptp"),
        Path::new(CNI_PATH).join("ptp"),
    )?;
    // host-local behind ipam-wrap, which records each IPAM exec's CPU time (see IPAM_REAL).
    std::fs::copy(Path::new(DEBIAN_CNI).join("host-local"), IPAM_REAL)?;
    let wrap = me
        .parent()
        .context("bench binary has a directory")?
        .join("nkc-ipam-wrap");
    std::fs::copy(&wrap, Path::new(CNI_PATH).join("host-local")).with_context(|| {
        format!(
            "{}: scripts/bench builds it from scripts/lib/ipam-wrap.c",
            wrap.display()
        )
    })?;
    std::fs::create_dir_all(IPAM_RECORDS)?;
    let data = scratch();
    std::fs::create_dir_all(data.join("tmp"))?;
    let node = format!("nkcbnode{}", std::process::id());
    netns_add(&node)?;
    sh(&["ip", "-n", &node, "link", "set", "lo", "up"])?;
    let env = Env {
        node_fd: netns_fd(&node)?,
        node,
        data,
        out_dir: out_dir.to_path_buf(),
    };
    let ipam = |subnet: &str| json!({"type": "host-local", "subnet": subnet, "dataDir": env.data});
    let plugins = [
        Plugin {
            name: "netkit-cni",
            bin: ours,
            conf: json!({"cniVersion": "1.0.0", "name": "nkbench", "type": "netkit-cni", "ipam": ipam("10.128.0.0/14")}),
        },
        Plugin {
            name: "ptp",
            bin: Path::new(CNI_PATH).join("ptp"),
            conf: json!({"cniVersion": "1.0.0", "name": "ptpbench", "type": "ptp", "ipam": ipam("10.132.0.0/14")}),
        },
    ];
    Ok((env, plugins))
}

/// Which sections run: NKC_BENCH_ONLY=2,5 runs only those (to work on one; results then lack
/// the rest). The VM gives the whole run 20 minutes (scripts/bench): on a machine busy enough
/// to stretch the run past NKC_BENCH_BUDGET_S (default 18 min), the sections not started yet are
/// skipped and their goals recorded as not measured, rather than losing every result to the
/// timeout.
struct Picker {
    only: Option<String>,
    started: Instant,
    budget: Duration,
    skipped: Vec<&'static str>,
}

impl Picker {
    fn new(started: Instant) -> Picker {
        Picker {
            only: std::env::var("NKC_BENCH_ONLY").ok(),
            started,
            budget: Duration::from_secs(
                std::env::var("NKC_BENCH_BUDGET_S")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(18 * 60),
            ),
            skipped: Vec::new(),
        }
    }

    fn want(&mut self, n: &'static str) -> bool {
        let picked = self
            .only
            .as_deref()
            .map_or(true, |o| o.split(',').any(|x| x.trim() == n));
        if !picked {
            return false;
        }
        if self.started.elapsed() > self.budget {
            eprintln!(
                "[bench] section {n} skipped: the time budget of {} s is used up",
                self.budget.as_secs()
            );
            self.skipped.push(n);
            return false;
        }
        true
    }

    /// The goals of skipped sections, so that results.json still lists every goal.
    fn record_skipped(&self, rep: &mut Report) {
        for (n, list) in GOALS {
            if self.skipped.contains(&n) {
                for (goal, wanted) in list {
                    rep.not_measured(
                        goal,
                        wanted,
                        &format!(
                            "section {n} skipped: the run's time budget ({} s) was used up",
                            self.budget.as_secs()
                        ),
                    );
                }
            }
        }
    }
}

fn main() -> Result<()> {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out_dir = PathBuf::from(args.first().context("usage: nkc-bench OUT_DIR [--quick]")?);
    let quick = args.iter().any(|a| a == "--quick");
    let n = Counts::new(quick);
    let (env, plugins) = prepare(&out_dir)?;
    let ours = plugins[0].bin.clone();

    let mut rep = Report::default();
    let mut secs = serde_json::Map::new();
    let mut raw = json!({});
    let mut pick = Picker::new(started);
    // Section 1's ADD peak RSS p50 (KiB), ours and ptp's, for section 6.
    let mut add_rss: Option<(f64, f64)> = None;

    // raw.vcpus_by_section: which sections ran with one vCPU online (the per-invocation ones,
    // see util::OneCpu) and which with all, for the README's "measured with" column.
    if pick.want("1") {
        let one = OneCpu::new()?;
        raw["vcpus_by_section"]["1"] = json!(online_cpus()?);
        add_rss = Some(latency::run(
            &env,
            &plugins,
            (n.seq, n.par),
            &mut rep,
            &mut secs,
            &mut raw,
        )?);
        drop(one);
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("1d") {
        // Concurrency with every vCPU online: a batch's guest time, start to last exit.
        raw["vcpus_by_section"]["1d"] = json!(online_cpus()?);
        section("1d-batch", goals_of("1d"), &mut secs, &mut rep, |r| {
            latency::batch(&env, &plugins, n.batch, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("2") {
        let _one = OneCpu::new()?;
        raw["vcpus_by_section"]["2"] = json!(online_cpus()?);
        scale::run(
            &env,
            &plugins,
            (n.scale, n.scale_rounds),
            &mut rep,
            &mut secs,
            &mut raw,
        )?;
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("3") {
        let _one = OneCpu::new()?;
        raw["vcpus_by_section"]["3"] = json!(online_cpus()?);
        section("3-lease", goals_of("3"), &mut secs, &mut rep, |r| {
            lease::lease_cost(&env, &ours, n.lease, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("4") {
        raw["vcpus_by_section"]["4"] = json!(online_cpus()?);
        section("4-xdp", goals_of("4"), &mut secs, &mut rep, |r| {
            xdp::xdp_cost(&env, n.xdp_rounds, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("5") {
        raw["vcpus_by_section"]["5"] = json!(online_cpus()?);
        section("5-datapath", goals_of("5"), &mut secs, &mut rep, |r| {
            datapath::data_path(&env, &plugins, n.dp, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("5b") {
        raw["vcpus_by_section"]["5b"] = json!(online_cpus()?);
        section("5b-afxdp", goals_of("5b"), &mut secs, &mut rep, |r| {
            afxdp::afxdp_rate(&env, &ours, n.afxdp, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("5c") {
        raw["vcpus_by_section"]["5c"] = json!(online_cpus()?);
        section("5c-dpdk", goals_of("5c"), &mut secs, &mut rep, |r| {
            dpdk::dpdk_rate(&env, &plugins, n.dpdk, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("5d") {
        raw["vcpus_by_section"]["5d"] = json!(online_cpus()?);
        section("5d-far", goals_of("5d"), &mut secs, &mut rep, |r| {
            far::far_path(&env, &ours, n.far, r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("6") {
        let _one = OneCpu::new()?;
        raw["vcpus_by_section"]["6"] = json!(online_cpus()?);
        process::run(&plugins, add_rss, &mut rep, &mut secs, &mut raw)?;
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    if pick.want("7") {
        let _one = OneCpu::new()?;
        raw["vcpus_by_section"]["7"] = json!(online_cpus()?);
        section("7-instructions", goals_of("7"), &mut secs, &mut rep, |r| {
            instructions::add_instructions(&env, &plugins[0], r, &mut raw)
        });
    }
    checkpoint(&out_dir, quick, started, &secs, &rep, &raw);
    pick.record_skipped(&mut rep);

    let _ = netns_del(&env.node);
    let _ = std::fs::remove_dir_all(&env.data);
    write_results(&out_dir, quick, started, &secs, &rep, &raw)
}

/// What results.json holds: the run's clock and machine, per-section times, ratios, info, raw.
fn results_json(
    quick: bool,
    started: Instant,
    secs: &serde_json::Map<String, Value>,
    rep: &Report,
    raw: &Value,
) -> Result<Value> {
    let accel = std::env::var("NKC_VM_ACCEL").unwrap_or_else(|_| "host".into());
    // What the guest's clock counted (scripts/vm-run --icount): "icount" = executed instructions
    // (1 ns per instruction), "wall" = the host's time.
    let clock = std::env::var("NKC_VM_CLOCK").unwrap_or_else(|_| "wall".into());
    Ok(json!({
        "date": sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])?.trim(),
        "kernel": sh(&["uname", "-r"])?.trim(),
        "accel": accel,
        "clock": clock,
        "quick": quick,
        "seconds": started.elapsed().as_secs(),
        "section_seconds": secs,
        "vcpus_by_section": raw.get("vcpus_by_section"),
        "ratios": rep.ratios,
        "info": rep.info,
        "raw": raw,
    }))
}

/// OUT_DIR/results.partial.json after every section: a run stopped before the end (a full run
/// takes hours of wall time on a loaded machine) still leaves what it measured. Best effort: a
/// failed write is reported, not fatal, since the final results.json is what counts.
fn checkpoint(
    out_dir: &Path,
    quick: bool,
    started: Instant,
    secs: &serde_json::Map<String, Value>,
    rep: &Report,
    raw: &Value,
) {
    let written = results_json(quick, started, secs, rep, raw).and_then(|v| {
        std::fs::write(
            out_dir.join("results.partial.json"),
            serde_json::to_string_pretty(&v)?,
        )?;
        Ok(())
    });
    if let Err(e) = written {
        eprintln!("[bench] cannot write results.partial.json: {e:#}");
    }
}

/// OUT_DIR/results.json and results.md; the raw figures and the tables also go to stdout.
fn write_results(
    out_dir: &Path,
    quick: bool,
    started: Instant,
    secs: &serde_json::Map<String, Value>,
    rep: &Report,
    raw: &Value,
) -> Result<()> {
    let results = results_json(quick, started, secs, rep, raw)?;
    let accel = results["accel"].as_str().unwrap_or_default();
    let clock = results["clock"].as_str().unwrap_or_default();
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let md = format!(
        "| metric | value | goal | |\n|---|---|---|---|\n{}\n\n| informational | |\n|---|---|\n{}\n\nkernel {}, {}, {clock} clock, {} (quick: {quick}), {} s\n",
        rep.rows.join("\n"),
        rep.info_rows.join("\n"),
        results["kernel"].as_str().unwrap(),
        accel,
        results["date"].as_str().unwrap(),
        started.elapsed().as_secs()
    );
    std::fs::write(out_dir.join("results.md"), &md)?;
    println!("{}", serde_json::to_string_pretty(&results["raw"])?);
    println!("{md}");
    Ok(())
}
