//! A real AF_XDP consumer through the lease: Debian trixie's `dpdk-testpmd` (DPDK 24.11) with its
//! AF_XDP PMD, chrooted into the root filesystem scripts/dpdk-rootfs builds
//! (`$NKC_DPDK_ROOTFS`, set by scripts/vm-tests) and run inside the pod netns on the pod's netkit
//! single device, configured from nothing but the device-info file: `iface`, `start_queue`,
//! `queue_count=1`, `use_pinned_map=1`, `dp_path=<xsk-map>`, `force_copy=1`.
//!
//! One port per leased queue: the PMD asks the interface for its channels (`ETHTOOL_GCHANNELS`,
//! `xdp_get_channels_info` in drivers/net/af_xdp/rte_eth_af_xdp.c) and refuses a `queue_count`
//! above the combined count; netkit has no `get_channels` (drivers/net/netkit.c has only
//! `get_drvinfo`), so the PMD sees 1 and a 2-queue port is refused, while `start_queue` is not
//! checked. Both shapes are tested. The PMD inserts each socket into the pinned map at its bound
//! queue id (`update_xskmap(rxq->xsk, map_fd, rxq->xsk_queue_idx)`), which is exactly our map's
//! key (the virtual queue).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::xdp::*;
use common::*;
use serde_json::{json, Value};

const NIC_QUEUES: u32 = 6;

/// The DPDK root filesystem; a test that cannot find it fails and says how to build it.
fn rootfs() -> PathBuf {
    let root = std::env::var("NKC_DPDK_ROOTFS").unwrap_or_else(|_| {
        panic!("NKC_DPDK_ROOTFS is unset: scripts/vm-tests sets it to what scripts/dpdk-rootfs prints (run the tests through it; make test does)")
    });
    let root = PathBuf::from(root);
    assert!(
        root.join(".nkc-built").exists() && root.join("usr/bin/dpdk-testpmd").exists(),
        "{} is not a DPDK root filesystem built by scripts/dpdk-rootfs",
        root.display()
    );
    root
}

fn chroot_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dpdk-chroot")
}

/// `--vdev` arguments for one single-queue AF_XDP port per leased queue, from the device-info
/// file's `interface` and `xdp` section, the way a DPDK pod would build them.
fn af_xdp_vdevs(info: &Value, queues_per_port: u32) -> Vec<String> {
    let iface = info["interface"].as_str().unwrap();
    let x = &info["xdp"];
    let (start, count) = (x["start-queue"].as_u64().unwrap() as u32, x["queue-count"].as_u64().unwrap() as u32);
    let map = x["xsk-map"].as_str().unwrap();
    (0..count.div_ceil(queues_per_port))
        .map(|i| {
            format!(
                "net_af_xdp{i},iface={iface},start_queue={},queue_count={queues_per_port},use_pinned_map=1,dp_path={map},force_copy=1",
                start + i * queues_per_port
            )
        })
        .collect()
}

/// dpdk-testpmd in interactive mode, driven through its stdin; everything it prints is kept.
struct Testpmd {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
}

