//! Faults at every step of ADD, against the real kernel: for each failpoint
//! (`netkit_cni::failpoint::ADD_POINTS`), ADD is made to fail there (it must answer a CNI error
//! and leave nothing), and separately stopped there and killed with SIGKILL (then DEL and GC
//! must leave nothing). "Nothing" is read back from the kernel and the file system with
//! independent tools: netkit devices (ip), leases (the kernel's ynl), XDP on the NIC (ip),
//! pins (bpffs), IPAM reservations (host-local's files), device-info files, and the NIC's
//! steering: ntuple rules (Debian's `ethtool -n`), RSS contexts (the kernel's ynl `rss-get`
//! dump, as ethtool 6.1 cannot list them) and unicast filter entries (`bridge fdb show dev`).
//! Every bed's network steers (`lease.steering`: the pool out of the default RSS context; a
//! single device's MAC, in mode l2, or a pair's IPAM address to an RSS context over its two
//! queues), so every steering step has a failpoint after it.
//!
//! The plugin binary here is `netkit-cni-failpoints`, the build with the `failpoints` feature
//! (the `vm-tests` feature enables it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::steering::*;
use common::*;
use netkit_cni::failpoint::ADD_POINTS;
use serde_json::{json, Value};

fn failpoints_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_netkit-cni-failpoints"))
}

struct Bed {
    node: Netns,
    nic: Netdevsim,
    bpffs: Bpffs,
    devinfo: PathBuf,
    ipam: CniNet,
    pairing: &'static str,
    /// `hostRouting: {mode: bpf}` on the leasing NIC as the uplink (pair only).
    host_routing: bool,
    /// The NIC's steering before any ADD: what `leftovers` compares against.
    steering0: SteeringState,
    /// The pod's MAC comes from runtimeConfig (as KubeVirt passes a VM's), not the device.
    steering: bool,
}

impl Bed {
    fn new(pairing: &'static str, subnet: &str) -> Bed {
        Self::with_queues(pairing, subnet, 8)
    }

    fn with_queues(pairing: &'static str, subnet: &str, queues: u32) -> Bed {
        require_privileged_kernel();
        let node = Netns::new("node");
        let nic = Netdevsim::new(&node, queues);
        let bpffs = Bpffs::new();
        let devinfo = std::env::temp_dir().join(unique("nkc-devinfo-"));
        let steering0 = SteeringState::read(&Ynl::new(), &node, &nic.ifname, nic.ifindex);
        Bed {
            node,
            nic,
            bpffs,
            devinfo,
            ipam: CniNet::new(subnet),
            pairing,
            host_routing: false,
            steering0,
            steering: false,
        }
    }

    /// A single-device bed whose pod MAC comes from runtimeConfig (every bed steers).
    fn with_steering(subnet: &str) -> Bed {
        let mut bed = Self::new("single", subnet);
        bed.steering = true;
        bed
    }

    /// A pair bed whose pods also get BPF host routing through the NIC (issue 17).
    fn with_host_routing(subnet: &str) -> Bed {
        let mut bed = Self::new("pair", subnet);
        bed.host_routing = true;
        bed
    }

    /// Everything ADD can create: IPAM, a device, two leases, and for single devices the XDP
    /// dispatcher with the pod's XSKMAP.
    fn conf(&self) -> Value {
        // A single device steers by its MAC (mode l2 gives it one: the unicast filter step
        // runs), a pair by its address (its peer has no MAC in mode l3).
        let matching = if self.pairing == "single" {
            "mac"
        } else {
            "ip"
        };
        let mut extra = json!({
            "pairing": self.pairing,
            "lease": {"master": self.nic.ifname, "queues": 2, "deviceInfoDir": self.devinfo,
                      "steering": steering(matching)},
        });
        if self.pairing == "single" {
            extra["xdp"] = json!({"bpffs": self.bpffs.path});
            extra["mode"] = json!("l2");
        }
        if self.steering {
            extra["runtimeConfig"] = json!({"mac": STEER_MAC});
        }
        if self.host_routing {
            extra["hostRouting"] = json!({
                "mode": "bpf",
                "uplink": self.nic.ifname,
                "bypass": ["192.0.2.0/24"],
                "bpffs": self.bpffs.path,
            });
        }
        self.ipam.conf("1.1.0", extra)
    }

