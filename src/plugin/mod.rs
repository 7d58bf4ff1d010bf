//! The CNI verbs, one module each (`add`, `del`, `check`, `gc`, `status`), and what they share:
//! the parsed [`Request`], the mapping of kernel errors to CNI errors and the process entry
//! point ([`run`]). The pod-side and host-side planning from IPAM's result is in `plan`.
//!
//! No state files for the devices: a pair's host device name is derived from (container id,
//! ifname) and its alias carries a [`Marker`] (network, container id, ifname); a single device
//! (lease-only, no host side) carries the marker itself. DEL and GC find everything in the
//! kernel — a single device inside a pod netns through the master NIC's leases. The one file
//! per leasing attachment is its device-info file ([`devinfo`]), written for consumers such as
//! Multus and read back by CHECK to know which leases to expect.

mod add;
mod check;
pub mod dataplane;
mod del;
pub mod devinfo;
mod gc;
pub mod kernel_dp;
pub mod lease;
mod plan;
mod status;
pub mod steer;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::cni::{self, CniEnv, CniError, CniVersion, Command};
use crate::config::NetConf;
use crate::hostrouting::HostRoutingError;
pub use crate::ipam::delegate::{ExecIpam, IpamDelegate};
use crate::kernel::link::{LinkError, Marker};
use crate::logging::Logger;
use crate::xdp::PodId;
use dataplane::DpError;

pub use add::cmd_add;
pub use check::cmd_check;
pub use del::cmd_del;
pub use gc::cmd_gc;
pub use status::cmd_status;

/// Plugin-specific error codes: the one table lives in `cni::codes`, so two modules never reuse
/// a code; the verbs name them through this path.
pub mod errcodes {
    pub use crate::cni::codes::*;
}

/// One parsed invocation.
pub struct Request {
    pub env: CniEnv,
    pub conf: NetConf,
}

impl Request {
    fn marker(&self) -> Result<Marker, CniError> {
        let cid = self
            .env
            .container_id
            .as_ref()
            .map(|c| c.as_str())
            .unwrap_or_default();
        let ifname = self
            .env
            .ifname
            .as_ref()
            .map(|i| i.as_str())
            .unwrap_or_default();
        Marker::new(&self.conf.name, cid, ifname)
            .map_err(|e| CniError::invalid_config(format!("cannot name this attachment: {e}"), ""))
    }

    fn netns(&self) -> &Path {
        self.env
            .netns
            .as_deref()
            .expect("CniEnv guarantees CNI_NETNS for ADD and CHECK")
    }

    fn ifname(&self) -> &str {
        self.env
            .ifname
            .as_ref()
            .map(|i| i.as_str())
            .expect("CniEnv guarantees CNI_IFNAME")
    }
}

