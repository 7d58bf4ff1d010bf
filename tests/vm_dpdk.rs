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

use common::packet::PacketSocket;
use common::steering::*;
use common::xdp::*;
use common::*;
use serde_json::{json, Value};

const NIC_QUEUES: u32 = 6;

/// testpmd busy-polls a core (of the VM's two): these tests take turns instead of starving each
/// other under TCG.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The DPDK root filesystem; a test that cannot find it fails and says how to build it.
fn rootfs() -> PathBuf {
    common::dpdk::rootfs().unwrap_or_else(|e| panic!("{e}"))
}

/// `--vdev` arguments for one single-queue AF_XDP port per leased queue, from the device-info
/// file's `interface` and `xdp` section, the way a DPDK pod would build them.
fn af_xdp_vdevs(info: &Value, queues_per_port: u32) -> Vec<String> {
    let iface = info["interface"].as_str().unwrap();
    let x = &info["xdp"];
    let (start, count) = (
        x["start-queue"].as_u64().unwrap() as u32,
        x["queue-count"].as_u64().unwrap() as u32,
    );
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
    /// `ip netns exec <pod> scripts/dpdk-chroot <rootfs> --bind … -- stdbuf -o0 dpdk-testpmd …`.
    /// `stdbuf`: testpmd's stdout is a pipe here, which stdio would buffer, hiding the answers
    /// to our commands and the prompt (which has no newline).
    fn start(pod: &Netns, binds: &[&Path], vdevs: &[String], app_args: &[&str]) -> Testpmd {
        Testpmd::start_as(pod, binds, &[], vdevs, app_args)
    }

    /// As [`Testpmd::start`], with `wrap` (e.g. prlimit, setpriv) run before it in the chroot.
    fn start_as(
        pod: &Netns,
        binds: &[&Path],
        wrap: &[&str],
        vdevs: &[String],
        app_args: &[&str],
    ) -> Testpmd {
        let mut c = common::dpdk::testpmd_command(&pod.name, &rootfs(), binds, wrap, vdevs);
        // The default pool is sized for RTE_MAX_ETHPORTS ports (hundreds of MiB); 2 ports with
        // 2048-entry rings need a few thousand mbufs.
        c.args(["--", "-i", "--total-num-mbufs=16384", "--nb-cores=1"]);
        c.args(app_args);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn testpmd");
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            // Raw chunks, not lines: the "testpmd> " prompt ends without a newline.
            std::thread::spawn(move || {
                let mut r = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
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
            assert!(
                Instant::now() < deadline,
                "testpmd did not print {what:?} within {timeout:?}; its output:\n{out}"
            );
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
        let head = self.wait_for(
            pos,
            &format!("NIC statistics for port {port} "),
            Duration::from_secs(30),
        );
        let end = self.wait_for(head, "Tx-bps:", Duration::from_secs(30));
        let out = self.output();
        let block = &out[head..end];
        let num = |key: &str| -> u64 {
            let rest = &block[block
                .find(key)
                .unwrap_or_else(|| panic!("no {key} in port {port}'s stats: {block}"))
                + key.len()..];
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("{key} in {block}: {e}"))
        };
        (num("RX-packets:"), num("TX-packets:"))
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
                panic!(
                    "testpmd still runs after {timeout:?}; its output:\n{}",
                    self.output()
                );
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

/// Polls both ports until together they received `total` frames (the NIC's hash splits a
/// pod's flows over its queues, so no port's share is known beforehand) or `timeout` passes.
fn wait_total_rx(pmd: &mut Testpmd, total: u64, timeout: Duration) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let s: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
        if s.iter().map(|(rx, _)| rx).sum::<u64>() >= total || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Frames arriving on (not sent from) the far NIC, captured with an AF_PACKET socket opened
/// before the test sends anything.
struct FarCapture {
    handle: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl FarCapture {
    /// Captures on `ifindex` inside `ns` until `n` frames matched `keep` or `timeout` passed.
    fn start(
        ns: &Netns,
        ifindex: u32,
        n: usize,
        timeout: Duration,
        keep: impl Fn(&[u8]) -> bool + Send + 'static,
    ) -> FarCapture {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = ns.spawn(move || {
            let sock = PacketSocket::open(ifindex, Duration::from_millis(200))
                .kernel("an AF_PACKET socket on the far NIC");
            ready_tx.send(()).unwrap();
            let mut got = Vec::new();
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 4096];
            while got.len() < n && Instant::now() < deadline {
                if let Some(frame) = sock.recv_incoming(&mut buf) {
                    if keep(frame) {
                        got.push(frame.to_vec());
                    }
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
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn link_mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    let v: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
    mac(v[0]["address"].as_str().unwrap())
}

#[test]
fn testpmd_receives_and_sends_through_each_leased_queue_and_sigkill_then_del_leaves_nothing() {
    let _serial = serial();
    rootfs();
    let w = wire(NIC_QUEUES);
    let net = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let (pod1, pod2) = (Netns::new("pod"), Netns::new("pod"));
    net.call(&w, "ADD", "c1", Some(&pod1), "NETKIT_LEASE_QUEUE_IDS=2,3")
        .ok("ADD c1");
    net.call(&w, "ADD", "c2", Some(&pod2), "NETKIT_LEASE_QUEUE_IDS=4")
        .ok("ADD c2");
    let (i1, i2) = (net.info("c1"), net.info("c2"));
    assert_eq!(
        i1["queues"],
        json!([{"physical": 2, "virtual": 1}, {"physical": 3, "virtual": 2}]),
        "{i1}"
    );
    assert_eq!(
        (
            i1["xdp"]["start-queue"].as_u64(),
            i1["xdp"]["queue-count"].as_u64()
        ),
        (Some(1), Some(2)),
        "{i1}"
    );
    let binds = [w.bpffs.path.as_path(), net.dir.as_path()];

    // Shape 1: one port over both queues. The PMD reads the netkit device's channels, gets
    // EOPNOTSUPP, counts 1 combined channel and refuses queue_count=2 at probe time.
    let mut two = Testpmd::start(&pod1, &binds, &af_xdp_vdevs(&i1, 2), &[]);
    // The PMD's own reason, from ETHTOOL_GCHANNELS; testpmd then comes up without the port.
    two.wait_for(
        0,
        "Specified queue count 2 is larger than combined queue count 1",
        Duration::from_secs(180),
    );
    two.wait_for(0, "testpmd> ", Duration::from_secs(60));
    let pos = two.send("quit");
    two.wait_for(pos, "Bye", Duration::from_secs(60));
    let (st, out) = two.wait_exit(Duration::from_secs(60));
    assert!(
        !out.contains("Port 0:"),
        "no port was configured ({st}):\n{out}"
    );

    // Shape 2: one single-queue port per leased queue.
    let c2_socket = PodSocket::open(&pod2, &i2);
    let vdevs = af_xdp_vdevs(&i1, 1);
    assert_eq!(vdevs.len(), 2);
    let mut pmd = Testpmd::start(
        &pod1,
        &binds,
        &vdevs,
        &["--port-topology=loop", "--forward-mode=rxonly"],
    );
    let ready = pmd.wait_for(0, "testpmd> ", Duration::from_secs(180));
    let out = pmd.output();
    assert!(
        out[..ready].contains("Port 0:") && out[..ready].contains("Port 1:"),
        "two ports came up:\n{out}"
    );
    let pos = pmd.send("start");
    pmd.wait_for(pos, "rxonly packet forwarding", Duration::from_secs(30));
    // c1's two queues are one RSS context its rule points to: 32 flows to c1's address spread
    // over queues 2 and 3 by the NIC's hash; c2's rule sends its own to queue 4.
    let (ip1, mac1) = w.reach(&pod1, "xsk0", 1);
    let (ip2, mac2) = w.reach(&pod2, "xsk0", 2);
    assert_mac_steered(&w.node, &w.nic.ifname, &mac1, &[2, 3]);
    assert_mac_steered(&w.node, &w.nic.ifname, &mac2, &[4]);
    let stats0: Vec<_> = [2, 3].iter().map(|&q| w.queue_stats(q)).collect();
    let to_c1 = w.send_flows(&ip1, 6001, 32, 2, "p");
    let to_c2 = w.send_flows(&ip2, 6003, 32, 1, "c2");
    let total = to_c1.len() as u64;
    let s = wait_total_rx(&mut pmd, total, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let s2: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
    let per_queue: Vec<u64> = [2, 3]
        .iter()
        .zip(&stats0)
        .map(|(&q, b)| w.queue_stats(q).redirect - b.redirect)
        .collect();
    assert_eq!(
        (s2[0].0, s2[1].0),
        (per_queue[0], per_queue[1]),
        "testpmd counts exactly each queue's frames on its port (the dispatcher redirected \
         {per_queue:?} on queues 2 and 3; first reading {s:?}); output:\n{}",
        pmd.output()
    );
    assert_eq!(
        s2[0].0 + s2[1].0,
        total,
        "together exactly the frames addressed to c1; output:\n{}",
        pmd.output()
    );
    assert!(
        s2[0].0 > 0 && s2[1].0 > 0,
        "c1's context spreads its 32 flows over both leased queues: {s2:?}"
    );
    assert_eq!(
        udp_payloads(&c2_socket.receive(to_c2.len(), Duration::from_secs(20))),
        to_c2,
        "c2's queue still reaches only c2"
    );

    // macswap: testpmd sends each frame back through AF_XDP TX. In copy mode (the only mode
    // netdevsim, and any NIC without AF_XDP zero-copy, has) nothing leaves: the generic transmit
    // path sends only on queue ids below the device's real_num_tx_queues (`__xsk_generic_xmit`,
    // net/xdp/xsk.c), a netkit device has one TX queue (NETKIT_NUM_TX_QUEUES_REAL,
    // drivers/net/netkit.c) while the socket sits on a leased queue >= 1, and a single device
    // has no peer to transmit to anyway (`netkit_xmit` drops). Zero-copy transmit goes through
    // the NIC driver on the leased physical queue instead, which netdevsim cannot show. This
    // asserts today's behaviour, so that a kernel which changes it fails here and docs/afxdp.md
    // (AF_XDP into the pod, Egress) gets updated.
    let pos = pmd.send("stop");
    pmd.wait_for(pos, "Done", Duration::from_secs(30));
    let pos = pmd.send("set fwd macswap");
    pmd.wait_for(pos, "macswap", Duration::from_secs(30));
    let pos = pmd.send("start");
    pmd.wait_for(pos, "macswap packet forwarding", Duration::from_secs(30));
    let far_mac = link_mac(&w.far, &w.peer.ifname);
    let pod_mac = mac(&mac1);
    let back = payloads("back", 12);
    let cap = FarCapture::start(
        &w.far,
        w.peer.ifindex,
        back.len(),
        Duration::from_secs(20),
        move |f| f.len() > 14 && f[..6] == far_mac && f[6..12] == pod_mac,
    );
    let before: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
    // One flow: the context's hash puts all of it on one of c1's two queues.
    w.send_to(&ip1, 6001, back.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let s: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
        let done = (0..2).any(|p| s[p].0 >= before[p].0 + 12 && s[p].1 >= before[p].1 + 12);
        if done || Instant::now() >= deadline {
            // A moment more: anything on the other port would show now.
            std::thread::sleep(Duration::from_secs(1));
            break (0..2).map(|p| pmd.port_stats(p)).collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let got = cap.frames();
    let moved: Vec<(u64, u64)> = (0..2)
        .map(|p| (after[p].0 - before[p].0, after[p].1 - before[p].1))
        .collect();
    let (port, other) = if moved[0].0 > 0 { (0, 1) } else { (1, 0) };
    assert_eq!(
        moved[port],
        (12, 12),
        "the flow's port {port} received 12 and put 12 on its TX ring; output:\n{}",
        pmd.output()
    );
    assert_eq!(
        moved[other],
        (0, 0),
        "port {other} saw none of it (one flow, one queue)"
    );
    assert!(got.is_empty(), "AF_XDP copy-mode TX on a leased netkit queue reached the wire ({} frames): the kernel changed, update docs/afxdp.md", got.len());

    // SIGKILL: no clean shutdown of the PMD. Its sockets die with it; DEL still leaves nothing.
    pmd.child.kill().unwrap();
    pmd.child.wait().unwrap();
    drop(pmd);
    net.call(&w, "DEL", "c1", Some(&pod1), "")
        .ok("DEL c1 after testpmd was killed");
    let left: Vec<Value> = pod1
        .links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .collect();
    assert!(left.is_empty(), "c1's netkit device is gone: {left:?}");
    let leased: Vec<Value> = Ynl::new()
        .queue_dump(&w.node, w.nic.ifindex)
        .into_iter()
        .filter(|q| q.get("lease").is_some())
        .collect();
    assert_eq!(
        leased.len(),
        1,
        "only c2's queue is still leased: {leased:?}"
    );
    assert!(
        !w.bpffs
            .plugin_entries()
            .iter()
            .any(|e| e.contains("/pods/c1")),
        "c1's map is unpinned: {:?}",
        w.bpffs.plugin_entries()
    );
    assert!(
        !net.dir
            .join(format!("{}:c1:xsk0-device.json", net.name))
            .exists(),
        "c1's device-info file is gone"
    );
    drop(c2_socket);
    net.call(&w, "DEL", "c2", Some(&pod2), "").ok("DEL c2");
    assert!(
        w.bpftool_xdp().is_empty(),
        "no XDP on the NIC: {:?}",
        w.bpftool_xdp()
    );
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "{:?}",
        w.bpffs.plugin_entries()
    );
}

/// The `xdp.podMap` fix for a non-root consumer: the plugin hands the pod's XSKMAP pin to
/// the configured user (0600) in a root-owned 0711 directory, and testpmd runs as that user
/// (65534) with `CAP_NET_RAW` as its only capability, `RLIMIT_MEMLOCK` for its UMEMs and
/// `--no-mlockall`, seeing only the pod's pin directory: it opens the map, inserts its sockets
/// and receives each queue's frames. DEL still removes the directory (the consumer could create
/// nothing in it).
#[test]
fn a_non_root_testpmd_with_only_cap_net_raw_uses_a_pin_handed_to_its_user() {
    use std::os::unix::fs::MetadataExt;
    let _serial = serial();
    rootfs();
    let w = wire(NIC_QUEUES);
    let mut net = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    net.conf["xdp"]["podMap"] = json!({"uid": 65534, "gid": 65534});
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "NETKIT_LEASE_QUEUE_IDS=2,3")
        .ok("ADD c1");
    let info = net.info("c1");
    let pin = PathBuf::from(info["xdp"]["xsk-map"].as_str().unwrap());
    let dir = pin.parent().unwrap().to_path_buf();
    let (pm, dm) = (
        std::fs::symlink_metadata(&pin).unwrap(),
        std::fs::symlink_metadata(&dir).unwrap(),
    );
    assert_eq!(
        (pm.uid(), pm.gid(), pm.mode() & 0o7777),
        (65534, 65534, 0o600),
        "the pin is the consumer's"
    );
    assert_eq!(
        (dm.uid(), dm.mode() & 0o7777),
        (0, 0o711),
        "its directory stays root's, traversable only"
    );

    let wrap = [
        "prlimit",
        "--memlock=268435456:268435456",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+net_raw",
        "--ambient-caps=-all,+net_raw",
        "--bounding-set=-all,+net_raw",
        "--",
    ];
    let mut pmd = Testpmd::start_as(
        &pod,
        &[dir.as_path()],
        &wrap,
        &af_xdp_vdevs(&info, 1),
        &[
            "--port-topology=loop",
            "--forward-mode=rxonly",
            "--no-mlockall",
        ],
    );
    pmd.wait_for(0, "testpmd> ", Duration::from_secs(180));
    let pos = pmd.send("start");
    pmd.wait_for(pos, "rxonly packet forwarding", Duration::from_secs(30));
    let (ip, _) = w.reach(&pod, "xsk0", 1);
    let stats0: Vec<_> = [2, 3].iter().map(|&q| w.queue_stats(q)).collect();
    let sent = w.send_flows(&ip, 6101, 32, 1, "n");
    wait_total_rx(&mut pmd, sent.len() as u64, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let s: Vec<(u64, u64)> = (0..2).map(|p| pmd.port_stats(p)).collect();
    let per_queue: Vec<u64> = [2, 3]
        .iter()
        .zip(&stats0)
        .map(|(&q, b)| w.queue_stats(q).redirect - b.redirect)
        .collect();
    assert_eq!(
        (s[0].0, s[1].0),
        (per_queue[0], per_queue[1]),
        "the non-root testpmd receives each queue's frames on its port (queues 2 and 3 \
         redirected {per_queue:?}); output:\n{}",
        pmd.output()
    );
    assert_eq!(
        s[0].0 + s[1].0,
        sent.len() as u64,
        "all {} frames addressed to the pod; output:\n{}",
        sent.len(),
        pmd.output()
    );
    drop(pmd);
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL c1");
    assert!(!dir.exists(), "DEL removed the pod's pin directory");
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "{:?}",
        w.bpffs.plugin_entries()
    );
}

/// The environment variable that turns this test binary into the unprivileged launcher process
/// of [`sock_fds_from_a_privileged_helper_receive_in_a_process_without_capabilities`].
const LAUNCHER_ENV: &str = "NKC_SOCKFDS_LAUNCHER";
/// The launcher's end of the control socket.
const LAUNCHER_FD: i32 = 3;
/// The launcher's `RLIMIT_MEMLOCK`: two default UMEMs (4 MiB each) and some slack.
const LAUNCHER_MEMLOCK: u64 = 9 << 20;

/// QEMU's `sock-fds` hand-off without QEMU. A privileged helper (this test, root) creates fresh
/// AF_XDP sockets, one per leased queue; a launcher process with no capabilities at all (uid
/// 65534, its own `RLIMIT_MEMLOCK`, in the pod netns) receives them over a Unix socket
/// (`SCM_RIGHTS`) and does with them exactly what QEMU's net/af-xdp.c does with `sock-fds`:
/// registers its own UMEM on each (`xsk_umem__create_with_fd`) and binds socket `i` to
/// `start-queue + i` (`xsk_socket__create`). QEMU inserts `sock-fds` sockets into no map, so
/// the helper, which kept the same sockets, puts them into the pod's XSKMAP at
/// `map-start-index + i` once they are set up. Frames from the far side then arrive in the
/// launcher, each queue's on its own socket. The `-netdev` argument for it comes from
/// `netkit-cni qemu-netdev --sock-fds`.
#[test]
fn sock_fds_from_a_privileged_helper_receive_in_a_process_without_capabilities() {
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    let _serial = serial();

    let w = wire(NIC_QUEUES);
    let net = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let pod = Netns::new("pod");
    net.call(&w, "ADD", "c1", Some(&pod), "NETKIT_LEASE_QUEUE_IDS=2,3")
        .ok("ADD c1");
    let info = net.info("c1");
    let x = info["xdp"].clone();
    let (start, count) = (
        x["start-queue"].as_u64().unwrap() as u32,
        x["queue-count"].as_u64().unwrap() as u32,
    );
    let map = PathBuf::from(x["xsk-map"].as_str().unwrap());
    assert_eq!((start, count), (1, 2), "{info}");

    // What the launcher would pass to QEMU, from the plugin's own helper.
    let file = net.dir.join(format!("{}:c1:xsk0-device.json", net.name));
    let out = sh(&[
        plugin_bin().to_str().unwrap(),
        "qemu-netdev",
        "--device-info",
        file.to_str().unwrap(),
        "--id",
        "hn1",
        "--sock-fds",
        "20:21",
        "--force-copy",
    ]);
    assert_eq!(
        out.trim(),
        "af-xdp,id=hn1,ifname=xsk0,queues=2,start-queue=1,inhibit=on,sock-fds=20:21,force-copy=on"
    );

    // The helper's sockets, created in the pod netns (AF_XDP sockets are bound per netns).
    let socks: Vec<OwnedFd> = pod.run(move || {
        (0..count)
            .map(|_| netkit_cni::xsk::Xsk::socket().expect("socket(AF_XDP) as root"))
            .collect()
    });
    let (ours, theirs) = UnixStream::pair().unwrap();
    let pod_fd = pod.fd();
    let (their_raw, pod_raw) = (theirs.as_raw_fd(), pod_fd.as_raw_fd());
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "launcher_process_of_the_sock_fds_test",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(LAUNCHER_ENV, "1");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ok = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            ok(libc::setns(pod_raw, libc::CLONE_NEWNET))?;
            if their_raw == LAUNCHER_FD {
                ok(libc::fcntl(LAUNCHER_FD, libc::F_SETFD, 0))?; // dup2 onto itself keeps CLOEXEC
            } else {
                ok(libc::dup2(their_raw, LAUNCHER_FD))?;
            }
            let lim = libc::rlimit {
                rlim_cur: LAUNCHER_MEMLOCK,
                rlim_max: LAUNCHER_MEMLOCK,
            };
            ok(libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim))?;
            ok(libc::setgroups(0, std::ptr::null()))?;
            ok(libc::setgid(65534))?;
            // From uid 0 to a non-zero uid: the kernel clears every capability set.
            ok(libc::setuid(65534))
        });
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the launcher");
    drop(theirs);
    let mut ctl = BufReader::new(ours.try_clone().unwrap());

    // Hand over the sockets with what to bind them to.
    let hello =
        json!({"ifindex": info["ifindex"], "queues": (start..start + count).collect::<Vec<u32>>()})
            .to_string();
    let raw: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    nix::sys::socket::sendmsg::<()>(
        ours.as_raw_fd(),
        &[std::io::IoSlice::new(format!("{hello}\n").as_bytes())],
        &[nix::sys::socket::ControlMessage::ScmRights(&raw)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .expect("sendmsg SCM_RIGHTS");
    let mut line = String::new();
    ctl.read_line(&mut line).unwrap();
    if line.trim() != "bound" {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the launcher did not bind: {line:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (i, s) in socks.iter().enumerate() {
        netkit_cni::xsk::Xsk::insert_fd_into(s.as_fd(), &map, start + i as u32)
            .unwrap_or_else(|e| panic!("insert the launcher's socket {i}: {e}"));
    }
    // 32 flows to the pod's address, spread by its RSS context over queues 2 and 3: the
    // launcher's socket i must get exactly what the dispatcher redirected on queue 2 + i.
    let (ip, _) = w.reach(&pod, "xsk0", 1);
    let stats0: Vec<_> = [2, 3].iter().map(|&q| w.queue_stats(q)).collect();
    let sent = w.send_flows(&ip, 7001, 32, 2, "fd");
    let per_queue = eventually(
        "every frame counted on queue 2 or 3",
        Duration::from_secs(30),
        || {
            let d: Vec<u64> = [2, 3]
                .iter()
                .zip(&stats0)
                .map(|(&q, b)| w.queue_stats(q).redirect - b.redirect)
                .collect();
            (d.iter().sum::<u64>() >= sent.len() as u64).then_some(d)
        },
    );
    let (n0, n1) = (per_queue[0] as usize, per_queue[1] as usize);
    writeln!(ours.try_clone().unwrap(), "{}", json!({"want": [n0, n1]})).unwrap();
    line.clear();
    ctl.read_line(&mut line).unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("launcher answer {line:?}: {e}\n{logs}"));
    assert!(
        out.status.success(),
        "launcher failed: {}\n{logs}",
        out.status
    );
    assert_eq!(
        got["caps"], "0000000000000000",
        "the launcher ran without any capability: {got}"
    );
    assert_eq!(
        got["own_socket_errno"],
        libc::EPERM,
        "it could not have made an AF_XDP socket itself: {got}"
    );
    assert_eq!(
        got["memlock_errno"],
        libc::ENOBUFS,
        "a UMEM above RLIMIT_MEMLOCK is refused: {got}"
    );
    let frames: Vec<Vec<String>> = serde_json::from_value(got["frames"].clone()).unwrap();
    assert_eq!(
        (frames[0].len(), frames[1].len()),
        (n0, n1),
        "each queue's frames on its own socket (queues 2 and 3 redirected {per_queue:?}), \
         nothing more\n{logs}"
    );
    assert!(
        n0 > 0 && n1 > 0,
        "the context spreads 32 flows over both queues: {per_queue:?}"
    );
    let mut all: Vec<String> = frames.concat();
    all.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(
        all, want,
        "together exactly the frames sent to the pod\n{logs}"
    );
    let index = |p: &String| sent.iter().position(|s| s == p).unwrap();
    let flow = |p: &String| p.split('-').nth(2).unwrap().to_string();
    for (i, f) in frames.iter().enumerate() {
        let order: Vec<usize> = f.iter().map(index).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "socket {i} got its frames in the order they were sent: {f:?}"
        );
    }
    let flows0: std::collections::BTreeSet<String> = frames[0].iter().map(flow).collect();
    assert!(
        frames[1].iter().all(|p| !flows0.contains(&flow(p))),
        "each flow lands whole on one queue: {frames:?}"
    );
    drop(socks);
    net.call(&w, "DEL", "c1", Some(&pod), "").ok("DEL c1");
    assert!(
        w.bpffs.plugin_entries().is_empty(),
        "{:?}",
        w.bpffs.plugin_entries()
    );
}

/// Not a test of its own: the unprivileged launcher process that
/// [`sock_fds_from_a_privileged_helper_receive_in_a_process_without_capabilities`] spawns (this
/// binary, re-executed with `--ignored`). Run any other way it fails, saying so.
#[test]
#[ignore = "the launcher process of sock_fds_from_a_privileged_helper_receive_in_a_process_without_capabilities, spawned by it"]
fn launcher_process_of_the_sock_fds_test() {
    use netkit_cni::xsk::{Xsk, XskConfig};
    use std::os::unix::net::UnixStream;
    assert!(std::env::var_os(LAUNCHER_ENV).is_some(), "this is a helper process spawned by sock_fds_from_a_privileged_helper_receive_in_a_process_without_capabilities; it does nothing on its own");
    // SAFETY: the parent put our end of the control socket at LAUNCHER_FD; nothing else owns it.
    let ctl = unsafe { UnixStream::from_raw_fd(LAUNCHER_FD) };
    let caps = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        .unwrap();
    let own_socket_errno = match Xsk::socket() {
        Ok(_) => 0,
        Err(e) => e.errno().map(|e| e as i32).unwrap_or(-1),
    };

    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            ctl.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("recvmsg");
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: the kernel installed these descriptors for us.
                fds.extend(v.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        (msg.bytes, fds)
    };
    let hello: Value = serde_json::from_slice(&buf[..n]).expect("hello");
    let ifindex = hello["ifindex"].as_u64().unwrap() as u32;
    let queues: Vec<u32> = hello["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(fds.len(), queues.len(), "one socket per queue");
    let config = XskConfig::default();

    // RLIMIT_MEMLOCK is what an unprivileged consumer's UMEMs are charged to: below one UMEM,
    // registering it fails (ENOBUFS); then the soft limit goes back up to the hard one.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let low = libc::rlimit {
        rlim_cur: 1 << 20,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &low) };
    let memlock_errno =
        match Xsk::bind_socket(fds[0].try_clone().unwrap(), ifindex, queues[0], &config) {
            Ok(_) => 0,
            Err(e) => e.errno().map(|e| e as i32).unwrap_or(-1),
        };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };

    let mut xsks: Vec<Xsk> = fds
        .into_iter()
        .zip(&queues)
        .map(|(fd, &q)| {
            Xsk::bind_socket(fd, ifindex, q, &config)
                .unwrap_or_else(|e| panic!("bind queue {q}: {e}"))
        })
        .collect();
    let mut w = ctl.try_clone().unwrap();
    writeln!(w, "bound").unwrap();
    let mut line = String::new();
    BufReader::new(ctl.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    let want: Vec<usize> = serde_json::from_str::<Value>(&line).unwrap()["want"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let frames: Vec<Vec<String>> = xsks
        .iter_mut()
        .zip(&want)
        .map(|(x, &n)| {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while got.len() < n && Instant::now() < deadline {
                got.extend(x.recv(n - got.len(), Duration::from_millis(200)).unwrap());
            }
            // Nothing more trickles in.
            got.extend(x.recv(1, Duration::from_millis(500)).unwrap());
            udp_payloads(&got)
        })
        .collect();
    writeln!(w, "{}", json!({"caps": caps, "own_socket_errno": own_socket_errno, "memlock_errno": memlock_errno, "frames": frames})).unwrap();
}
