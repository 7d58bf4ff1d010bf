//! BPF host routing (`hostRouting: {"mode": "bpf"}`) end to end: the plugin binary attaches the
//! tcx ingress program to a netdevsim "uplink" and the egress program to each pod's pair; a far
//! netns wired to the uplink (tests/common/xdp.rs `wire()`) talks to L3 and L2 pods over IPv4
//! and IPv6 with ICMP, TCP and UDP. Independent witnesses: the programs' own counters (read from
//! the pinned per-CPU map), an nftables counter in the node's forward chain that must stay at 0
//! for bypassed traffic while traffic to a far prefix *not* in the bypass set is counted there,
//! the kernel's BPF_PROG_QUERY for the tcx hook, and the bpffs tree after DEL and GC.
//! Issue 17: flows the node's conntrack NATs (a chained portmap's hostPort, a ClusterIP-like
//! DNAT) take the stack (`out_nat`/`in_nat`, nft counters of DNATed replies); two nodes wired
//! NIC to NIC; two uplinks in one node; the XDP dispatcher and host routing on one NIC.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::xdp::*;
use common::*;
use netkit_cni::bpf::sys::tcx_ingress_programs;
use netkit_cni::hostrouting::{counter, Uplink};
use serde_json::{json, Value};

/// Far addresses inside the bypass set (the wire's subnet) and outside it (a second prefix the
/// node routes to the far side: its traffic must keep the node's stack).
const FAR6: &str = "fd77::2";
const NODE6: &str = "fd77::1";
const KEPT4: &str = "10.88.0.2";
const KEPT6: &str = "fd88::2";
const BYPASS: [&str; 2] = ["10.77.0.0/24", "fd77::/64"];

struct Bed {
    w: Wire,
}

/// What the uplink's pins hold: counters, (pod address, primary ifindex), directory.
type UplinkState = (Vec<u64>, Vec<(IpAddr, u32)>, PathBuf);

impl Bed {
    fn new() -> Bed {
        let w = wire(2);
        let far_if = w.peer.ifname.clone();
        // wire() turns IPv6 off in the far netns; these tests need it.
        sh(&[
            "ip",
            "netns",
            "exec",
            &w.far.name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            &format!("net.ipv6.conf.{far_if}.disable_ipv6=0"),
        ]);
        w.node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NODE6}/64"),
            "dev",
            &w.nic.ifname,
            "nodad",
        ]);
        w.far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{FAR6}/64"),
            "dev",
            &far_if,
            "nodad",
        ]);
        w.far
            .ip(&["addr", "add", &format!("{KEPT4}/24"), "dev", &far_if]);
        w.far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{KEPT6}/64"),
            "dev",
            &far_if,
            "nodad",
        ]);
        w.far.ip(&[
            "-6",
            "neigh",
            "replace",
            NODE6,
            "lladdr",
            &w.node_mac,
            "dev",
            &far_if,
            "nud",
            "permanent",
        ]);
        // The far side reaches every pod CIDR through the node; the node reaches the kept
        // prefix through the far side.
        w.far.ip(&["route", "add", "10.244.0.0/16", "via", NODE_IP]);
        w.far.ip(&["-6", "route", "add", "fd44::/16", "via", NODE6]);
        w.node.ip(&["route", "add", "10.88.0.0/24", "via", FAR_IP]);
        w.node.ip(&["-6", "route", "add", "fd88::/64", "via", FAR6]);
        // The witness: counters in the node's forward hook, one per direction and prefix.
        watch_forward(
            &w.node,
            &[
                ("ip saddr 10.77.0.2", "bypass"),
                ("ip daddr 10.77.0.2", "bypass"),
                ("ip6 saddr fd77::2", "bypass"),
                ("ip6 daddr fd77::2", "bypass"),
                ("ip saddr 10.88.0.2", "kept"),
                ("ip daddr 10.88.0.2", "kept"),
                ("ip6 saddr fd88::2", "kept"),
                ("ip6 daddr fd88::2", "kept"),
            ],
        );
        Bed { w }
    }

    /// Packets the forward chain counted for rules tagged `tag`.
    fn forwarded(&self, tag: &str) -> u64 {
        nft_counted(&self.w.node, "watch", tag)
    }

    fn uplink(&self) -> Option<UplinkState> {
        uplink_state(&self.w.node, &self.w.bpffs.path, &self.w.nic.ifname)
    }

    fn counters(&self) -> Vec<u64> {
        self.uplink()
            .expect("host routing attached to the uplink")
            .0
    }

    /// `netkit-cni inspect --json`'s `host_routing` of the uplink, run in the node netns
    /// (`None`: inspect reports none, or does not list the NIC).
    fn inspect_host_routing(&self) -> Option<Value> {
        let v = inspect_json(
            &self.w.node,
            &["--bpffs", self.w.bpffs.path.to_str().unwrap()],
        );
        // A NIC with nothing of ours on it is not listed at all.
        v["nics"]
            .as_array()
            .expect("nics")
            .iter()
            .find(|n| n["name"] == self.w.nic.ifname.as_str())
            .map(|n| n["host_routing"].clone())
            .filter(|h| !h.is_null())
    }

    fn tcx_programs(&self) -> Vec<u32> {
        tcx_programs(&self.w.node, self.w.nic.ifindex)
    }
}