    fn env<'a>(&self, command: &'a str, cid: &str, pod: &'a str) -> Vec<(&'a str, String)> {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", pod.to_string()),
            ("CNI_IFNAME", "net1".to_string()),
            ("CNI_PATH", CNI_PATH.to_string()),
        ]
    }

    fn call(&self, command: &str, pod: &Netns, extra_env: &[(&str, String)]) -> PluginRun {
        self.call_as(command, "cf", pod, extra_env)
    }

    fn call_as(
        &self,
        command: &str,
        cid: &str,
        pod: &Netns,
        extra_env: &[(&str, String)],
    ) -> PluginRun {
        let path = pod.path().display().to_string();
        let mut env = self.env(command, cid, &path);
        env.extend(extra_env.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_plugin_bin(
            &failpoints_bin(),
            Some(&self.node),
            &env,
            &self.conf().to_string(),
        )
    }

    fn gc(&self) -> PluginRun {
        let mut c = self.conf();
        c["cni.dev/valid-attachments"] = json!([]);
        run_plugin_bin(
            &failpoints_bin(),
            Some(&self.node),
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)],
            &c.to_string(),
        )
    }

    /// What is left of the attachment, as independent tools see it; empty when nothing is.
    fn leftovers(&self, pod: &Netns, ynl: &Ynl) -> Vec<String> {
        let mut left = Vec::new();
        for (where_, links) in [("pod", pod.links()), ("node", self.node.links())] {
            for l in links
                .iter()
                .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
            {
                left.push(format!(
                    "netkit device {} in the {where_} netns",
                    l["ifname"]
                ));
            }
        }
        for q in ynl
            .queue_dump(&self.node, self.nic.ifindex)
            .iter()
            .filter(|q| q.get("lease").is_some())
        {
            left.push(format!("lease on queue {}: {}", q["id"], q["lease"]));
        }
        let nic: Value = serde_json::from_str(&self.node.ip(&[
            "-d",
            "-j",
            "link",
            "show",
            "dev",
            &self.nic.ifname,
        ]))
        .unwrap();
        if nic[0].get("xdp").is_some() {
            left.push(format!("XDP on the NIC: {}", nic[0]["xdp"]));
        }
        let nic = self.nic.ifindex;
        let tcx = self
            .node
            .run(move || netkit_cni::bpf::sys::tcx_ingress_programs(nic))
            .expect("BPF_PROG_QUERY tcx ingress");
        if !tcx.is_empty() {
            left.push(format!("tcx ingress programs on the NIC: {tcx:?}"));
        }
        for e in self.bpffs.plugin_entries() {
            left.push(format!("bpffs netkit-cni/{e}"));
        }
        for ip in self.ipam.reserved() {
            left.push(format!("IPAM reservation {ip}"));
        }
        if let Ok(rd) = std::fs::read_dir(&self.devinfo) {
            for e in rd.flatten() {
                left.push(format!("device-info file {}", e.path().display()));
            }
        }
        left.extend(
            SteeringState::read(ynl, &self.node, &self.nic.ifname, self.nic.ifindex)
                .leftovers(&self.steering0),
        );
        left
    }

    /// Points this configuration never reaches.
    fn reaches(&self, point: &str) -> bool {
        if point == "add-after-host-routing" && !self.host_routing {
            return false;
        }
        // Only a MAC goes into the NIC's unicast filter (`match: mac`, the single beds).
        if point == "add-after-steer-unicast" && self.pairing != "single" {
            return false;
        }
        match self.pairing {
            "single" => point != "add-after-host-config",
            _ => point != "add-after-xdp",
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.devinfo);
    }
}

const STEER_MAC: &str = "02:00:00:00:fa:01";

fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the plugin never reached its failpoint ({} not written)",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every failpoint: ADD failing there leaves nothing; SIGKILL there, then DEL and GC leave
/// nothing. Returns how many (point, mode) cases ran.
fn every_point(bed: &Bed) -> usize {
    let ynl = Ynl::new();
    let mut cases = 0;
    for point in ADD_POINTS.iter().copied().filter(|p| bed.reaches(p)) {
        // Injected error: ADD answers it and rolls everything back by itself.
        let pod = Netns::new("pod");
        let r = bed.call("ADD", &pod, &[("NKC_FAILPOINT", format!("{point}:error"))]);
        let e = r.err(point);
        assert_eq!(e["code"], 102, "{point}: {e}");
        assert!(e["msg"].as_str().unwrap().contains(point), "{point}: {e}");
        let left = bed.leftovers(&pod, &ynl);
        assert!(
            left.is_empty(),
            "{} ADD failing at {point} left: {left:#?}\nstderr: {}",
            bed.pairing,
            r.stderr
        );
        bed.call("DEL", &pod, &[]).ok(&format!("DEL after {point}"));
        bed.gc().ok(&format!("GC after {point}"));
        cases += 1;

        // SIGKILL while stopped at the point: no rollback ran; DEL and GC must clean up.
        let pod = Netns::new("pod");
        let ready = std::env::temp_dir().join(unique("nkc-fp-"));
        let path = pod.path().display().to_string();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &bed.node.name,
            failpoints_bin().to_str().unwrap(),
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in bed.env("ADD", "cf", &path) {
            cmd.env(k, v);
        }
        cmd.env("NKC_FAILPOINT", format!("{point}:pause"))
            .env("NKC_FAILPOINT_READY", &ready);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            bed.conf().to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(wait_for_file(&ready, Duration::from_secs(60)), point);
        child.kill().unwrap(); // SIGKILL: `ip netns exec` has exec'd the plugin itself
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{point}: {status}"
        );
        let _ = std::fs::remove_file(&ready);
        bed.call("DEL", &pod, &[])
            .ok(&format!("DEL after a kill at {point}"));
        bed.gc().ok(&format!("GC after a kill at {point}"));
        let left = bed.leftovers(&pod, &ynl);
        assert!(
            left.is_empty(),
            "{} killed at {point}, then DEL and GC, left: {left:#?}",
            bed.pairing
        );
        cases += 1;
    }
    cases
}

/// How many of `ADD_POINTS` are not in `skipped` (each of which must be a failpoint, or the
/// count would silently mean less).
fn points_but(skipped: &[&str]) -> usize {
    for p in skipped {
        assert!(ADD_POINTS.contains(p), "{p} is no failpoint");
    }
    ADD_POINTS.iter().filter(|p| !skipped.contains(p)).count()
}

#[test]
fn single_with_leases_and_xdp_leaks_nothing_at_any_failpoint() {
    let bed = Bed::new("single", "10.91.0.0/24");
    let n = every_point(&bed);
    eprintln!("single: {n} failpoint cases");
    // Neither the host's side nor host routing: a single device has no peer.
    assert_eq!(
        n,
        2 * points_but(&["add-after-host-config", "add-after-host-routing"])
    );
}

#[test]
fn pair_with_leases_leaks_nothing_at_any_failpoint() {
    let bed = Bed::new("pair", "10.92.0.0/24");
    let n = every_point(&bed);
    eprintln!("pair: {n} failpoint cases");
    // No XDP (pairs have none), no host routing (not configured), no unicast filter entry
    // (`match: ip`).
    assert_eq!(
        n,
        2 * points_but(&[
            "add-after-xdp",
            "add-after-host-routing",
            "add-after-steer-unicast"
        ])
    );
}

/// Issue 17: the same with BPF host routing on the leasing NIC. Every point, including the one
/// right after the uplink's tcx program, the pod's map entries and its egress program exist,
/// leaves no tcx program, no pin, no map entry (the uplink's directory goes with its last pod),
/// no device, lease or IPAM record, whether ADD fails there or is killed there and DEL and GC
/// follow.
#[test]
fn pair_with_host_routing_leaks_nothing_at_any_failpoint() {
    let bed = Bed::with_host_routing("10.93.0.0/24");
    let n = every_point(&bed);
    eprintln!("pair + host routing: {n} failpoint cases");
    assert_eq!(
        n,
        2 * points_but(&["add-after-xdp", "add-after-steer-unicast"])
    );
}

#[test]
fn single_with_steering_leaks_no_rule_context_or_address_at_any_failpoint() {
    let bed = Bed::with_steering("10.96.0.0/24");
    let steer_points = ADD_POINTS
        .iter()
        .filter(|p| p.starts_with("add-after-steer-") && bed.reaches(p))
        .count();
    assert_eq!(
        steer_points, 3,
        "context, rule and unicast points are all reached"
    );
    let cases = every_point(&bed);
    assert!(cases > steer_points, "{cases} cases");
}

