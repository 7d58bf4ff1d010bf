//! The binary's edge: a CNI plugin when CNI_COMMAND is set (environment and stdin in, result or
//! error object on stdout), an admin tool otherwise.

use std::io::{Read, Write};

use anyhow::Context;

const USAGE: &str = "\
netkit-cni: CNI plugin for netkit devices, NIC queue leasing and per-queue XDP

As a CNI plugin it is run by the container runtime with CNI_COMMAND set (ADD, DEL, CHECK, GC,
STATUS, VERSION), the network config on stdin and the result on stdout.

Usage:
  netkit-cni inspect [--json] [--master IFNAME] [--bpffs PATH]
                           show, read-only, the NIC queues leased to pods and the XDP
                           dispatcher state on this node (run as root in the node netns;
                           `netkit-cni inspect --help` for details)
  netkit-cni qemu-netdev --device-info FILE --id ID [--sock-fds FD:FD...] [--force-copy]
                           print QEMU's -netdev af-xdp argument for an attachment
                           (`netkit-cni qemu-netdev --help` for details)
  netkit-cni node-pod-cidr  read a Kubernetes Node object (JSON) on stdin and print its
                           spec.podCIDR, checked to be a CIDR with its host bits clear
                           (the DaemonSet's installer; exits 1 naming what is wrong)
  netkit-cni --version     print the plugin version and the CNI versions it speaks
  netkit-cni --help        this text
";

pub(crate) fn main() -> anyhow::Result<()> {
    if std::env::var_os("CNI_COMMAND").is_some() {
        // vars_os: a non-UTF-8 variable must become a CNI error (code 4), not a panic.
        let vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
        let mut stdin = Vec::new();
        std::io::stdin()
            .read_to_end(&mut stdin)
            .context("reading the network config from stdin")?;
        let resp = netkit_cni::plugin::run(&vars, &stdin);
        if let Some(out) = resp.stdout {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(out.as_bytes())
                .context("writing the result to stdout")?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
        }
        std::process::exit(resp.exit_code);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("version") => {
            println!(
                "netkit-cni {} (CNI spec versions: {})",
                env!("CARGO_PKG_VERSION"),
                netkit_cni::cni::CniVersion::SUPPORTED
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Some("--help") | Some("-h") | Some("help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("inspect") => inspect(&args[1..]),
        Some("qemu-netdev") => qemu_netdev(&args[1..]),
        Some("node-pod-cidr") if args.len() == 1 => node_pod_cidr(),
        Some(other) => {
            eprint!("{USAGE}");
            eprintln!("\nerror: unknown command {other:?}");
            std::process::exit(2);
        }
        None => {
            eprint!("{USAGE}");
            eprintln!("\nerror: CNI_COMMAND is not set and no admin command was given");
            std::process::exit(2);
        }
    }
}

/// `netkit-cni inspect`: the report on stdout; a bad argument exits 2, any failure 1, both with
/// the message on stderr.
fn inspect(args: &[String]) -> anyhow::Result<()> {
    use netkit_cni::inspect::{self, Invocation};
    let fail = |e: inspect::InspectError| -> ! {
        eprintln!("netkit-cni inspect: error: {e}");
        if e.exit_code() == 2 {
            eprintln!("(netkit-cni inspect --help shows the usage)");
        }
        std::process::exit(e.exit_code());
    };
    let opts = match inspect::parse_args(args) {
        Ok(Invocation::Help) => {
            print!("{}", inspect::USAGE);
            return Ok(());
        }
        Ok(Invocation::Run(opts)) => opts,
        Err(e) => fail(e),
    };
    let report = inspect::inspect(&opts).unwrap_or_else(|e| fail(e));
    let text = if opts.json {
        report.to_json() + "\n"
    } else {
        inspect::render_table(&report)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing the report to stdout")?;
    stdout.flush().context("writing the report to stdout")?;
    Ok(())
}

/// `netkit-cni qemu-netdev`: the argument on stdout; a bad argument exits 2, an unusable
/// device-info file 1, both with the message on stderr.
fn qemu_netdev(args: &[String]) -> anyhow::Result<()> {
    use netkit_cni::qemu::{self, Invocation};
    let fail = |e: qemu::QemuError| -> ! {
        eprintln!("netkit-cni qemu-netdev: error: {e}");
        if e.exit_code() == 2 {
            eprintln!("(netkit-cni qemu-netdev --help shows the usage)");
        }
        std::process::exit(e.exit_code());
    };
    match qemu::parse_args(args) {
        Ok(Invocation::Help) => print!("{}", qemu::USAGE),
        Ok(Invocation::Run(opts)) => println!("{}", qemu::run(&opts).unwrap_or_else(|e| fail(e))),
        Err(e) => fail(e),
    }
    Ok(())
}

/// `netkit-cni node-pod-cidr`: `spec.podCIDR` of the Node object on stdin, and nothing else of
/// it. The installer used to grep the whole object for `"podCIDR"`, so a string of that shape
/// in an annotation (metadata comes before spec) won; a JSON parser reads the one field.
fn node_pod_cidr() -> anyhow::Result<()> {
    let mut body = Vec::new();
    // A Node object is a few KiB; the cap keeps a runaway input from growing without bound.
    std::io::stdin()
        .take(16 << 20)
        .read_to_end(&mut body)
        .context("reading the Node object from stdin")?;
    match netkit_cni::cni::node_pod_cidr(&body) {
        Ok(c) => {
            println!("{c}");
            Ok(())
        }
        Err(e) => {
            eprintln!("netkit-cni node-pod-cidr: error: {e}");
            std::process::exit(1);
        }
    }
}
