//! `make bench`: netkit-cni against Debian's reference `ptp` plugin (veth), both with host-local
//! IPAM, in the same VM and the same run, interleaved so that machine noise hits both alike.
//! Absolute times in a TCG VM are noise; the ratios are the result.
//!
//! Usage (inside the VM, as root): nkc-bench OUT_DIR [--quick]
//! Writes OUT_DIR/results.json (with a top-level "ratios" object), OUT_DIR/results.md and
//! OUT_DIR/latency.dat (for the chart).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Every plugin binary is copied here (a tmpfs inside the VM) before measuring. Where they come
/// from differs (ours from the repo's writable 9p share, whose pages the guest re-reads from the
/// host on every exec; Debian's from the cached read-only root), which would otherwise decide
/// the comparison. On a node they all sit side by side in /opt/cni/bin; so do they here.
const CNI_PATH: &str = "/run/nkc-bench-bin";
const DEBIAN_CNI: &str = "/usr/lib/cni";

struct Plugin {
    name: &'static str,
    bin: PathBuf,
    conf: Value,
}

struct Env {
    /// The node netns the plugins run in, entered with setns(2) between fork and exec. Not
    /// `ip netns exec`: that unshares a mount namespace, copying every /run/netns mount, so its
    /// cost would grow with the number of pods and be charged to the plugin.
    node_fd: std::os::fd::OwnedFd,
    data: PathBuf,
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{:?}: {}", args, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One plugin invocation, timed from spawn to exit, with the child's max RSS.
fn cni(env: &Env, p: &Plugin, cmd: &str, cid: &str, netns: &str) -> Result<(Duration, u64)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(&p.bin);
    let fd = env.node_fd.as_raw_fd();
    // SAFETY: setns is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
    }
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH);
    let start = Instant::now();
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().unwrap().write_all(p.conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{} {cmd} {cid}: {}{}", p.name, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    Ok((took, ru.max_rss() as u64))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Pods {
    names: Vec<String>,
}

impl Pods {
    fn make(prefix: &str, n: usize) -> Result<Pods> {
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("{prefix}{i}");
            sh(&["ip", "netns", "add", &name])?;
            names.push(name);
        }
        Ok(Pods { names })
    }
    fn path(&self, i: usize) -> String {
        format!("/run/netns/{}", self.names[i])
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = sh(&["ip", "netns", "del", n]);
        }
    }
}

/// Sequential ADD then DEL of `n` pods, alternating the two plugins pod by pod.
fn sequential(env: &Env, plugins: &[Plugin], n: usize, tag: &str) -> Result<BTreeMap<String, (Vec<f64>, Vec<f64>)>> {
    let mut out: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for i in 0..n {
        // Alternate which plugin goes first so neither always runs on a warmer cache.
        let order: Vec<&Plugin> = if i % 2 == 0 { plugins.iter().collect() } else { plugins.iter().rev().collect() };
        for p in order {
            let cid = format!("{tag}-{}-{i}", p.name);
            // A fresh pod netns per plugin and pod: both plugins want eth0.
            let name = format!("{tag}{i}{}", &p.name[..2]);
            sh(&["ip", "netns", "add", &name])?;
            let netns = format!("/run/netns/{name}");
            let (add, _) = cni(env, p, "ADD", &cid, &netns)?;
            let (del, _) = cni(env, p, "DEL", &cid, &netns)?;
            sh(&["ip", "netns", "del", &name])?;
            let e = out.entry(p.name.to_string()).or_default();
            e.0.push(ms(add));
            e.1.push(ms(del));
        }
    }
    Ok(out)
}