#[test]
fn a_missing_ipam_plugin_is_a_clear_error_and_leaves_nothing() {
    let bed = Bed::new("single", "10.93.0.0/24");
    let pod = Netns::new("pod");
    let empty = std::env::temp_dir().join(unique("nkc-cnipath-"));
    std::fs::create_dir(&empty).unwrap();
    let r = bed.call("ADD", &pod, &[("CNI_PATH", empty.display().to_string())]);
    let e = r.err("ADD without host-local on CNI_PATH");
    let msg = format!("{} {}", e["msg"], e["details"]);
    assert!(
        msg.contains("host-local"),
        "the error names the missing plugin: {e}"
    );
    assert!(
        bed.leftovers(&pod, &Ynl::new()).is_empty(),
        "{:?}",
        bed.leftovers(&pod, &Ynl::new())
    );
    let _ = std::fs::remove_dir(&empty);
}

/// A small xorshift generator: the soak's order is random but reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Parallel ADD/CHECK/DEL loops on one NIC, with leases, the XDP dispatcher and IPAM, in random
/// order and timing. Any error is unexpected (the pool has room for every loop); afterwards no
/// device, lease, pin, XDP program, reservation or file may be left. `make test` runs a short
/// soak; `make soak` runs NKC_SOAK_LOOPS=32 NKC_SOAK_ROUNDS=20.
#[test]
fn soak_parallel_add_del_with_leases_and_xdp_leaks_nothing() {
    let loops = env_num("NKC_SOAK_LOOPS", 6);
    soak(
        Bed::with_queues("single", "10.94.0.0/20", 2 * loops as u32 + 2),
        loops,
    );
}

/// The soak with BPF host routing (issue 17): every pod of a pair network shares one uplink,
/// so concurrent ADDs and DELs race for the uplink's lock, its first attach and its last-pod
/// detach; nothing may be left (no tcx program, pins, map entries, devices, leases, IPs).
#[test]
fn soak_parallel_add_del_with_host_routing_leaks_nothing() {
    let loops = env_num("NKC_SOAK_LOOPS", 6);
    let mut bed = Bed::with_queues("pair", "10.95.0.0/20", 2 * loops as u32 + 2);
    bed.host_routing = true;
    soak(bed, loops);
}

/// `loops` threads, each ADD, sometimes CHECK, DEL (sometimes twice) of its own pod for
/// `NKC_SOAK_ROUNDS` rounds at random offsets (`NKC_SOAK_SEED` repeats a run); then nothing may
/// be left, before and after a GC.
fn soak(bed: Bed, loops: usize) {
    let rounds = env_num("NKC_SOAK_ROUNDS", 3);
    let seed = std::env::var("NKC_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!(
        "soak ({}{}): {loops} loops x {rounds} rounds, NKC_SOAK_SEED={seed}",
        bed.pairing,
        if bed.host_routing {
            " + host routing"
        } else {
            ""
        }
    );
    let bed = std::sync::Arc::new(bed);
    let started = Instant::now();
    let handles: Vec<_> = (0..loops)
        .map(|i| {
            let bed = bed.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_add(i as u64 * 0x9e37_79b9_7f4a_7c15) | 1);
                let pod = Netns::new("soak");
                let cid = format!("soak{i}");
                let mut errors = Vec::new();
                for round in 0..rounds {
                    std::thread::sleep(Duration::from_millis(rng.next(30)));
                    let add = bed.call_as("ADD", &cid, &pod, &[]);
                    if !add.status.success() {
                        errors.push(format!("{cid} round {round} ADD: {}", add.stdout));
                        continue;
                    }
                    if rng.next(2) == 0 {
                        let mut check = bed.conf();
                        check["prevResult"] = add.json();
                        let path = pod.path().display().to_string();
                        let env = bed.env("CHECK", &cid, &path);
                        let env: Vec<(&str, &str)> =
                            env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        let r = run_plugin_bin(
                            &failpoints_bin(),
                            Some(&bed.node),
                            &env,
                            &check.to_string(),
                        );
                        if !r.status.success() {
                            errors.push(format!("{cid} round {round} CHECK: {}", r.stdout));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(rng.next(30)));
                    // Runtimes retry DEL: sometimes twice.
                    for _ in 0..1 + rng.next(2) {
                        let del = bed.call_as("DEL", &cid, &pod, &[]);
                        if !del.status.success() {
                            errors.push(format!("{cid} round {round} DEL: {}", del.stdout));
                        }
                    }
                }
                (errors, pod)
            })
        })
        .collect();
    let mut errors = Vec::new();
    let mut pods = Vec::new();
    for h in handles {
        let (e, pod) = h.join().unwrap();
        errors.extend(e);
        pods.push(pod);
    }
    eprintln!(
        "soak: {} ADD/DEL rounds in {:?}, {} unexpected errors",
        loops * rounds,
        started.elapsed(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "unexpected errors (seed {seed}): {errors:#?}"
    );
    // The pods' netns are still alive here: a device left in one would not be hidden by the
    // netns going away.
    for pod in &pods {
        let netkit: Vec<Value> = pod
            .links()
            .into_iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
            .collect();
        assert!(
            netkit.is_empty(),
            "soak (seed {seed}) left a device in {}: {netkit:?}",
            pod.name
        );
    }
    let probe = Netns::new("soakprobe");
    let left = bed.leftovers(&probe, &Ynl::new());
    assert!(left.is_empty(), "soak (seed {seed}) leaked: {left:#?}");
    bed.gc().ok("GC after the soak");
    let left = bed.leftovers(&probe, &Ynl::new());
    assert!(left.is_empty(), "GC after the soak left: {left:#?}");
    eprintln!("soak: 0 leaks (devices, leases, pins, XDP, IPs, files, rules, contexts, unicast)");
}

