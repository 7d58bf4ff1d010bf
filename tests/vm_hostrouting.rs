//! BPF host routing (`hostRouting: {"mode": "bpf"}`) end to end: the plugin binary attaches the
//! tcx ingress program to a netdevsim "uplink" and the egress program to each pod's pair; a far
//! netns wired to the uplink (tests/common/xdp.rs `wire()`) talks to L3 and L2 pods over IPv4
//! and IPv6 with ICMP, TCP and UDP. Independent witnesses: the programs' own counters (read from
//! the pinned per-CPU map), an nftables counter in the node's forward chain that must stay at 0
//! for bypassed traffic while traffic to a far prefix *not* in the bypass set is counted there,
//! the kernel's BPF_PROG_QUERY for the tcx hook, and the bpffs tree after DEL and GC.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::xdp::*;
use common::*;
use netkit_cni::hostrouting::{counter, tcx_ingress_programs, Uplink};
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
        let mut rules = String::new();
        for (m, tag) in [
            ("ip saddr 10.77.0.2", "bypass"),
            ("ip daddr 10.77.0.2", "bypass"),
            ("ip6 saddr fd77::2", "bypass"),
            ("ip6 daddr fd77::2", "bypass"),
            ("ip saddr 10.88.0.2", "kept"),
            ("ip daddr 10.88.0.2", "kept"),
            ("ip6 saddr fd88::2", "kept"),
            ("ip6 daddr fd88::2", "kept"),
        ] {
            rules.push_str(&format!("\t\t{m} counter comment \"{tag}\"\n"));
        }
        let ruleset = format!(
            "table inet nkt {{\n\tchain watch {{\n\t\ttype filter hook forward priority 0; policy accept;\n{rules}\t}}\n}}\n"
        );
        let mut child = w
            .node
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
            "nft -f: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bed { w }
    }

    /// Packets the forward chain counted for rules tagged `tag`.
    fn forwarded(&self, tag: &str) -> u64 {
        let out = self
            .w
            .node
            .cmd("nft")
            .args(["-j", "list", "chain", "inet", "nkt", "watch"])
            .output()
            .unwrap();
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

    fn uplink(&self) -> Option<UplinkState> {
        let (bpffs, nic) = (self.w.bpffs.path.clone(), self.w.nic.ifname.clone());
        self.w.node.run(move || {
            Uplink::open(&bpffs, &nic).unwrap().map(|u| {
                (
                    u.counters().unwrap(),
                    u.entries().unwrap(),
                    u.dir().to_path_buf(),
                )
            })
        })
    }

    fn counters(&self) -> Vec<u64> {
        self.uplink()
            .expect("host routing attached to the uplink")
            .0
    }

    fn tcx_programs(&self) -> Vec<u32> {
        let ifindex = self.w.nic.ifindex;
        self.w
            .node
            .run(move || tcx_ingress_programs(ifindex))
            .kernel("BPF_PROG_QUERY tcx ingress")
    }
}

/// A network with BPF host routing on the bed's uplink.
struct Net {
    cni: CniNet,
    conf: Value,
}

impl Net {
    fn new(b: &Bed, mode: &str, v4: &str, v6: &str, bypass: &[&str]) -> Net {
        let cni = CniNet::new(v4);
        let conf = cni.conf(
            "1.1.0",
            json!({
                "mode": mode,
                "ipam": {"type": "host-local", "dataDir": cni.data_dir,
                         "ranges": [[{"subnet": v4}], [{"subnet": v6}]]},
                "hostRouting": {"mode": "bpf", "uplink": b.w.nic.ifname, "bypass": bypass,
                                "bpffs": b.w.bpffs.path},
            }),
        );
        Net { cni, conf }
    }

    fn call(&self, b: &Bed, cmd: &str, cid: &str, pod: Option<&Netns>, conf: &Value) -> PluginRun {
        self.cni.call(
            &b.w.node,
            cmd,
            cid,
            pod.map(|p| p.path()).as_deref(),
            "eth0",
            conf,
        )
    }

    /// ADD; returns the result and the pod's (IPv4, IPv6) addresses.
    fn add(&self, b: &Bed, cid: &str, pod: &Netns) -> (Value, IpAddr, IpAddr) {
        let r = self
            .call(b, "ADD", cid, Some(pod), &self.conf)
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
        let v6 = *ips.iter().find(|i| i.is_ipv6()).expect("an IPv6 address");
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
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.spawn(move || {
        let l = TcpListener::bind((addr, port)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no TCP connection to {addr}:{port}: {e}"),
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
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("TCP connect to {addr}:{port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // 64 KiB: several segments (and GSO packets) each way.
        let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == data, "TCP echo from {addr}:{port} differs");
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
    let show = |c: &[u64]| {
        counter::NAMES
            .iter()
            .zip(c)
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
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
    let mid = b.counters();
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
