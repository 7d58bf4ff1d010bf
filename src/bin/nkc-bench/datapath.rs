//! Section 5: TCP throughput and request/response latency through a netkit pod against a veth (ptp)
//! pod.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cni::{cni, cni_call, Pods};
use crate::stats::{pct, round3, Report};
use crate::util::{enter_in_child, have, netns_fd, scratch, Env, Plugin};

/// The first IPv4 address of a CNI result.
pub(crate) fn result_ip(stdout: &str) -> Result<Ipv4Addr> {
    let v: Value = serde_json::from_str(stdout)?;
    let a = v["ips"][0]["address"]
        .as_str()
        .context("no ips in the result")?;
    Ok(a.split('/').next().unwrap_or_default().parse()?)
}

/// `n` request/response round trips of one byte over TCP (nodelay) from the node netns to a
/// server in the pod netns: each round trip's time in µs (after 100 unrecorded ones).
pub(crate) fn ping_pong(
    node: BorrowedFd<'_>,
    pod: BorrowedFd<'_>,
    ip: Ipv4Addr,
    n: usize,
) -> Result<Vec<f64>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(move || -> Result<()> {
            nix::sched::setns(pod, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let l = TcpListener::bind((ip, 0))?;
            tx.send(l.local_addr()?.port())?;
            // Never block for good: the client may fail before it connects.
            l.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut c = loop {
                match l.accept() {
                    Ok((c, _)) => break c,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            c.set_nonblocking(false)?;
            c.set_nodelay(true)?;
            let mut b = [0u8; 1];
            while c.read(&mut b)? == 1 {
                c.write_all(&b)?;
            }
            Ok(())
        });
        let client = (|| -> Result<Vec<f64>> {
            let port = rx.recv_timeout(Duration::from_secs(30))?;
            let node = node.try_clone_to_owned()?;
            s.spawn(move || -> Result<Vec<f64>> {
                nix::sched::setns(node.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                let mut c = TcpStream::connect_timeout(
                    &SocketAddr::from((ip, port)),
                    Duration::from_secs(10),
                )?;
                c.set_nodelay(true)?;
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut b = [1u8; 1];
                let mut out = Vec::with_capacity(n);
                for i in 0..n + 100 {
                    let t = Instant::now();
                    c.write_all(&b)?;
                    c.read_exact(&mut b)?;
                    if i >= 100 {
                        out.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                }
                Ok(out)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("ping-pong client panicked"))?
        })();
        let served = server
            .join()
            .map_err(|_| anyhow::anyhow!("ping-pong server panicked"))?;
        let out = client?;
        served?;
        Ok(out)
    })
}

/// One iperf3 run from the node netns to `ip`: received bits per second.
pub(crate) fn iperf3(node: BorrowedFd<'_>, ip: Ipv4Addr, secs: u32) -> Result<f64> {
    Ok(iperf3_run(node, ip, secs, false)?.0)
}

/// One iperf3 run with the client in the netns `client`, the server at `ip`; `reverse` (`-R`):
/// the server sends. Received bits per second and bytes.
pub(crate) fn iperf3_run(
    client: BorrowedFd<'_>,
    ip: Ipv4Addr,
    secs: u32,
    reverse: bool,
) -> Result<(f64, f64)> {
    let node = client;
    let mut last = String::new();
    // The server may still be starting (TCG): retry a refused connection for a while.
    for _ in 0..40 {
        let mut c = Command::new("iperf3");
        // Its stream buffer file goes to TMPDIR: the VM's tmpfs, not 9p (see `scratch`).
        c.args(["-c", &ip.to_string(), "-t", &secs.to_string(), "-J"])
            .env("TMPDIR", scratch().join("tmp"));
        if reverse {
            c.arg("-R");
        }
        enter_in_child(&mut c, node);
        let out = c.stdin(Stdio::null()).output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        // With -J, iperf3 3.12 exits 0 even when it could not connect; the JSON says so.
        if out.status.success() && v["error"].is_null() {
            let r = &v["end"]["sum_received"];
            return r["bits_per_second"]
                .as_f64()
                .zip(r["bytes"].as_f64())
                .with_context(|| format!("iperf3 JSON without end.sum_received: {}", v["end"]));
        }
        last = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("iperf3 -c {ip}: {last}")
}

/// How long section 5 measures.
#[derive(Clone, Copy)]
pub(crate) struct DataPathCounts {
    /// Seconds per iperf3 run.
    pub(crate) secs: u32,
    /// iperf3 runs per plugin.
    pub(crate) rounds: usize,
    /// Request/response turns per plugin.
    pub(crate) rr_rounds: usize,
    /// Round trips per turn.
    pub(crate) rr: usize,
}

/// Section 5, data path: a netkit-cni pod and a ptp pod side by side; TCP throughput (iperf3, server
/// in the pod, client in the node netns) and 1-byte TCP request/response latency, alternating
/// between the two pods.
pub(crate) fn data_path(
    env: &Env,
    plugins: &[Plugin],
    counts: DataPathCounts,
    rep: &mut Report,
    raw: &mut Value,
) -> Result<()> {
    let DataPathCounts {
        secs,
        rounds,
        rr_rounds,
        rr,
    } = counts;
    let pods = Pods::make("nkcbdp", plugins.len())?;
    let mut ips = Vec::new();
    for (i, p) in plugins.iter().enumerate() {
        ips.push(result_ip(
            &cni_call(
                env,
                p,
                "ADD",
                &format!("dp-{}", p.name),
                &pods.path(i),
                "",
                &[],
            )?
            .stdout,
        )?);
    }
    let fds = (0..plugins.len())
        .map(|i| netns_fd(&pods.names[i]))
        .collect::<Result<Vec<_>>>()?;
    let measured = (|| -> Result<()> {
        let mut rtt: Vec<Vec<f64>> = vec![Vec::new(); plugins.len()];
        // Many short turns rather than a few long ones: a burst of load from elsewhere on the
        // machine then hits both pods' samples alike.
        for r in 0..rr_rounds {
            for k in 0..plugins.len() {
                let i = (r + k) % plugins.len();
                rtt[i].extend(ping_pong(env.node_fd.as_fd(), fds[i].as_fd(), ips[i], rr)?);
            }
        }
        let rr_p50: Vec<f64> = rtt.iter_mut().map(|v| pct(v, 0.5)).collect();
        rep.goal(
            "datapath_rr_latency_p50",
            rr_p50[0] / rr_p50[1],
            "ratio",
            "<= 0.9",
            0.9,
            true,
        );
        // The floor of the distribution, which preemption of the VM by other load cannot lift.
        let rr_p10: Vec<f64> = rtt.iter_mut().map(|v| pct(v, 0.1)).collect();
        rep.info(
            "datapath_rr_latency_p10",
            json!(round3(rr_p10[0] / rr_p10[1])),
            &format!(
                "{:.3}: 1-byte TCP round trip p10, {:.1} µs ÷ ptp's {:.1} µs",
                rr_p10[0] / rr_p10[1],
                rr_p10[0],
                rr_p10[1]
            ),
        );
        let mut gbps: Vec<Vec<f64>> = vec![Vec::new(); plugins.len()];
        let iperf = if have("iperf3") {
            Ok(())
        } else {
            Err("iperf3 is not installed (Debian package iperf3)".to_string())
        };
        if iperf.is_ok() {
            let mut servers = Vec::new();
            for (i, ip) in ips.iter().enumerate() {
                let mut c = Command::new("iperf3");
                c.args(["-s", "-B", &ip.to_string()])
                    .env("TMPDIR", scratch().join("tmp"));
                enter_in_child(&mut c, fds[i].as_fd());
                servers.push(
                    c.stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()?,
                );
            }
            let run = (|| -> Result<()> {
                for r in 0..rounds {
                    for k in 0..plugins.len() {
                        let i = (r + k) % plugins.len();
                        gbps[i].push(iperf3(env.node_fd.as_fd(), ips[i], secs)? / 1e9);
                    }
                }
                Ok(())
            })();
            for mut s in servers {
                let _ = s.kill();
                let _ = s.wait();
            }
            run?;
        }
        let tp: Vec<f64> = gbps
            .iter_mut()
            .map(|v| if v.is_empty() { f64::NAN } else { pct(v, 0.5) })
            .collect();
        match iperf {
            Ok(()) => rep.goal(
                "datapath_tcp_throughput",
                tp[0] / tp[1],
                "ratio",
                ">= 1.2",
                1.2,
                false,
            ),
            Err(why) => rep.not_measured("datapath_tcp_throughput", ">= 1.2", &why),
        }
        let mut dat = String::from("# plugin tcp_gbit_s rr_p50_us\n");
        let mut per = serde_json::Map::new();
        for (i, p) in plugins.iter().enumerate() {
            dat.push_str(&format!("{} {:.3} {:.3}\n", p.name, tp[i], rr_p50[i]));
            per.insert(p.name.into(), json!({"tcp_gbit_s_p50": if tp[i].is_finite() { json!(tp[i]) } else { Value::Null }, "tcp_gbit_s_runs": gbps[i], "rr_p10_us": rr_p10[i], "rr_p50_us": rr_p50[i], "rr_p99_us": pct(&mut rtt[i], 0.99)}));
        }
        std::fs::write(env.out_dir.join("datapath.dat"), dat)?;
        raw["datapath"] = json!({"iperf3_seconds": secs, "iperf3_rounds": rounds, "rr_rounds": rr_rounds, "rr_round_trips_per_round": rr, "plugins": per});
        Ok(())
    })();
    for (i, p) in plugins.iter().enumerate() {
        cni(env, p, "DEL", &format!("dp-{}", p.name), &pods.path(i))?;
    }
    measured
}
