//! `scripts/vm-run` killed from outside (an outer `timeout`, Ctrl-C, a closed terminal) stops its
//! VM: no QEMU of it is left running and its run directory is gone. Without that, a killed
//! vm-run left QEMU burning a core for as long as its own host-side limit (half an hour).
//!
//! Runs on the host (it tests the host-side script) once the test kernel is built; `make test`
//! runs it in its `vm-run` phase. Cargo feature `script-tests`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const GUEST_UP: &str = "nkc-guest-is-up";

/// (pid -> (ppid, comm, starttime)) of every process, from /proc.
fn processes() -> BTreeMap<i32, (i32, String, u64)> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the
        // last ')'; starttime is field 22, the 20th after it.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').unwrap() + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ppid = rest[1].parse().unwrap();
        let start = rest[19].parse().unwrap();
        out.insert(pid, (ppid, comm, start));
    }
    out
}

/// Every process below `root` (children, grandchildren...), with its comm and start time.
fn descendants(root: i32) -> Vec<(i32, String, u64)> {
    let all = processes();
    let mut found = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&pid, (ppid, comm, start)) in &all {
            if *ppid == p {
                found.push((pid, comm.clone(), *start));
                frontier.push(pid);
            }
        }
    }
    found
}

fn alive(pid: i32, start: u64) -> bool {
    processes().get(&pid).is_some_and(|(_, _, s)| *s == start)
}

fn start_vm(tmp: &Path) -> (Child, mpsc::Receiver<String>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(format!("{root}/scripts/vm-run"));
    cmd.args(["--timeout", "900", "--", "sh", "-c"])
        .arg(format!("echo {GUEST_UP}; exec sleep 900"))
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // vm-run starts with the three signals at their defaults, as from a terminal or a CI runner.
    // This test may itself run with them ignored (under `nohup`, or as a background job of a
    // non-interactive shell, which ignores SIGINT), and a shell cannot trap a signal that was
    // ignored when it started (POSIX, "trap"): vm-run would then never see SIGINT or SIGHUP,
    // which is the environment's doing, not vm-run's.
    // SAFETY: signal(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn scripts/vm-run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn kill_vm_run_and_check(sig: Signal) {
    let tmp = tempdir();
    let (mut child, lines) = start_vm(&tmp);
    let pid = child.id() as i32;

    // TCG boots in ~10 s on a quiet machine; a loaded one (the other phases' builds) takes longer.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(GUEST_UP) => break,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the guest's command never started within 300 s (vm-run exited: {:?})",
                    child.try_wait()
                );
            }
        }
    }

    let below = descendants(pid);
    let qemus: Vec<_> = below
        .iter()
        .filter(|(_, comm, _)| comm.starts_with("qemu-system"))
        .cloned()
        .collect();
    assert!(
        !qemus.is_empty(),
        "no qemu-system process under vm-run (pid {pid}) while its guest runs; processes below it: {below:?}"
    );
    let run_dirs = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("nkc-vm-run."))
            .collect()
    };
    assert_eq!(
        run_dirs(&tmp).len(),
        1,
        "vm-run's run directory while it runs, in {}",
        tmp.display()
    );

    kill(Pid::from_raw(pid), sig).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("vm-run still running 60 s after {sig}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The trap's exit status is 128 + the signal number, as a shell's would be.
    assert_eq!(
        status.code(),
        Some(128 + sig as i32),
        "vm-run's exit after {sig}: {status:?}"
    );

    // Everything it started must be gone (QEMU gets SIGTERM, then SIGKILL 10 s later).
    let t0 = Instant::now();
    loop {
        let left: Vec<_> = below.iter().filter(|(p, _, s)| alive(*p, *s)).collect();
        if left.is_empty() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            for (p, _, _) in &left {
                let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
            }
            panic!("30 s after vm-run got {sig}, these of its processes still run: {left:?} (QEMU among them: {qemus:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        run_dirs(&tmp),
        Vec::<String>::new(),
        "vm-run's run directory after {sig}"
    );
    fs::remove_dir_all(&tmp).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    // Under /tmp: vm-run shares /tmp with the guest, and its run directory must be reachable there.
    let d = std::path::PathBuf::from(format!(
        "/tmp/nkc-vmrun-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    fs::create_dir(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u64::from_ne_bytes(b)
}

// One test for the three signals: each boots a VM, and two VMs at once would only slow both.
#[test]
fn vm_run_killed_by_sigterm_sigint_or_sighup_leaves_no_qemu_and_no_run_dir() {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        kill_vm_run_and_check(sig);
        eprintln!("ok: {sig} stopped the VM and removed the run directory");
    }
}
