//! One CNI invocation of a plugin, timed: wall time, its own CPU time (wait4 rusage) and its IPAM
//! exec's.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::stats::ms;
use crate::util::{enter_in_child, netns_add, netns_del, Env, Plugin, CNI_PATH, IPAM_RECORDS};

pub(crate) struct CniOut {
    pub(crate) took: Duration,
    pub(crate) max_rss_kib: u64,
    /// CPU time (user + system) of the plugin process and of the children it waited for (its
    /// IPAM), ms. Under the icount clock this is an instruction count (1 ms = 10^6 instructions),
    /// free of the kernel's asynchronous work that lands inside a wall-clock window.
    pub(crate) cpu_ms: f64,
    /// The part of `cpu_ms` spent in the delegated IPAM plugin for this command (ipam-wrap's
    /// records), ms.
    pub(crate) ipam_ms: f64,
    /// The user-mode parts of `cpu_ms` and `ipam_ms` (section 7's clock check).
    pub(crate) user_ms: f64,
    pub(crate) ipam_user_ms: f64,
    pub(crate) stdout: String,
}

/// The IPAM CPU time ipam-wrap recorded for (`cid`, `cmd`), total and user-mode, ms, removing
/// the record (one line per exec: "<total µs> <user µs>"). Only the command's own IPAM exec
/// counts: an extra exec a plugin makes (a VERSION probe) is its own cost.
pub(crate) fn take_ipam_ms(cid: &str, cmd: &str) -> Result<(f64, f64)> {
    let path = Path::new(IPAM_RECORDS).join(format!("{cid}.{cmd}"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0.0, 0.0)),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    std::fs::remove_file(&path)?;
    let (mut total, mut user) = (0u64, 0u64);
    for l in text.lines() {
        let bad = || format!("{}: {l:?}", path.display());
        let mut f = l.split_whitespace();
        total += f
            .next()
            .with_context(bad)?
            .parse::<u64>()
            .with_context(bad)?;
        user += f
            .next()
            .with_context(bad)?
            .parse::<u64>()
            .with_context(bad)?;
    }
    Ok((total as f64 / 1e3, user as f64 / 1e3))
}

/// One plugin invocation, timed from spawn to exit. `args` becomes CNI_ARGS; `wrap` is a command
/// line the plugin runs under (valgrind), empty for none.
pub(crate) fn cni_call(
    env: &Env,
    p: &Plugin,
    cmd: &str,
    cid: &str,
    netns: &str,
    args: &str,
    wrap: &[String],
) -> Result<CniOut> {
    let mut c = match wrap.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(&p.bin);
            c
        }
        None => Command::new(&p.bin),
    };
    enter_in_child(&mut c, env.node_fd.as_fd());
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH);
    if !args.is_empty() {
        c.env("CNI_ARGS", args);
    }
    // A record left by an earlier failed call must not be charged to this one.
    take_ipam_ms(cid, cmd)?;
    let start = Instant::now();
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(p.conf.to_string().as_bytes())?;
    let out = wait_rusage(child)?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} {cmd} {cid}: {}{}",
            p.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (ipam_ms, ipam_user_ms) = take_ipam_ms(cid, cmd)?;
    Ok(CniOut {
        took,
        max_rss_kib: out.max_rss_kib,
        cpu_ms: out.cpu_us as f64 / 1e3,
        ipam_ms,
        user_ms: out.user_us as f64 / 1e3,
        ipam_user_ms,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

pub(crate) struct Waited {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// The child's own peak RSS (not its children's: host-local's is not the plugin's).
    pub(crate) max_rss_kib: u64,
    /// User + system CPU time of the child and of the children it waited for, µs. The kernel
    /// scales the two so that they add up to the task's sum_exec_runtime (cputime_adjust() in
    /// kernel/sched/cputime.c), so the sum is exact, not tick-sampled.
    pub(crate) cpu_us: u64,
    /// The user-mode part of `cpu_us`: tick-sampled (the split of an exact total in proportion
    /// to the ticks that found the task in user or kernel mode), so only sums over many calls
    /// mean something.
    pub(crate) user_us: u64,
}

/// Collect a child's output and reap it with wait4(2), which reports that one child's rusage
/// (getrusage(RUSAGE_CHILDREN) only knows the largest of all children so far).
pub(crate) fn wait_rusage(mut child: std::process::Child) -> Result<Waited> {
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (stdout, stderr) = std::thread::scope(|s| {
        let e = s.spawn(|| {
            let mut b = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut b);
            }
            b
        });
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b);
        }
        (b, e.join().unwrap_or_default())
    });
    let mut status = 0;
    // SAFETY: zero is a valid rusage; wait4 fills it for the child we spawned and own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall on our own child's pid with valid out-pointers.
        if unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) } >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        ensure!(e.kind() == std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    use std::os::unix::process::ExitStatusExt;
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Waited {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
        max_rss_kib: ru.ru_maxrss as u64,
        cpu_us: us(ru.ru_utime) + us(ru.ru_stime),
        user_us: us(ru.ru_utime),
    })
}

/// What one plugin invocation cost.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    /// From spawn to exit, ms of the guest's clock.
    pub(crate) wall: f64,
    /// Peak RSS of the plugin process, KiB.
    pub(crate) rss: u64,
    /// CPU time of the plugin and its IPAM, ms ([`CniOut::cpu_ms`]).
    pub(crate) cpu: f64,
    /// The plugin's own share: `cpu` less its IPAM exec's, ms.
    pub(crate) own: f64,
}

/// One plugin invocation, timed from spawn to exit, with its CPU time and peak RSS.
pub(crate) fn cni(env: &Env, p: &Plugin, cmd: &str, cid: &str, netns: &str) -> Result<Call> {
    let out = cni_call(env, p, cmd, cid, netns, "", &[])?;
    Ok(Call {
        wall: ms(out.took),
        rss: out.max_rss_kib,
        cpu: out.cpu_ms,
        own: out.cpu_ms - out.ipam_ms,
    })
}

pub(crate) struct Pods {
    pub(crate) names: Vec<String>,
}

impl Pods {
    pub(crate) fn make(prefix: &str, n: usize) -> Result<Pods> {
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("{prefix}{i}");
            netns_add(&name)?;
            names.push(name);
        }
        Ok(Pods { names })
    }
    pub(crate) fn path(&self, i: usize) -> String {
        format!("/run/netns/{}", self.names[i])
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = netns_del(n);
        }
    }
}
