//! Section 5c: a DPDK application's receive rate through a leased queue (testpmd, AF_XDP PMD in
//! copy mode, on the pod's netkit device) against the same application in an ordinary pod
//! (testpmd, `net_af_packet` on a ptp pod's `eth0`), the same far-side flood, interleaved; and the
//! request/response check through testpmd's `macswap`.
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netkit_cni::testkit::{self, packet::PacketSocket};
use netkit_cni::xsk::{Xsk, XskConfig};
use serde_json::{json, Value};

use crate::afxdp::frame_len;
use crate::cni::{cni, cni_call, Pods};
use crate::datapath::result_ip;
use crate::fixtures::{Bpffs, FarWire};
use crate::stats::{pct, Report};
use crate::util::{sh, Env, Plugin};

/// How long section 5c measures.
#[derive(Clone, Copy)]
pub(crate) struct DpdkCounts {
    /// Seconds each testpmd counts per round.
    pub(crate) secs: f64,
    /// Rounds, each measuring both (alternating which goes first).
    pub(crate) rounds: usize,
}

/// The DPDK root filesystem (scripts/dpdk-rootfs, passed by scripts/bench as NKC_DPDK_ROOTFS).
fn rootfs() -> Result<PathBuf> {
    testkit::dpdk::rootfs().map_err(|e| anyhow::anyhow!(e))
}

/// dpdk-testpmd in interactive mode inside a pod netns (chrooted into the DPDK root filesystem
/// by scripts/dpdk-chroot), driven through its stdin; everything it prints is kept. The same
/// invocation as tests/vm_dpdk.rs: 2 lcores (the main one and one forwarding core), no
/// hugepages, no shared runtime files, no PCI scan.
struct Testpmd {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    what: &'static str,
}

impl Testpmd {
    fn start(what: &'static str, pod: &str, binds: &[&Path], vdev: &str) -> Result<Testpmd> {
        let vdevs = [vdev.to_string()];
        let mut c = testkit::dpdk::testpmd_command(pod, &rootfs()?, binds, &[], &vdevs);
        c.args([
            "--",
            "-i",
            "--total-num-mbufs=16384",
            "--nb-cores=1",
            "--port-topology=loop",
            "--forward-mode=rxonly",
        ]);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning dpdk-testpmd")?;
        let stdin = child.stdin.take().context("testpmd stdin")?;
        let out = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().context("testpmd stdout")?),
            Box::new(child.stderr.take().context("testpmd stderr")?),
        ];
        for mut r in pipes {
            let out = out.clone();
            // Raw chunks, not lines: the "testpmd> " prompt ends without a newline.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let s = String::from_utf8_lossy(&buf[..n]);
                    out.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
                }
            });
        }
        let mut t = Testpmd {
            child,
            stdin,
            out,
            what,
        };
        // Under TCG the EAL's start takes tens of seconds (the tests allow 180).
        let ready = t.wait_for(0, "testpmd> ", Duration::from_secs(300))?;
        let out = t.output();
        ensure!(
            out[..ready].contains("Port 0:"),
            "{what}: testpmd came up without its port:\n{out}"
        );
        Ok(t)
    }

    fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The position just after the first `what` printed at or after `from`.
    fn wait_for(&mut self, from: usize, what: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if let Some(i) = out.get(from..).and_then(|s| s.find(what)) {
                return Ok(from + i + what.len());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "{}: testpmd exited ({st}) before printing {what:?}; its output:\n{out}",
                    self.what
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: testpmd did not print {what:?} within {timeout:?}; its output:\n{out}",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a command line; its answer starts at the returned position.
    fn send(&mut self, line: &str) -> Result<usize> {
        let pos = self.output().len();
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(pos)
    }

    /// A command and the prompt after it.
    fn command(&mut self, line: &str) -> Result<()> {
        let pos = self.send(line)?;
        self.wait_for(pos, "testpmd> ", Duration::from_secs(60))?;
        Ok(())
    }

    /// `show port stats 0`: (RX-packets, RX-missed, TX-packets).
    fn port_stats(&mut self) -> Result<(u64, u64, u64)> {
        let pos = self.send("show port stats 0")?;
        let head = self.wait_for(pos, "NIC statistics for port 0 ", Duration::from_secs(60))?;
        let end = self.wait_for(head, "Tx-bps:", Duration::from_secs(60))?;
        let out = self.output();
        let block = &out[head..end];
        let num = |key: &str| -> Result<u64> {
            let at = block
                .find(key)
                .with_context(|| format!("no {key} in testpmd's port stats: {block}"))?;
            block[at + key.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .parse()
                .with_context(|| format!("{key} in {block}"))
        };
        Ok((num("RX-packets:")?, num("RX-missed:")?, num("TX-packets:")?))
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins the calling thread to CPU `cpu`: the flood and the kernel's receive path it drives
/// (netdevsim delivers in the sender's softirq) stay off the CPU of testpmd's forwarding lcore
/// (`-l 0-1`: lcore 1 busy-polls CPU 1), for both pods alike.
pub(crate) fn pin_to(cpu: usize) -> std::result::Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(|e| e.to_string())?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| e.to_string())
}

/// Frames arriving on the far NIC (not sent from it) during `window` that `keep` accepts,
/// counted by an AF_PACKET socket in the far netns.
fn count_returns(
    far: &OwnedFd,
    ifindex: u32,
    keep: impl Fn(&[u8]) -> bool + Send + Sync,
    window: Duration,
) -> Result<u64> {
    let fd = far.try_clone()?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<u64> {
            nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            let sock = PacketSocket::open(ifindex, Duration::from_millis(100))
                .context("an AF_PACKET socket on the far NIC")?;
            let deadline = Instant::now() + window;
            let mut buf = [0u8; 2048];
            let mut n = 0;
            while Instant::now() < deadline {
                if sock.recv_incoming(&mut buf).is_some_and(&keep) {
                    n += 1;
                }
            }
            Ok(n)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("capture thread panicked"))?
    })
}

