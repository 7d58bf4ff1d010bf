//! The wired-NIC fixture of the AF_XDP tests (vm_xdp, vm_dpdk): a node netns with a netdevsim
//! "physical" NIC wired to a second netdevsim NIC in a far netns, a private bpffs, a network
//! leasing from the NIC into netkit single devices with the XDP dispatcher, and pod-side AF_XDP
//! sockets.
//!
//! Frames reach a pod because they are addressed to it, never by the queue they are sent on:
//! the test kernel's netdevsim classifies a frame like a real NIC (ntuple rules first, then the
//! RSS indirection table over a hash of the flow; see `steering`), and the far side sends on
//! whatever TX queue the flow hashes to. Every network here steers (`lease.steering`: the pool
//! out of the default RSS context, a rule on the pod's MAC to its queues). A pod on a single
//! device has no address of its own, so the far side gets one per pod ([`pod_ip`]) with a
//! permanent neighbour entry to the pod's MAC ([`Wire::address_pod`]).

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::xsk::{Xsk, XskConfig};
use serde_json::{json, Value};

use super::*;

pub const NODE_IP: &str = "10.77.0.1";
pub const FAR_IP: &str = "10.77.0.2";

/// The far side's address for pod `n` (1..=100) on a wire: in the wire's subnet, resolved by
/// a permanent neighbour entry to the pod's MAC ([`Wire::address_pod`]).
pub fn pod_ip(n: u8) -> String {
    assert!((1..=100).contains(&n), "pod_ip({n}): 1..=100");
    format!("10.77.0.{}", 100 + u32::from(n))
}

/// Node netns with the "physical" NIC, a far netns with its wired peer, a private bpffs.
pub struct Wire {
    pub node: Netns,
    pub far: Netns,
    pub nic: Netdevsim,
    pub peer: Netdevsim,
    pub bpffs: Bpffs,
    pub node_mac: String,
}