// ---------------------------------------------------------------------------------------------
// Hostile bpffs and CNI_NETNS (issue 16): a mount point in the plugin's bpffs directory, a held
// NIC lock, a CNI_NETNS path swapped under a running ADD.

/// `<bpffs>/netkit-cni/netns<cookie>-if<nic>`: the NIC's directory ADD locks and pins into.
fn nic_dir(bed: &Bed) -> PathBuf {
    let cookie = bed
        .node
        .run(|| netkit_cni::bpf::pins::current_netns_cookie().unwrap());
    bed.bpffs
        .path
        .join("netkit-cni")
        .join(format!("netns{cookie}-if{}", bed.nic.ifindex))
}

/// Nothing of an attachment in the pod or on the node, except the bpffs entries a test planted.
fn nothing_but_bpffs(bed: &Bed, pod: &Netns, ynl: &Ynl) {
    let left: Vec<String> = bed
        .leftovers(pod, ynl)
        .into_iter()
        .filter(|l| !l.starts_with("bpffs "))
        .collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A pod that can write to bpffs mounts a file system (here a tmpfs) on the NIC's directory
/// under `<bpffs>/netkit-cni/`. The plugin resolves with RESOLVE_NO_XDEV: the mount point is
/// refused with an error naming it (code 110), never crossed: nothing is pinned into, locked in
/// or deleted from the mounted file system, and the ADD leaves nothing behind.
#[test]
fn a_mount_on_the_nic_directory_is_refused_not_crossed() {
    let bed = Bed::new("single", "10.93.0.0/24");
    let ynl = Ynl::new();
    let dir = nic_dir(&bed);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&["mount", "-t", "tmpfs", "planted", dir.to_str().unwrap()]);
    std::fs::write(dir.join("precious"), b"keep me").unwrap();
    let pod = Netns::new("pod");
    let r = bed.call("ADD", &pod, &[]);
    let e = r.err("ADD with a mount on the NIC directory");
    assert_eq!(e["code"], 110, "{e}");
    let msg = format!("{} {}", e["msg"], e["details"]);
    assert!(
        msg.contains(dir.file_name().unwrap().to_str().unwrap()) && msg.contains("mount point"),
        "the error names the entry and why: {e}"
    );
    nothing_but_bpffs(&bed, &pod, &ynl);
    let r = bed.gc();
    if !r.status.success() {
        let e = r.err("GC");
        assert!(e.to_string().contains("mount point"), "{e}");
    }
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries,
        ["precious"],
        "nothing created in or deleted from the mount"
    );
    assert_eq!(std::fs::read(dir.join("precious")).unwrap(), b"keep me");
    sh(&["umount", dir.to_str().unwrap()]);
    // The directory is the plugin's to use again.
    bed.call("ADD", &pod, &[]).ok("ADD after the unmount");
    bed.call("DEL", &pod, &[]).ok("DEL");
    assert!(bed.leftovers(&pod, &ynl).is_empty());
}

