//! Section 5b: AF_XDP receive rate through a leased queue against the same socket on the NIC queue
//! itself.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use netkit_cni::xdp::{Dispatcher, DispatcherOptions, PodId};
use netkit_cni::xsk::{Xsk, XskConfig};
use serde_json::{json, Value};

use crate::cni::{cni, cni_call, Pods};
use crate::fixtures::{Bpffs, FarWire};
use crate::stats::{pct, Report};
use crate::util::{in_netns, netns_fd, sh, Env, Plugin};

/// How long section 5b measures.
#[derive(Clone, Copy)]
pub(crate) struct AfxdpCounts {
    /// Seconds each socket counts per round.
    pub(crate) secs: f64,
    /// Rounds, each measuring both sockets (alternating which goes first).
    pub(crate) rounds: usize,
}

/// Ifindex and MAC address of the device `ifname` in the netns `ns`.
pub(crate) fn link_of(ns: &str, ifname: &str) -> Result<(u32, String)> {
    let v: Value =
        serde_json::from_str(&sh(&["ip", "-n", ns, "-j", "link", "show", "dev", ifname])?)?;
    let ifindex = v[0]["ifindex"]
        .as_u64()
        .with_context(|| format!("no ifindex for {ifname} in {ns}"))? as u32;
    let mac = v[0]["address"]
        .as_str()
        .with_context(|| format!("no address for {ifname} in {ns}"))?
        .to_string();
    Ok((ifindex, mac))
}

/// What one counting window of an AF_XDP socket saw: frames received, and what its counters
/// (`XDP_STATISTICS`) say the kernel dropped meanwhile. Outside the windows nobody drains the
/// socket, so the flood's lead-in and tail are dropped there and not counted.
pub(crate) struct Counted {
    pub(crate) frames: u64,
    pub(crate) dropped: u64,
    pub(crate) fill_ring_empty: u64,
    pub(crate) ring_full: u64,
}

