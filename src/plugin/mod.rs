//! The CNI verbs. `cmd_add`, `cmd_del`, `cmd_check`, `cmd_gc` and `cmd_status` come first; the
//! pod-side and host-side planning they share follows; the process entry point ([`run`]) last.
//!
//! No state files: the host device's name is derived from (container id, ifname) and its alias
//! carries a [`Marker`] (network, container id, ifname), so DEL and GC find everything they need
//! in the kernel.

pub mod dataplane;
pub mod ipam_delegate;
pub mod netlink_dp;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::cni::{self, CniEnv, CniError, CniResult, CniVersion, Command, Interface, IpCidr, Route};
use crate::config::{NetConf, Pairing};
use crate::link::{LinkError, Marker};
use crate::logging::Logger;
use dataplane::*;
pub use ipam_delegate::{ExecIpam, IpamDelegate};

/// Plugin-specific error codes (the spec reserves ≥ 100 for plugins).
pub mod errcodes {
    pub use crate::cni::codes::DELEGATE_FAILED;
    /// The kernel has no netkit (needs Linux ≥ 6.7 with CONFIG_NETKIT).
    pub const NETKIT_UNSUPPORTED: u32 = 101;
    /// A kernel operation failed; the message names the step and the errno.
    pub const KERNEL_FAILED: u32 = 102;
    /// The attachment (container id + ifname) already exists.
    pub const ALREADY_EXISTS: u32 = 103;
    /// CHECK found the attachment different from `prevResult`.
    pub const CHECK_FAILED: u32 = 104;
}

/// One parsed invocation.
pub struct Request {
    pub env: CniEnv,
    pub conf: NetConf,
}

impl Request {
    fn marker(&self) -> Result<Marker, CniError> {
        let cid = self.env.container_id.as_ref().map(|c| c.as_str()).unwrap_or_default();
        let ifname = self.env.ifname.as_ref().map(|i| i.as_str()).unwrap_or_default();
        Marker::new(&self.conf.name, cid, ifname)
            .map_err(|e| CniError::invalid_config(format!("cannot name this attachment: {e}"), ""))
    }

    fn netns(&self) -> &Path {
        self.env.netns.as_deref().expect("CniEnv guarantees CNI_NETNS for ADD and CHECK")
    }

    fn ifname(&self) -> &str {
        self.env.ifname.as_ref().map(|i| i.as_str()).expect("CniEnv guarantees CNI_IFNAME")
    }
}

// ---------------------------------------------------------------------------------------------
// ADD

/// ADD: IPAM first, then the pair (peer created directly in the pod netns), then the pod side,
/// then the host side. Any failure after IPAM rolls back everything this invocation did, IPAM
/// included; nothing that existed before is touched.
pub fn cmd_add(req: &Request, dp: &mut dyn Dataplane, ipam: Option<&dyn IpamDelegate>, log: &Logger) -> Result<CniResult, CniError> {
    if req.conf.pairing == Pairing::Single {
        return Err(CniError::invalid_config(
            "pairing \"single\" creates a lease-only device and needs a `lease` block, which this version does not accept yet",
            "field pairing, value \"single\"",
        ));
    }
    let marker = req.marker()?;
    let ipam = ipam.ok_or_else(|| CniError::invalid_config("pairing \"pair\" needs an `ipam` block", "field ipam"))?;
    dp.validate_netns(req.netns()).map_err(|e| dp_error(e, req))?;

    // Refuse a second ADD of the same attachment before IPAM: a rollback after IPAM would release
    // every address of this container id + ifname, including those of the live attachment.
    let existing = dp.observe(&marker, None, req.ifname()).map_err(kernel_error)?;
    if existing.host.is_some() {
        return Err(CniError::plugin_specific(
            errcodes::ALREADY_EXISTS,
            format!("attachment {marker} already exists (host device {})", marker.host_ifname()),
            "CNI_CONTAINERID and CNI_IFNAME name a live attachment; DEL it first",
        ));
    }

    let ipam_result = ipam.add()?;
    log.debug(format_args!("ipam gave {} address(es)", ipam_result.ips.len()));
    let mut done = Rollback::default();
    match add_after_ipam(req, &marker, dp, &ipam_result, &mut done) {
        Ok(result) => Ok(result),
        Err(err) => {
            log.warn(format_args!("ADD {marker} failed, rolling back: {}", err.msg));
            if done.device {
                if let Err(e) = dp.delete(&marker) {
                    log.error(format_args!("rollback: cannot delete {}: {e}", marker.host_ifname()));
                }
            }
            if let Err(e) = ipam.del(marker.container_id(), marker.ifname()) {
                log.error(format_args!("rollback: IPAM DEL failed: {}", e.msg));
            }
            Err(err)
        }
    }
}