impl Testpmd {
    /// `ip netns exec <pod> scripts/dpdk-chroot <rootfs> --bind … -- stdbuf -oL dpdk-testpmd …`.
    /// `stdbuf`: testpmd's stdout is a pipe here, which stdio would buffer fully, hiding the
    /// answers to our commands.
    fn start(pod: &Netns, binds: &[&Path], vdevs: &[String], app_args: &[&str]) -> Testpmd {
        let mut c = pod.cmd(chroot_script().to_str().unwrap());
        c.arg(rootfs());
        for b in binds {
            c.arg("--bind").arg(b);
        }
        c.args(["--", "stdbuf", "-oL", "-eL", "/usr/bin/dpdk-testpmd"]);
        // 2 lcores (main + one forwarding core); no hugepages in the VM: anonymous memory, no
        // shared runtime files, no PCI scan.
        c.args(["-l", "0-1", "--no-huge", "-m", "256", "--no-shconf", "--no-pci", "--no-telemetry"]);
        for v in vdevs {
            c.args(["--vdev", v]);
        }
        // The default pool is sized for RTE_MAX_ETHPORTS ports (hundreds of MiB); 2 ports with
        // 2048-entry rings need a few thousand mbufs.
        c.args(["--", "-i", "--total-num-mbufs=16384", "--nb-cores=1"]);
        c.args(app_args);
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn testpmd");
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    out.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        Testpmd { child, stdin, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the output after byte `from` contains `what`; the position after it.
    fn wait_for(&mut self, from: usize, what: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if let Some(i) = out.get(from..).and_then(|s| s.find(what)) {
                return from + i + what.len();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("testpmd exited ({st}) before printing {what:?}; its output:\n{out}");
            }
            assert!(Instant::now() < deadline, "testpmd did not print {what:?} within {timeout:?}; its output:\n{out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one command line; the output position before it.
    fn send(&mut self, line: &str) -> usize {
        let pos = self.output().len();
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        pos
    }

    /// `show port stats <port>`: (RX-packets, TX-packets).
    fn port_stats(&mut self, port: u16) -> (u64, u64) {
        let pos = self.send(&format!("show port stats {port}"));
        let head = self.wait_for(pos, &format!("NIC statistics for port {port} "), Duration::from_secs(30));
        let end = self.wait_for(head, "Tx-bps:", Duration::from_secs(30));
        let out = self.output();
        let block = &out[head..end];
        let num = |key: &str| -> u64 {
            let rest = &block[block.find(key).unwrap_or_else(|| panic!("no {key} in port {port}'s stats: {block}")) + key.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap_or_else(|e| panic!("{key} in {block}: {e}"))
        };
        (num("RX-packets:"), num("TX-packets:"))
    }

    /// Polls port stats until `want(rx, tx)` holds for every port or `timeout` passes.
    fn stats_until(&mut self, ports: u16, timeout: Duration, want: impl Fn(u16, u64, u64) -> bool) -> Vec<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let s: Vec<(u64, u64)> = (0..ports).map(|p| self.port_stats(p)).collect();
            if s.iter().enumerate().all(|(p, &(rx, tx))| want(p as u16, rx, tx)) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs until it exits by itself; its status and output.
    fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200)); // the readers drain the pipes
                return (st, self.output());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("testpmd still runs after {timeout:?}; its output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Frames arriving on (not sent from) the far NIC, captured with an AF_PACKET socket opened
/// before the test sends anything.
struct FarCapture {
    handle: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl FarCapture {
    /// Captures on `ifindex` inside `ns` until `n` frames matched `keep` or `timeout` passed.
    fn start(ns: &Netns, ifindex: u32, n: usize, timeout: Duration, keep: impl Fn(&[u8]) -> bool + Send + 'static) -> FarCapture {
        let fd = ns.fd();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the fd is owned right away.
            let s = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(s >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: s is a fresh descriptor nobody else owns.
            let s = unsafe { OwnedFd::from_raw_fd(s) };
            // SAFETY: zeroed sockaddr_ll is valid; fields set below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: sll is a valid sockaddr_ll of the given length.
            let r = unsafe { libc::bind(s.as_raw_fd(), &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) };
            assert_eq!(r, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
            // SAFETY: tv outlives the call.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            ready_tx.send(()).unwrap();
            let mut got = Vec::new();
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 4096];
            while got.len() < n && Instant::now() < deadline {
                // SAFETY: zeroed sockaddr_ll is valid for recvfrom to fill.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: buf and from are valid for the lengths given.
                let r = unsafe { libc::recvfrom(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0, &mut from as *mut _ as *mut libc::sockaddr, &mut len) };
                if r <= 0 {
                    continue;
                }
                let frame = &buf[..r as usize];
                if from.sll_pkttype != libc::PACKET_OUTGOING as u8 && keep(frame) {
                    got.push(frame.to_vec());
                }
            }
            got
        });
        ready_rx.recv().unwrap();
        FarCapture { handle }
    }

    fn frames(self) -> Vec<Vec<u8>> {
        self.handle.join().unwrap()
    }
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn link_mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    let v: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
    mac(v[0]["address"].as_str().unwrap())
}

#[test]
fn testpmd_receives_and_sends_through_each_leased_queue_and_sigkill_then_del_leaves_nothing() {
    rootfs();
    let w = wire(NIC_QUEUES);
    let net = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let (pod1, pod2) = (Netns::new("pod"), Netns::new("pod"));
    net.call(&w, "ADD", "c1", Some(&pod1), "NETKIT_LEASE_QUEUE_IDS=2,3").ok("ADD c1");
    net.call(&w, "ADD", "c2", Some(&pod2), "NETKIT_LEASE_QUEUE_IDS=4").ok("ADD c2");
    let (i1, i2) = (net.info("c1"), net.info("c2"));
    assert_eq!(i1["queues"], json!([{"physical": 2, "virtual": 1}, {"physical": 3, "virtual": 2}]), "{i1}");
    assert_eq!((i1["xdp"]["start-queue"].as_u64(), i1["xdp"]["queue-count"].as_u64()), (Some(1), Some(2)), "{i1}");
    let binds = [w.bpffs.path.as_path(), net.dir.as_path()];

    // Shape 1: one port over both queues. The PMD reads the netkit device's channels, gets
    // EOPNOTSUPP, counts 1 combined channel and refuses queue_count=2 at probe time.
    let two = Testpmd::start(&pod1, &binds, &af_xdp_vdevs(&i1, 2), &[]);
    let (st, out) = two.wait_exit(Duration::from_secs(180));
    assert!(!st.success(), "a 2-queue AF_XDP port on netkit should be refused; testpmd said:\n{out}");
    assert!(out.contains("Specified queue count 2 is larger than combined queue count 1"), "the PMD's own reason, from ETHTOOL_GCHANNELS:\n{out}");

    // Shape 2: one single-queue port per leased queue.
    let c2_socket = PodSocket::open(&pod2, &i2);
    let vdevs = af_xdp_vdevs(&i1, 1);
    assert_eq!(vdevs.len(), 2);
    let mut pmd = Testpmd::start(&pod1, &binds, &vdevs, &["--port-topology=loop", "--forward-mode=rxonly"]);
    let ready = pmd.wait_for(0, "testpmd> ", Duration::from_secs(180));
    let out = pmd.output();
    assert!(out[..ready].contains("Port 0:") && out[..ready].contains("Port 1:"), "two ports came up:\n{out}");
    let pos = pmd.send("start");
    pmd.wait_for(pos, "rxonly packet forwarding", Duration::from_secs(30));
    // The PMD put each socket into the pod's map at its queue: bpftool sees two entries.
    let dump = sh(&["bpftool", "-j", "map", "dump", "pinned", i1["xdp"]["xsk-map"].as_str().unwrap()]);
    let keys: Vec<u64> = serde_json::from_str::<Value>(&dump).unwrap().as_array().unwrap().iter().filter_map(|e| e["key"].as_u64()).collect();
    assert_eq!(keys, vec![1, 2], "testpmd's sockets sit at the virtual queues: {dump}");

    w.steer_port(6001, 2); // c1 virtual 1: testpmd port 0
    w.steer_port(6002, 3); // c1 virtual 2: testpmd port 1
    w.steer_port(6003, 4); // c2's queue: its own socket, never testpmd
    w.send(6001, payloads("p0", 20));
    w.send(6002, payloads("p1", 15));
    let to_c2 = payloads("c2", 10);
    w.send(6003, to_c2.clone());
    let s = pmd.stats_until(2, Duration::from_secs(60), |p, rx, _| rx >= [20, 15][p as usize]);
    std::thread::sleep(Duration::from_secs(1));
    let s2: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
    assert_eq!((s2[0].0, s2[1].0), (20, 15), "testpmd counts exactly each queue's frames on its port (first reading {s:?}); output:\n{}", pmd.output());
    assert_eq!(udp_payloads(&c2_socket.receive(to_c2.len(), Duration::from_secs(20))), to_c2, "c2's queue still reaches only c2");

    // macswap: frames come back out through AF_XDP TX, the netkit device, the NIC, the wire.
    let pos = pmd.send("stop");
    pmd.wait_for(pos, "Done", Duration::from_secs(30));
    let pos = pmd.send("set fwd macswap");
    pmd.wait_for(pos, "macswap", Duration::from_secs(30));
    let pos = pmd.send("start");
    pmd.wait_for(pos, "macswap packet forwarding", Duration::from_secs(30));
    let far_mac = link_mac(&w.far, &w.peer.ifname);
    let node_mac = mac(&w.node_mac);
    let back = payloads("back", 12);
    let cap =
        FarCapture::start(&w.far, w.peer.ifindex, back.len(), Duration::from_secs(60), move |f| f.len() > 14 && f[..6] == far_mac && f[6..12] == node_mac);
    let before: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
    w.send(6001, back.clone());
    let got = cap.frames();
    let after: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
    assert_eq!(
        udp_payloads(&got),
        back,
        "the far side receives each frame back, MACs swapped, in order; testpmd stats {before:?} -> {after:?}; output:\n{}",
        pmd.output()
    );
    assert_eq!((after[0].0 - before[0].0, after[0].1 - before[0].1), (12, 12), "port 0 received and sent 12");
    assert_eq!(after[1], before[1], "port 1 saw none of it");

    // SIGKILL: no clean shutdown of the PMD. Its sockets die with it; DEL still leaves nothing.
    pmd.child.kill().unwrap();
    pmd.child.wait().unwrap();
    drop(pmd);
    net.call(&w, "DEL", "c1", Some(&pod1), "").ok("DEL c1 after testpmd was killed");
    let left: Vec<Value> = pod1.links().into_iter().filter(|l| l["linkinfo"]["info_kind"] == "netkit").collect();
    assert!(left.is_empty(), "c1's netkit device is gone: {left:?}");
    let leased: Vec<Value> = Ynl::new().queue_dump(&w.node, w.nic.ifindex).into_iter().filter(|q| q.get("lease").is_some()).collect();
    assert_eq!(leased.len(), 1, "only c2's queue is still leased: {leased:?}");
    assert!(!w.bpffs.plugin_entries().iter().any(|e| e.contains("/pods/c1")), "c1's map is unpinned: {:?}", w.bpffs.plugin_entries());
    assert!(!net.dir.join(format!("{}:c1:xsk0-device.json", net.name)).exists(), "c1's device-info file is gone");
    drop(c2_socket);
    net.call(&w, "DEL", "c2", Some(&pod2), "").ok("DEL c2");
    assert!(w.bpftool_xdp().is_empty(), "no XDP on the NIC: {:?}", w.bpftool_xdp());
    assert!(w.bpffs.plugin_entries().is_empty(), "{:?}", w.bpffs.plugin_entries());
}
