//! `nkc-xsk`: receive, send or count frames on one queue of one device through an AF_XDP socket
//! ([`netkit_cni::xsk::Xsk`]). The demo prints what arrives on a pod's leased queue with it, the
//! benchmark measures the receive rate, tests emit frames on a chosen queue. See `USAGE`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use netkit_cni::xsk::frame::{describe, Mac, UdpFrame};
use netkit_cni::xsk::{Xsk, XskConfig};
use nix::errno::Errno;

/// How long a bind that finds the queue taken is retried.
const BUSY_RETRY: Duration = Duration::from_secs(2);

const USAGE: &str = "\
nkc-xsk: receive, send or count frames on one queue of a device through an AF_XDP socket
(copy mode, 2048 frames of 2048 bytes, rings of 1024).

Usage:
  nkc-xsk rx   DEVICE --queue Q [--map PIN --key K] [--count N] [--timeout SECS] [--netns PATH]
  nkc-xsk tx   DEVICE --queue Q --count N --src-mac MAC --dst-mac MAC --src-ip IP --dst-ip IP
               --dport PORT [--sport PORT] [--payload TEXT] [--netns PATH]
  nkc-xsk rate DEVICE --queue Q --seconds SECS [--map PIN --key K] [--netns PATH]
  nkc-xsk --help

DEVICE is --ifindex N or --ifname NAME, looked up in the network namespace the socket binds in.