pub fn wire(queues: u32) -> Wire {
    require_privileged_kernel();
    let node = Netns::new("node");
    let far = Netns::new("far");
    // The far side sends only what a test sends: no IPv6 (its DAD and router solicitations
    // would land in the queues' counters the tests read).
    sh(&[
        "ip",
        "netns",
        "exec",
        &far.name,
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    let nic = Netdevsim::new(&node, queues);
    let peer = Netdevsim::new(&far, queues);
    nic.link_to(&node, &peer, &far);
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", &nic.ifname]);
    far.ip(&["addr", "add", &format!("{FAR_IP}/24"), "dev", &peer.ifname]);
    let v: Value =
        serde_json::from_str(&node.ip(&["-j", "link", "show", "dev", &nic.ifname])).unwrap();
    let node_mac = v[0]["address"].as_str().unwrap().to_string();
    // No ARP across the wire: every frame the far side sends is one a test sent.
    far.ip(&[
        "neigh",
        "replace",
        NODE_IP,
        "lladdr",
        &node_mac,
        "dev",
        &peer.ifname,
        "nud",
        "permanent",
    ]);
    Wire {
        node,
        far,
        nic,
        peer,
        bpffs: Bpffs::new(),
        node_mac,
    }
}

impl Wire {
    /// The far side sends what it addresses to `ip` to `mac`: a permanent neighbour entry on
    /// its NIC (a pod on a single device answers no ARP, and no ARP should cross the wire).
    pub fn address_pod(&self, ip: &str, mac: &str) {
        self.far.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            &self.peer.ifname,
            "nud",
            "permanent",
        ]);
    }

    /// Gives the far side an address for pod `n`'s device `ifname`: [`pod_ip`]`(n)` resolved
    /// to the device's MAC. Returns (that address, the MAC).
    pub fn reach(&self, pod: &Netns, ifname: &str, n: u8) -> (String, String) {
        let (ip, mac) = (pod_ip(n), Wire::pod_mac(pod, ifname));
        self.address_pod(&ip, &mac);
        (ip, mac)
    }

    /// Send `payloads` as UDP from the far side to `ip`:`port`, from one socket (one flow).
    pub fn send_to(&self, ip: &str, port: u16, payloads: Vec<String>) {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        self.far.run(move || {
            let s = UdpSocket::bind((FAR_IP, 0)).unwrap();
            for p in payloads {
                s.send_to(p.as_bytes(), (ip, port)).unwrap();
                // netdevsim's ring is small; do not outrun the NAPI timer under TCG.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    }

    /// `flows` UDP flows from the far side to `ip`:`port`, each from its own socket (its own
    /// source port, so RSS spreads them), `per_flow` datagrams each, sent round-robin over the
    /// flows. The TX queue is whatever the far side's stack picks for each flow. Returns the
    /// payloads in the order they were sent (`nkc-<tag>-f<flow>-<i>-…`).
    pub fn send_flows(
        &self,
        ip: &str,
        port: u16,
        flows: usize,
        per_flow: usize,
        tag: &str,
    ) -> Vec<String> {
        let dst: std::net::Ipv4Addr = ip.parse().unwrap();
        let mut sent = Vec::new();
        for i in 0..per_flow {
            for f in 0..flows {
                sent.push(flow_payload(tag, f, i));
            }
        }
        let order = sent.clone();
        self.far.run(move || {
            let socks: Vec<UdpSocket> = (0..flows)
                .map(|_| UdpSocket::bind((FAR_IP, 0)).unwrap())
                .collect();
            let ports: std::collections::BTreeSet<u16> = socks
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect();
            assert_eq!(ports.len(), flows, "one source port per flow");
            for (n, p) in order.iter().enumerate() {
                socks[n % flows].send_to(p.as_bytes(), (dst, port)).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        sent
    }

    /// Send `payloads` as UDP from the far side to the node's address at `port` (one flow).
    pub fn send(&self, port: u16, payloads: Vec<String>) {
        self.send_to(NODE_IP, port, payloads)
    }

    /// The MAC of the pod device `ifname` in `pod` (a single device in mode l2 has its own).
    pub fn pod_mac(pod: &Netns, ifname: &str) -> String {
        let v: Value =
            serde_json::from_str(&pod.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
        v[0]["address"].as_str().unwrap().to_string()
    }

    /// The dispatcher's counters of NIC queue `queue` (the network has `xdp.stats`): which
    /// queue a frame arrived on, as the NIC's XDP saw it. The handle is dropped at once (it
    /// holds the NIC directory's lock, which ADD and DEL need).
    pub fn queue_stats(&self, queue: u32) -> crate::xdp::QueueStats {
        use crate::xdp::{Dispatcher, DispatcherOptions};
        let (bpffs, ifindex) = (self.bpffs.path.clone(), self.nic.ifindex);
        self.node.run(move || {
            let opts = DispatcherOptions {
                bpffs,
                stats: true,
                ..Default::default()
            };
            let d = Dispatcher::open(&opts, ifindex)
                .unwrap()
                .expect("a dispatcher on the NIC");
            d.queue_stats(queue).unwrap()
        })
    }

    /// Every ntuple rule of the NIC (`ethtool -n` in the node netns).
    pub fn rules(&self) -> Vec<super::steering::Rule> {
        super::steering::ntuple_rules(Some(&self.node.name), &self.nic.ifname)
    }

    /// `bpftool -j net show dev <nic>` in the node netns: the XDP entries on the NIC.
    pub fn bpftool_xdp(&self) -> Vec<Value> {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.node.name,
            "bpftool",
            "-j",
            "net",
            "show",
            "dev",
            &self.nic.ifname,
        ]);
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool net: {e}: {out}"));
        v[0]["xdp"].as_array().cloned().unwrap_or_default()
    }

    /// XDP links (`bpftool -f link show`: `-f` adds each link's bpffs pins) running the NIC's
    /// XDP program. Debian's bpftool (7.1) prints no ifindex for XDP links, so a link is matched
    /// to the NIC through the program id `bpftool net` reports on it.
    pub fn bpftool_xdp_links(&self) -> Vec<Value> {
        let progs: Vec<Value> = self.bpftool_xdp().iter().map(|x| x["id"].clone()).collect();
        all_links()
            .into_iter()
            .filter(|l| l["type"] == "xdp" && progs.contains(&l["prog_id"]))
            .collect()
    }
}

pub fn all_links() -> Vec<Value> {
    let out = sh(&["bpftool", "-f", "-j", "link", "show"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A network leasing from the wire's NIC into single devices, with the dispatcher on the NIC,
/// steering each pod's MAC to its queues (`lease.steering`: the pool out of the default RSS
/// context, `match: mac`; a `steering` key in `lease` replaces it). The devices are in mode l2,
/// so each has a MAC of its own ([`Wire::pod_mac`]). No range of the dispatcher drops: every
/// queue outside the pool carries the host's traffic, spread there by RSS.
pub struct XdpNet {
    pub name: String,
    pub dir: PathBuf,
    pub conf: Value,
}

impl XdpNet {
    pub fn new(w: &Wire, lease: Value) -> XdpNet {
        let name = unique("xnet");
        let dir = std::env::temp_dir().join(unique("nkc-devinfo-"));
        let mut l = json!({"master": w.nic.ifname, "deviceInfoDir": dir,
                           "steering": super::steering::steering("mac")});
        for (k, v) in lease.as_object().unwrap() {
            l[k] = v.clone();
        }
        let conf = json!({
            "cniVersion": "1.1.0", "name": name, "type": "netkit-cni", "pairing": "single",
            "mode": "l2", "lease": l,
            "xdp": {"bpffs": w.bpffs.path, "stats": true},
        });
        XdpNet { name, dir, conf }
    }

    pub fn call(
        &self,
        w: &Wire,
        command: &str,
        cid: &str,
        pod: Option<&Netns>,
        args: &str,
    ) -> PluginRun {
        let netns = pod
            .map(|p| p.path().display().to_string())
            .unwrap_or_default();
        run_plugin(
            Some(&w.node),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "xsk0"),
                ("CNI_PATH", CNI_PATH),
                ("CNI_ARGS", args),
            ],
            &self.conf.to_string(),
        )
    }

    pub fn info(&self, cid: &str) -> Value {
        let body = std::fs::read(
            self.dir
                .join(format!("{}:{cid}:xsk0-device.json", self.name)),
        )
        .unwrap();
        serde_json::from_slice::<Value>(&body).unwrap()["netkit-lease"].clone()
    }
}

impl Drop for XdpNet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pod's AF_XDP socket, bound inside the pod netns to its netkit device's virtual queue and
/// put into its XSKMAP at the reported path, living on a thread in that netns.
pub struct PodSocket {
    pub frames: std::sync::mpsc::Receiver<Vec<Vec<u8>>>,
    pub go: std::sync::mpsc::Sender<(usize, Duration)>,
}

impl PodSocket {
    pub fn open(pod: &Netns, info: &Value) -> PodSocket {
        let ifindex = info["ifindex"].as_u64().unwrap() as u32;
        let vqueue = info["xdp"]["start-queue"].as_u64().unwrap() as u32;
        let map = PathBuf::from(info["xdp"]["xsk-map"].as_str().unwrap());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<(usize, Duration)>();
        let (frames_tx, frames_rx) = std::sync::mpsc::channel();
        pod.spawn(move || {
            let mut xsk = match Xsk::bind(ifindex, vqueue, &XskConfig::default()) {
                Ok(x) => x,
                Err(e) => {
                    return ready_tx
                        .send(Err(format!(
                            "bind AF_XDP to ifindex {ifindex} queue {vqueue} in the pod: {e}"
                        )))
                        .unwrap()
                }
            };
            if let Err(e) = xsk.insert_into(&map, vqueue) {
                return ready_tx
                    .send(Err(format!("insert into {}: {e}", map.display())))
                    .unwrap();
            }
            ready_tx.send(Ok(())).unwrap();
            while let Ok((n, timeout)) = go_rx.recv() {
                let mut got = Vec::new();
                let deadline = std::time::Instant::now() + timeout;
                while got.len() < n && std::time::Instant::now() < deadline {
                    got.extend(xsk.recv(n - got.len(), Duration::from_millis(200)).unwrap());
                }
                if got.len() < n {
                    eprintln!(
                        "pod socket on ifindex {ifindex}/{vqueue}: {} of {n} frames; stats {:?}",
                        got.len(),
                        xsk.stats()
                    );
                }
                frames_tx.send(got).unwrap();
            }
        });
        ready_rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e: String| panic!("{e}"));
        PodSocket {
            frames: frames_rx,
            go: go_tx,
        }
    }

    /// Frames received until `n` arrived or `timeout` passed.
    pub fn receive(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        self.go.send((n, timeout)).unwrap();
        self.frames.recv().unwrap()
    }
}

/// UDP payloads of IPv4 frames (Ethernet II, no VLAN) from the far side.
pub fn udp_payloads(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .map(|f| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            String::from_utf8_lossy(&f[14 + ihl + 8..]).to_string()
        })
        .collect()
}

/// A UDP socket of the node's own stack listening on `port`, collecting what reaches it.
pub fn host_listener(node: &Netns, port: u16) -> Arc<UdpSocket> {
    let s = node.run(move || UdpSocket::bind((NODE_IP, port)).unwrap());
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    Arc::new(s)
}

pub fn host_received(s: &UdpSocket) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    out
}

/// The payload of datagram `i` of flow `flow` sent by [`Wire::send_flows`].
pub fn flow_payload(tag: &str, flow: usize, i: usize) -> String {
    format!("nkc-{tag}-f{flow:02}-{i:03}-{}", "x".repeat(32))
}

pub fn payloads(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("nkc-{tag}-{i:03}-{}", "x".repeat(40)))
        .collect()
}
