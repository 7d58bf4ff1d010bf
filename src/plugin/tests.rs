//! The verbs against a recording fake kernel and fake IPAM: ordering, rollback and scoping,
//! with no kernel. The real kernel paths are covered by the VM tests (tests/vm_cni.rs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use super::*;
use crate::cni::{IpConfig, Route};
use crate::logging::{LogLevel, Logger};
use crate::rtnl::Deletion;

#[derive(Default)]
struct FakeKernel {
    calls: Vec<String>,
    /// Host devices by marker string.
    devices: HashMap<String, Marker>,
    fail_on: Option<&'static str>,
    netkit: bool,
}

impl FakeKernel {
    fn new() -> Self {
        FakeKernel { netkit: true, ..Default::default() }
    }
    fn step(&mut self, name: &'static str) -> Result<(), DpError> {
        self.calls.push(name.to_string());
        if self.fail_on == Some(name) {
            return Err(DpError::Other(format!("injected failure in {name}")));
        }
        Ok(())
    }
}

impl Dataplane for FakeKernel {
    fn validate_netns(&mut self, _path: &Path) -> Result<(), DpError> {
        Ok(())
    }
    fn create_pair(&mut self, spec: &PairSpec) -> Result<Created, DpError> {
        self.step("create_pair")?;
        self.devices.insert(spec.marker.to_string(), spec.marker.clone());
        Ok(Created { host_ifindex: 10, host_ifname: spec.marker.host_ifname(), host_mac: None, pod_ifindex: 2, pod_mac: None })
    }
    fn configure_pod(&mut self, _netns: &Path, plan: &PodPlan) -> Result<(), DpError> {
        self.calls.push(format!("pod_routes={}", plan.routes.len()));
        self.step("configure_pod")
    }
    fn configure_host(&mut self, _plan: &HostPlan) -> Result<(), DpError> {
        self.step("configure_host")
    }
    fn delete(&mut self, marker: &Marker) -> Result<Deletion, DpError> {
        self.step("delete")?;
        Ok(if self.devices.remove(&marker.to_string()).is_some() { Deletion::Deleted } else { Deletion::AlreadyGone })
    }
    fn observe(&mut self, marker: &Marker, _netns: Option<&Path>, _ifname: &str) -> Result<Observed, DpError> {
        self.step("observe")?;
        let host = self.devices.get(&marker.to_string()).map(|m| ObservedLink { ifindex: 10, is_netkit: true, mode: None, marker: Some(m.clone()) });
        Ok(Observed { host, ..Default::default() })
    }
    fn list_ours(&mut self) -> Result<Vec<Marker>, DpError> {
        self.step("list_ours")?;
        Ok(self.devices.values().cloned().collect())
    }
    fn netkit_available(&mut self) -> Result<bool, DpError> {
        Ok(self.netkit)
    }
}

#[derive(Default)]
struct FakeIpam {
    calls: RefCell<Vec<String>>,
}

impl IpamDelegate for FakeIpam {
    fn add(&self) -> Result<CniResult, CniError> {
        self.calls.borrow_mut().push("add".into());
        Ok(CniResult {
            ips: vec![IpConfig {
                address: IpCidr::new("10.1.0.5".parse().unwrap(), 24).unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: None,
            }],
            ..Default::default()
        })
    }
    fn del(&self, cid: &str, ifname: &str) -> Result<(), CniError> {
        self.calls.borrow_mut().push(format!("del {cid} {ifname}"));
        Ok(())
    }
    fn check(&self) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self) -> Result<crate::ipam::Delegation, CniError> {
        self.calls.borrow_mut().push("gc".into());
        Ok(crate::ipam::Delegation::Forwarded)
    }
    fn status(&self) -> Result<crate::ipam::Delegation, CniError> {
        Ok(crate::ipam::Delegation::Forwarded)
    }
}

fn request(command: &str, cid: &str, extra: serde_json::Value) -> Request {
    let mut vars = HashMap::new();
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

#[test]
fn add_reports_both_interfaces_and_points_ips_at_the_pod_side() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let req = request("ADD", "c1", json!({}));
    let r = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(k.calls, ["observe", "create_pair", "pod_routes=3", "configure_pod", "configure_host"]);
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(r.interfaces[0].sandbox, None, "host side has no sandbox");
    assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/pod"));
    assert_eq!(r.ips[0].interface, Some(1));
    // subnet via gateway and the default route, both reported; the gateway's link route is not.
    let dsts: Vec<String> = r.routes.iter().map(|r| format!("{}/{}", r.dst.addr(), r.dst.prefix_len())).collect();
    assert_eq!(dsts, ["10.1.0.0/24", "0.0.0.0/0"]);
}