/// The attachment as the dispatcher names its pins: `pods/<container id>/<ifname>`.
fn pod_id(marker: &Marker) -> Result<PodId, CniError> {
    PodId::new(marker.container_id(), marker.ifname()).map_err(|e| {
        CniError::invalid_env(
            format!("cannot name this attachment's XDP pins: {e}"),
            "CNI_CONTAINERID / CNI_IFNAME",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

fn kernel_error(e: DpError) -> CniError {
    if e.is_netkit_missing() {
        return CniError::plugin_specific(
            errcodes::NETKIT_UNSUPPORTED,
            "this kernel has no netkit devices (needs Linux >= 6.7 with CONFIG_NETKIT)",
            e.to_string(),
        );
    }
    CniError::plugin_specific(errcodes::KERNEL_FAILED, e.to_string(), "")
}

/// As [`kernel_error`], but a netns that is not one (a regular file, a symlink to one, a
/// missing path) is the caller's bad CNI_NETNS: code 4.
fn dp_error(e: DpError, req: &Request) -> CniError {
    match &e {
        DpError::Netns {
            path,
            source:
                crate::kernel::netns::NetnsError::Open { .. }
                | crate::kernel::netns::NetnsError::NotANamespace { .. }
                | crate::kernel::netns::NetnsError::WrongType { .. },
        } => CniError::invalid_env(
            format!("CNI_NETNS {} is not a network namespace", path.display()),
            e.to_string(),
        ),
        DpError::Link {
            source: LinkError::PeerExists { peer, .. },
            ..
        } => CniError::plugin_specific(
            errcodes::ALREADY_EXISTS,
            format!(
                "interface {peer} already exists in the pod netns {}",
                req.netns().display()
            ),
            e.to_string(),
        ),
        _ => kernel_error(e),
    }
}

/// An error injected at a failpoint (`failpoints` builds only, see [`crate::failpoint`]).
fn injected(msg: String) -> CniError {
    CniError::plugin_specific(errcodes::KERNEL_FAILED, msg, "injected by NKC_FAILPOINT")
}

fn xdp_error(e: DpError) -> CniError {
    // Another operation held the NIC directory's lock past its deadline: the spec's "try again
    // later" (11), naming the directory, rather than a failure of this attachment.
    if let DpError::Xdp { source, .. } = &e {
        if source.is_lock_timeout() {
            return CniError::try_again_later(
                e.to_string(),
                "another plugin operation holds the NIC's XDP directory",
            );
        }
    }
    CniError::plugin_specific(errcodes::XDP_FAILED, e.to_string(), "")
}

/// A lock held past its deadline is 11, a bypass set that disagrees with the uplink's is 7 (the
/// config is at fault), everything else 111.
fn host_routing_error(e: HostRoutingError) -> CniError {
    let code = if e.is_lock_timeout() {
        errcodes::TRY_AGAIN_LATER
    } else if matches!(e, HostRoutingError::BypassConflict { .. }) {
        errcodes::INVALID_CONFIG
    } else {
        errcodes::HOST_ROUTING_FAILED
    };
    let msg = match &e {
        HostRoutingError::BypassConflict { uplink, want, .. } => format!(
            "invalid value [{want}] for field hostRouting.bypass: uplink {uplink} is shared with another bypass set"
        ),
        HostRoutingError::NoUplink { name } => {
            format!("invalid value {name:?} for field hostRouting.uplink: no such device")
        }
        _ => "BPF host routing failed".to_string(),
    };
    CniError::new(code, msg, e.to_string())
}

fn devinfo_error(e: devinfo::DevInfoError) -> CniError {
    CniError::plugin_specific(errcodes::DEVICE_INFO_FAILED, e.to_string(), "")
}

// ---------------------------------------------------------------------------------------------
// Entry point

/// What the process prints and how it exits.
pub struct Response {
    pub stdout: Option<String>,
    pub exit_code: i32,
}

/// Runs one CNI invocation: `vars` is the process environment, `stdin` the network config.
/// Errors become the spec's error object on stdout with a non-zero exit. Parsing is
/// [`crate::cni::request::parse_request`], the same layer the hostile-input corpus exercises.
pub fn run(vars: &[(OsString, OsString)], stdin: &[u8]) -> Response {
    let lookup = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // The error object echoes the caller's version when we can tell it.
    let err_version = cni::negotiate(stdin)
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|_| CniVersion::LATEST.as_str().to_string());
    let fail = |e: CniError, v: &str| Response {
        stdout: Some(e.to_json(v).to_string()),
        exit_code: 1,
    };

    let (env, conf) = match crate::cni::request::parse_request::<NetConf>(lookup, stdin) {
        Ok(crate::cni::request::Invocation::Version { response }) => {
            return Response {
                stdout: Some(response.to_string()),
                exit_code: 0,
            }
        }
        Ok(crate::cni::request::Invocation::Network { env, conf }) => (env, *conf),
        Err(e) => return fail(e, &err_version),
    };
    let version = conf.cni_version;
    let log = Logger::file_or_stderr(conf.log_file.as_deref(), conf.log_level)
        .with_tag(env.command.as_str());
    let req = Request { env, conf };
    // Delegates get our environment; a variable that is not UTF-8 cannot be a CNI_* one (those
    // were validated above) and is left out rather than mangled.
    let utf8_vars: Vec<(String, String)> = vars
        .iter()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())))
        .collect();
    let started = Instant::now();
    let out = dispatch(&req, &utf8_vars, &log);
    log.info(format_args!(
        "{} done in {:?}: {}",
        req.env.command,
        started.elapsed(),
        if out.is_ok() { "ok" } else { "error" }
    ));
    match out {
        Ok(v) => Response {
            stdout: v.map(|v| v.to_string()),
            exit_code: 0,
        },
        Err(e) => {
            log.error(format_args!(
                "{}: {} ({})",
                req.env.command, e.msg, e.details
            ));
            fail(e, version.as_str())
        }
    }
}

fn dispatch(
    req: &Request,
    vars: &[(String, String)],
    log: &Logger,
) -> Result<Option<Value>, CniError> {
    // The lease keys in CNI_ARGS are addressed to us: Go IPAM plugins such as host-local refuse
    // unknown keys unless the runtime also sent IgnoreUnknown=1, so they are not passed on.
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| {
            if k == cni::env::CNI_ARGS {
                (k.clone(), lease::strip_own_args(v))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let ipam = req
        .conf
        .ipam
        .as_ref()
        .map(|_| ExecIpam::new(&req.conf, &req.env.path, &vars));
    let ipam = ipam.as_ref().map(|i| i as &dyn IpamDelegate);
    let mut dp = kernel_dp::KernelDataplane::new().map_err(kernel_error)?;
    match req.env.command {
        Command::Add => {
            cmd_add(req, &mut dp, ipam, log).map(|r| Some(r.to_json(req.conf.cni_version)))
        }
        Command::Del => cmd_del(req, &mut dp, ipam, log).map(|_| None),
        Command::Check => cmd_check(req, &mut dp, ipam).map(|_| None),
        Command::Gc => cmd_gc(req, &mut dp, ipam, log).map(|_| None),
        Command::Status => cmd_status(req, &mut dp, ipam, log).map(|_| None),
        Command::Version => unreachable!("VERSION is answered before the environment is parsed"),
    }
}