/// Anyone who can open the NIC's bpffs directory can flock it. An ADD needing the dispatcher
/// then gives up with CNI code 11 ("try again later") naming the directory instead of hanging:
/// each lock wait is bounded by the plugin's own deadline (`LOCK_TIMEOUT`, 20 s; no test knob),
/// and ADD waits at most twice (the steer, then its rollback's release). It leaves nothing.
#[test]
fn a_held_nic_lock_makes_add_fail_with_try_again_later_within_the_deadline() {
    use netkit_cni::bpf::pins::LOCK_TIMEOUT;
    let bed = Bed::new("single", "10.94.0.0/24");
    let ynl = Ynl::new();
    let dir = nic_dir(&bed);
    std::fs::create_dir_all(&dir).unwrap();
    let held = nix::fcntl::Flock::lock(
        std::fs::File::open(&dir).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .expect("flock the NIC directory");
    let pod = Netns::new("pod");
    let started = Instant::now();
    let r = bed.call("ADD", &pod, &[]);
    let took = started.elapsed();
    let e = r.err("ADD behind a held lock");
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e.to_string().contains(dir.to_str().unwrap()),
        "the error names the directory: {e}"
    );
    assert!(
        took >= LOCK_TIMEOUT && took < 2 * LOCK_TIMEOUT + Duration::from_secs(30),
        "ADD took {took:?}"
    );
    nothing_but_bpffs(&bed, &pod, &ynl);
    drop(held);
    bed.call("ADD", &pod, &[]).ok("ADD once the lock is free");
    bed.call("DEL", &pod, &[]).ok("DEL");
    assert!(bed.leftovers(&pod, &ynl).is_empty());
}

/// CNI_NETNS is opened once (O_PATH, nsfs checked) and every step uses that handle. The path is
/// a bind mount of pod A; ADD is stopped after it opened the netns (failpoint `add-after-ipam`,
/// action `wait`), the path is re-bound to pod B, and ADD goes on: the device, its leases, its
/// addresses and the XDP steering all land in A, B is untouched.
#[test]
fn cni_netns_swapped_mid_add_does_not_move_any_step() {
    let bed = Bed::new("single", "10.95.0.0/24");
    let ynl = Ynl::new();
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    // Under /run/netns, which `ip netns` makes a shared mount: the swap propagates into the
    // plugin's `ip netns exec` mount namespace.
    let path = PathBuf::from(format!("/run/netns/{}", unique("swapped")));
    std::fs::write(&path, b"").unwrap();
    let bind = |from: &Netns| {
        sh(&[
            "mount",
            "--bind",
            from.path().to_str().unwrap(),
            path.to_str().unwrap(),
        ])
    };
    bind(&a);
    let ready = std::env::temp_dir().join(unique("nkc-fp-"));
    let go = std::env::temp_dir().join(unique("nkc-go-"));
    let p = path.display().to_string();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &bed.node.name,
        failpoints_bin().to_str().unwrap(),
    ])
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in bed.env("ADD", "swap", &p) {
        cmd.env(k, v);
    }
    cmd.env("NKC_FAILPOINT", "add-after-ipam:wait")
        .env("NKC_FAILPOINT_READY", &ready)
        .env("NKC_FAILPOINT_GO", &go);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        bed.conf().to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        wait_for_file(&ready, Duration::from_secs(60)),
        "add-after-ipam"
    );
    // Lazily: the plugin's O_PATH handle pins the old mount, which is the point.
    sh(&["umount", "-l", path.to_str().unwrap()]);
    bind(&b);
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(ino(&path), ino(&b.path()), "the path now names pod B");
    std::fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let run = PluginRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    };
    let result = run.ok("ADD across the swap").json();
    let ifindex = a.ifindex("net1");
    let addr = result["ips"][0]["address"].as_str().unwrap();
    let addr = addr.split('/').next().unwrap();
    assert!(
        a.ip(&["-j", "addr", "show", "dev", "net1"]).contains(addr),
        "addresses configured in pod A"
    );
    let leased: Vec<Value> = ynl
        .queue_dump(&bed.node, bed.nic.ifindex)
        .into_iter()
        .filter_map(|q| q.get("lease").cloned())
        .collect();
    assert_eq!(leased.len(), 2, "{leased:?}");
    let nsid_a = bed.node.nsid_of(&a);
    for l in &leased {
        assert_eq!(l["ifindex"], ifindex, "leased to A's device: {l}");
        assert_eq!(l["netns-id"], nsid_a, "leased into A's netns: {l}");
    }
    let netkit_in_b: Vec<Value> = b
        .links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .collect();
    assert!(netkit_in_b.is_empty(), "nothing in pod B: {netkit_in_b:?}");
    assert!(
        !b.ip(&["-j", "addr", "show"]).contains(addr),
        "no address in pod B"
    );
    // Clean up through A's own path (DEL by the swapped path would look in B).
    sh(&["umount", "-l", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    bed.call_as("DEL", "swap", &a, &[]).ok("DEL");
    assert!(bed.leftovers(&a, &ynl).is_empty());
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&go);
}
