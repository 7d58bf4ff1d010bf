//! Faults at every step of ADD, against the real kernel: for each failpoint
//! (`netkit_cni::failpoint::ADD_POINTS`), ADD is made to fail there (it must answer a CNI error
//! and leave nothing), and separately stopped there and killed with SIGKILL (then DEL and GC
//! must leave nothing). "Nothing" is read back from the kernel and the file system with
//! independent tools: netkit devices (ip), leases (the kernel's ynl), XDP on the NIC (ip),
//! pins (bpffs), IPAM reservations (host-local's files) and device-info files.
//!
//! The binary is built with the `failpoints` feature (the `vm-tests` feature enables it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netkit_cni::failpoint::ADD_POINTS;
use serde_json::{json, Value};

struct Bed {
    node: Netns,
    nic: Netdevsim,
    bpffs: PathBuf,
    devinfo: PathBuf,
    ipam: CniNet,
    pairing: &'static str,
}

impl Bed {
    fn new(pairing: &'static str, subnet: &str) -> Bed {
        require_privileged_kernel();
        let node = Netns::new("node");
        let nic = Netdevsim::new(&node, 8);
        let bpffs = std::env::temp_dir().join(unique("nkc-bpffs-"));
        std::fs::create_dir(&bpffs).unwrap();
        sh(&["mount", "-t", "bpf", "bpf", bpffs.to_str().unwrap()]);
        let devinfo = std::env::temp_dir().join(unique("nkc-devinfo-"));
        Bed { node, nic, bpffs, devinfo, ipam: CniNet::new(subnet), pairing }
    }

    /// Everything ADD can create: IPAM, a device, two leases, and for single devices the XDP
    /// dispatcher with the pod's XSKMAP.
    fn conf(&self) -> Value {
        let mut extra = json!({
            "pairing": self.pairing,
            "lease": {"master": self.nic.ifname, "queues": 2, "deviceInfoDir": self.devinfo},
        });
        if self.pairing == "single" {
            extra["xdp"] = json!({"bpffs": self.bpffs});
        }
        self.ipam.conf("1.1.0", extra)
    }

    fn env<'a>(&self, command: &'a str, pod: &'a str) -> Vec<(&'a str, String)> {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "cf".to_string()),
            ("CNI_NETNS", pod.to_string()),
            ("CNI_IFNAME", "net1".to_string()),
            ("CNI_PATH", CNI_PATH.to_string()),
        ]
    }

    fn call(&self, command: &str, pod: &Netns, extra_env: &[(&str, String)]) -> PluginRun {
        let path = pod.path().display().to_string();
        let mut env = self.env(command, &path);
        env.extend(extra_env.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_plugin(Some(&self.node), &env, &self.conf().to_string())
    }

    fn gc(&self) -> PluginRun {
        let mut c = self.conf();
        c["cni.dev/valid-attachments"] = json!([]);
        run_plugin(Some(&self.node), &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_PATH)], &c.to_string())
    }

    /// What is left of the attachment, as independent tools see it; empty when nothing is.
    fn leftovers(&self, pod: &Netns, ynl: &Ynl) -> Vec<String> {
        let mut left = Vec::new();
        for (where_, links) in [("pod", pod.links()), ("node", self.node.links())] {
            for l in links.iter().filter(|l| l["linkinfo"]["info_kind"] == "netkit") {
                left.push(format!("netkit device {} in the {where_} netns", l["ifname"]));
            }
        }
        for q in ynl.queue_dump(&self.node, self.nic.ifindex).iter().filter(|q| q.get("lease").is_some()) {
            left.push(format!("lease on queue {}: {}", q["id"], q["lease"]));
        }
        let nic: Value = serde_json::from_str(&self.node.ip(&["-d", "-j", "link", "show", "dev", &self.nic.ifname])).unwrap();
        if nic[0].get("xdp").is_some() {
            left.push(format!("XDP on the NIC: {}", nic[0]["xdp"]));
        }
        if let Ok(rd) = std::fs::read_dir(self.bpffs.join("netkit-cni")) {
            for e in rd.flatten() {
                left.push(format!("bpffs {}", e.path().display()));
            }
        }
        for ip in self.ipam.reserved() {
            left.push(format!("IPAM reservation {ip}"));
        }
        if let Ok(rd) = std::fs::read_dir(&self.devinfo) {
            for e in rd.flatten() {
                left.push(format!("device-info file {}", e.path().display()));
            }
        }
        left
    }

    /// Points this configuration never reaches.
    fn reaches(&self, point: &str) -> bool {
        match self.pairing {
            "single" => point != "add-after-host-config",
            _ => point != "add-after-xdp",
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = run(&["umount", "-l", self.bpffs.to_str().unwrap()]);
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.devinfo);
    }
}

fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "the plugin never reached its failpoint ({} not written)", path.display());
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
        assert!(left.is_empty(), "{} ADD failing at {point} left: {left:#?}\nstderr: {}", bed.pairing, r.stderr);
        bed.call("DEL", &pod, &[]).ok(&format!("DEL after {point}"));
        bed.gc().ok(&format!("GC after {point}"));
        cases += 1;

        // SIGKILL while stopped at the point: no rollback ran; DEL and GC must clean up.
        let pod = Netns::new("pod");
        let ready = std::env::temp_dir().join(unique("nkc-fp-"));
        let path = pod.path().display().to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &bed.node.name, plugin_bin().to_str().unwrap()]).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in bed.env("ADD", &path) {
            cmd.env(k, v);
        }
        cmd.env("NKC_FAILPOINT", format!("{point}:pause")).env("NKC_FAILPOINT_READY", &ready);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), bed.conf().to_string().as_bytes()).unwrap();
        assert_eq!(wait_for_file(&ready, Duration::from_secs(60)), point);
        child.kill().unwrap(); // SIGKILL: `ip netns exec` has exec'd the plugin itself
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{point}: {status}");
        let _ = std::fs::remove_file(&ready);
        bed.call("DEL", &pod, &[]).ok(&format!("DEL after a kill at {point}"));
        bed.gc().ok(&format!("GC after a kill at {point}"));
        let left = bed.leftovers(&pod, &ynl);
        assert!(left.is_empty(), "{} killed at {point}, then DEL and GC, left: {left:#?}", bed.pairing);
        cases += 1;
    }
    cases
}

#[test]
fn single_with_leases_and_xdp_leaks_nothing_at_any_failpoint() {
    let bed = Bed::new("single", "10.91.0.0/24");
    let n = every_point(&bed);
    eprintln!("single: {n} failpoint cases");
    assert_eq!(n, 2 * (ADD_POINTS.len() - 1));
}

#[test]
fn pair_with_leases_leaks_nothing_at_any_failpoint() {
    let bed = Bed::new("pair", "10.92.0.0/24");
    let n = every_point(&bed);
    eprintln!("pair: {n} failpoint cases");
    assert_eq!(n, 2 * (ADD_POINTS.len() - 1));
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
    assert!(msg.contains("host-local"), "the error names the missing plugin: {e}");
    assert!(bed.leftovers(&pod, &Ynl::new()).is_empty(), "{:?}", bed.leftovers(&pod, &Ynl::new()));
    let _ = std::fs::remove_dir(&empty);
}
