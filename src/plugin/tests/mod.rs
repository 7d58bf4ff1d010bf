//! The verbs against a recording fake kernel and fake IPAM: ordering, rollback and scoping,
//! with no kernel. The real kernel paths are covered by the VM tests (tests/vm_cni.rs).
//!
//! The fakes are in `fake`, the requests and configs the tests share here, and the tests in a
//! module per verb (`add_steer`: ADDs with XDP steering, memory providers or NIC steering).

mod add;
mod add_steer;
mod check;
mod del;
mod fake;
mod gc;
mod status;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde_json::json;

use super::dataplane::*;
use super::plan::{gateway_of, pod_plan};
use super::*;
use crate::cni::{CniResult, IpCidr, IpConfig, Route};
use crate::hostrouting::{HostRoutingConfig, HostRoutingError};
use crate::kernel::netdev::{Lease, NetdevError, Queue, QueueId, QueueType};
use crate::kernel::netlink::{ExtAck, KernelError};
use crate::kernel::rtnl::Deletion;
use crate::logging::{LogLevel, Logger};
use crate::xdp::{PodHandoff, PodId};
use fake::*;

fn request(command: &str, cid: &str, extra: serde_json::Value) -> Request {
    request_with(command, cid, extra, "")
}

/// As [`request`], with CNI_ARGS.
fn request_with(command: &str, cid: &str, extra: serde_json::Value, cni_args: &str) -> Request {
    let mut vars = HashMap::new();
    vars.insert("CNI_ARGS".to_string(), cni_args.to_string());
    vars.insert("CNI_COMMAND".to_string(), command.to_string());
    vars.insert("CNI_CONTAINERID".to_string(), cid.to_string());
    vars.insert("CNI_NETNS".to_string(), "/run/netns/pod".to_string());
    vars.insert("CNI_IFNAME".to_string(), "eth0".to_string());
    vars.insert("CNI_PATH".to_string(), "/usr/lib/cni".to_string());
    let env = CniEnv::from_map(&vars).unwrap();
    let mut conf = json!({"cniVersion": "1.1.0", "name": "podnet", "type": "netkit-cni", "ipam": {"type": "host-local"}});
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    let conf = NetConf::parse(conf.to_string().as_bytes()).unwrap();
    Request { env, conf }
}

fn quiet() -> Logger {
    Logger::to_writer(Box::new(std::io::sink()), LogLevel::Error)
}

/// A private device-info directory, removed on drop.
struct DevDir(PathBuf);

impl DevDir {
    fn new() -> DevDir {
        let mut r = [0u8; 6];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut r)
            .unwrap();
        DevDir(std::env::temp_dir().join(format!(
            "nkc-lease-{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )))
    }
    fn files(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.0) else {
            return vec![];
        };
        let mut v: Vec<String> = rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
    fn info(&self, cid: &str) -> serde_json::Value {
        let body = std::fs::read(self.0.join(format!("podnet:{cid}:eth0-device.json"))).unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config with a lease block on "nic0" (`lease` merged into the defaults).
fn lease_conf(dir: &DevDir, pairing: &str, lease: serde_json::Value) -> serde_json::Value {
    let mut l = json!({"master": "nic0", "deviceInfoDir": dir.0});
    for (k, v) in lease.as_object().unwrap() {
        l[k] = v.clone();
    }
    let mut c = json!({"pairing": pairing, "lease": l});
    if pairing == "single" {
        c["ipam"] = serde_json::Value::Null;
    }
    c
}

fn leases_of(k: &FakeKernel) -> Vec<(u32, u32, u32)> {
    k.nic
        .as_ref()
        .unwrap()
        .leases
        .iter()
        .map(|(p, (_, ifindex, v))| (*p, *ifindex, *v))
        .collect()
}

/// What a pod with CAP_NET_ADMIN in its netns can do to its single device: rename it and
/// rewrite its alias. The fake keys devices by marker, so re-keying models both: the device is
/// no longer found under the attachment's name or alias.
fn forge(k: &mut FakeKernel, cid: &str, claims: &str) {
    let pod = k
        .pods
        .remove(&format!("netkit-cni/podnet/{cid}/eth0"))
        .unwrap();
    k.pods
        .insert(format!("netkit-cni/podnet/{claims}/eth0"), pod);
}

fn xdp_conf(dir: &DevDir, lease: serde_json::Value) -> serde_json::Value {
    let mut c = lease_conf(dir, "single", lease);
    c["xdp"] = json!({"bpffs": "/sys/fs/bpf", "ranges": [{"queues": "0", "action": "pass"}, {"queues": "6-7", "action": "drop"}]});
    c
}

/// A pod that deleted its own device-info record (anyone who may write `deviceInfoDir` can)
/// and took another network's marker with the victim's container id and ifname as its alias.
fn forge_foreign(k: &mut FakeKernel, dir: &DevDir, cid: &str, victim: &str) {
    std::fs::remove_file(dir.0.join(format!("podnet:{cid}:eth0-device.json"))).unwrap();
    let pod = k
        .pods
        .remove(&format!("netkit-cni/podnet/{cid}/eth0"))
        .unwrap();
    k.pods
        .insert(format!("netkit-cni/othernet/{victim}/eth0"), pod);
}

const POD_MAC: &str = "02:00:00:00:00:07";

/// A single-device config on nic0 with pool 2-7 and `steering`, the pod's MAC in runtimeConfig.
fn steer_conf(
    dir: &DevDir,
    lease: serde_json::Value,
    steering: serde_json::Value,
) -> serde_json::Value {
    let mut l = json!({"allowedQueues": "2-7", "steering": steering});
    for (k, v) in lease.as_object().unwrap() {
        l[k] = v.clone();
    }
    let mut c = lease_conf(dir, "single", l);
    c["runtimeConfig"] = json!({"mac": POD_MAC});
    c
}

/// The kernel's default table: equal over all 8 queues.
fn equal_over_all() -> Vec<u32> {
    (0..16).map(|i| i % 8).collect()
}

fn pos(k: &FakeKernel, call: &str) -> usize {
    k.calls
        .iter()
        .position(|c| c.starts_with(call))
        .unwrap_or_else(|| panic!("no {call:?} in {:?}", k.calls))
}

/// A successful ADD of `cid` with `conf`, through the fake IPAM.
fn added(k: &mut FakeKernel, ipam: &FakeIpam, cid: &str, conf: serde_json::Value) -> CniResult {
    cmd_add(&request("ADD", cid, conf), k, Some(ipam), &quiet()).unwrap()
}

/// `hostRouting` in BPF mode on uplink "up0", merged into `conf` (the fake needs no bpffs).
fn with_host_routing(mut conf: serde_json::Value) -> serde_json::Value {
    conf["hostRouting"] = json!({"mode": "bpf", "uplink": "up0"});
    conf
}

/// A pair ADD's result as the runtime hands it back to CHECK: `conf` with it as `prevResult`.
fn with_prev_result(mut conf: serde_json::Value, r: &CniResult) -> serde_json::Value {
    conf["prevResult"] = r.to_json(crate::cni::CniVersion::LATEST);
    conf
}