fn mac_bytes(s: &str) -> Result<[u8; 6]> {
    let v = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .with_context(|| format!("MAC address {s:?}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("MAC address {s:?} is not 6 bytes"))
}

/// Section 5c. A 4-queue netdevsim NIC in the node netns wired to a second one in a far netns,
/// as in section 5b. Pod A: netkit-cni with `pairing: single`, a 1-queue lease (NIC queue 1) and
/// `xdp`; testpmd runs in it with one single-queue AF_XDP port built from nothing but its
/// device-info file (`iface`, `start_queue`, `queue_count=1`, `use_pinned_map=1`,
/// `dp_path=<xsk-map>`, `force_copy=1`: netkit has no `get_channels`, so the PMD sees one
/// channel and a port per leased queue is the only shape it accepts). Pod B: Debian's ptp (veth)
/// with host-local; testpmd runs in it with `net_af_packet` on `eth0`, how a DPDK application in
/// an ordinary pod gets its traffic. The far side floods 60-byte UDP frames from an AF_XDP
/// socket: to A's address, which the plugin's ntuple rule (`lease.steering`) puts on the
/// leased queue (the dispatcher redirects it to A's socket), and to B's address, which RSS
/// spreads over the queues outside the pool (the dispatcher passes it, the node routes it into
/// B's veth). No TX queue is chosen: the test kernel's netdevsim steers like a real NIC. netdevsim delivers in the sender's softirq, so each pod's rate is bounded
/// by its whole per-frame path, and the faster path lets more of the flood through. Only the
/// measured testpmd forwards; the other is stopped. The goal is the median of the per-round
/// ratios of testpmd's RX-packets per second.
pub(crate) fn dpdk_rate(
    env: &Env,
    plugins: &[Plugin; 2],
    counts: DpdkCounts,
    rep: &mut Report,
    raw: &mut Value,
) -> Result<()> {
    const QUEUES: u32 = 4;
    const LEASED: u32 = 1;
    // The test kernel's netdevsim steers like a real NIC (ntuple rules, then RSS; the sender's
    // TX queue does not matter): pod A's flood reaches its leased queue through the plugin's rule
    // on A's address (`steering.match: ip`), pod B's spreads by RSS over the queues outside the
    // pool, which the dispatcher passes to the node's stack.
    rootfs()?;
    let FarWire {
        far,
        far_fd,
        nic,
        peer,
        nic_ifindex: _,
        nic_mac,
        peer_ifindex,
        peer_mac,
    } = FarWire::new(
        env,
        format!("nkcbdfar{}", std::process::id()),
        QUEUES,
        false,
    )?;
    let in_far = |args: &[&str]| -> Result<String> {
        let mut a = vec!["ip", "netns", "exec", &far.0];
        a.extend_from_slice(args);
        sh(&a)
    };
    // The node routes the flood for pod B: the wire is a /24 of its own, forwarding on, no
    // reverse-path filter in the way (the far address is on-link anyway).
    sh(&[
        "ip",
        "-n",
        &env.node,
        "addr",
        "add",
        "10.147.0.1/24",
        "dev",
        &nic.ifname,
    ])?;
    in_far(&["ip", "addr", "add", "10.147.0.2/24", "dev", &peer.ifname])?;
    sh(&[
        "ip",
        "netns",
        "exec",
        &env.node,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
    ])?;
    let bpffs = Bpffs::new("dpdk")?;
    let devinfo = env.data.join("devinfo-dpdk");
    std::fs::create_dir_all(&devinfo)?;
    let ours = Plugin {
        name: "single+lease1+xdp",
        bin: plugins[0].bin.clone(),
        conf: json!({"cniVersion": "1.0.0", "name": "nkb-dpdk", "type": "netkit-cni", "pairing": "single",
            "ipam": {"type": "host-local", "subnet": "10.146.0.0/16", "dataDir": env.data},
            "lease": {"master": nic.ifname, "queues": 1, "allowedQueues": LEASED.to_string(), "deviceInfoDir": devinfo,
                      "steering": {"rss": "exclude-pool", "match": "ip"}},
            "xdp": {"bpffs": bpffs.path}}),
    };
    let ptp = Plugin {
        name: "ptp",
        bin: plugins[1].bin.clone(),
        conf: json!({"cniVersion": "1.0.0", "name": "ptp-dpdk", "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.148.0.0/16", "dataDir": env.data}}),
    };
    let pods = Pods::make("nkcbdpdk", 2)?;
    let added_a = cni_call(env, &ours, "ADD", "dpdk-a", &pods.path(0), "", &[])?;
    let a_dst = result_ip(&added_a.stdout)?;
    let added_b = cni_call(env, &ptp, "ADD", "dpdk-b", &pods.path(1), "", &[]);
    let measured = (|| -> Result<()> {
        let b_ip = result_ip(
            &added_b
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?
                .stdout,
        )?;
        let file = std::fs::read_dir(&devinfo)?
            .next()
            .context("the ADD wrote no device-info file")??
            .path();
        let info: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
        let info = &info["netkit-lease"];
        let x = &info["xdp"];
        let vdev_a = format!(
            "net_af_xdp0,iface={},start_queue={},queue_count=1,use_pinned_map=1,dp_path={},force_copy=1",
            info["interface"].as_str().context("device info without interface")?,
            x["start-queue"].as_u64().context("device info without xdp.start-queue")?,
            x["xsk-map"].as_str().context("device info without xdp.xsk-map")?,
        );
        // testpmd's forwarding lcore busy-polls CPU 1; the bench, the flood and the receive
        // path it drives stay on CPU 0 (see pin_to).
        let anywhere = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
        pin_to(0).map_err(|e| anyhow::anyhow!("sched_setaffinity: {e}"))?;
        let mut pmds = [
            Testpmd::start(
                "AF_XDP (lease)",
                &pods.names[0],
                &[&bpffs.path, &devinfo],
                &vdev_a,
            )?,
            Testpmd::start(
                "af_packet (ptp)",
                &pods.names[1],
                &[],
                "net_af_packet0,iface=eth0",
            )?,
        ];
        // The flood: one copy-mode TX socket per target, on a thread in the far netns.
        let (flood_tx, flood_rx) = std::sync::mpsc::channel::<(usize, Duration)>();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<std::result::Result<u64, String>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
        let src_mac: netkit_cni::xsk::frame::Mac =
            peer_mac.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let dst_mac: netkit_cni::xsk::frame::Mac =
            nic_mac.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let flood_fd = far_fd.try_clone()?;
        let sender = std::thread::spawn(move || {
            let bound = (|| -> std::result::Result<Vec<Xsk>, String> {
                pin_to(0)?;
                nix::sched::setns(flood_fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
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
            // Both by their address: A's by its rule, B's routed by the node.
            let frames: Vec<Vec<u8>> = [a_dst, b_ip]
                .iter()
                .map(|&dst_ip| {
                    netkit_cni::xsk::frame::UdpFrame {
                        src_mac,
                        dst_mac,
                        src_ip: Ipv4Addr::new(10, 147, 0, 2),
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
        let result = (|| -> Result<Value> {
            ready_rx
                .recv()
                .context("flood thread died")?
                .map_err(|e| anyhow::anyhow!("binding the flood's TX sockets: {e}"))?;
            let window = Duration::from_secs_f64(counts.secs);
            // The flood starts before the window and ends after it: the window sees a steady rate.
            let lead = Duration::from_millis(300);
            let names = ["afxdp_lease", "af_packet_ptp"];
            let mut pps: [Vec<f64>; 2] = Default::default();
            let mut sent_pps: [Vec<f64>; 2] = Default::default();
            let mut missed = [0u64; 2];
            let mut paired = Vec::new();
            for r in 0..counts.rounds {
                let mut this = [0.0; 2];
                for k in 0..2 {
                    let i = (r + k) % 2;
                    pmds[i].command("start")?;
                    flood_tx
                        .send((i, window + 2 * lead))
                        .map_err(|_| anyhow::anyhow!("flood thread died"))?;
                    std::thread::sleep(lead);
                    let (t0, (rx0, miss0, _)) = (Instant::now(), pmds[i].port_stats()?);
                    std::thread::sleep(window);
                    let (rx1, miss1, _) = pmds[i].port_stats()?;
                    let took = t0.elapsed().as_secs_f64();
                    let sent = sent_rx
                        .recv()
                        .context("flood thread died")?
                        .map_err(|e| anyhow::anyhow!("flood: {e}"))?;
                    pmds[i].command("stop")?;
                    ensure!(
                        rx1 > rx0,
                        "{}: testpmd received nothing in {took:.1} s of flood ({sent} frames sent); its output:\n{}",
                        names[i],
                        pmds[i].output()
                    );
                    this[i] = (rx1 - rx0) as f64 / took;
                    pps[i].push(this[i]);
                    sent_pps[i].push(sent as f64 / (window + 2 * lead).as_secs_f64());
                    missed[i] += miss1 - miss0;
                }
                paired.push(this[0] / this[1]);
            }
            let p50: Vec<f64> = pps.iter_mut().map(|v| pct(v, 0.5)).collect();
            let sent50: Vec<f64> = sent_pps.iter_mut().map(|v| pct(v, 0.5)).collect();
            let ratio = pct(&mut paired, 0.5);
            rep.goal(
                "dpdk_afxdp_vs_afpacket_pps",
                ratio,
                "ratio",
                ">= 1.37",
                1.37,
                false,
            );
            rep.info(
                "dpdk_rx_pps",
                json!({"afxdp_lease": p50[0].round(), "af_packet_ptp": p50[1].round()}),
                &format!("testpmd rxonly RX p50: {:.0} frames/s through the lease (AF_XDP PMD, copy mode) ÷ {:.0} on a ptp pod's eth0 (af_packet PMD) ({:.3}); flood sent {:.0} and {:.0} frames/s; RX-missed within the windows: {} and {}", p50[0], p50[1], p50[0] / p50[1], sent50[0], sent50[1], missed[0], missed[1]),
            );

            // Request/response through macswap, pod A: what its frames turn into. In copy mode
            // the AF_XDP socket's transmit goes through the kernel's generic path, which sends
            // only on queue ids below the device's real_num_tx_queues (`__xsk_generic_xmit`,
            // net/xdp/xsk.c); a netkit device has one TX queue (NETKIT_NUM_TX_QUEUES_REAL,
            // drivers/net/netkit.c) while the socket sits on a leased queue >= 1, and a single
            // device has no peer to transmit to anyway. tests/vm_dpdk.rs asserts that nothing
            // leaves; here the bench looks again and reports what it saw.
            let pmd = &mut pmds[0];
            pmd.command("set fwd macswap")?;
            pmd.command("start")?;
            let (_, _, tx0) = pmd.port_stats()?;
            flood_tx
                .send((0, window))
                .map_err(|_| anyhow::anyhow!("flood thread died"))?;
            // A macswapped flood frame: the node's MAC as source, the far NIC's as destination,
            // the flood's own IPv4 addresses (macswap leaves them). Anything else the node sends
            // (ARP, ICMP errors for pod B's frames) is not one.
            let (from_mac, to_mac) = (mac_bytes(&nic_mac)?, mac_bytes(&peer_mac)?);
            let macswapped = move |f: &[u8]| {
                f.len() >= 34
                    && f[..6] == to_mac
                    && f[6..12] == from_mac
                    && f[12..14] == [0x08, 0x00]
                    && f[26..30] == [10, 147, 0, 2]
                    && f[30..34] == a_dst.octets()
            };
            let back = count_returns(&far_fd, peer_ifindex, macswapped, window + lead)?;
            let sent = sent_rx
                .recv()
                .context("flood thread died")?
                .map_err(|e| anyhow::anyhow!("flood: {e}"))?;
            let (_, _, tx1) = pmd.port_stats()?;
            pmd.command("stop")?;
            let why = if back == 0 {
                format!("AF_XDP copy-mode TX on a leased netkit queue does not reach the wire: testpmd macswap put {} frames on its TX ring while the far side received none of {sent} sent (the generic xmit path sends only on queue ids below the netkit device's one real TX queue, __xsk_generic_xmit in net/xdp/xsk.c; tests/vm_dpdk.rs asserts it)", tx1 - tx0)
            } else {
                format!("{back} macswapped frames reached the far side ({} on testpmd's TX ring, {sent} sent): the kernel changed; the round-trip timing through AF_XDP TX is not written yet", tx1 - tx0)
            };
            rep.not_measured("dpdk_afxdp_vs_afpacket_rr_p50", "<= 0.7", &why);
            std::fs::write(
                env.out_dir.join("dpdk.dat"),
                format!(
                    "# testpmd rx_kpps_p50\nafxdp-lease {:.3}\naf_packet-ptp {:.3}\n",
                    p50[0] / 1e3,
                    p50[1] / 1e3
                ),
            )?;
            Ok(
                json!({"window_s": counts.secs, "rounds": counts.rounds, "frame_bytes": frame_len(),
                "afxdp_lease": {"vdev": vdev_a, "rx_pps": pps[0], "flood_sent_pps": sent_pps[0], "rx_missed_in_windows": missed[0]},
                "af_packet_ptp": {"vdev": "net_af_packet0,iface=eth0", "pod_ip": b_ip.to_string(), "rx_pps": pps[1], "flood_sent_pps": sent_pps[1], "rx_missed_in_windows": missed[1]},
                "paired_ratios": paired,
                "macswap_probe": {"testpmd_tx": tx1 - tx0, "far_side_received": back, "sent": sent}}),
            )
        })();
        drop(flood_tx);
        let _ = sender.join();
        drop(pmds);
        // The sections after this one run anywhere again.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &anywhere);
        raw["dpdk"] = result?;
        Ok(())
    })();
    let del_a = cni(env, &ours, "DEL", "dpdk-a", &pods.path(0));
    let del_b = cni(env, &ptp, "DEL", "dpdk-b", &pods.path(1));
    measured?;
    del_a?;
    del_b?;
    Ok(())
}