rx    Print one line per frame on stdout: length, source and destination MAC, ethertype, and
      for IPv4/UDP the addresses, ports and payload (quoted if printable). Prints \"ready\" on
      stderr once the socket is bound (and in the map), so a script can start sending then.
      Exits 0 once --count frames arrived, 1 if --timeout passes first (saying how many
      arrived, with the socket's counters). Without --count it prints frames until --timeout
      (then exits 0) or until killed.
tx    Send --count Ethernet/IPv4/UDP frames (source port 40000 unless --sport, payload
      \"nkc-xsk\" unless --payload) out of the queue; exits 0 once the kernel sent them all.
rate  Count frames for --seconds without copying them, print
      {\"frames\":N,\"bytes\":N,\"seconds\":S,\"pps\":R} on stdout. Prints \"ready\" like rx.

Options:
  --netns PATH     enter this network namespace first (e.g. /run/netns/NAME)
  --map PIN        put the socket into the XSKMAP pinned at PIN (a pod's socket map) ...
  --key K          ... at key K (the pod's virtual queue id)
  --timeout SECS   rx: give up after SECS seconds (fractions allowed)
  -h, --help       this text

Exit status: 0 done, 1 failed or timed out, 2 bad arguments.
";

/// Why the tool stops without success.
enum Failure {
    /// Bad command line: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Run(String),
}

fn usage<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Usage(msg.into()))
}

impl From<netkit_cni::xsk::XskError> for Failure {
    fn from(e: netkit_cni::xsk::XskError) -> Failure {
        Failure::Run(e.to_string())
    }
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("nkc-xsk: {msg}\nTry 'nkc-xsk --help'.");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("nkc-xsk: {msg}");
            ExitCode::from(1)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Cmd {
    Rx,
    Tx,
    Rate,
}

const COMMON: &[&str] = &["--ifindex", "--ifname", "--queue", "--netns"];

impl Cmd {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Cmd::Rx => &["--map", "--key", "--count", "--timeout"],
            Cmd::Tx => &[
                "--count",
                "--src-mac",
                "--dst-mac",
                "--src-ip",
                "--dst-ip",
                "--dport",
                "--sport",
                "--payload",
            ],
            Cmd::Rate => &["--map", "--key", "--seconds"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cmd::Rx => "rx",
            Cmd::Tx => "tx",
            Cmd::Rate => "rate",
        }
    }
}

/// The flags given, every one of which takes a value.
struct Flags {
    cmd: Cmd,
    given: netkit_cni::cli_args::Parsed,
}

impl Flags {
    fn parse(cmd: Cmd, args: &[String]) -> Result<Flags, Failure> {
        use netkit_cni::cli_args::{parse, Opt, UsageError};
        let opts: Vec<Opt> = COMMON
            .iter()
            .chain(cmd.flags())
            .map(|name| Opt::value(name, "a value"))
            .collect();
        match parse(args, &opts) {
            Ok(given) => Ok(Flags { cmd, given }),
            Err(UsageError::Unknown(arg)) if arg.starts_with("--") => {
                let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
                usage(format!("{} does not take {name}", cmd.name()))
            }
            Err(UsageError::Unknown(arg)) => usage(format!("unexpected argument {arg:?}")),
            Err(e) => usage(e.to_string()),
        }
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.given.get(flag)
    }

    fn required(&self, flag: &str) -> Result<&str, Failure> {
        self.get(flag)
            .map_or_else(|| usage(format!("{} needs {flag}", self.cmd.name())), Ok)
    }

    /// `flag` parsed as a T, if given.
    fn parsed<T: std::str::FromStr>(&self, flag: &str, what: &str) -> Result<Option<T>, Failure> {
        match self.get(flag) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .or_else(|_| usage(format!("{flag}: {v:?} is not {what}"))),
        }
    }

    fn parsed_required<T: std::str::FromStr>(&self, flag: &str, what: &str) -> Result<T, Failure> {
        self.required(flag)?;
        Ok(self.parsed(flag, what)?.expect("present"))
    }

    fn seconds(&self, flag: &str) -> Result<Option<Duration>, Failure> {
        match self.parsed::<f64>(flag, "a number of seconds")? {
            None => Ok(None),
            Some(s) => match Duration::try_from_secs_f64(s) {
                Ok(d) if !d.is_zero() => Ok(Some(d)),
                _ => usage(format!("{flag}: {s} is not a positive number of seconds")),
            },
        }
    }
}

enum Device {
    Index(u32),
    Name(String),
}

/// What every command binds: where and to which queue, and the XSKMAP slot to take.
struct Target {
    netns: Option<PathBuf>,
    device: Device,
    queue: u32,
    map: Option<(PathBuf, u32)>,
}

impl Target {
    fn parse(f: &Flags) -> Result<Target, Failure> {
        let device = match (f.get("--ifindex"), f.get("--ifname")) {
            (Some(_), Some(_)) => return usage("give --ifindex or --ifname, not both"),
            (None, None) => return usage(format!("{} needs --ifindex or --ifname", f.cmd.name())),
            (Some(_), None) => Device::Index(f.parsed_required("--ifindex", "an interface index")?),
            (None, Some(name)) => Device::Name(name.to_string()),
        };
        let map = match (f.get("--map"), f.parsed::<u32>("--key", "a map key (u32)")?) {
            (Some(pin), Some(key)) => Some((PathBuf::from(pin), key)),
            (None, None) => None,
            (Some(_), None) => return usage("--map needs --key"),
            (None, Some(_)) => return usage("--key needs --map"),
        };
        Ok(Target {
            netns: f.get("--netns").map(PathBuf::from),
            device,
            queue: f.parsed_required("--queue", "a queue id")?,
            map,
        })
    }

    /// Enter the netns (this process is single-threaded, so the whole process moves), bind, and
    /// take the map slot.
    fn bind(&self) -> Result<Xsk, Failure> {
        if let Some(path) = &self.netns {
            let ns = std::fs::File::open(path)
                .map_err(|e| Failure::Run(format!("open netns {}: {e}", path.display())))?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Failure::Run(format!("setns {}: {e}", path.display())))?;
        }
        let ifindex = match &self.device {
            Device::Index(i) => *i,
            Device::Name(name) => nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|e| Failure::Run(format!("no interface {name:?} here: {e}")))?,
        };
        // The kernel lets go of a closed socket's queue from a workqueue, so a script that runs
        // nkc-xsk twice on one queue can find it still taken for a moment.
        let start = Instant::now();
        let xsk = loop {
            match Xsk::bind(ifindex, self.queue, &XskConfig::default()) {
                Err(e) if e.errno() == Some(Errno::EBUSY) && start.elapsed() < BUSY_RETRY => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => break other?,
            }
        };
        if let Some((pin, key)) = &self.map {
            xsk.insert_into(pin, *key)?;
        }
        Ok(xsk)
    }
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let Some(first) = args.first() else {
        return usage("no command (rx, tx or rate)");
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let cmd = match first.as_str() {
        "rx" => Cmd::Rx,
        "tx" => Cmd::Tx,
        "rate" => Cmd::Rate,
        other => return usage(format!("unknown command {other:?} (rx, tx or rate)")),
    };
    let flags = Flags::parse(cmd, &args[1..])?;
    let target = Target::parse(&flags)?;
    match cmd {
        Cmd::Rx => rx(&flags, &target),
        Cmd::Tx => tx(&flags, &target),
        Cmd::Rate => rate(&flags, &target),
    }
}

fn rx(f: &Flags, target: &Target) -> Result<(), Failure> {
    let count: Option<u64> = f.parsed("--count", "a number of frames")?;
    let timeout = f.seconds("--timeout")?;
    let mut xsk = target.bind()?;
    eprintln!("ready");
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut got = 0u64;
    loop {
        if count.is_some_and(|c| got >= c) {
            return Ok(());
        }
        let wait = match timeout {
            Some(t) => t.saturating_sub(start.elapsed()),
            None => Duration::from_secs(3600),
        };
        if wait.is_zero() {
            let secs = timeout.unwrap_or_default().as_secs_f64();
            return match count {
                None => {
                    eprintln!("{got} frames in {secs}s");
                    Ok(())
                }
                Some(c) => Err(Failure::Run(format!(
                    "timeout after {secs}s: {got} of {c} frames arrived ({})",
                    stats(&xsk)
                ))),
            };
        }
        let max = count.map_or(64, |c| (c - got).min(64)) as usize;
        for frame in xsk.recv(max, wait)? {
            got += 1;
            writeln!(out, "{}", describe(&frame))
                .map_err(|e| Failure::Run(format!("stdout: {e}")))?;
        }
    }
}

fn tx(f: &Flags, target: &Target) -> Result<(), Failure> {
    let count: u64 = f.parsed_required("--count", "a number of frames")?;
    let payload = f.get("--payload").unwrap_or("nkc-xsk");
    let frame = UdpFrame {
        src_mac: f.parsed_required::<Mac>("--src-mac", "a MAC address")?,
        dst_mac: f.parsed_required::<Mac>("--dst-mac", "a MAC address")?,
        src_ip: f.parsed_required::<Ipv4Addr>("--src-ip", "an IPv4 address")?,
        dst_ip: f.parsed_required::<Ipv4Addr>("--dst-ip", "an IPv4 address")?,
        src_port: f.parsed("--sport", "a port")?.unwrap_or(40000),
        dst_port: f.parsed_required("--dport", "a port")?,
        payload: payload.as_bytes(),
    }
    .build()
    .map_or_else(|| usage("--payload: too long for one IPv4 packet"), Ok)?;
    let mut xsk = target.bind()?;
    // Bounded batches: `send` waits for each, so memory stays flat however large --count is.
    const BATCH: u64 = 1024;
    let batch = vec![frame.as_slice(); count.min(BATCH) as usize];
    let mut sent = 0u64;
    while sent < count {
        let n = (count - sent).min(BATCH) as usize;
        let done = xsk.send(&batch[..n])? as u64;
        sent += done;
        if done < n as u64 {
            return Err(Failure::Run(format!(
                "the kernel stopped sending: {sent} of {count} frames sent ({})",
                stats(&xsk)
            )));
        }
    }
    eprintln!("sent {sent} frames of {} bytes", frame.len());
    Ok(())
}

fn rate(f: &Flags, target: &Target) -> Result<(), Failure> {
    let seconds = f
        .seconds("--seconds")?
        .map_or_else(|| usage("rate needs --seconds"), Ok)?;
    let mut xsk = target.bind()?;
    eprintln!("ready");
    let start = Instant::now();
    let (frames, bytes) = xsk.count(seconds)?;
    let secs = start.elapsed().as_secs_f64();
    let v = serde_json::json!({
        "frames": frames,
        "bytes": bytes,
        "seconds": secs,
        "pps": frames as f64 / secs,
    });
    println!("{v}");
    Ok(())
}

fn stats(xsk: &Xsk) -> String {
    match xsk.stats() {
        Ok(s) => s.to_string(),
        Err(e) => format!("no statistics: {e}"),
    }
}