/// `n` pods at once per plugin (plugins one after the other), ADD then DEL, each timed.
fn parallel(env: &Env, p: &Plugin, n: usize, tag: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let pods = Pods::make(&format!("{tag}{}", &p.name[..3]), n)?;
    let run = |cmd: &'static str| -> Result<Vec<f64>> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let netns = pods.path(i);
                    let cid = format!("{tag}-{}-{i}", p.name);
                    s.spawn(move || cni(env, p, cmd, &cid, &netns).map(|(d, _)| ms(d)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let adds = run("ADD")?;
    let dels = run("DEL")?;
    Ok((adds, dels))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out_dir = PathBuf::from(args.first().context("usage: nkc-bench OUT_DIR [--quick]")?);
    let quick = args.iter().any(|a| a == "--quick");
    let (n_seq, n_par, n_scale) = if quick { (20, 8, 50) } else { (200, 32, 500) };
    std::fs::create_dir_all(&out_dir)?;

    let me = std::env::current_exe()?;
    let built = me.parent().context("bench binary has a directory")?.join("netkit-cni");
    if !built.exists() {
        bail!("{} missing: build the plugin in the same profile", built.display());
    }
    std::fs::create_dir_all(CNI_PATH)?;
    if sh(&["findmnt", "-n", "-o", "FSTYPE", "--target", CNI_PATH])?.trim() != "tmpfs" {
        bail!("{CNI_PATH} is not on a tmpfs: the copies would not be on equal footing");
    }
    let ours = Path::new(CNI_PATH).join("netkit-cni");
    std::fs::copy(&built, &ours)?;
    for p in ["ptp", "host-local"] {
        std::fs::copy(Path::new(DEBIAN_CNI).join(p), Path::new(CNI_PATH).join(p))?;
    }
    let data = std::env::temp_dir().join(format!("nkc-bench-{}", std::process::id()));
    let node = format!("nkcbnode{}", std::process::id());
    sh(&["ip", "netns", "add", &node])?;
    sh(&["ip", "-n", &node, "link", "set", "lo", "up"])?;
    let env = Env { node_fd: std::fs::File::open(format!("/run/netns/{node}"))?.into(), data: data.clone() };
    let ipam = |subnet: &str| json!({"type": "host-local", "subnet": subnet, "dataDir": env.data});
    let plugins = [
        Plugin { name: "netkit-cni", bin: ours.clone(), conf: json!({"cniVersion": "1.0.0", "name": "nkbench", "type": "netkit-cni", "ipam": ipam("10.128.0.0/14")}) },
        Plugin { name: "ptp", bin: Path::new(CNI_PATH).join("ptp"), conf: json!({"cniVersion": "1.0.0", "name": "ptpbench", "type": "ptp", "ipam": ipam("10.132.0.0/14")}) },
    ];

    let mut ratios = serde_json::Map::new();
    let mut rows = Vec::new();
    let mut ratio = |name: &str, value: f64, goal: &str, limit: f64, le: bool| {
        let met = if le { value <= limit } else { value >= limit };
        ratios.insert(name.to_string(), json!({"value": (value * 1000.0).round() / 1000.0, "goal": goal, "met": met}));
        rows.push(format!("| {name} | {value:.3} | {goal} | {} |", if met { "met" } else { "**not met**" }));
    };

    // 1. Sequential ADD/DEL latency.
    eprintln!("[bench] {n_seq} sequential ADD/DEL per plugin, interleaved");
    let seq = sequential(&env, &plugins, n_seq, "seq")?;
    let (mut nk_add, mut nk_del) = seq["netkit-cni"].clone();
    let (mut pt_add, mut pt_del) = seq["ptp"].clone();
    let mut raw = json!({});
    raw["sequential"] = json!({
        "netkit-cni": {"add_p50_ms": pct(&mut nk_add, 0.5), "add_p99_ms": pct(&mut nk_add, 0.99), "del_p50_ms": pct(&mut nk_del, 0.5)},
        "ptp": {"add_p50_ms": pct(&mut pt_add, 0.5), "add_p99_ms": pct(&mut pt_add, 0.99), "del_p50_ms": pct(&mut pt_del, 0.5)},
    });
    ratio("add_p50_seq", pct(&mut nk_add, 0.5) / pct(&mut pt_add, 0.5), "<= 0.5", 0.5, true);
    ratio("add_p99_seq", pct(&mut nk_add, 0.99) / pct(&mut pt_add, 0.99), "<= 0.5", 0.5, true);
    ratio("del_p50_seq", pct(&mut nk_del, 0.5) / pct(&mut pt_del, 0.5), "<= 0.5", 0.5, true);
    {
        let mut f = std::fs::File::create(out_dir.join("latency.dat"))?;
        writeln!(f, "# plugin add_p50 add_p99 del_p50 (ms)")?;
        for (name, (a, d)) in [("netkit-cni", (&mut nk_add, &mut nk_del)), ("ptp", (&mut pt_add, &mut pt_del))] {
            writeln!(f, "{name} {:.3} {:.3} {:.3}", pct(a, 0.5), pct(a, 0.99), pct(d, 0.5))?;
        }
    }

    // 1b. Parallel.
    eprintln!("[bench] {n_par} parallel ADD/DEL per plugin");
    let (mut pa_nk, mut pd_nk) = parallel(&env, &plugins[0], n_par, "par")?;
    let (mut pa_pt, mut pd_pt) = parallel(&env, &plugins[1], n_par, "par")?;
    raw["parallel"] = json!({
        "netkit-cni": {"add_p50_ms": pct(&mut pa_nk, 0.5), "add_p99_ms": pct(&mut pa_nk, 0.99), "del_p50_ms": pct(&mut pd_nk, 0.5)},
        "ptp": {"add_p50_ms": pct(&mut pa_pt, 0.5), "add_p99_ms": pct(&mut pa_pt, 0.99), "del_p50_ms": pct(&mut pd_pt, 0.5)},
    });
    ratio("add_p50_par", pct(&mut pa_nk, 0.5) / pct(&mut pa_pt, 0.5), "<= 0.5", 0.5, true);
    ratio("add_p99_par", pct(&mut pa_nk, 0.99) / pct(&mut pa_pt, 0.99), "<= 0.5", 0.5, true);
    ratio("del_p50_par", pct(&mut pd_nk, 0.5) / pct(&mut pd_pt, 0.5), "<= 0.5", 0.5, true);

    // 2. Scale: ADD p50 with n_scale pods present vs none.
    eprintln!("[bench] scale: ADD with {n_scale} pods present");
    let p = &plugins[0];
    let base = Pods::make("sclb", 20)?;
    let mut empty = Vec::new();
    for i in 0..20 {
        let cid = format!("sc0-{i}");
        empty.push(ms(cni(&env, p, "ADD", &cid, &base.path(i))?.0));
        cni(&env, p, "DEL", &cid, &base.path(i))?;
    }
    let fill = Pods::make("sclf", n_scale)?;
    for i in 0..n_scale {
        cni(&env, p, "ADD", &format!("fill-{i}"), &fill.path(i))?;
    }
    let mut loaded = Vec::new();
    for i in 0..20 {
        let cid = format!("sc1-{i}");
        loaded.push(ms(cni(&env, p, "ADD", &cid, &base.path(i))?.0));
        cni(&env, p, "DEL", &cid, &base.path(i))?;
    }
    for i in 0..n_scale {
        cni(&env, p, "DEL", &format!("fill-{i}"), &fill.path(i))?;
    }
    raw["scale"] = json!({"pods_present": n_scale, "add_p50_empty_ms": pct(&mut empty, 0.5), "add_p50_loaded_ms": pct(&mut loaded, 0.5)});
    ratio("add_p50_scale", pct(&mut loaded, 0.5) / pct(&mut empty, 0.5), "<= 1.2", 1.2, true);

    // 6. Process cost: VERSION wall time and max RSS, ours vs ptp (ptp's own process, no IPAM).
    eprintln!("[bench] process cost of VERSION");
    let ver = |bin: &Path| -> Result<(f64, u64)> {
        let mut t = Vec::new();
        let mut rss = 0;
        for _ in 0..30 {
            let start = Instant::now();
            let out = Command::new(bin).env_clear().env("CNI_COMMAND", "VERSION").stdin(Stdio::null()).output()?;
            t.push(ms(start.elapsed()));
            if !out.status.success() {
                bail!("{} VERSION failed", bin.display());
            }
            rss = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?.max_rss() as u64;
        }
        Ok((pct(&mut t, 0.5), rss))
    };
    // RUSAGE_CHILDREN's max RSS is the largest child so far: measure ours first (smaller).
    let (nk_ver, nk_rss) = ver(&plugins[0].bin)?;
    let (pt_ver, pt_rss) = ver(&plugins[1].bin)?;
    raw["process"] = json!({"netkit-cni": {"version_p50_ms": nk_ver, "max_rss_kib": nk_rss}, "ptp": {"version_p50_ms": pt_ver, "max_rss_kib_upper_bound": pt_rss}});
    ratio("version_wall", nk_ver / pt_ver, "<= 0.3", 0.3, true);

    let _ = sh(&["ip", "netns", "del", &node]);
    let _ = std::fs::remove_dir_all(&data);

    let accel = std::env::var("NKC_VM_ACCEL").unwrap_or_else(|_| "host".into());
    let results = json!({
        "date": sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])?.trim(),
        "kernel": sh(&["uname", "-r"])?.trim(),
        "accel": accel,
        "quick": quick,
        "ratios": ratios,
        "raw": raw,
    });
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    let md = format!(
        "| metric | netkit-cni ÷ reference | goal | |\n|---|---|---|---|\n{}\n\nkernel {}, {}, {} (quick: {quick})\n",
        rows.join("\n"),
        results["kernel"].as_str().unwrap(),
        accel,
        results["date"].as_str().unwrap()
    );
    std::fs::write(out_dir.join("results.md"), &md)?;
    println!("{}", serde_json::to_string_pretty(&results["raw"])?);
    println!("{md}");
    Ok(())
}