/// Installs table `inet nkt` with a chain `chain` on hook `hook` (priority 0, policy accept)
/// holding one counter per (match, tag) rule: the netfilter witness of what the node's stack saw.
fn watch(ns: &Netns, chain: &str, hook: &str, rules: &[(&str, &str)]) {
    let mut body = String::new();
    for (m, tag) in rules {
        body.push_str(&format!("\t\t{m} counter comment \"{tag}\"\n"));
    }
    let ruleset = format!(
        "table inet nkt {{\n\tchain {chain} {{\n\t\ttype filter hook {hook} priority 0; policy accept;\n{body}\t}}\n}}\n"
    );
    let mut child = ns
        .cmd("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f in {}: {}\n{ruleset}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`watch`] on the forward hook, chain `watch`.
fn watch_forward(ns: &Netns, rules: &[(&str, &str)]) {
    watch(ns, "watch", "forward", rules);
}

/// Packets counted by the rules tagged `tag` in chain `chain` of table `inet nkt` in `ns`.
fn nft_counted(ns: &Netns, chain: &str, tag: &str) -> u64 {
    let out = ns
        .cmd("nft")
        .args(["-j", "list", "chain", "inet", "nkt", chain])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft list chain {chain} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("rule"))
        .filter(|r| r["comment"] == tag)
        .map(|r| {
            r["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|x| x.get("counter"))
                .expect("counter")["packets"]
                .as_u64()
                .unwrap()
        })
        .sum()
}

/// What the pins of `nic`'s host routing in `node` hold (None: not attached).
fn uplink_state(node: &Netns, bpffs: &std::path::Path, nic: &str) -> Option<UplinkState> {
    let (bpffs, nic) = (bpffs.to_path_buf(), nic.to_string());
    node.run(move || {
        Uplink::open(&bpffs, &nic).unwrap().map(|u| {
            (
                u.counters().unwrap(),
                u.entries().unwrap(),
                u.dir().to_path_buf(),
            )
        })
    })
}

/// The program ids on `ifindex`'s tcx ingress in `node`, from the kernel (BPF_PROG_QUERY).
fn tcx_programs(node: &Netns, ifindex: u32) -> Vec<u32> {
    node.run(move || tcx_ingress_programs(ifindex))
        .kernel("BPF_PROG_QUERY tcx ingress")
}

/// The netkit devices in `ns`.
fn netkit_links(ns: &Netns) -> Vec<String> {
    ns.links()
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn show_counters(c: &[u64]) -> String {
    counter::NAMES
        .iter()
        .zip(c)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A network with BPF host routing on one uplink of one node.
struct Net {
    cni: CniNet,
    conf: Value,
}

impl Net {
    fn new(b: &Bed, mode: &str, v4: &str, v6: &str, bypass: &[&str]) -> Net {
        Net::on(&b.w.nic.ifname, &b.w.bpffs.path, mode, v4, v6, bypass)
    }

    /// A network whose pods route through `uplink` with pins under `bpffs`; no IPv6 range when
    /// `v6` is empty.
    fn on(
        uplink: &str,
        bpffs: &std::path::Path,
        mode: &str,
        v4: &str,
        v6: &str,
        bypass: &[&str],
    ) -> Net {
        let cni = CniNet::new(v4);
        let mut ranges = vec![json!([{"subnet": v4}])];
        if !v6.is_empty() {
            ranges.push(json!([{"subnet": v6}]));
        }
        let conf = cni.conf(
            "1.1.0",
            json!({
                "mode": mode,
                "ipam": {"type": "host-local", "dataDir": cni.data_dir, "ranges": ranges},
                "hostRouting": {"mode": "bpf", "uplink": uplink, "bypass": bypass,
                                "bpffs": bpffs},
            }),
        );
        Net { cni, conf }
    }

    fn call(&self, b: &Bed, cmd: &str, cid: &str, pod: Option<&Netns>, conf: &Value) -> PluginRun {
        self.call_in(&b.w.node, cmd, cid, pod, conf)
    }

    /// The plugin run in `node` (the node's netns) as a runtime there would.
    fn call_in(
        &self,
        node: &Netns,
        cmd: &str,
        cid: &str,
        pod: Option<&Netns>,
        conf: &Value,
    ) -> PluginRun {
        self.cni.call(
            node,
            cmd,
            cid,
            pod.map(|p| p.path()).as_deref(),
            "eth0",
            conf,
        )
    }

    /// ADD; returns the result and the pod's (IPv4, IPv6) addresses.
    fn add(&self, b: &Bed, cid: &str, pod: &Netns) -> (Value, IpAddr, IpAddr) {
        let (r, v4, v6) = self.add_in(&b.w.node, cid, pod);
        (r, v4, v6.expect("an IPv6 address"))
    }

    /// ADD in `node`; returns the result and the pod's IPv4 and (if any) IPv6 address.
    fn add_in(&self, node: &Netns, cid: &str, pod: &Netns) -> (Value, IpAddr, Option<IpAddr>) {
        let r = self
            .call_in(node, "ADD", cid, Some(pod), &self.conf)
            .ok("ADD")
            .json();
        let ips: Vec<IpAddr> = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let a = i["address"].as_str().unwrap();
                a.split('/').next().unwrap().parse().unwrap()
            })
            .collect();
        let v4 = *ips.iter().find(|i| i.is_ipv4()).expect("an IPv4 address");
        let v6 = ips.iter().find(|i| i.is_ipv6()).copied();
        (r, v4, v6)
    }
}

fn ping(from: &Netns, to: &str) {
    let out = from
        .cmd("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "3", to])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping {to} from {}: {}{}",
        from.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP round trip: `server` listens on `addr:port`, `client` connects, sends, reads the echo.
fn tcp_rr(server: &Netns, client: &Netns, addr: IpAddr, port: u16) {
    tcp_rr_to(
        server,
        SocketAddr::new(addr, port),
        client,
        SocketAddr::new(addr, port),
    );
}

/// A TCP round trip where the client connects to `to`, which the network translates to the
/// server's `listen` (a hostPort): 64 KiB each way, compared byte for byte.
fn tcp_rr_to(server: &Netns, listen: SocketAddr, client: &Netns, to: SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.spawn(move || {
        let l = TcpListener::bind(listen).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no TCP connection to {listen}: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    client.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("TCP connect to {to}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // 64 KiB: several segments (and GSO packets) each way.
        let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == data, "TCP echo from {to} differs");
    });
    srv.join().unwrap();
}

/// A UDP round trip: `server` echoes one datagram on `addr:port`.
fn udp_rr(server: &Netns, client: &Netns, addr: IpAddr, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.spawn(move || {
        let s = UdpSocket::bind((addr, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = s.recv_from(&mut buf).expect("UDP datagram at the server");
        s.send_to(&buf[..n], from).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    client.run(move || {
        let any: IpAddr = if addr.is_ipv4() {
            "0.0.0.0".parse().unwrap()
        } else {
            "::".parse().unwrap()
        };
        let s = UdpSocket::bind((any, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 1500];
        // Retried: the first datagram may wait for neighbour resolution.
        for _ in 0..5 {
            s.send_to(b"nkc-udp", (addr, port)).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                assert_eq!(&buf[..n], b"nkc-udp");
                return;
            }
        }
        panic!("no UDP echo from {addr}:{port}");
    });
    srv.join().unwrap();
}

/// Counters read once nothing moves them any more: the baseline before a phase that must not
/// touch them. A TCP exchange ends before its last packets do (the delayed ACK timer, the FIN
/// handshake after both sides drop their sockets), and those would otherwise count against
/// the next phase (a CI run saw 2 + 2 of them).
fn settled(read: impl Fn() -> Vec<u64>) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read();
    loop {
        // Over the delayed ACK timer's 40 ms minimum (include/net/tcp.h TCP_DELACK_MIN) with
        // room for TCG's slow timers.
        std::thread::sleep(Duration::from_millis(500));
        let now = read();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "counters still moving after 10 s: {now:?}"
        );
        last = now;
    }
}

fn delta(after: &[u64], before: &[u64], c: u32) -> u64 {
    after[c as usize] - before[c as usize]
}

#[test]
fn far_traffic_bypasses_the_node_stack_for_l3_and_l2_pods_v4_and_v6() {
    let b = Bed::new();
    let l3 = Net::new(&b, "l3", "10.244.10.0/24", "fd44:10::/64", &BYPASS);
    let l2 = Net::new(&b, "l2", "10.244.20.0/24", "fd44:20::/64", &BYPASS);
    let (p3, p2) = (Netns::new("pod"), Netns::new("pod"));
    let (_, a3, a3v6) = l3.add(&b, "c3", &p3);
    let (_, a2, a2v6) = l2.add(&b, "c2", &p2);
    assert_eq!(b.tcx_programs().len(), 1, "one tcx program on the uplink");

    let (_, entries, dir) = b.uplink().expect("attached");
    let mut ips: Vec<IpAddr> = entries.iter().map(|e| e.0).collect();
    ips.sort();
    let mut want = vec![a3, a3v6, a2, a2v6];
    want.sort();
    assert_eq!(ips, want, "the pods map holds exactly both pods' addresses");
    assert!(dir.starts_with(&b.w.bpffs.path), "{}", dir.display());

    let before = b.counters();
    let far_v4: IpAddr = FAR_IP.parse().unwrap();
    let far_v6: IpAddr = FAR6.parse().unwrap();
    let mut port = 7000;
    for (pod, v4, v6) in [(&p3, a3, a3v6), (&p2, a2, a2v6)] {
        for (pod_ip, far_ip) in [(v4, far_v4), (v6, far_v6)] {
            // far -> pod and pod -> far, every protocol.
            ping(&b.w.far, &pod_ip.to_string());
            ping(pod, &far_ip.to_string());
            tcp_rr(pod, &b.w.far, pod_ip, port);
            tcp_rr(&b.w.far, pod, far_ip, port + 1);
            udp_rr(pod, &b.w.far, pod_ip, port + 2);
            udp_rr(&b.w.far, pod, far_ip, port + 3);
            port += 10;
        }
    }
    let after = b.counters();
    let show = show_counters;
    // 2 pods x 2 families x (2 pings + 2 TCP + 2 UDP) round trips, each at least one packet
    // each way (pings, UDP) or several (TCP handshakes and data).
    assert!(
        delta(&after, &before, counter::IN_REDIRECT) >= 24,
        "ingress redirects: {}",
        show(&after)
    );
    assert!(
        delta(&after, &before, counter::OUT_REDIRECT) >= 24,
        "egress redirects: {}",
        show(&after)
    );
    assert_eq!(
        b.forwarded("bypass"),
        0,
        "bypassed traffic reached the node's forward chain; counters: {}",
        show(&after)
    );

    // Outside the bypass set: the node's stack forwards it, netfilter sees it.
    let mid = settled(|| b.counters());
    let kept4: IpAddr = KEPT4.parse().unwrap();
    let kept6: IpAddr = KEPT6.parse().unwrap();
    for (pod, v4, v6) in [(&p3, a3, a3v6), (&p2, a2, a2v6)] {
        ping(pod, KEPT4);
        ping(pod, KEPT6);
        tcp_rr(&b.w.far, pod, kept4, port);
        tcp_rr(&b.w.far, pod, kept6, port + 1);
        let _ = (v4, v6);
        port += 10;
    }
    let end = b.counters();
    assert!(
        b.forwarded("kept") >= 16,
        "traffic outside the bypass set must be forwarded by the node: {} packets",
        b.forwarded("kept")
    );
    assert!(
        delta(&end, &mid, counter::OUT_NOT_BYPASS) >= 8,
        "egress must have passed the kept traffic on: {}",
        show(&end)
    );
    assert!(
        delta(&end, &mid, counter::IN_NOT_BYPASS) >= 8,
        "ingress must have passed the kept replies on: {}",
        show(&end)
    );
    assert_eq!(
        delta(&end, &mid, counter::IN_REDIRECT) + delta(&end, &mid, counter::OUT_REDIRECT),
        0,
        "nothing outside the bypass set may be redirected: {}",
        show(&end)
    );
    assert_eq!(b.forwarded("bypass"), 0);

    // Node <-> pod keeps working (the node's own address is inside the bypass prefix, but the
    // FIB says it is local, so the egress program hands it to the stack).
    for (pod, v4, v6) in [(&p3, a3, a3v6), (&p2, a2, a2v6)] {
        ping(&b.w.node, &v4.to_string());
        ping(&b.w.node, &v6.to_string());
        ping(pod, NODE_IP);
        ping(pod, NODE6);
    }

    l3.call(&b, "DEL", "c3", Some(&p3), &l3.conf).ok("DEL c3");
    l2.call(&b, "DEL", "c2", Some(&p2), &l2.conf).ok("DEL c2");
    assert_eq!(b.tcx_programs(), Vec::<u32>::new(), "tcx link left behind");
    assert_eq!(b.w.bpffs.plugin_entries(), Vec::<String>::new());
    assert!(b.uplink().is_none());
    assert_eq!(b.inspect_host_routing(), None);
}

#[test]
fn check_del_and_gc_leave_nothing_and_refcount_per_uplink() {
    let b = Bed::new();
    let l3 = Net::new(&b, "l3", "10.244.30.0/24", "fd44:30::/64", &BYPASS);
    let l2 = Net::new(&b, "l2", "10.244.40.0/24", "fd44:40::/64", &BYPASS);
    let (pa, pb) = (Netns::new("pod"), Netns::new("pod"));
    let (ra, a4, a6) = l3.add(&b, "ca", &pa);
    let (_, b4, b6) = l2.add(&b, "cb", &pb);
    let prog = b.tcx_programs();
    assert_eq!(prog.len(), 1);
    // What an operator sees: `inspect` reads the same pins and the kernel's program id.
    let hr = b
        .inspect_host_routing()
        .expect("inspect shows the uplink's host routing");
    assert_eq!(hr["ingress_prog_id"], prog[0], "{hr}");
    assert_eq!(
        (hr["pods"].as_u64(), hr["addresses"].as_u64()),
        (Some(2), Some(4)),
        "{hr}"
    );

    // CHECK passes on what ADD built.
    let mut check = l3.conf.clone();
    check["prevResult"] = ra.clone();
    l3.call(&b, "CHECK", "ca", Some(&pa), &check).ok("CHECK ca");

    // A network naming another bypass set on the same uplink is refused, leaving nothing.
    let other = Net::new(
        &b,
        "l3",
        "10.244.50.0/24",
        "fd44:50::/64",
        &["10.77.0.0/25"],
    );
    let pc = Netns::new("pod");
    let nk_links = || {
        b.w.node
            .links()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "netkit")
            .count()
    };
    let links_before = nk_links();
    let e = other
        .call(&b, "ADD", "cc", Some(&pc), &other.conf)
        .err("ADD with a conflicting bypass set");
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("hostRouting.bypass"),
        "{e}"
    );
    assert_eq!(
        other.cni.reserved(),
        Vec::<String>::new(),
        "IPAM not rolled back"
    );
    assert_eq!(
        nk_links(),
        links_before,
        "the refused ADD's device must be gone"
    );
    let (_, entries, _) = b.uplink().unwrap();
    assert_eq!(entries.len(), 4, "{entries:?}");

    // DEL of one pod keeps the uplink attached for the other.
    l3.call(&b, "DEL", "ca", Some(&pa), &l3.conf).ok("DEL ca");
    let hr = b
        .inspect_host_routing()
        .expect("inspect still shows the uplink");
    assert_eq!(
        (hr["pods"].as_u64(), hr["addresses"].as_u64()),
        (Some(1), Some(2)),
        "{hr}"
    );
    let (_, entries, _) = b.uplink().expect("still attached for cb");
    let mut ips: Vec<IpAddr> = entries.iter().map(|e| e.0).collect();
    ips.sort();
    let mut want = vec![b4, b6];
    want.sort();
    assert_eq!(ips, want);
    assert_eq!(b.tcx_programs(), prog, "the same tcx program stays");
    // CHECK of the deleted pod now fails.
    let e = l3
        .call(&b, "CHECK", "ca", Some(&pa), &check)
        .err("CHECK after DEL");
    assert_eq!(e["code"], 104, "{e}");
    let _ = (a4, a6);

    // CHECK notices missing map entries.
    let mut check_b = l2.conf.clone();
    check_b["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": pb.path()}],
        "ips": [{"address": format!("{b4}/24"), "interface": 0},
                {"address": format!("{b6}/64"), "interface": 0}],
    });
    let (bpffs, nic) = (b.w.bpffs.path.clone(), b.w.nic.ifname.clone());
    let host_ifindex: u32 = {
        let (_, entries, _) = b.uplink().unwrap();
        entries[0].1
    };
    let removed = b.w.node.run(move || {
        Uplink::open(&bpffs, &nic)
            .unwrap()
            .unwrap()
            .remove_pod(host_ifindex)
            .unwrap()
    });
    assert_eq!(removed, 2);
    let e = l2
        .call(&b, "CHECK", "cb", Some(&pb), &check_b)
        .err("CHECK with the map entries gone");
    assert_eq!(e["code"], 104, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("missing"), "{e}");

    // GC with no valid attachment: the orphan device goes, then its (re-added) entries and
    // the uplink's program and pins.
    let (bpffs, nic) = (b.w.bpffs.path.clone(), b.w.nic.ifname.clone());
    let b4c = b4;
    b.w.node.run(move || {
        // Put one entry back so GC has a dead primary's entry to sweep.
        let up = Uplink::open(&bpffs, &nic).unwrap().unwrap();
        up.add_pod(host_ifindex, &[b4c]).unwrap();
    });
    let mut gc = l2.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    l2.call(&b, "GC", "", None, &gc).ok("GC");
    assert_eq!(
        b.tcx_programs(),
        Vec::<u32>::new(),
        "tcx link left behind by GC"
    );
    assert_eq!(b.w.bpffs.plugin_entries(), Vec::<String>::new());
    assert_eq!(l2.cni.reserved(), Vec::<String>::new());
    assert_eq!(l3.cni.reserved(), Vec::<String>::new());
}

/// Nothing of the plugin is left in `node`: no tcx program on `nic`, no pins under `bpffs`, no
/// netkit device, no IPAM reservation of `nets`.
/// Host device names hash only the container id and ifname: network A's ADD of the same pod
/// and ifname as network B's live attachment is refused (103), and the runtime then sends A's
/// DEL. That DEL must leave B's addresses in the uplink's `pods` map and its tcx program
/// attached (it used to remove the addresses of whatever device had the name, and detach the
/// uplink when B was its last pod).
#[test]
fn a_refused_adds_del_for_another_network_leaves_the_owners_host_routing() {
    let b = Bed::new();
    let owner = Net::new(&b, "l3", "10.244.60.0/24", "fd44:60::/64", &BYPASS);
    let other = Net::new(&b, "l3", "10.244.61.0/24", "fd44:61::/64", &BYPASS);
    let pod = Netns::new("pod");
    let (_, v4, _) = owner.add(&b, "c1", &pod);
    let (_, before, _) = b.uplink().expect("attached");
    assert!(before.iter().any(|(ip, _)| *ip == v4), "{before:?}");
    let prog = b.tcx_programs();
    assert_eq!(prog.len(), 1);
    let e = other
        .call(&b, "ADD", "c1", Some(&pod), &other.conf)
        .err("ADD of the same pod and ifname in another network");
    assert_eq!(e["code"], 103, "{e}");
    other
        .call(&b, "DEL", "c1", Some(&pod), &other.conf)
        .ok("DEL after the refused ADD");
    let (_, after, _) = b
        .uplink()
        .expect("the owner's uplink must stay attached after another network's DEL");
    assert_eq!(after, before, "the owner's addresses are still routed");
    assert_eq!(b.tcx_programs(), prog);
    ping(&b.w.far, &v4.to_string());
    owner
        .call(&b, "DEL", "c1", Some(&pod), &owner.conf)
        .ok("the owner's DEL");
    assert!(b.uplink().is_none(), "the owner's DEL detaches");
    assert!(b.tcx_programs().is_empty());
}

/// The `pods` map never takes an address over from another live pod: today the host route's
/// `NLM_F_EXCL` refuses a duplicate address before host routing is reached, so the map's own
/// guard is exercised directly, as a second ADD's `add_pod` would call it. It used to write
/// with `BPF_ANY` and silently re-route the first pod's address to the second.
#[test]
fn add_pod_never_takes_over_another_pods_address() {
    let b = Bed::new();
    let net = Net::new(&b, "l3", "10.244.62.0/24", "fd44:62::/64", &BYPASS);
    let (pa, pb) = (Netns::new("pod"), Netns::new("pod"));
    let (_, a4, _) = net.add(&b, "ca", &pa);
    let (_, b4, _) = net.add(&b, "cb", &pb);
    let (_, before, _) = b.uplink().unwrap();
    let of = |ip: IpAddr| before.iter().find(|(i, _)| *i == ip).unwrap().1;
    let (a_if, b_if) = (of(a4), of(b4));
    assert_ne!(a_if, b_if);
    let (bpffs, nic) = (b.w.bpffs.path.clone(), b.w.nic.ifname.clone());
    let r = b.w.node.run(move || {
        let up = Uplink::open(&bpffs, &nic).unwrap().expect("attached");
        up.add_pod(b_if, &[a4]).map_err(|e| e.to_string())
    });
    let e = r.expect_err("taking over ca's address must be refused");
    assert!(
        e.contains(&a4.to_string()) && e.contains("another pod"),
        "{e}"
    );
    let (_, after, _) = b.uplink().unwrap();
    assert_eq!(after, before, "ca's and cb's entries are as they were");
    // Re-adding a pod's own address is fine (an ADD retried after a failure).
    let (bpffs, nic) = (b.w.bpffs.path.clone(), b.w.nic.ifname.clone());
    b.w.node
        .run(move || {
            let up = Uplink::open(&bpffs, &nic).unwrap().unwrap();
            up.add_pod(a_if, &[a4]).map_err(|e| e.to_string())
        })
        .expect("a pod's own address");
    ping(&b.w.far, &a4.to_string());
    net.call(&b, "DEL", "ca", Some(&pa), &net.conf).ok("DEL ca");
    net.call(&b, "DEL", "cb", Some(&pb), &net.conf).ok("DEL cb");
    assert!(b.uplink().is_none());
}

/// Datagrams `pod` receives on `addr`:`port` while `send` runs, and up to 1 s after.
fn received_while(pod: &Netns, addr: IpAddr, port: u16, send: impl FnOnce()) -> u32 {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let d = done.clone();
    let srv = pod.spawn(move || {
        let s = UdpSocket::bind((addr, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        tx.send(()).unwrap();
        let (mut n, mut buf) = (0, [0u8; 64]);
        loop {
            match s.recv_from(&mut buf) {
                Ok(_) => n += 1,
                Err(_) if d.load(Ordering::SeqCst) => return n,
                Err(_) => {}
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    send();
    done.store(true, Ordering::SeqCst);
    srv.join().unwrap()
}

/// `count` UDP datagrams from `src` (an address configured in `from`) to `dst`:`port`.
fn send_udp_from(from: &Netns, src: IpAddr, dst: IpAddr, port: u16, count: u32) {
    from.run(move || {
        let s = UdpSocket::bind((src, 0)).unwrap();
        for _ in 0..count {
            s.send_to(b"nkc-spoof", (dst, port)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// A source inside `bypass` that the node routes out of *another* device (a third netns's
/// prefix, more specific than the uplink's), sent from the far side, must not reach the pod past
/// netfilter: the reverse-path check hands it to the stack (`in_rpf`), where a prerouting rule
/// the node enforces drops it. A frame sent to another host's MAC (PACKET_OTHERHOST) is the
/// stack's too (`in_not_host`), which drops it. Both used to be redirected into the pod. Legit
/// far traffic still bypasses.
#[test]
fn spoofed_sources_and_frames_for_other_hosts_never_bypass_netfilter() {
    let b = Bed::new();
    let net = Net::new(&b, "l3", "10.244.64.0/24", "fd44:64::/64", &BYPASS);
    let pod = Netns::new("pod");
    let (_, a4, a6) = net.add(&b, "c1", &pod);
    // A third netns behind a veth of the node, with prefixes inside `bypass` that the node
    // routes through that veth (longer than the uplink's connected /24 and /64): the upper
    // halves, 10.77.0.128/25 and fd77::8000:0:0:0/65 (fd77::8000:1/65 would be the lower half,
    // which holds the far side's own fd77::2 and made its legit traffic fail the check).
    let third = Netns::new("third");
    let (node_end, _) = b.w.node.veth(1, None);
    let links: Vec<Value> = b.w.node.links();
    let peer_end = links
        .iter()
        .find(|l| l["ifname"] != node_end.as_str() && l["link"] == node_end.as_str())
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .expect("the veth's other end");
    b.w.node
        .ip(&["link", "set", &peer_end, "netns", &third.name]);
    third.ip(&["link", "set", &peer_end, "up"]);
    b.w.node
        .ip(&["addr", "add", "10.77.0.129/25", "dev", &node_end]);
    b.w.node.ip(&[
        "-6",
        "addr",
        "add",
        "fd77:0:0:0:8000::1/65",
        "dev",
        &node_end,
        "nodad",
    ]);
    third.ip(&["addr", "add", "10.77.0.130/25", "dev", &peer_end]);
    third.ip(&[
        "-6",
        "addr",
        "add",
        "fd77:0:0:0:8000::2/65",
        "dev",
        &peer_end,
        "nodad",
    ]);
    // The policy the node enforces in netfilter: nothing from the third netns's addresses
    // arriving on the uplink.
    let rules = format!(
        "table inet nkt {{\n\tchain spoof {{\n\t\ttype filter hook prerouting priority -300; policy accept;\n\t\tiifname \"{up}\" ip saddr 10.77.0.130 counter drop comment \"spoofed\"\n\t\tiifname \"{up}\" ip6 saddr fd77:0:0:0:8000::2 counter drop comment \"spoofed\"\n\t}}\n}}\n",
        up = b.w.nic.ifname
    );
    let mut child =
        b.w.node
            .cmd("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{rules}");
    // The far side claims the third netns's addresses.
    let far_if = b.w.peer.ifname.clone();
    b.w.far
        .ip(&["addr", "add", "10.77.0.130/32", "dev", &far_if]);
    b.w.far.ip(&[
        "-6",
        "addr",
        "add",
        "fd77:0:0:0:8000::2/128",
        "dev",
        &far_if,
        "nodad",
    ]);
    let before = settled(|| b.counters());
    let (s4, s6): (IpAddr, IpAddr) = (
        "10.77.0.130".parse().unwrap(),
        "fd77:0:0:0:8000::2".parse().unwrap(),
    );
    let got4 = received_while(&pod, a4, 7401, || send_udp_from(&b.w.far, s4, a4, 7401, 5));
    let got6 = received_while(&pod, a6, 7402, || send_udp_from(&b.w.far, s6, a6, 7402, 5));
    let after = settled(|| b.counters());
    assert_eq!(
        (got4, got6),
        (0, 0),
        "spoofed datagrams reached the pod past netfilter; counters: {}",
        show_counters(&after)
    );
    assert_eq!(
        delta(&after, &before, counter::IN_RPF),
        10,
        "{}",
        show_counters(&after)
    );
    assert_eq!(delta(&after, &before, counter::IN_REDIRECT), 0);
    assert_eq!(nft_counted(&b.w.node, "spoof", "spoofed"), 10);

    // Frames for another host's MAC: the far side resolves the node's address to a wrong MAC.
    let far_v4: IpAddr = FAR_IP.parse().unwrap();
    b.w.far.ip(&[
        "neigh",
        "replace",
        NODE_IP,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        &far_if,
        "nud",
        "permanent",
    ]);
    let before = settled(|| b.counters());
    let got = received_while(&pod, a4, 7403, || {
        send_udp_from(&b.w.far, far_v4, a4, 7403, 5)
    });
    let after = settled(|| b.counters());
    assert_eq!(got, 0, "{}", show_counters(&after));
    assert_eq!(
        delta(&after, &before, counter::IN_NOT_HOST),
        5,
        "{}",
        show_counters(&after)
    );
    assert_eq!(delta(&after, &before, counter::IN_REDIRECT), 0);
    b.w.far.ip(&[
        "neigh",
        "replace",
        NODE_IP,
        "lladdr",
        &b.w.node_mac,
        "dev",
        &far_if,
        "nud",
        "permanent",
    ]);

    // Legit far traffic passes the check and still bypasses. The far side gives the third
    // netns's addresses back first, so that neither can be picked as the source.
    b.w.far
        .ip(&["addr", "del", "10.77.0.130/32", "dev", &far_if]);
    b.w.far.ip(&[
        "-6",
        "addr",
        "del",
        "fd77:0:0:0:8000::2/128",
        "dev",
        &far_if,
    ]);
    let before = settled(|| b.counters());
    udp_rr(&pod, &b.w.far, a4, 7404);
    udp_rr(&pod, &b.w.far, a6, 7405);
    let after = b.counters();
    assert!(
        delta(&after, &before, counter::IN_REDIRECT) >= 2,
        "{}",
        show_counters(&after)
    );
    net.call(&b, "DEL", "c1", Some(&pod), &net.conf).ok("DEL");
    assert!(b.uplink().is_none());
}

fn assert_no_leftovers(node: &Netns, nic: &Netdevsim, bpffs: &Bpffs, nets: &[&Net]) {
    assert_eq!(
        tcx_programs(node, nic.ifindex),
        Vec::<u32>::new(),
        "tcx program left on {} in {}",
        nic.ifname,
        node.name
    );
    assert!(
        uplink_state(node, &bpffs.path, &nic.ifname).is_none(),
        "host routing of {} still attached",
        nic.ifname
    );
    assert_eq!(
        bpffs.plugin_entries(),
        Vec::<String>::new(),
        "pins left under {}",
        bpffs.path.display()
    );
    assert_eq!(
        netkit_links(node),
        Vec::<String>::new(),
        "netkit devices left in {}",
        node.name
    );
    for n in nets {
        assert_eq!(n.cni.reserved(), Vec::<String>::new(), "IPAM records left");
    }
}

/// Debian's `portmap` (containernetworking-plugins) chained after netkit-cni, as a runtime
/// chains it: same network name, `prevResult` = netkit-cni's result, the mappings in
/// `runtimeConfig`. Runs in `node`.
fn portmap(node: &Netns, cmd: &str, cid: &str, pod: &Netns, net: &Net, prev: &Value, maps: Value) {
    let conf = json!({
        "cniVersion": net.conf["cniVersion"],
        "name": net.cni.name,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": maps},
        "prevResult": prev,
    });
    let bin = std::path::Path::new(CNI_PATH).join("portmap");
    assert!(
        bin.exists(),
        "{} missing: install containernetworking-plugins",
        bin.display()
    );
    let netns = pod.path();
    run_plugin_bin(
        &bin,
        Some(node),
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
        ],
        &conf.to_string(),
    )
    .ok(&format!("portmap {cmd}"));
}

/// Issue 17: a hostPort (portmap's DNAT in the node's stack) reached from a client *inside*
/// `bypass`. The request takes the stack (its destination is the node's address, not a pod's);
/// the pod's reply is addressed to the client, inside `bypass`, so without the conntrack check
/// the egress program would redirect it past the reverse NAT and the client would see a reply
/// from the pod's address instead of the hostPort's. Witnesses: the client's own socket (a full
/// 64 KiB echo each way), an nftables counter of DNATed replies in the node's forward hook, and
/// the programs' `out_nat` counter. Both netkit modes, IPv4 and IPv6.
#[test]
fn portmap_hostport_from_a_bypassed_client_works_both_ways() {
    let b = Bed::new();
    watch(
        &b.w.node,
        "natreply",
        "forward",
        &[(
            "meta l4proto tcp ct status dnat ct direction reply",
            "dnat-reply",
        )],
    );
    let mut l3 = Net::new(&b, "l3", "10.244.60.0/24", "fd44:60::/64", &BYPASS);
    let mut l2 = Net::new(&b, "l2", "10.244.61.0/24", "fd44:61::/64", &BYPASS);
    // Debian bookworm's portmap (containernetworking-plugins 1.1.1) speaks CNI up to 1.0.0;
    // a runtime runs the whole chain at the conflist's version.
    for n in [&mut l3, &mut l2] {
        n.conf["cniVersion"] = json!("1.0.0");
    }
    let (p3, p2) = (Netns::new("pod"), Netns::new("pod"));
    let node4: IpAddr = NODE_IP.parse().unwrap();
    let node6: IpAddr = NODE6.parse().unwrap();
    let mut port = 8080;
    for (net, pod, cid) in [(&l3, &p3, "pm3"), (&l2, &p2, "pm2")] {
        let (r, v4, v6) = net.add(&b, cid, pod);
        let maps = json!([
            {"hostPort": port, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": port + 1, "containerPort": 81, "protocol": "tcp"},
        ]);
        portmap(&b.w.node, "ADD", cid, pod, net, &r, maps.clone());

        let before = b.counters();
        let replies = nft_counted(&b.w.node, "natreply", "dnat-reply");
        // far -> node:hostPort -> pod:80 (IPv4) and [node]:hostPort+1 -> [pod]:81 (IPv6).
        tcp_rr_to(
            pod,
            SocketAddr::new(v4, 80),
            &b.w.far,
            SocketAddr::new(node4, port),
        );
        tcp_rr_to(
            pod,
            SocketAddr::new(v6, 81),
            &b.w.far,
            SocketAddr::new(node6, port + 1),
        );
        let after = b.counters();
        let replies = nft_counted(&b.w.node, "natreply", "dnat-reply") - replies;
        // A SYN-ACK and at least one data-carrying reply per connection, both families.
        assert!(
            replies >= 4,
            "the pod's replies must take the node's stack and its reverse NAT: {replies} \
             DNATed replies forwarded; counters {}",
            show_counters(&after)
        );
        assert!(
            delta(&after, &before, counter::OUT_NAT) >= 4,
            "the egress program must have handed the NATed replies to the stack: {}",
            show_counters(&after)
        );
        // Plain bypass traffic with the same pod keeps bypassing (no NAT binding).
        let mid = b.counters();
        tcp_rr(pod, &b.w.far, v4, 90);
        let end = b.counters();
        assert!(
            delta(&end, &mid, counter::OUT_REDIRECT) >= 2
                && delta(&end, &mid, counter::IN_REDIRECT) >= 2
                && delta(&end, &mid, counter::OUT_NAT) == 0,
            "a flow without NAT must bypass: {}",
            show_counters(&end)
        );

        portmap(&b.w.node, "DEL", cid, pod, net, &r, maps);
        net.call(&b, "DEL", cid, Some(pod), &net.conf).ok("DEL");
        port += 10;
    }
    assert_no_leftovers(&b.w.node, &b.w.nic, &b.w.bpffs, &[&l3, &l2]);
}

/// A second node: the bed's far netns becomes node B, with its own netdevsim NIC (wired to node
/// A's), its own bpffs, pod CIDR and plugin. Each node routes the other's pod CIDR via the
/// other's NIC address, as a cluster without an overlay does.
struct Cluster {
    w: Wire,
    bpffs_b: Bpffs,
}

const NODE_A6: &str = "fd77::1";
const NODE_B6: &str = "fd77::2";
const POD_BYPASS: [&str; 2] = ["10.244.0.0/16", "fd44::/16"];

impl Cluster {
    fn new() -> Cluster {
        let w = wire(2);
        let b_if = w.peer.ifname.clone();
        // wire() turns IPv6 off on its far side (node B here) and stops ARP to node A; node B
        // is a full node: IPv6 on, and it resolves neighbours itself.
        sh(&[
            "ip",
            "netns",
            "exec",
            &w.far.name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            &format!("net.ipv6.conf.{b_if}.disable_ipv6=0"),
        ]);
        w.far.ip(&["neigh", "del", NODE_IP, "dev", &b_if]);
        w.node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NODE_A6}/64"),
            "dev",
            &w.nic.ifname,
            "nodad",
        ]);
        w.far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NODE_B6}/64"),
            "dev",
            &b_if,
            "nodad",
        ]);
        w.node.ip(&["route", "add", "10.244.2.0/24", "via", FAR_IP]);
        w.node
            .ip(&["-6", "route", "add", "fd44:2::/64", "via", NODE_B6]);
        w.far.ip(&["route", "add", "10.244.1.0/24", "via", NODE_IP]);
        w.far
            .ip(&["-6", "route", "add", "fd44:1::/64", "via", NODE_A6]);
        for ns in [&w.node, &w.far] {
            watch_forward(
                ns,
                &[
                    ("ip saddr 10.244.0.0/16", "pods"),
                    ("ip daddr 10.244.0.0/16", "pods"),
                    ("ip6 saddr fd44::/16", "pods"),
                    ("ip6 daddr fd44::/16", "pods"),
                ],
            );
        }
        Cluster {
            w,
            bpffs_b: Bpffs::new(),
        }
    }
}

/// Issue 17, cluster-shaped: pod <-> pod across two nodes, each with BPF host routing on its own
/// uplink, both directions, ICMP and TCP, IPv4 and IPv6, an L3 pod on one node and an L2 pod on
/// the other. Both nodes' counters show redirects both ways and both nodes' forward hooks see
/// nothing of it; DEL on both leaves nothing.
#[test]
fn two_nodes_pod_to_pod_bypasses_both_stacks() {
    let c = Cluster::new();
    let (node_a, node_b) = (&c.w.node, &c.w.far);
    let na = Net::on(
        &c.w.nic.ifname,
        &c.w.bpffs.path,
        "l3",
        "10.244.1.0/24",
        "fd44:1::/64",
        &POD_BYPASS,
    );
    let nb = Net::on(
        &c.w.peer.ifname,
        &c.bpffs_b.path,
        "l2",
        "10.244.2.0/24",
        "fd44:2::/64",
        &POD_BYPASS,
    );
    let (pa, pb) = (Netns::new("poda"), Netns::new("podb"));
    let (_, a4, a6) = na.add_in(node_a, "ca", &pa);
    let (_, b4, b6) = nb.add_in(node_b, "cb", &pb);
    let (a6, b6) = (a6.expect("IPv6 on A"), b6.expect("IPv6 on B"));
    let state = |node: &Netns, bpffs: &Bpffs, nic: &Netdevsim| {
        uplink_state(node, &bpffs.path, &nic.ifname)
            .expect("host routing attached")
            .0
    };
    let (a0, b0) = (
        state(node_a, &c.w.bpffs, &c.w.nic),
        state(node_b, &c.bpffs_b, &c.w.peer),
    );
    let mut port = 7100;
    for (x, y) in [(a4, b4), (a6, b6)] {
        ping(&pa, &y.to_string());
        ping(&pb, &x.to_string());
        tcp_rr(&pb, &pa, y, port);
        tcp_rr(&pa, &pb, x, port + 1);
        port += 10;
    }
    let (a1, b1) = (
        state(node_a, &c.w.bpffs, &c.w.nic),
        state(node_b, &c.bpffs_b, &c.w.peer),
    );
    // Per family: 2 pings (2 echo + 2 replies each) and 2 TCP exchanges each way.
    for (name, before, after) in [("A", &a0, &a1), ("B", &b0, &b1)] {
        for (cnt, what) in [
            (counter::IN_REDIRECT, "ingress"),
            (counter::OUT_REDIRECT, "egress"),
        ] {
            assert!(
                delta(after, before, cnt) >= 12,
                "node {name}: too few {what} redirects: {}",
                show_counters(after)
            );
        }
        assert_eq!(
            delta(after, before, counter::OUT_NAT) + delta(after, before, counter::IN_NAT),
            0,
            "node {name}: nothing here is NATed: {}",
            show_counters(after)
        );
    }
    for (name, ns) in [("A", node_a), ("B", node_b)] {
        assert_eq!(
            nft_counted(ns, "watch", "pods"),
            0,
            "node {name}'s forward hook saw pod traffic"
        );
    }
    na.call_in(node_a, "DEL", "ca", Some(&pa), &na.conf)
        .ok("DEL on A");
    // B's pod is still reachable from B itself after A's pod is gone (node <-> pod).
    ping(node_b, &b4.to_string());
    nb.call_in(node_b, "DEL", "cb", Some(&pb), &nb.conf)
        .ok("DEL on B");
    assert_no_leftovers(node_a, &c.w.nic, &c.w.bpffs, &[&na]);
    assert_no_leftovers(node_b, &c.w.peer, &c.bpffs_b, &[&nb]);
}

/// Two uplinks in one node, one network on each (each with its own pins directory): far traffic
/// to each pod is redirected by its own uplink's programs; DEL of one pod detaches only its
/// uplink and the other keeps bypassing; then nothing is left.
#[test]
fn two_pods_on_two_uplinks_del_of_one_leaves_the_other() {
    let w = wire(2);
    let nic2 = Netdevsim::new(&w.node, 2);
    let peer2 = Netdevsim::new(&w.far, 2);
    nic2.link_to(&w.node, &peer2, &w.far);
    w.node
        .ip(&["addr", "add", "10.78.0.1/24", "dev", &nic2.ifname]);
    w.far
        .ip(&["addr", "add", "10.78.0.2/24", "dev", &peer2.ifname]);
    w.far
        .ip(&["route", "add", "10.244.71.0/24", "via", NODE_IP]);
    w.far
        .ip(&["route", "add", "10.244.72.0/24", "via", "10.78.0.1"]);
    watch_forward(
        &w.node,
        &[
            ("ip saddr 10.244.0.0/16", "pods"),
            ("ip daddr 10.244.0.0/16", "pods"),
        ],
    );
    let n1 = Net::on(
        &w.nic.ifname,
        &w.bpffs.path,
        "l3",
        "10.244.71.0/24",
        "",
        &["10.77.0.0/24"],
    );
    let n2 = Net::on(
        &nic2.ifname,
        &w.bpffs.path,
        "l2",
        "10.244.72.0/24",
        "",
        &["10.78.0.0/24"],
    );
    let (p1, p2) = (Netns::new("pod"), Netns::new("pod"));
    let (_, a1, _) = n1.add_in(&w.node, "u1", &p1);
    let (_, a2, _) = n2.add_in(&w.node, "u2", &p2);
    let dirs = w.bpffs.plugin_entries();
    assert_eq!(
        dirs.iter().filter(|d| !d.contains('/')).count(),
        2,
        "one pins directory per uplink: {dirs:?}"
    );
    let st = |nic: &Netdevsim| uplink_state(&w.node, &w.bpffs.path, &nic.ifname);
    let far2: IpAddr = "10.78.0.2".parse().unwrap();
    let far1: IpAddr = FAR_IP.parse().unwrap();

    let (s1, s2) = (st(&w.nic).unwrap().0, st(&nic2).unwrap().0);
    ping(&w.far, &a1.to_string());
    tcp_rr(&p1, &w.far, a1, 7200);
    tcp_rr(&w.far, &p1, far1, 7201);
    let (t1, t2) = (settled(|| st(&w.nic).unwrap().0), st(&nic2).unwrap().0);
    assert!(
        delta(&t1, &s1, counter::IN_REDIRECT) >= 4 && delta(&t1, &s1, counter::OUT_REDIRECT) >= 4,
        "uplink 1 must carry pod 1: {}",
        show_counters(&t1)
    );
    assert_eq!(
        delta(&t2, &s2, counter::IN_REDIRECT) + delta(&t2, &s2, counter::OUT_REDIRECT),
        0,
        "uplink 2 must not see pod 1's traffic: {}",
        show_counters(&t2)
    );
    ping(&w.far, &a2.to_string());
    tcp_rr(&p2, &w.far, a2, 7202);
    tcp_rr(&w.far, &p2, far2, 7203);
    let (u1, u2) = (st(&w.nic).unwrap().0, st(&nic2).unwrap().0);
    assert!(
        delta(&u2, &t2, counter::IN_REDIRECT) >= 4 && delta(&u2, &t2, counter::OUT_REDIRECT) >= 4,
        "uplink 2 must carry pod 2: {}",
        show_counters(&u2)
    );
    assert_eq!(
        delta(&u1, &t1, counter::IN_REDIRECT) + delta(&u1, &t1, counter::OUT_REDIRECT),
        0,
        "uplink 1 must not see pod 2's traffic: {}",
        show_counters(&u1)
    );

    n1.call_in(&w.node, "DEL", "u1", Some(&p1), &n1.conf)
        .ok("DEL u1");
    assert!(
        st(&w.nic).is_none(),
        "uplink 1 still attached after its last DEL"
    );
    assert_eq!(tcx_programs(&w.node, w.nic.ifindex), Vec::<u32>::new());
    assert_eq!(tcx_programs(&w.node, nic2.ifindex).len(), 1);
    let v1 = st(&nic2).expect("uplink 2 still attached").0;
    tcp_rr(&p2, &w.far, a2, 7204);
    let v2 = st(&nic2).unwrap().0;
    assert!(
        delta(&v2, &v1, counter::IN_REDIRECT) >= 2 && delta(&v2, &v1, counter::OUT_REDIRECT) >= 2,
        "uplink 2 must keep bypassing: {}",
        show_counters(&v2)
    );
    assert_eq!(nft_counted(&w.node, "watch", "pods"), 0);
    n2.call_in(&w.node, "DEL", "u2", Some(&p2), &n2.conf)
        .ok("DEL u2");
    assert_eq!(tcx_programs(&w.node, nic2.ifindex), Vec::<u32>::new());
    assert_no_leftovers(&w.node, &w.nic, &w.bpffs, &[&n1, &n2]);
}

/// One NIC serving both data paths at once: the XDP dispatcher steering a leased queue into an
/// AF_XDP pod (netkit single device, `lease` + `xdp`) and host routing's tcx program moving a
/// routed pod's traffic. The AF_XDP pod's socket gets exactly its queue's frames (XDP runs
/// before tcx, and frames the dispatcher passes still reach host routing), the routed pod talks
/// to the far side through the redirects, and DEL of both leaves neither program nor pin.
#[test]
fn af_xdp_pod_and_routed_pod_share_one_nic() {
    let w = wire(6);
    let xnet = XdpNet::new(&w, json!({"allowedQueues": "1-4"}));
    let xpod = Netns::new("pod");
    xnet.call(&w, "ADD", "x1", Some(&xpod), "NETKIT_LEASE_QUEUE_IDS=2")
        .ok("ADD AF_XDP pod");
    let routed = Net::on(
        &w.nic.ifname,
        &w.bpffs.path,
        "l3",
        "10.244.80.0/24",
        "",
        &["10.77.0.0/24"],
    );
    let rpod = Netns::new("pod");
    let (_, r4, _) = routed.add_in(&w.node, "r1", &rpod);
    w.far
        .ip(&["route", "add", "10.244.80.0/24", "via", NODE_IP]);
    assert_eq!(w.bpftool_xdp().len(), 1, "the dispatcher is on the NIC");
    assert_eq!(tcx_programs(&w.node, w.nic.ifindex).len(), 1);

    let info = xnet.info("x1");
    let sock = PodSocket::open(&xpod, &info);
    // The AF_XDP pod is reached by its MAC (its rule), the routed pod through the node's
    // address (RSS over the queues outside the pool): the far side picks no queue.
    let (xip, _) = w.reach(&xpod, "xsk0", 1);
    let before = uplink_state(&w.node, &w.bpffs.path, &w.nic.ifname)
        .expect("host routing attached")
        .0;
    let to_x = w.send_flows(&xip, 5002, 32, 1, "x1");
    ping(&w.far, &r4.to_string());
    tcp_rr(&rpod, &w.far, r4, 7300);
    tcp_rr(&w.far, &rpod, FAR_IP.parse().unwrap(), 7301);
    let after = uplink_state(&w.node, &w.bpffs.path, &w.nic.ifname)
        .unwrap()
        .0;
    assert_eq!(
        udp_payloads(&sock.receive(to_x.len(), Duration::from_secs(20))),
        to_x,
        "the AF_XDP pod gets exactly the frames addressed to it"
    );
    let extra = sock.receive(1, Duration::from_secs(1));
    assert!(
        extra.is_empty(),
        "the routed pod's traffic reached the AF_XDP socket: {extra:02x?}"
    );
    assert!(
        delta(&after, &before, counter::IN_REDIRECT) >= 6
            && delta(&after, &before, counter::OUT_REDIRECT) >= 6,
        "the routed pod's traffic took host routing: {}",
        show_counters(&after)
    );

    routed
        .call_in(&w.node, "DEL", "r1", Some(&rpod), &routed.conf)
        .ok("DEL routed");
    assert_eq!(tcx_programs(&w.node, w.nic.ifindex), Vec::<u32>::new());
    assert_eq!(w.bpftool_xdp().len(), 1, "the dispatcher stays for x1");
    // The AF_XDP pod keeps its queue after the routed pod's DEL.
    let again = payloads("x1-again", 5);
    w.send_to(&xip, 5002, again.clone());
    assert_eq!(
        udp_payloads(&sock.receive(again.len(), Duration::from_secs(20))),
        again
    );
    xnet.call(&w, "DEL", "x1", Some(&xpod), "")
        .ok("DEL AF_XDP pod");
    assert!(w.bpftool_xdp().is_empty(), "{:?}", w.bpftool_xdp());
    assert_no_leftovers(&w.node, &w.nic, &w.bpffs, &[&routed]);
}

/// The ingress half of the NAT check, cluster-shaped: node A DNATs a ClusterIP-like virtual
/// address (an nftables rule as kube-proxy's nftables mode writes it) to a backend pod on node B.
/// The client pod's request takes A's stack (the virtual address is not in `bypass`); the
/// backend's reply is pod B -> pod A, both inside `bypass`, so B's egress redirects it, and A's
/// ingress must hand it to A's stack for the reverse DNAT or the client sees a reply from the
/// backend's address. Witnesses: the client's socket (full echo through the virtual address),
/// A's `in_nat` and an nft counter of DNATed replies in A's forward hook.
#[test]
fn two_nodes_cluster_ip_reply_takes_the_clients_node_stack() {
    let c = Cluster::new();
    let (node_a, node_b) = (&c.w.node, &c.w.far);
    let na = Net::on(
        &c.w.nic.ifname,
        &c.w.bpffs.path,
        "l2",
        "10.244.1.0/24",
        "",
        &POD_BYPASS,
    );
    let nb = Net::on(
        &c.w.peer.ifname,
        &c.bpffs_b.path,
        "l3",
        "10.244.2.0/24",
        "",
        &POD_BYPASS,
    );
    let (pa, pb) = (Netns::new("poda"), Netns::new("podb"));
    let (_, _a4, _) = na.add_in(node_a, "ca", &pa);
    let (_, b4, _) = nb.add_in(node_b, "cb", &pb);
    let vip = "10.96.0.10";
    let ruleset = format!(
        "table ip nktsvc {{\n\tchain pre {{\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tip daddr {vip} tcp dport 80 dnat to {b4}:8080\n\t}}\n}}\n"
    );
    let mut child = node_a
        .cmd("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    watch(
        node_a,
        "natreply",
        "forward",
        &[(
            "meta l4proto tcp ct status dnat ct direction reply",
            "dnat-reply",
        )],
    );
    let a0 = uplink_state(node_a, &c.w.bpffs.path, &c.w.nic.ifname)
        .unwrap()
        .0;
    tcp_rr_to(
        &pb,
        SocketAddr::new(b4, 8080),
        &pa,
        SocketAddr::new(vip.parse().unwrap(), 80),
    );
    let a1 = uplink_state(node_a, &c.w.bpffs.path, &c.w.nic.ifname)
        .unwrap()
        .0;
    assert!(
        delta(&a1, &a0, counter::IN_NAT) >= 2,
        "node A's ingress must hand the backend's NATed replies to the stack: {}",
        show_counters(&a1)
    );
    assert!(
        nft_counted(node_a, "natreply", "dnat-reply") >= 2,
        "the replies must have crossed node A's forward hook as DNAT replies"
    );
    // A direct pod -> pod connection (no NAT) still bypasses both ways.
    let a2 = uplink_state(node_a, &c.w.bpffs.path, &c.w.nic.ifname)
        .unwrap()
        .0;
    tcp_rr(&pb, &pa, b4, 8081);
    let a3 = uplink_state(node_a, &c.w.bpffs.path, &c.w.nic.ifname)
        .unwrap()
        .0;
    assert!(
        delta(&a3, &a2, counter::IN_REDIRECT) >= 2
            && delta(&a3, &a2, counter::OUT_REDIRECT) >= 2
            && delta(&a3, &a2, counter::IN_NAT) == 0,
        "{}",
        show_counters(&a3)
    );
    na.call_in(node_a, "DEL", "ca", Some(&pa), &na.conf)
        .ok("DEL on A");
    nb.call_in(node_b, "DEL", "cb", Some(&pb), &nb.conf)
        .ok("DEL on B");
    assert_no_leftovers(node_a, &c.w.nic, &c.w.bpffs, &[&na]);
    assert_no_leftovers(node_b, &c.w.peer, &c.bpffs_b, &[&nb]);
}
