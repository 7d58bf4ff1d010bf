//! The wired-NIC fixture of the AF_XDP tests (vm_xdp, vm_dpdk): a node netns with a netdevsim
//! "physical" NIC wired to a second netdevsim NIC in a far netns, a private bpffs, a network
//! leasing from the NIC into netkit single devices with the XDP dispatcher, and pod-side AF_XDP
//! sockets.
//!
//! Queue steering on the wire: netdevsim delivers a frame to the peer's RX ring numbered after
//! the sender's TX queue, but records it on the skb as that TX queue mapping (an RX-recorded
//! mapping is stored +1), so XDP on the receiver sees `rx_queue_index = tx queue - 1` (see
//! `nsim_start_xmit` and `netif_get_rxqueue`). The sender picks its TX queue per UDP port with
//! `tc … skbedit queue_mapping`, hence `tx_queue_for(rx)`.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::xsk::{Xsk, XskConfig};
use serde_json::{json, Value};

use super::*;

pub const NODE_IP: &str = "10.77.0.1";
pub const FAR_IP: &str = "10.77.0.2";

/// The sender's TX queue whose frames the receiver's XDP sees on RX queue `rx`.
pub fn tx_queue_for(rx: u32) -> u32 {
    rx + 1
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
    // would ride whatever TX queue the stack picks, possibly one that lands on a leased queue).
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
    // No ARP across the wire: an ARP reply could ride a leased queue into a pod.
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
    sh(&[
        "ip",
        "netns",
        "exec",
        &far.name,
        "tc",
        "qdisc",
        "add",
        "dev",
        &peer.ifname,
        "clsact",
    ]);
    // Anything no test steers leaves on TX queue 0, which lands on the node's RX queue 0: the
    // host's, never leased (the per-port filters come first, at prio 1).
    sh(&[
        "ip",
        "netns",
        "exec",
        &far.name,
        "tc",
        "filter",
        "add",
        "dev",
        &peer.ifname,
        "egress",
        "protocol",
        "all",
        "prio",
        "99",
        "matchall",
        "action",
        "skbedit",
        "queue_mapping",
        "0",
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
    /// UDP to `port` leaves the far NIC on the TX queue that lands on the node's RX queue `rx`.
    pub fn steer_port(&self, port: u16, rx: u32) {
        let tx = tx_queue_for(rx).to_string();
        let port = port.to_string();
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.far.name,
            "tc",
            "filter",
            "add",
            "dev",
            &self.peer.ifname,
            "egress",
            "protocol",
            "ip",
            "prio",
            "1",
            "u32",
            "match",
            "ip",
            "dport",
            &port,
            "0xffff",
            "action",
            "skbedit",
            "queue_mapping",
            &tx,
        ]);
    }

    /// Send `payloads` as UDP from the far side to the node's address at `port`.
    pub fn send(&self, port: u16, payloads: Vec<String>) {
        self.far.run(move || {
            let s = UdpSocket::bind((FAR_IP, 0)).unwrap();
            for p in payloads {
                s.send_to(p.as_bytes(), (NODE_IP, port)).unwrap();
                // netdevsim's ring is small; do not outrun the NAPI timer under TCG.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
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

/// A network leasing from the wire's NIC into single devices, with the dispatcher on the NIC.
pub struct XdpNet {
    pub name: String,
    pub dir: PathBuf,
    pub conf: Value,
}

impl XdpNet {
    pub fn new(w: &Wire, lease: Value) -> XdpNet {
        let name = unique("xnet");
        let dir = std::env::temp_dir().join(unique("nkc-devinfo-"));
        let mut l = json!({"master": w.nic.ifname, "deviceInfoDir": dir});
        for (k, v) in lease.as_object().unwrap() {
            l[k] = v.clone();
        }
        let conf = json!({
            "cniVersion": "1.1.0", "name": name, "type": "netkit-cni", "pairing": "single",
            "lease": l,
            "xdp": {"bpffs": w.bpffs.path, "stats": true, "ranges": [{"queues": "5", "action": "drop"}]},
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

pub fn payloads(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("nkc-{tag}-{i:03}-{}", "x".repeat(40)))
        .collect()
}