#[derive(Default)]
struct Rollback {
    device: bool,
}

fn add_after_ipam(req: &Request, marker: &Marker, dp: &mut dyn Dataplane, ipam: &CniResult, done: &mut Rollback) -> Result<CniResult, CniError> {
    let conf = &req.conf;
    let spec = PairSpec {
        marker: marker.clone(),
        netns: req.netns().to_path_buf(),
        mode: conf.mode,
        policy: conf.policy,
        peer_policy: conf.peer_policy,
        scrub: conf.scrub,
        peer_scrub: conf.peer_scrub,
        headroom: conf.headroom,
        tailroom: conf.tailroom,
        mtu: conf.mtu,
    };
    let created = dp.create_pair(&spec).map_err(|e| dp_error(e, req))?;
    done.device = true;

    let (pod_plan, reported_routes) = pod_plan(req.ifname(), ipam)?;
    dp.configure_pod(req.netns(), &pod_plan).map_err(|e| dp_error(e, req))?;
    let host_plan = host_plan(created.host_ifindex, ipam, &pod_plan);
    dp.configure_host(&host_plan).map_err(|e| dp_error(e, req))?;

    let ours = CniResult {
        interfaces: vec![
            Interface { name: created.host_ifname.clone(), mac: created.host_mac.clone(), ..Default::default() },
            Interface {
                name: req.ifname().to_string(),
                mac: created.pod_mac.clone(),
                mtu: conf.mtu,
                sandbox: Some(req.netns().display().to_string()),
                ..Default::default()
            },
        ],
        ips: ipam.ips.iter().map(|ip| cni::IpConfig { interface: Some(1), ..ip.clone() }).collect(),
        routes: reported_routes,
        dns: ipam.dns.clone(),
    };
    Ok(match &conf.prev_result {
        // Chained after another plugin: extend its result, pointing our IPs at our interface's
        // position in the merged list.
        Some(prev) => {
            let mut merged = prev.clone();
            let positions = merged.merge(CniResult { ips: vec![], ..ours.clone() });
            let pod_pos = positions[1];
            merged.ips.extend(ours.ips.iter().map(|ip| cni::IpConfig { interface: Some(pod_pos), ..ip.clone() }));
            merged
        }
        None => ours,
    })
}

// ---------------------------------------------------------------------------------------------
// DEL