/// An AF_XDP receive socket living on its own thread in a netns: bound, put into an XSKMAP, then
/// counting frames for as long as it is told, as often as it is told.
pub(crate) struct RxSocket {
    pub(crate) go: Option<std::sync::mpsc::Sender<Duration>>,
    pub(crate) counted: std::sync::mpsc::Receiver<std::result::Result<Counted, String>>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl RxSocket {
    pub(crate) fn open(
        netns: OwnedFd,
        ifindex: u32,
        queue: u32,
        map: PathBuf,
        key: u32,
    ) -> Result<RxSocket> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<Duration>();
        let (counted_tx, counted) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let bound = (|| -> std::result::Result<Xsk, String> {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                let xsk =
                    Xsk::bind(ifindex, queue, &XskConfig::default()).map_err(|e| e.to_string())?;
                xsk.insert_into(&map, key).map_err(|e| e.to_string())?;
                Ok(xsk)
            })();
            let mut xsk = match bound {
                Ok(x) => x,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            while let Ok(d) = go_rx.recv() {
                let r = (|| {
                    let before = xsk.stats()?;
                    let (frames, _) = xsk.count(d)?;
                    let after = xsk.stats()?;
                    Ok(Counted {
                        frames,
                        dropped: after.rx_dropped - before.rx_dropped,
                        fill_ring_empty: after.rx_fill_ring_empty_descs
                            - before.rx_fill_ring_empty_descs,
                        ring_full: after.rx_ring_full - before.rx_ring_full,
                    })
                })()
                .map_err(|e: netkit_cni::xsk::XskError| e.to_string());
                if counted_tx.send(r).is_err() {
                    break;
                }
            }
        });
        ready_rx
            .recv()
            .context("AF_XDP receive thread died")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(RxSocket {
            go: Some(go),
            counted,
            thread: Some(thread),
        })
    }

    pub(crate) fn start(&self, d: Duration) -> Result<()> {
        self.go
            .as_ref()
            .expect("open")
            .send(d)
            .map_err(|_| anyhow::anyhow!("AF_XDP receive thread died"))
    }

    pub(crate) fn wait(&self) -> Result<Counted> {
        self.counted
            .recv()
            .context("AF_XDP receive thread died")?
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Drop for RxSocket {
    fn drop(&mut self) {
        // Closing the command channel ends the thread, which closes the socket (and so takes it
        // out of its XSKMAP).
        drop(self.go.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Section 5b, AF_XDP receive rate through a lease: the same copy-mode socket code and the same
/// dispatcher, the socket bound once inside a pod to its netkit single device's virtual queue
/// (queue-create leased NIC queue 1 to it) and once in the node to the NIC's own queue 2
/// (steered by the bench into a map of its own). A far netdevsim NIC wired to ours floods
/// minimum-size UDP frames (60 bytes, 64 on the wire) from an AF_XDP socket per target, both on
/// TX queue 0: the NIC's steering puts them on their queues (the plugin's rule on the pod's
/// address for the leased queue, a rule of the bench's own for the direct one). netdevsim delivers on the sending CPU (the peer's NAPI runs in the sender's softirq),
/// so the flood's rate is bounded by the whole per-frame path, transmit, XDP, redirect and the
/// copy into the receiving socket: a cost the lease added per frame would lower the leased rate.
/// The kernel adds one such cost: the pool is registered on the NIC's queue at bind time, but
/// `xsk_dev_queue_valid` (net/xdp/xsk.c) checks every frame against the socket's own device
/// first and only then follows the netkit queue's `lease` pointer to the NIC queue, a failed
/// comparison and two dependent loads per frame. The rounds alternate which socket goes first;
/// the goal is the median of the leased socket's rate ÷ the direct one's.
pub(crate) fn afxdp_rate(
    env: &Env,
    ours: &Path,
    counts: AfxdpCounts,
    rep: &mut Report,
    raw: &mut Value,
) -> Result<()> {
    const QUEUES: u32 = 4;
    const LEASED: u32 = 1;
    const DIRECT: u32 = 2;
    // The test kernel's netdevsim steers like a real NIC (ntuple rules, then RSS; the sender's
    // TX queue does not matter): the leased queue gets the pod's flood through the plugin's rule
    // on the pod's address (`steering.match: ip`); the direct queue, outside the pool, gets the
    // other flood through a rule of the bench's own (`ethtool -N`, as an admin would write it).
    const DIRECT_DST: Ipv4Addr = Ipv4Addr::new(10, 145, 0, 1);
    // Bound to the end of the section: dropping the netns or a device would take the wire down.
    let FarWire {
        far: _far,
        far_fd,
        nic,
        peer: _peer,
        nic_ifindex,
        nic_mac,
        peer_ifindex,
        peer_mac,
    } = FarWire::new(env, format!("nkcbfar{}", std::process::id()), QUEUES, false)?;
    let bpffs = Bpffs::new("afxdp")?;
    let devinfo = env.data.join("devinfo-afxdp");
    let plugin = Plugin {
        name: "single+lease1+xdp",
        bin: ours.to_path_buf(),
        conf: json!({"cniVersion": "1.0.0", "name": "nkb-afxdp", "type": "netkit-cni", "pairing": "single",
            "ipam": {"type": "host-local", "subnet": "10.144.0.0/16", "dataDir": env.data},
            "lease": {"master": nic.ifname, "queues": 1, "allowedQueues": LEASED.to_string(), "deviceInfoDir": devinfo,
                      "steering": {"rss": "exclude-pool", "match": "ip"}},
            "xdp": {"bpffs": bpffs.path}}),
    };
    let pod = Pods::make("nkcbxsk", 1)?;
    let added = cni_call(env, &plugin, "ADD", "afxdp", &pod.path(0), "", &[])?;
    let pod_ip = crate::datapath::result_ip(&added.stdout)?;
    let dst = DIRECT_DST.to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        &env.node,
        "ethtool",
        "-N",
        &nic.ifname,
        "flow-type",
        "ip4",
        "dst-ip",
        &dst,
        "action",
        &DIRECT.to_string(),
    ])
    .context("the direct queue's ntuple rule (ethtool -N)")?;
    let direct_pod = PodId::new("nkc-bench-direct", "nic")?;
    let opts = DispatcherOptions {
        bpffs: bpffs.path.clone(),
        ..Default::default()
    };
    let measured = (|| -> Result<()> {
        let file = std::fs::read_dir(&devinfo)?
            .next()
            .context("the ADD wrote no device-info file")??
            .path();
        let info: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
        let info = &info["netkit-lease"];
        ensure!(
            info["queues"] == json!([{"physical": LEASED, "virtual": info["xdp"]["start-queue"]}]),
            "unexpected lease in {}: {info}",
            file.display()
        );
        let vdev = info["ifindex"]
            .as_u64()
            .context("device info without ifindex")? as u32;
        let vqueue = info["xdp"]["start-queue"]
            .as_u64()
            .context("device info without xdp.start-queue")? as u32;
        let pod_map = PathBuf::from(
            info["xdp"]["xsk-map"]
                .as_str()
                .context("device info without xdp.xsk-map")?,
        );
        // The same dispatcher steers the direct queue, into a map of the bench's own. The
        // dispatcher handle is dropped at once: it holds the NIC directory's lock, which the
        // plugin's DEL needs.
        let direct_map = in_netns(env.node_fd.as_fd(), || {
            let d = Dispatcher::open(&opts, nic_ifindex)?
                .context("no dispatcher on the NIC after the pod's ADD")?;
            Ok(d.set_queue_pod(DIRECT, &direct_pod, DIRECT)?.xskmap_pin)
        })?;
        let sockets = [
            RxSocket::open(netns_fd(&pod.names[0])?, vdev, vqueue, pod_map, vqueue)
                .context("AF_XDP socket on the pod's leased virtual queue")?,
            RxSocket::open(
                netns_fd(&env.node)?,
                nic_ifindex,
                DIRECT,
                direct_map,
                DIRECT,
            )
            .context("AF_XDP socket on the NIC's queue")?,
        ];
        // The flood: one copy-mode TX socket per target queue, on a thread in the far netns.
        let (flood_tx, flood_rx) = std::sync::mpsc::channel::<(usize, Duration)>();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<std::result::Result<u64, String>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
        let src_mac: netkit_cni::xsk::frame::Mac =
            peer_mac.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let dst_mac: netkit_cni::xsk::frame::Mac =
            nic_mac.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let sender = std::thread::spawn(move || {
            let bound = (|| -> std::result::Result<Vec<Xsk>, String> {
                nix::sched::setns(far_fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                // A TX queue of its own per socket (two AF_XDP sockets cannot share a queue
                // without a shared UMEM: EBUSY); which one does not matter, where a frame lands
                // is the NIC's steering (the test bed's netdevsim: ntuple rules, then RSS).
                (0..2)
                    .map(|q| {
                        Xsk::bind(peer_ifindex, q, &XskConfig::default()).map_err(|e| e.to_string())
                    })
                    .collect()
            })();
            let mut socks = match bound {
                Ok(s) => s,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            let frames: Vec<Vec<u8>> = [pod_ip, DIRECT_DST]
                .iter()
                .map(|&dst_ip| {
                    netkit_cni::xsk::frame::UdpFrame {
                        src_mac,
                        dst_mac,
                        src_ip: Ipv4Addr::new(10, 145, 0, 2),
                        dst_ip,
                        src_port: 40000,
                        dst_port: 9,
                        payload: &[0u8; 18],
                    }
                    .build()
                    .expect("a 60-byte frame")
                })
                .collect();
            while let Ok((target, d)) = flood_rx.recv() {
                let batch: Vec<&[u8]> = vec![&frames[target][..]; 64];
                if sent_tx
                    .send(crate::util::flood_for(&mut socks[target], &batch, d))
                    .is_err()
                {
                    break;
                }
            }
        });
        let flood = (|| -> Result<Value> {
            ready_rx
                .recv()
                .context("AF_XDP flood thread died")?
                .map_err(|e| anyhow::anyhow!("binding the flood's TX sockets: {e}"))?;
            let window = Duration::from_secs_f64(counts.secs);
            // The flood starts before the window and ends after it, so the window sees a steady rate.
            let lead = Duration::from_millis(300);
            let mut pps: [Vec<f64>; 2] = Default::default();
            let mut sent_pps: [Vec<f64>; 2] = Default::default();
            let mut paired = Vec::new();
            let mut dropped = [0u64; 2];
            let mut fill_ring_empty = [0u64; 2];
            let mut ring_full = [0u64; 2];
            for r in 0..counts.rounds {
                let mut this = [0.0; 2];
                for k in 0..2 {
                    let i = (r + k) % 2;
                    flood_tx
                        .send((i, window + 2 * lead))
                        .map_err(|_| anyhow::anyhow!("AF_XDP flood thread died"))?;
                    std::thread::sleep(lead);
                    sockets[i].start(window)?;
                    let c = sockets[i].wait()?;
                    let sent = sent_rx
                        .recv()
                        .context("AF_XDP flood thread died")?
                        .map_err(|e| anyhow::anyhow!("flood: {e}"))?;
                    ensure!(c.frames > 0, "the {} socket received nothing in {:.1} s of flood ({sent} frames sent; {} dropped meanwhile)", ["leased", "direct"][i], counts.secs, c.dropped);
                    this[i] = c.frames as f64 / counts.secs;
                    pps[i].push(this[i]);
                    sent_pps[i].push(sent as f64 / (window + 2 * lead).as_secs_f64());
                    dropped[i] += c.dropped;
                    fill_ring_empty[i] += c.fill_ring_empty;
                    ring_full[i] += c.ring_full;
                }
                paired.push(this[0] / this[1]);
            }
            let p50: Vec<f64> = pps.iter_mut().map(|v| pct(v, 0.5)).collect();
            let sent50: Vec<f64> = sent_pps.iter_mut().map(|v| pct(v, 0.5)).collect();
            let paired50 = pct(&mut paired, 0.5);
            rep.goal(
                "afxdp_rx_lease_vs_direct",
                paired50,
                "ratio",
                ">= 0.95",
                0.95,
                false,
            );
            rep.info(
                "afxdp_rx_pps",
                json!({"leased": p50[0].round(), "direct": p50[1].round()}),
                &format!("AF_XDP copy-mode receive p50: {:.0} frames/s through the lease ÷ {:.0} bound to the NIC queue ({:.3}); flood sent {:.0} and {:.0} frames/s; dropped by the kernel within the windows: {} and {}", p50[0], p50[1], p50[0] / p50[1], sent50[0], sent50[1], dropped[0], dropped[1]),
            );
            std::fs::write(
                env.out_dir.join("afxdp.dat"),
                format!(
                    "# socket rx_kpps_p50\nleased-netkit-queue {:.3}\nnic-queue {:.3}\n",
                    p50[0] / 1e3,
                    p50[1] / 1e3
                ),
            )?;
            let stats = |i: usize| json!({"rx_dropped": dropped[i], "rx_ring_full": ring_full[i], "rx_fill_ring_empty_descs": fill_ring_empty[i]});
            Ok(
                json!({"window_s": counts.secs, "rounds": counts.rounds, "frame_bytes": frame_len(), "nic_rx_queues": QUEUES,
                "leased": {"physical_queue": LEASED, "virtual_queue": vqueue, "rx_pps": pps[0], "flood_sent_pps": sent_pps[0], "dropped_in_windows": stats(0)},
                "direct": {"queue": DIRECT, "rx_pps": pps[1], "flood_sent_pps": sent_pps[1], "dropped_in_windows": stats(1)},
                "paired_ratios": paired}),
            )
        })();
        drop(flood_tx);
        let _ = sender.join();
        drop(sockets);
        raw["afxdp"] = flood?;
        Ok(())
    })();
    let released = in_netns(env.node_fd.as_fd(), || {
        if let Some(d) = Dispatcher::open(&opts, nic_ifindex)? {
            d.release_pod(&direct_pod)?;
        }
        Ok(())
    });
    let del = cni(env, &plugin, "DEL", "afxdp", &pod.path(0));
    measured?;
    released.context("releasing the direct queue's steering")?;
    del?;
    Ok(())
}

/// Bytes of the flood's frames: Ethernet, IPv4 and UDP headers and an 18-byte payload, the
/// smallest Ethernet frame (64 bytes on the wire with its FCS).
pub(crate) fn frame_len() -> usize {
    14 + 20 + 8 + 18
}
