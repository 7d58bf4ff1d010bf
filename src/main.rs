//! The binary's edge: a CNI plugin when CNI_COMMAND is set (environment and stdin in, result or
//! error object on stdout), an admin tool otherwise.

use std::io::{Read, Write};

use anyhow::Context;

const USAGE: &str = "\
netkit-cni: CNI plugin for netkit devices, NIC queue leasing and per-queue XDP

As a CNI plugin it is run by the container runtime with CNI_COMMAND set (ADD, DEL, CHECK, GC,
STATUS, VERSION), the network config on stdin and the result on stdout.

Usage:
  netkit-cni --version     print the plugin version and the CNI versions it speaks
  netkit-cni --help        this text
";

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CNI_COMMAND").is_some() {
        // vars_os: a non-UTF-8 variable must become a CNI error (code 4), not a panic.
        let vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
        let mut stdin = Vec::new();
        std::io::stdin().read_to_end(&mut stdin).context("reading the network config from stdin")?;
        let resp = netkit_cni::plugin::run(&vars, &stdin);
        if let Some(out) = resp.stdout {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes()).context("writing the result to stdout")?;
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
                netkit_cni::cni::CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            );
            Ok(())
        }
        Some("--help") | Some("-h") | Some("help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            eprintln!("\nerror: CNI_COMMAND is not set and no admin command was given");
            std::process::exit(2);
        }
    }
}