#[test]
fn failure_after_device_creation_deletes_it_and_releases_ipam() {
    for failing in ["configure_pod", "configure_host"] {
        let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
        k.fail_on = Some(failing);
        let req = request("ADD", "c1", json!({}));
        let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
        assert!(err.msg.contains(failing), "{failing}: {err:?}");
        assert_eq!(k.calls.last().map(String::as_str), Some("delete"), "{failing}: {:?}", k.calls);
        assert!(k.devices.is_empty(), "{failing}: device left behind");
        assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"], "{failing}");
    }
}

#[test]
fn failed_create_releases_ipam_but_deletes_nothing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    k.fail_on = Some("create_pair");
    let req = request("ADD", "c1", json!({}));
    cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert!(!k.calls.contains(&"delete".to_string()), "nothing was created, nothing to delete: {:?}", k.calls);
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
}

#[test]
fn second_add_of_a_live_attachment_fails_before_touching_ipam() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let req = request("ADD", "c1", json!({}));
    cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::ALREADY_EXISTS);
    assert_eq!(*ipam.calls.borrow(), ["add"], "the live attachment's address must not be released");
    assert_eq!(k.devices.len(), 1);
}

#[test]
fn del_is_idempotent_and_deletes_before_releasing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    cmd_add(&request("ADD", "c1", json!({})), &mut k, Some(&ipam), &quiet()).unwrap();
    k.calls.clear();
    let del = request("DEL", "c1", json!({}));
    cmd_del(&del, &mut k, Some(&ipam), &quiet()).unwrap();
    cmd_del(&del, &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(k.calls, ["delete", "delete"]);
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0", "del c1 eth0"]);
}

#[test]
fn gc_removes_only_this_networks_unlisted_attachments() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    for cid in ["live", "orphan"] {
        cmd_add(&request("ADD", cid, json!({})), &mut k, Some(&ipam), &quiet()).unwrap();
    }
    let other = Marker::new("othernet", "foreign", "eth0").unwrap();
    k.devices.insert(other.to_string(), other);
    ipam.calls.borrow_mut().clear();
    let gc = request("GC", "x", json!({"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}));
    cmd_gc(&gc, &mut k, Some(&ipam), &quiet()).unwrap();
    let mut left: Vec<String> = k.devices.keys().cloned().collect();
    left.sort();
    assert_eq!(left, ["netkit-cni/othernet/foreign/eth0", "netkit-cni/podnet/live/eth0"]);
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
}

#[test]
fn gc_without_a_list_deletes_nothing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    cmd_add(&request("ADD", "c1", json!({})), &mut k, Some(&ipam), &quiet()).unwrap();
    let err = cmd_gc(&request("GC", "x", json!({})), &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, crate::cni::codes::INVALID_CONFIG);
    assert!(err.details.contains("valid-attachments"));
    assert_eq!(k.devices.len(), 1);
}

#[test]
fn status_is_50_without_netkit() {
    let mut k = FakeKernel::new();
    k.netkit = false;
    let err = cmd_status(&mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("netkit"));
}

#[test]
fn pod_plan_uses_ipam_routes_and_adds_default_only_when_missing() {
    let ipam = CniResult {
        ips: vec![IpConfig { address: IpCidr::new("10.2.0.9".parse().unwrap(), 16).unwrap(), gateway: None, interface: None }],
        routes: vec![Route::new(IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(), None)],
        ..Default::default()
    };
    let (plan, reported) = pod_plan("eth0", &ipam).unwrap();
    let gw: IpAddr = "10.2.0.1".parse().unwrap();
    assert_eq!(
        plan.routes,
        [
            PlannedRoute { dst: IpCidr::new(gw, 32).unwrap(), gw: None },
            PlannedRoute { dst: IpCidr::new("10.2.0.0".parse().unwrap(), 16).unwrap(), gw: Some(gw) },
            PlannedRoute { dst: IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(), gw: Some(gw) },
        ]
    );
    assert_eq!(reported.len(), 2);
}

#[test]
fn gateway_of_a_slash_32_without_gateway_is_an_error_naming_the_address() {
    let ip = IpConfig { address: IpCidr::new("10.3.0.0".parse().unwrap(), 31).unwrap(), gateway: None, interface: None };
    assert_eq!(gateway_of(&ip).unwrap(), "10.3.0.1".parse::<IpAddr>().unwrap());
    let ip = IpConfig { address: IpCidr::new("10.3.0.1".parse().unwrap(), 31).unwrap(), gateway: None, interface: None };
    assert!(gateway_of(&ip).unwrap_err().msg.contains("10.3.0.1/31"));
}