/// DEL is idempotent and best effort, as the spec asks: a missing netns, a missing device or a
/// repeated DEL all succeed. The device goes first so the pod's traffic stops before its
/// address can be handed to another pod; IPAM DEL is itself idempotent, so a retry after a
/// failure between the two steps is harmless. The pod netns is never needed: the host device's
/// name is derived, and deleting it removes the peer and the host routes with it.
pub fn cmd_del(req: &Request, dp: &mut dyn Dataplane, ipam: Option<&dyn IpamDelegate>, log: &Logger) -> Result<(), CniError> {
    let marker = req.marker()?;
    match dp.delete(&marker) {
        Ok(d) => log.debug(format_args!("DEL {marker}: device {d:?}")),
        // A device with our derived name but another owner's marker is not ours to delete.
        Err(DpError::Link { source: LinkError::MarkerMismatch { name, alias, .. }, .. }) => {
            log.warn(format_args!("DEL {marker}: {name} belongs to {alias:?}, left alone"))
        }
        Err(e) => return Err(kernel_error(e)),
    }
    if let Some(ipam) = ipam {
        ipam.del(marker.container_id(), marker.ifname())?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CHECK

/// CHECK: the attachment must still look like `prevResult` says — both devices exist and are
/// netkit in the configured mode, every address and route is in place — and IPAM agrees.
pub fn cmd_check(req: &Request, dp: &mut dyn Dataplane, ipam: Option<&dyn IpamDelegate>) -> Result<(), CniError> {
    let marker = req.marker()?;
    let prev = req
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult", "field prevResult is missing"))?;
    let ifname = req.ifname();
    let obs = dp.observe(&marker, Some(req.netns()), ifname).map_err(|e| dp_error(e, req))?;
    let fail = |what: String| CniError::plugin_specific(errcodes::CHECK_FAILED, what, format!("attachment {marker}"));

    let host_name = marker.host_ifname();
    let host = obs.host.as_ref().ok_or_else(|| fail(format!("host device {host_name} is missing")))?;
    if !host.is_netkit {
        return Err(fail(format!("host device {host_name} is not a netkit device")));
    }
    if host.marker.as_ref() != Some(&marker) {
        return Err(fail(format!("host device {host_name} is not marked as {marker}")));
    }
    let pod = obs.pod.as_ref().ok_or_else(|| fail(format!("pod interface {ifname} is missing")))?;
    if !pod.is_netkit {
        return Err(fail(format!("pod interface {ifname} is not a netkit device")));
    }
    if pod.mode != Some(req.conf.mode) {
        return Err(fail(format!("pod interface {ifname} is in mode {:?}, config says {:?}", pod.mode, req.conf.mode)));
    }

    let sandbox = req.netns().display().to_string();
    let is_ours = |i: Option<usize>| {
        i.and_then(|i| prev.interfaces.get(i)).is_some_and(|itf| itf.name == ifname && itf.sandbox.as_deref() == Some(sandbox.as_str()))
    };
    for ip in prev.ips.iter().filter(|ip| is_ours(ip.interface)) {
        if !obs.pod_addrs.contains(&ip.address) {
            return Err(fail(format!("address {} is missing on {ifname}", cidr_str(&ip.address))));
        }
        let host_route = IpCidr::new(ip.address.addr(), if ip.address.is_ipv4() { 32 } else { 128 }).unwrap();
        if !obs.host_routes.contains(&host_route) {
            return Err(fail(format!("host route to {} via {host_name} is missing", ip.address.addr())));
        }
    }
    for r in &prev.routes {
        let dst = network(&r.dst);
        let found = obs.pod_routes.iter().any(|o| o.dst == dst && (r.gw.is_none() || o.gw == r.gw));
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(fail(format!("route {}{via} is missing in the pod", cidr_str(&r.dst))));
        }
    }
    if let Some(ipam) = ipam {
        ipam.check()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// GC

/// GC: every attachment of this network that the runtime no longer lists is deleted and its
/// addresses released; then GC is forwarded to IPAM. Failures on one orphan do not stop the
/// others; they are all reported at the end.
pub fn cmd_gc(req: &Request, dp: &mut dyn Dataplane, ipam: Option<&dyn IpamDelegate>, log: &Logger) -> Result<(), CniError> {
    let valid = req.conf.valid_attachments.as_ref().ok_or_else(|| {
        // Treating a missing list as empty would delete every pod on the node.
        CniError::invalid_config("GC needs cni.dev/valid-attachments", "field cni.dev/valid-attachments is missing")
    })?;
    let valid: BTreeSet<(&str, &str)> = valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
    let mut failures = Vec::new();
    for m in dp.list_ours().map_err(kernel_error)? {
        if m.network() != req.conf.name || valid.contains(&(m.container_id(), m.ifname())) {
            continue;
        }
        log.info(format_args!("GC: removing orphan {m}"));
        if let Err(e) = dp.delete(&m) {
            failures.push(format!("{m}: {e}"));
            continue;
        }
        if let Some(ipam) = ipam {
            if let Err(e) = ipam.del(m.container_id(), m.ifname()) {
                failures.push(format!("{m}: IPAM DEL: {}", e.msg));
            }
        }
    }
    if let Some(ipam) = ipam {
        let d = ipam.gc()?;
        log.info(format_args!("GC forwarded to IPAM: {d}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::plugin_specific(errcodes::KERNEL_FAILED, "GC could not remove every orphan", failures.join("; ")))
    }
}

// ---------------------------------------------------------------------------------------------
// STATUS

/// STATUS: 50 when the kernel has no netkit (nothing could ever be added), else IPAM's answer.
pub fn cmd_status(dp: &mut dyn Dataplane, ipam: Option<&dyn IpamDelegate>, log: &Logger) -> Result<(), CniError> {
    if !dp.netkit_available().map_err(kernel_error)? {
        return Err(CniError::plugin_not_available(
            "this kernel has no netkit devices (needs Linux >= 6.7 with CONFIG_NETKIT)",
            "probe: RTM_NEWLINK kind netkit answered \"Unknown device type\"",
        ));
    }
    if let Some(ipam) = ipam {
        let d = ipam.status()?;
        log.debug(format_args!("STATUS forwarded to IPAM: {d}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Planning: what goes on the pod side and the host side, from the IPAM result.

/// Pod side: each address without its prefix route, a link route to its gateway, the subnet and
/// IPAM's routes via that gateway, and a default route via it unless IPAM gave one. Returns the
/// plan and the routes to report (all but the gateway's link route).
fn pod_plan(ifname: &str, ipam: &CniResult) -> Result<(PodPlan, Vec<Route>), CniError> {
    let mut plan = PodPlan { ifname: ifname.to_string(), ..Default::default() };
    let mut reported = Vec::new();
    let push = |plan: &mut PodPlan, reported: &mut Vec<Route>, dst: IpCidr, gw: Option<IpAddr>, report: bool| {
        let r = PlannedRoute { dst: network(&dst), gw };
        if !plan.routes.contains(&r) {
            plan.routes.push(r);
            if report {
                reported.push(Route::new(network(&dst), gw));
            }
        }
    };
    for ip in &ipam.ips {
        let gw = gateway_of(ip)?;
        plan.addrs.push(ip.address);
        let full = if gw.is_ipv4() { 32 } else { 128 };
        push(&mut plan, &mut reported, IpCidr::new(gw, full).unwrap(), None, false);
        if ip.address.prefix_len() < full {
            push(&mut plan, &mut reported, ip.address, Some(gw), true);
        }
    }
    for r in &ipam.routes {
        let gw = match r.gw {
            Some(g) => g,
            None => ipam
                .ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == r.dst.is_ipv4())
                .map(gateway_of)
                .transpose()?
                .ok_or_else(|| CniError::invalid_config(format!("IPAM route {} has no address of its family", cidr_str(&r.dst)), ""))?,
        };
        push(&mut plan, &mut reported, r.dst, Some(gw), true);
    }
    for ip in &ipam.ips {
        let v4 = ip.address.is_ipv4();
        let has_default = plan.routes.iter().any(|r| r.dst.prefix_len() == 0 && r.dst.is_ipv4() == v4);
        if !has_default {
            let any = if v4 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) };
            push(&mut plan, &mut reported, IpCidr::new(any, 0).unwrap(), Some(gateway_of(ip)?), true);
        }
    }
    Ok((plan, reported))
}

/// Host side: the gateways as host addresses (shared by every pod of the subnet, as ptp does)
/// and a host route to each pod address.
fn host_plan(host_ifindex: u32, ipam: &CniResult, pod: &PodPlan) -> HostPlan {
    let mut gateways: Vec<IpAddr> = Vec::new();
    for ip in &ipam.ips {
        if let Ok(gw) = gateway_of(ip) {
            if !gateways.contains(&gw) {
                gateways.push(gw);
            }
        }
    }
    HostPlan { host_ifindex, gateways, pod_addrs: pod.addrs.iter().map(|a| a.addr()).collect() }
}

/// IPAM's gateway, or the subnet's first address when it gave none (host-local always does).
fn gateway_of(ip: &cni::IpConfig) -> Result<IpAddr, CniError> {
    if let Some(gw) = ip.gateway {
        return Ok(gw);
    }
    let net = network(&ip.address);
    let first = match net.addr() {
        IpAddr::V4(a) => IpAddr::from(u32::from(a).wrapping_add(1).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(u128::from(a).wrapping_add(1).to_be_bytes()),
    };
    if first == ip.address.addr() {
        return Err(CniError::invalid_config(
            format!("IPAM gave {} without a gateway, and its subnet's first address is the pod's own", cidr_str(&ip.address)),
            "set a gateway in the ipam block",
        ));
    }
    Ok(first)
}

fn network(c: &IpCidr) -> IpCidr {
    let len = c.prefix_len();
    let addr = match c.addr() {
        IpAddr::V4(a) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    };
    IpCidr::new(addr, len).unwrap()
}

fn cidr_str(c: &IpCidr) -> String {
    format!("{}/{}", c.addr(), c.prefix_len())
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
        DpError::Netns { path, source: crate::netns::NetnsError::Open { .. } | crate::netns::NetnsError::NotANamespace { .. } | crate::netns::NetnsError::WrongType { .. } } => {
            CniError::invalid_env(format!("CNI_NETNS {} is not a network namespace", path.display()), e.to_string())
        }
        DpError::Link { source: LinkError::PeerExists { peer, .. }, .. } => CniError::plugin_specific(
            errcodes::ALREADY_EXISTS,
            format!("interface {peer} already exists in the pod netns {}", req.netns().display()),
            e.to_string(),
        ),
        _ => kernel_error(e),
    }
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
/// [`crate::request::parse_request`], the same layer the hostile-input corpus exercises.
pub fn run(vars: &[(OsString, OsString)], stdin: &[u8]) -> Response {
    let lookup = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // The error object echoes the caller's version when we can tell it.
    let err_version = cni::negotiate(stdin).map(|v| v.as_str().to_string()).unwrap_or_else(|_| CniVersion::LATEST.as_str().to_string());
    let fail = |e: CniError, v: &str| Response { stdout: Some(e.to_json(v).to_string()), exit_code: 1 };

    let (env, conf) = match crate::request::parse_request(lookup, stdin) {
        Ok(crate::request::Request::Version { response }) => return Response { stdout: Some(response.to_string()), exit_code: 0 },
        Ok(crate::request::Request::Network { env, conf }) => (env, *conf),
        Err(e) => return fail(e, &err_version),
    };
    let version = conf.cni_version;
    let log = Logger::file_or_stderr(conf.log_file.as_deref(), conf.log_level).with_tag(env.command.as_str());
    let req = Request { env, conf };
    // Delegates get our environment; a variable that is not UTF-8 cannot be a CNI_* one (those
    // were validated above) and is left out rather than mangled.
    let utf8_vars: Vec<(String, String)> =
        vars.iter().filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string()))).collect();
    let started = Instant::now();
    let out = dispatch(&req, &utf8_vars, &log);
    log.info(format_args!("{} done in {:?}: {}", req.env.command, started.elapsed(), if out.is_ok() { "ok" } else { "error" }));
    match out {
        Ok(v) => Response { stdout: v.map(|v| v.to_string()), exit_code: 0 },
        Err(e) => {
            log.error(format_args!("{}: {} ({})", req.env.command, e.msg, e.details));
            fail(e, version.as_str())
        }
    }
}

fn dispatch(req: &Request, vars: &[(String, String)], log: &Logger) -> Result<Option<Value>, CniError> {
    let ipam = match &req.conf.ipam {
        Some(_) => Some(ExecIpam::new(&req.conf, &req.env.path, vars)),
        None => None,
    };
    let ipam = ipam.as_ref().map(|i| i as &dyn IpamDelegate);
    let mut dp = netlink_dp::NetlinkDataplane::new().map_err(kernel_error)?;
    match req.env.command {
        Command::Add => cmd_add(req, &mut dp, ipam, log).map(|r| Some(r.to_json(req.conf.cni_version))),
        Command::Del => cmd_del(req, &mut dp, ipam, log).map(|_| None),
        Command::Check => cmd_check(req, &mut dp, ipam).map(|_| None),
        Command::Gc => cmd_gc(req, &mut dp, ipam, log).map(|_| None),
        Command::Status => cmd_status(&mut dp, ipam, log).map(|_| None),
        Command::Version => unreachable!("VERSION is answered before the environment is parsed"),
    }
}
