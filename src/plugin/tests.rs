//! The verbs against a recording fake kernel and fake IPAM: ordering, rollback and scoping,
//! with no kernel. The real kernel paths are covered by the VM tests (tests/vm_cni.rs).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::cni::{IpConfig, Route};
use crate::kernel::netdev::{Lease, NetdevError, Queue, QueueId, QueueType};
use crate::kernel::netlink::{ExtAck, KernelError};
use crate::kernel::rtnl::Deletion;
use crate::logging::{LogLevel, Logger};

/// The physical NIC of the fake node.
struct FakeNic {
    name: String,
    ifindex: u32,
    rx: u32,
    up: bool,
    /// physical queue → (lessee's netns id as the node sees it, lessee ifindex, its queue id)
    leases: BTreeMap<u32, (Option<i32>, u32, u32)>,
    xsk: Vec<u32>,
}

/// A pod-side netkit device: a pair's peer or a single device.
#[derive(Clone)]
struct FakePod {
    netns: PathBuf,
    ifindex: u32,
    single: bool,
    /// RX queues allocated (1 + leases it can take).
    rx_cap: u32,
    leased: u32,
}

#[derive(Default)]
struct FakeKernel {
    calls: Vec<String>,
    /// Host devices by marker string.
    devices: HashMap<String, Marker>,
    /// Pod-side devices by marker string.
    pods: HashMap<String, FakePod>,
    next_ifindex: u32,
    fail_on: Option<&'static str>,
    netkit: bool,
    lease_ok: bool,
    nic: Option<FakeNic>,
    /// Queues a concurrent ADD takes just before ours asks for them: our queue-create on them
    /// answers EBUSY.
    race: Vec<u32>,
    /// Error (errno, extack) every queue-create answers, e.g. a virtual master.
    lease_refusal: Option<(Errno, &'static str)>,
    /// The master's dispatcher.
    xdp: FakeXdp,
    /// What `nic_xdp` reports on the master.
    nic_xdp: Vec<NicXdpProgram>,
    /// The master's RSS, rules and unicast filter.
    steer: FakeSteer,
}

/// The fake NIC's steering state. Reads are not recorded in `calls` (only what changes the
/// NIC is, so orderings stay readable).
struct FakeSteer {
    ntuple: bool,
    /// `None`: rss-get fails (a driver without get_rxfh).
    table: Option<Vec<u32>>,
    contexts_supported: bool,
    contexts: BTreeMap<u32, Vec<u32>>,
    next_context: u32,
    rules: BTreeMap<u32, crate::kernel::ethtool::FlowRule>,
    unicast: std::collections::BTreeSet<[u8; 6]>,
    /// `rss_set_default` writes.
    writes: u32,
}

impl Default for FakeSteer {
    /// ntuple on, contexts supported, a 16-entry default table all on queue 0 (as after
    /// `ethtool -X nic0 equal 1`): the default pool (1-7) is out of RSS.
    fn default() -> Self {
        FakeSteer {
            ntuple: true,
            table: Some(vec![0; 16]),
            contexts_supported: true,
            contexts: BTreeMap::new(),
            next_context: 1,
            rules: BTreeMap::new(),
            unicast: Default::default(),
            writes: 0,
        }
    }
}

fn eth_err(step: &'static str, errno: Errno) -> DpError {
    DpError::Ethtool {
        step,
        source: Box::new(crate::kernel::ethtool::EthtoolError::Kernel {
            op: step,
            ifindex: 50,
            kernel: KernelError::new(errno),
        }),
    }
}

impl NicSteering for FakeKernel {
    fn ntuple_enabled(&mut self, _nic: &Master) -> Result<bool, DpError> {
        Ok(self.steer.ntuple)
    }
    fn rss_get(&mut self, _nic: &Master, context: u32) -> Result<Rss, DpError> {
        let indir = if context == 0 {
            self.steer
                .table
                .clone()
                .ok_or_else(|| eth_err("rss-get", Errno::EOPNOTSUPP))?
        } else {
            self.steer
                .contexts
                .get(&context)
                .cloned()
                .ok_or_else(|| eth_err("rss-get", Errno::ENOENT))?
        };
        Ok(Rss {
            context,
            indir,
            ..Default::default()
        })
    }
    fn rss_contexts(&mut self, nic: &Master) -> Result<Vec<Rss>, DpError> {
        let mut out = vec![self.rss_get(nic, 0)?];
        for (c, t) in &self.steer.contexts {
            out.push(Rss {
                context: *c,
                indir: t.clone(),
                ..Default::default()
            });
        }
        Ok(out)
    }
    fn rss_set_default(&mut self, _nic: &Master, table: &[u32]) -> Result<(), DpError> {
        self.step("rss_set")?;
        self.steer.writes += 1;
        self.steer.table = Some(table.to_vec());
        Ok(())
    }
    fn rss_create(&mut self, _nic: &Master, table: &[u32]) -> Result<u32, DpError> {
        self.step("rss_create")?;
        if !self.steer.contexts_supported {
            return Err(eth_err("rss-create-act", Errno::EOPNOTSUPP));
        }
        let c = self.steer.next_context;
        self.steer.next_context += 1;
        self.steer.contexts.insert(c, table.to_vec());
        self.calls.push(format!("context {c}"));
        Ok(c)
    }
    fn rss_delete(&mut self, _nic: &Master, context: u32) -> Result<bool, DpError> {
        self.calls.push(format!("rss_delete {context}"));
        if self
            .steer
            .rules
            .values()
            .any(|r| r.action == crate::kernel::ethtool::RuleAction::Context(context))
        {
            return Err(eth_err("rss-delete-act", Errno::EBUSY));
        }
        Ok(self.steer.contexts.remove(&context).is_some())
    }
    fn rules(&mut self, _nic: &Master) -> Result<RuleTable, DpError> {
        Ok(RuleTable {
            size: 1024,
            locations: self.steer.rules.keys().copied().collect(),
        })
    }
    fn rule_get(
        &mut self,
        _nic: &Master,
        location: u32,
    ) -> Result<Option<crate::kernel::ethtool::FlowRule>, DpError> {
        Ok(self.steer.rules.get(&location).copied())
    }
    fn rule_insert(
        &mut self,
        _nic: &Master,
        rule: &crate::kernel::ethtool::FlowRule,
    ) -> Result<(), DpError> {
        self.calls.push(format!("rule_insert {rule}"));
        if self.fail_on == Some("rule_insert") {
            return Err(DpError::Other("injected failure in rule_insert".into()));
        }
        if !self.steer.ntuple {
            return Err(eth_err("SRXCLSRLINS", Errno::EOPNOTSUPP));
        }
        self.steer.rules.insert(rule.location, *rule);
        Ok(())
    }
    fn rule_delete(&mut self, _nic: &Master, location: u32) -> Result<bool, DpError> {
        self.calls.push(format!("rule_delete {location}"));
        Ok(self.steer.rules.remove(&location).is_some())
    }
    fn unicast(&mut self, _nic: &Master, mac: [u8; 6], add: bool) -> Result<bool, DpError> {
        let text = crate::kernel::ethtool::ntuple::mac_string(&mac);
        self.calls.push(format!(
            "unicast {} {text}",
            if add { "add" } else { "del" }
        ));
        if add && self.fail_on == Some("unicast") {
            return Err(DpError::Other("injected failure in unicast".into()));
        }
        Ok(if add {
            self.steer.unicast.insert(mac)
        } else {
            self.steer.unicast.remove(&mac)
        })
    }
}

/// The dispatcher on the fake NIC: attached or not, and queue → (pod "cid/ifname", vqueue).
#[derive(Default)]
struct FakeXdp {
    attached: bool,
    /// Attached this many times (an attach while attached would be a second dispatcher).
    attaches: u32,
    steered: BTreeMap<u32, (String, u32)>,
    /// Pods with an XSKMAP pin.
    pins: std::collections::BTreeSet<String>,
    /// The NIC died with the dispatcher attached: pins left for a sweep.
    defunct: bool,
    /// Entries the sweep reports it had to leave (junk under other NICs' directories).
    sweep_refuses: Vec<String>,
}

/// Every pod netns has this nsid in the node netns.
const POD_NSID: i32 = 7;

fn kernel_err(op: &'static str, errno: Errno, msg: &str) -> NetdevError {
    NetdevError::Kernel {
        op,
        kernel: KernelError {
            errno,
            extack: Box::new(ExtAck {
                msg: (!msg.is_empty()).then(|| msg.to_string()),
                ..Default::default()
            }),
        },
    }
}

fn netdev(step: &'static str, e: NetdevError) -> DpError {
    DpError::Netdev {
        step,
        source: Box::new(e),
    }
}

impl FakeKernel {
    fn new() -> Self {
        FakeKernel {
            netkit: true,
            lease_ok: true,
            next_ifindex: 2,
            ..Default::default()
        }
    }
    /// With an 8-queue NIC "nic0" (ifindex 50), up, nothing leased.
    fn with_nic() -> Self {
        let mut k = Self::new();
        k.nic = Some(FakeNic {
            name: "nic0".into(),
            ifindex: 50,
            rx: 8,
            up: true,
            leases: BTreeMap::new(),
            xsk: vec![],
        });
        k
    }
    fn nic(&mut self) -> &mut FakeNic {
        self.nic.as_mut().unwrap()
    }
    fn leased_queues(&self) -> Vec<u32> {
        self.nic
            .as_ref()
            .map(|n| n.leases.keys().copied().collect())
            .unwrap_or_default()
    }
    fn step(&mut self, name: &'static str) -> Result<(), DpError> {
        self.calls.push(name.to_string());
        if self.fail_on == Some(name) {
            return Err(DpError::Other(format!("injected failure in {name}")));
        }
        Ok(())
    }
    fn add_pod(&mut self, marker: &Marker, netns: &Path, single: bool, rx_cap: u32) -> u32 {
        let ifindex = self.next_ifindex;
        self.next_ifindex += 1;
        self.pods.insert(
            marker.to_string(),
            FakePod {
                netns: netns.to_path_buf(),
                ifindex,
                single,
                rx_cap,
                leased: 0,
            },
        );
        ifindex
    }
    fn handoff(&self, conf: &crate::cni::config::XdpConfig, pod: &PodId) -> PodHandoff {
        let who = pod.to_string();
        PodHandoff {
            xskmap_pin: conf.bpffs.join(format!("netkit-cni/nic/pods/{who}/xsks")),
            queues: self
                .xdp
                .steered
                .iter()
                .filter(|(_, (o, _))| *o == who)
                .map(|(q, (_, v))| crate::xdp::QueueLease {
                    queue: *q,
                    vqueue: *v,
                })
                .collect(),
        }
    }
    /// Deleting a device ends its leases.
    fn remove_pod(&mut self, key: &str) -> bool {
        let Some(pod) = self.pods.remove(key) else {
            return false;
        };
        if let Some(nic) = self.nic.as_mut() {
            nic.leases
                .retain(|_, (_, ifindex, _)| *ifindex != pod.ifindex);
        }
        true
    }
}

impl Dataplane for FakeKernel {
    fn validate_netns(&mut self, _path: &Path) -> Result<(), DpError> {
        Ok(())
    }
    fn create_pair(&mut self, spec: &PairSpec) -> Result<Created, DpError> {
        self.calls
            .push(format!("create_pair rx={:?}", spec.peer_rx_queues));
        self.step("create_pair")?;
        self.devices
            .insert(spec.marker.to_string(), spec.marker.clone());
        let pod_ifindex = self.add_pod(
            &spec.marker,
            &spec.netns,
            false,
            spec.peer_rx_queues.unwrap_or(1),
        );
        Ok(Created {
            host_ifindex: 10,
            host_ifname: spec.marker.host_ifname(),
            host_mac: None,
            pod_ifindex,
            pod_mac: None,
        })
    }
    fn configure_pod(&mut self, netns: &Path, plan: &PodPlan) -> Result<(), DpError> {
        self.calls.push(format!("pod_routes={}", plan.routes.len()));
        // The real dataplane configures the pod interface by the index ADD created it with.
        assert!(
            self.pods
                .values()
                .any(|p| p.netns == netns && p.ifindex == plan.ifindex),
            "configure_pod for ifindex {} in {}: not a created pod interface",
            plan.ifindex,
            netns.display()
        );
        self.step("configure_pod")
    }
    fn configure_host(&mut self, _plan: &HostPlan) -> Result<(), DpError> {
        self.step("configure_host")
    }
    fn delete(&mut self, marker: &Marker) -> Result<Deletion, DpError> {
        self.step("delete")?;
        self.remove_pod(&marker.to_string());
        Ok(if self.devices.remove(&marker.to_string()).is_some() {
            Deletion::Deleted
        } else {
            Deletion::AlreadyGone
        })
    }
    fn observe(
        &mut self,
        marker: &Marker,
        netns: Option<&Path>,
        _ifname: &str,
    ) -> Result<Observed, DpError> {
        self.step("observe")?;
        // By the derived host name, as the kernel is asked: whatever marker the device carries.
        let host = self
            .devices
            .values()
            .find(|m| m.host_ifname() == marker.host_ifname())
            .map(|m| ObservedLink {
                ifindex: 10,
                is_netkit: true,
                mode: None,
                marker: Some(m.clone()),
            });
        let pod = netns
            .and_then(|ns| self.pods.get(&marker.to_string()).filter(|p| p.netns == ns))
            .map(|p| ObservedLink {
                ifindex: p.ifindex,
                is_netkit: true,
                mode: Some(crate::cni::config::Mode::L3),
                marker: p.single.then(|| marker.clone()),
            });
        Ok(Observed {
            host,
            pod,
            ..Default::default()
        })
    }
    fn list_ours(&mut self) -> Result<Vec<Marker>, DpError> {
        self.step("list_ours")?;
        Ok(self.devices.values().cloned().collect())
    }
    fn netkit_available(&mut self) -> Result<bool, DpError> {
        Ok(self.netkit)
    }
    fn create_single(&mut self, spec: &SingleSpec) -> Result<Created, DpError> {
        self.calls
            .push(format!("create_single rx={}", spec.rx_queues));
        self.step("create_single")?;
        let pod_ifindex = self.add_pod(&spec.marker, &spec.netns, true, spec.rx_queues);
        Ok(Created {
            host_ifindex: 0,
            host_ifname: String::new(),
            host_mac: None,
            pod_ifindex,
            pod_mac: None,
        })
    }
    fn delete_single(&mut self, netns: &Path, marker: &Marker) -> Result<Deletion, DpError> {
        self.step("delete_single")?;
        let key = marker.to_string();
        let here = self
            .pods
            .get(&key)
            .is_some_and(|p| p.single && p.netns == netns);
        Ok(if here && self.remove_pod(&key) {
            Deletion::Deleted
        } else {
            Deletion::AlreadyGone
        })
    }
    fn master(&mut self, name: &str) -> Result<Option<Master>, DpError> {
        Ok(self
            .nic
            .as_ref()
            .filter(|n| n.name == name)
            .map(|n| Master {
                name: n.name.clone(),
                ifindex: n.ifindex,
                num_rx_queues: Some(n.rx),
                is_up: n.up,
            }))
    }
    fn master_queues(&mut self, master_ifindex: u32) -> Result<Vec<Queue>, DpError> {
        self.calls.push("dump".into());
        let nic = self
            .nic
            .as_ref()
            .filter(|n| n.ifindex == master_ifindex)
            .ok_or_else(|| netdev("dump", kernel_err("queue-get", Errno::ENODEV, "")))?;
        if !nic.up {
            return Ok(vec![]);
        }
        let q = |id: u32, queue_type: QueueType| Queue {
            id,
            queue_type,
            ifindex: nic.ifindex,
            napi_id: None,
            dmabuf: None,
            io_uring: None,
            xsk: queue_type == QueueType::Rx && nic.xsk.contains(&id),
            lease: nic
                .leases
                .get(&id)
                .filter(|_| queue_type == QueueType::Rx)
                .map(|(nsid, ifindex, v)| Lease {
                    ifindex: *ifindex,
                    queue: QueueId::rx(*v),
                    netns_id: *nsid,
                }),
            unknown: vec![],
        };
        // TX queues too, as the kernel dumps them: they must never count as leasable.
        Ok((0..nic.rx)
            .map(|i| q(i, QueueType::Rx))
            .chain((0..nic.rx).map(|i| q(i, QueueType::Tx)))
            .collect())
    }
    fn master_queue(&mut self, master_ifindex: u32, id: u32) -> Result<Queue, DpError> {
        let up = self.nic.as_ref().is_some_and(|n| n.up);
        if !up {
            return Err(netdev(
                "queue-get",
                kernel_err("queue-get", Errno::ENOENT, ""),
            ));
        }
        self.master_queues(master_ifindex)?
            .into_iter()
            .find(|q| q.id == id && q.queue_type == QueueType::Rx)
            .ok_or_else(|| netdev("queue-get", kernel_err("queue-get", Errno::EINVAL, "")))
    }
    fn lease_queue(&mut self, target: &LeaseTarget, phys: u32) -> Result<u32, DpError> {
        self.calls.push(format!("lease {phys}"));
        self.step("lease_queue")?;
        let step = "lease";
        if let Some((errno, msg)) = self.lease_refusal {
            return Err(netdev(step, kernel_err("queue-create", errno, msg)));
        }
        let nic = self
            .nic
            .as_mut()
            .filter(|n| n.ifindex == target.master_ifindex)
            .ok_or_else(|| netdev(step, kernel_err("queue-create", Errno::ENODEV, "")))?;
        if phys >= nic.rx {
            return Err(netdev(step, kernel_err("queue-create", Errno::ERANGE, "")));
        }
        if let Some(i) = self.race.iter().position(|q| *q == phys) {
            self.race.remove(i);
            nic.leases.insert(phys, (Some(99), 999, 1));
        }
        if nic.leases.contains_key(&phys) {
            return Err(netdev(
                step,
                kernel_err(
                    "queue-create",
                    Errno::EBUSY,
                    "Device queue in use due to queue leasing",
                ),
            ));
        }
        if nic.xsk.contains(&phys) {
            return Err(netdev(
                step,
                kernel_err(
                    "queue-create",
                    Errno::EBUSY,
                    "Device queue in use by AF_XDP",
                ),
            ));
        }
        let pod = self
            .pods
            .values_mut()
            .find(|p| p.ifindex == target.ifindex && p.netns == target.netns)
            .ok_or_else(|| netdev(step, kernel_err("queue-create", Errno::ENODEV, "")))?;
        if pod.leased + 1 >= pod.rx_cap {
            return Err(netdev(
                step,
                kernel_err(
                    "queue-create",
                    Errno::EINVAL,
                    "netkit maximum queue limit reached",
                ),
            ));
        }
        pod.leased += 1;
        let virt = pod.leased;
        nic.leases.insert(phys, (Some(POD_NSID), pod.ifindex, virt));
        Ok(virt)
    }
    fn lease_available(&mut self) -> Result<bool, DpError> {
        Ok(self.lease_ok)
    }
    fn nsid_of(&mut self, _netns: &Path) -> Result<Option<i32>, DpError> {
        Ok(Some(POD_NSID))
    }
    fn remote_link(
        &mut self,
        netnsid: Option<i32>,
        ifindex: u32,
    ) -> Result<Option<ObservedLink>, DpError> {
        self.calls
            .push(format!("remote_link {netnsid:?} {ifindex}"));
        if netnsid != Some(POD_NSID) {
            return Ok(None);
        }
        Ok(self
            .pods
            .iter()
            .find(|(_, p)| p.ifindex == ifindex)
            .map(|(key, p)| ObservedLink {
                ifindex,
                is_netkit: true,
                mode: None,
                marker: p.single.then(|| Marker::parse(key).unwrap()),
            }))
    }
    fn nic_lock(&mut self, bpffs: &Path, master_ifindex: u32) -> Result<NicGuard, DpError> {
        self.calls
            .push(format!("nic_lock {} {master_ifindex}", bpffs.display()));
        Ok(NicGuard(None))
    }
    fn nic_xdp(
        &mut self,
        master_ifindex: u32,
        _lock: &NicGuard,
    ) -> Result<Vec<NicXdpProgram>, DpError> {
        assert_eq!(master_ifindex, self.nic.as_ref().unwrap().ifindex);
        Ok(self.nic_xdp.clone())
    }
    fn xdp_steer(
        &mut self,
        conf: &crate::cni::config::XdpConfig,
        master_ifindex: u32,
        pod: &PodId,
        queues: &[SteerQueue],
        _device_info_dir: &Path,
    ) -> Result<PodHandoff, DpError> {
        self.calls.push(format!(
            "xdp_steer {:?}",
            queues
                .iter()
                .map(|q| (q.physical, q.virtual_id))
                .collect::<Vec<_>>()
        ));
        self.step("xdp_steer")?;
        assert_eq!(master_ifindex, self.nic.as_ref().unwrap().ifindex);
        let x = &mut self.xdp;
        if !x.attached {
            x.attached = true;
            x.attaches += 1;
        }
        let who = pod.to_string();
        // ADD holds the leases, so a steering left to another pod is stale and taken over
        // (Dispatcher::steer_leased_queue).
        x.pins.insert(who.clone());
        for q in queues {
            x.steered.insert(q.physical, (who.clone(), q.virtual_id));
        }
        Ok(self.handoff(conf, pod))
    }
    fn xdp_release(
        &mut self,
        _conf: &crate::cni::config::XdpConfig,
        _master_ifindex: u32,
        pod: &PodId,
    ) -> Result<XdpRelease, DpError> {
        self.calls.push(format!("xdp_release {pod}"));
        self.step("xdp_release")?;
        let x = &mut self.xdp;
        if !x.attached {
            return Ok(XdpRelease::default());
        }
        let who = pod.to_string();
        let reset: Vec<u32> = x
            .steered
            .iter()
            .filter(|(_, (o, _))| *o == who)
            .map(|(q, _)| *q)
            .collect();
        x.steered.retain(|_, (o, _)| *o != who);
        x.pins.remove(&who);
        let detached = x.steered.is_empty();
        if detached {
            x.attached = false;
            x.pins.clear();
        }
        Ok(XdpRelease { reset, detached })
    }
    fn xdp_observe(
        &mut self,
        conf: &crate::cni::config::XdpConfig,
        _master_ifindex: u32,
        pod: &PodId,
    ) -> Result<Option<XdpObserved>, DpError> {
        if !self.xdp.attached {
            return Ok(None);
        }
        let handoff = self
            .xdp
            .pins
            .contains(&pod.to_string())
            .then(|| self.handoff(conf, pod));
        Ok(Some(XdpObserved {
            link_id: 42,
            handoff,
        }))
    }
    fn xdp_pods(
        &mut self,
        _conf: &crate::cni::config::XdpConfig,
        _master_ifindex: u32,
    ) -> Result<Vec<PodId>, DpError> {
        Ok(self
            .xdp
            .pins
            .iter()
            .map(|p| {
                let (c, i) = p.split_once('/').unwrap();
                PodId::new(c, i).unwrap()
            })
            .collect())
    }
    fn steering(&mut self) -> &mut dyn NicSteering {
        self
    }
    fn xdp_sweep(
        &mut self,
        conf: &crate::cni::config::XdpConfig,
    ) -> Result<crate::xdp::Swept, DpError> {
        self.calls.push("xdp_sweep".into());
        let refused = self.xdp.sweep_refuses.clone();
        if !self.xdp.defunct {
            return Ok(crate::xdp::Swept {
                removed: vec![],
                refused,
            });
        }
        self.xdp = FakeXdp::default();
        Ok(crate::xdp::Swept {
            removed: vec![conf.bpffs.join("netkit-cni/dead")],
            refused,
        })
    }
    fn delete_remote(&mut self, netnsid: Option<i32>, ifindex: u32) -> Result<Deletion, DpError> {
        self.calls
            .push(format!("delete_remote {netnsid:?} {ifindex}"));
        let key = self
            .pods
            .iter()
            .find(|(_, p)| p.ifindex == ifindex && netnsid == Some(POD_NSID))
            .map(|(k, _)| k.clone());
        Ok(match key {
            Some(k) => {
                self.remove_pod(&k);
                Deletion::Deleted
            }
            None => Deletion::AlreadyGone,
        })
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

#[test]
fn add_reports_both_interfaces_and_points_ips_at_the_pod_side() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let req = request("ADD", "c1", json!({}));
    let r = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(
        k.calls,
        [
            "observe",
            "create_pair rx=None",
            "create_pair",
            "pod_routes=3",
            "configure_pod",
            "configure_host"
        ]
    );
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(r.interfaces[0].sandbox, None, "host side has no sandbox");
    assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/pod"));
    assert_eq!(r.ips[0].interface, Some(1));
    // subnet via gateway and the default route, both reported; the gateway's link route is not.
    let dsts: Vec<String> = r
        .routes
        .iter()
        .map(|r| format!("{}/{}", r.dst.addr(), r.dst.prefix_len()))
        .collect();
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
        assert_eq!(
            k.calls.last().map(String::as_str),
            Some("delete"),
            "{failing}: {:?}",
            k.calls
        );
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
    assert!(
        !k.calls.contains(&"delete".to_string()),
        "nothing was created, nothing to delete: {:?}",
        k.calls
    );
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
}

#[test]
fn second_add_of_a_live_attachment_fails_before_touching_ipam() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    let req = request("ADD", "c1", json!({}));
    cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::ALREADY_EXISTS);
    assert_eq!(
        *ipam.calls.borrow(),
        ["add"],
        "the live attachment's address must not be released"
    );
    assert_eq!(k.devices.len(), 1);
}

#[test]
fn del_is_idempotent_and_deletes_before_releasing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    cmd_add(
        &request("ADD", "c1", json!({})),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap();
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
        cmd_add(
            &request("ADD", cid, json!({})),
            &mut k,
            Some(&ipam),
            &quiet(),
        )
        .unwrap();
    }
    let other = Marker::new("othernet", "foreign", "eth0").unwrap();
    k.devices.insert(other.to_string(), other);
    ipam.calls.borrow_mut().clear();
    let gc = request(
        "GC",
        "x",
        json!({"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}),
    );
    cmd_gc(&gc, &mut k, Some(&ipam), &quiet()).unwrap();
    let mut left: Vec<String> = k.devices.keys().cloned().collect();
    left.sort();
    assert_eq!(
        left,
        [
            "netkit-cni/othernet/foreign/eth0",
            "netkit-cni/podnet/live/eth0"
        ]
    );
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
}

#[test]
fn gc_without_a_list_deletes_nothing() {
    let (mut k, ipam) = (FakeKernel::new(), FakeIpam::default());
    cmd_add(
        &request("ADD", "c1", json!({})),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap();
    let err = cmd_gc(
        &request("GC", "x", json!({})),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, crate::cni::codes::INVALID_CONFIG);
    assert!(err.details.contains("valid-attachments"));
    assert_eq!(k.devices.len(), 1);
}

#[test]
fn status_is_50_without_netkit() {
    let mut k = FakeKernel::new();
    k.netkit = false;
    let err = cmd_status(&request("STATUS", "x", json!({})), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("netkit"));
}

#[test]
fn pod_plan_uses_ipam_routes_and_adds_default_only_when_missing() {
    let ipam = CniResult {
        ips: vec![IpConfig {
            address: IpCidr::new("10.2.0.9".parse().unwrap(), 16).unwrap(),
            gateway: None,
            interface: None,
        }],
        routes: vec![Route::new(
            IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
            None,
        )],
        ..Default::default()
    };
    let (plan, reported) = pod_plan("eth0", &ipam).unwrap();
    let gw: IpAddr = "10.2.0.1".parse().unwrap();
    assert_eq!(
        plan.routes,
        [
            PlannedRoute {
                dst: IpCidr::new(gw, 32).unwrap(),
                gw: None
            },
            PlannedRoute {
                dst: IpCidr::new("10.2.0.0".parse().unwrap(), 16).unwrap(),
                gw: Some(gw)
            },
            PlannedRoute {
                dst: IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
                gw: Some(gw)
            },
        ]
    );
    assert_eq!(reported.len(), 2);
}

#[test]
fn gateway_of_a_slash_32_without_gateway_is_an_error_naming_the_address() {
    let ip = IpConfig {
        address: IpCidr::new("10.3.0.0".parse().unwrap(), 31).unwrap(),
        gateway: None,
        interface: None,
    };
    assert_eq!(
        gateway_of(&ip).unwrap(),
        "10.3.0.1".parse::<IpAddr>().unwrap()
    );
    let ip = IpConfig {
        address: IpCidr::new("10.3.0.1".parse().unwrap(), 31).unwrap(),
        gateway: None,
        interface: None,
    };
    assert!(gateway_of(&ip).unwrap_err().msg.contains("10.3.0.1/31"));
}

// ---------------------------------------------------------------------------------------------
// Queue leasing

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

#[test]
fn pair_leases_onto_the_peer_sized_for_the_leases_and_records_the_mapping() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let req = request("ADD", "c1", lease_conf(&dir, "pair", json!({"queues": 2})));
    let r = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap();
    assert!(
        k.calls.contains(&"create_pair rx=Some(3)".to_string()),
        "1 own + 2 leased RX queues: {:?}",
        k.calls
    );
    let peer = k.pods["netkit-cni/podnet/c1/eth0"].ifindex;
    // Default pool: every queue but 0, lowest first.
    assert_eq!(leases_of(&k), [(1, peer, 1), (2, peer, 2)]);
    assert_eq!(r.interfaces.len(), 2);
    let info = dir.info("c1");
    assert_eq!(info["type"], "netkit-lease");
    assert_eq!(info["version"], "1.1.0");
    let l = &info["netkit-lease"];
    assert_eq!(
        (l["pairing"].as_str(), l["ifindex"].as_u64()),
        (Some("pair"), Some(peer as u64))
    );
    assert_eq!(l["master"], json!({"name": "nic0", "ifindex": 50}));
    assert_eq!(
        l["queues"],
        json!([{"physical": 1, "virtual": 1}, {"physical": 2, "virtual": 2}])
    );
}

#[test]
fn single_without_ipam_reports_only_the_pod_interface() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"queueIds": [3, 5]})),
    );
    let r = cmd_add(&req, &mut k, None, &quiet()).unwrap();
    assert!(
        k.calls.contains(&"create_single rx=3".to_string()),
        "{:?}",
        k.calls
    );
    assert!(
        !k.calls
            .iter()
            .any(|c| c == "configure_host" || c.starts_with("create_pair")),
        "no host side: {:?}",
        k.calls
    );
    assert_eq!(r.interfaces.len(), 1);
    assert_eq!(r.interfaces[0].name, "eth0");
    assert_eq!(r.interfaces[0].sandbox.as_deref(), Some("/run/netns/pod"));
    assert!(r.ips.is_empty() && r.routes.is_empty());
    assert_eq!(
        leases_of(&k).iter().map(|l| l.0).collect::<Vec<_>>(),
        [3, 5],
        "exactly the named queues"
    );
    assert_eq!(dir.info("c1")["netkit-lease"]["pairing"], "single");
}

#[test]
fn selection_skips_busy_queues_and_picks_again_when_a_racing_add_wins() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.nic().leases.insert(1, (Some(3), 77, 1)); // leased to someone else
    k.nic().xsk.push(2); // an AF_XDP socket on queue 2
    k.race = vec![3]; // another ADD takes 3 between our dump and our queue-create
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"queues": 2})),
    );
    cmd_add(&req, &mut k, None, &quiet()).unwrap();
    let tries: Vec<&String> = k
        .calls
        .iter()
        .filter(|c| c.starts_with("lease ") || *c == "dump")
        .collect();
    // prepare's dump, selection's dump, 3 refused, fresh dump, then 4 and 5.
    assert_eq!(
        tries,
        ["dump", "dump", "lease 3", "dump", "lease 4", "lease 5"]
    );
    let me = k.pods["netkit-cni/podnet/c1/eth0"].ifindex;
    let mine: Vec<u32> = leases_of(&k)
        .into_iter()
        .filter(|l| l.1 == me)
        .map(|l| l.0)
        .collect();
    assert_eq!(mine, [4, 5]);
}

#[test]
fn exhausted_pool_fails_before_ipam_and_before_any_device() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.nic().leases.insert(2, (Some(3), 77, 1));
    k.nic().leases.insert(3, (Some(3), 78, 1));
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "pair", json!({"allowedQueues": "2-3"})),
    );
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_POOL_EXHAUSTED);
    assert!(
        err.msg.contains("allowedQueues 2-3") && err.msg.contains("nic0"),
        "names the pool: {}",
        err.msg
    );
    assert!(ipam.calls.borrow().is_empty(), "IPAM untouched");
    assert!(k.pods.is_empty() && k.devices.is_empty());
}

#[test]
fn losing_the_last_queue_to_a_race_rolls_back_device_leases_ipam_and_file() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.race = vec![2];
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "pair", json!({"allowedQueues": "1-2", "queues": 2})),
    );
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_POOL_EXHAUSTED, "{err:?}");
    assert!(k.calls.contains(&"delete".to_string()), "{:?}", k.calls);
    assert!(k.pods.is_empty() && k.devices.is_empty());
    assert_eq!(
        k.leased_queues(),
        [2],
        "our lease of queue 1 ended with the device; the racer keeps 2"
    );
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn pod_requests_must_stay_within_the_pool_the_cap_and_the_nic() {
    let dir = DevDir::new();
    let conf = lease_conf(
        &dir,
        "single",
        json!({"maxQueuesPerPod": 2, "allowedQueues": "1-15"}),
    );
    let cases: Vec<(&str, serde_json::Value, &str, &[&str])> = vec![
        (
            "NETKIT_LEASE_QUEUES=5",
            json!(null),
            "",
            &["5", "maxQueuesPerPod 2"],
        ),
        ("NETKIT_LEASE_QUEUES=0", json!(null), "", &["at least 1"]),
        ("NETKIT_LEASE_QUEUES=two", json!(null), "", &["\"two\""]),
        (
            "NETKIT_LEASE_QUEUE_IDS=0",
            json!(null),
            "",
            &["queue 0", "outside the lease pool", "1-15"],
        ),
        (
            "NETKIT_LEASE_QUEUE_IDS=9",
            json!(null),
            "",
            &["queue 9", "out of range", "8 RX queues"],
        ),
        (
            "NETKIT_LEASE_QUEUES=1;NETKIT_LEASE_QUEUE_IDS=2",
            json!(null),
            "",
            &["both"],
        ),
        (
            "",
            json!({"netkitLeaseQueueIds": [16]}),
            "",
            &["queue 16", "outside"],
        ),
        (
            "",
            json!({"netkitLeaseQueues": 3}),
            "",
            &["3", "maxQueuesPerPod 2"],
        ),
    ];
    for (args, rc, _, texts) in cases {
        let mut k = FakeKernel::with_nic();
        let mut c = conf.clone();
        c["runtimeConfig"] = rc.clone();
        let err = cmd_add(&request_with("ADD", "c1", c, args), &mut k, None, &quiet()).unwrap_err();
        assert_eq!(err.code, 7, "{args} {rc}: {err:?}");
        for t in texts {
            assert!(err.msg.contains(t), "{args} {rc}: {:?} lacks {t}", err.msg);
        }
        assert!(k.pods.is_empty(), "{args}: nothing created");
    }
    // Within limits: runtimeConfig wins over CNI_ARGS.
    let mut k = FakeKernel::with_nic();
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({"netkitLeaseQueueIds": [6, 4]});
    cmd_add(
        &request_with("ADD", "c1", c, "NETKIT_LEASE_QUEUES=1"),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(k.leased_queues(), [4, 6]);
}

#[test]
fn a_busy_explicit_queue_fails_cleanly() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.nic().xsk.push(4);
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "pair", json!({"queueIds": [3, 4]})),
    );
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_QUEUE_BUSY);
    assert!(
        err.msg.contains("queue 4 of nic0") && err.msg.contains("AF_XDP"),
        "{}",
        err.msg
    );
    assert!(k.pods.is_empty() && k.leased_queues().is_empty() && ipam.calls.borrow().is_empty());

    // Taken between the check and the lease: queue 3 is leased, then 4 is refused → rollback.
    k.nic().xsk.clear();
    k.race = vec![4];
    let err = cmd_add(&req, &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_QUEUE_BUSY, "{err:?}");
    assert!(err.msg.contains("queue 4"), "{}", err.msg);
    assert!(k.pods.is_empty() && k.devices.is_empty());
    assert_eq!(
        k.leased_queues(),
        [4],
        "queue 3 was given back with the device"
    );
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
    assert!(dir.files().is_empty());
}

#[test]
fn missing_master_unsupported_kernel_and_refused_leases_have_their_codes() {
    let dir = DevDir::new();
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"master": "ens9"})),
    );
    let err = cmd_add(&req, &mut FakeKernel::with_nic(), None, &quiet()).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(err.msg.contains("\"ens9\""), "{}", err.msg);

    let mut k = FakeKernel::with_nic();
    k.lease_ok = false;
    let err = cmd_add(
        &request("ADD", "c1", lease_conf(&dir, "single", json!({}))),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_UNSUPPORTED);
    assert!(
        err.code >= 100 && err.msg.contains("queue-create"),
        "{}",
        err.msg
    );

    // A master the kernel cannot lease from (here: a virtual device): the kernel says why.
    let (mut k, ipam) = (FakeKernel::with_nic(), FakeIpam::default());
    k.lease_refusal = Some((Errno::EINVAL, "Lease device is a virtual device"));
    let err = cmd_add(
        &request("ADD", "c1", lease_conf(&dir, "pair", json!({}))),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::LEASE_FAILED);
    assert!(
        err.msg.contains("Lease device is a virtual device"),
        "{}",
        err.msg
    );
    assert!(k.pods.is_empty() && k.devices.is_empty(), "rolled back");
    assert_eq!(*ipam.calls.borrow(), ["add", "del c1 eth0"]);
}

#[test]
fn check_passes_then_names_the_queue_whose_lease_is_gone() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = lease_conf(&dir, "single", json!({"queues": 2}));
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf.clone();
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap();

    k.nic().leases.remove(&2);
    let err = cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(err.msg.contains("queue 2 of nic0"), "{}", err.msg);

    k.nic().up = false;
    let err = cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap_err();
    assert!(err.msg.contains("down"), "{}", err.msg);

    std::fs::remove_dir_all(&dir.0).unwrap();
    let err = cmd_check(&request("CHECK", "c1", check), &mut k, None).unwrap_err();
    assert!(
        err.msg.contains("device-info file") && err.msg.contains("missing"),
        "{}",
        err.msg
    );
}

#[test]
fn del_of_a_single_device_with_and_without_the_netns_frees_everything() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = lease_conf(&dir, "single", json!({"queues": 2}));
    for cid in ["c1", "c2"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    assert_eq!(k.leased_queues().len(), 4);
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.leased_queues(), [3, 4]);

    // No CNI_NETNS: found through the master's leases, addressed by nsid.
    let mut del = request("DEL", "c2", conf.clone());
    del.env.netns = None;
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    assert!(
        k.calls
            .iter()
            .any(|c| c.starts_with("delete_remote Some(7)")),
        "{:?}",
        k.calls
    );
    assert!(k.leased_queues().is_empty() && k.pods.is_empty());
    assert!(dir.files().is_empty(), "{:?}", dir.files());
    // Again, and with the NIC gone: still fine.
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    k.nic = None;
    cmd_del(&request("DEL", "c2", conf), &mut k, None, &quiet()).unwrap();
}

#[test]
fn gc_finds_orphan_single_devices_through_the_masters_leases() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let mut conf = lease_conf(&dir, "single", json!({}));
    conf["ipam"] = json!({"type": "host-local"});
    for cid in ["live", "orphan"] {
        cmd_add(
            &request("ADD", cid, conf.clone()),
            &mut k,
            Some(&ipam),
            &quiet(),
        )
        .unwrap();
    }
    // A device of another network leasing from the same NIC, and a stale file of a pod whose
    // netns died without DEL.
    let foreign = Marker::new("othernet", "f1", "eth0").unwrap();
    let fi = k.add_pod(&foreign, Path::new("/run/netns/other"), true, 2);
    k.nic().leases.insert(7, (Some(POD_NSID), fi, 1));
    std::fs::write(dir.0.join("podnet:dead:eth0-device.json"), b"{}").unwrap();
    ipam.calls.borrow_mut().clear();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, Some(&ipam), &quiet()).unwrap();
    let mut left: Vec<&String> = k.pods.keys().collect();
    left.sort();
    assert_eq!(
        left,
        ["netkit-cni/othernet/f1/eth0", "netkit-cni/podnet/live/eth0"]
    );
    assert_eq!(
        k.leased_queues(),
        [1, 7],
        "the orphan's queue 2 is free again"
    );
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
    assert_eq!(dir.files(), ["podnet:live:eth0-device.json"]);
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

#[test]
fn del_removes_the_device_holding_the_recorded_leases_whatever_its_name_or_alias() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = lease_conf(&dir, "single", json!({"queues": 2}));
    for cid in ["c1", "c2", "c3"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    forge(&mut k, "c1", "forged1");
    forge(&mut k, "c2", "forged2");
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut del = request("DEL", "c2", conf.clone());
    del.env.netns = None;
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    let mut left: Vec<&String> = k.pods.keys().collect();
    left.sort();
    assert_eq!(left, ["netkit-cni/podnet/c3/eth0"]);
    assert_eq!(k.leased_queues(), [5, 6], "c1's and c2's leases ended");
    // c3 claims to be c1 (whose DEL already ran, record gone): a repeated DEL of c1 found
    // through the master must not take c3's device, which c3's own record describes.
    forge(&mut k, "c3", "c1");
    let mut del = request("DEL", "c1", conf.clone());
    del.env.netns = None;
    cmd_del(&del, &mut k, None, &quiet()).unwrap();
    assert_eq!(k.leased_queues(), [5, 6], "{:?}", k.calls);
}

#[test]
fn gc_hands_ipam_the_records_identifiers_never_a_forged_alias() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let mut conf = lease_conf(&dir, "single", json!({}));
    conf["ipam"] = json!({"type": "host-local"});
    for cid in ["live", "orphan", "norecord"] {
        cmd_add(
            &request("ADD", cid, conf.clone()),
            &mut k,
            Some(&ipam),
            &quiet(),
        )
        .unwrap();
    }
    // The live pod claims an unlisted attachment, the orphan another one; the third device's
    // record is gone, so only its (forged) alias speaks for it.
    forge(&mut k, "live", "victim1");
    forge(&mut k, "orphan", "victim2");
    forge(&mut k, "norecord", "victim3");
    std::fs::remove_file(dir.0.join("podnet:norecord:eth0-device.json")).unwrap();
    ipam.calls.borrow_mut().clear();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, Some(&ipam), &quiet()).unwrap();
    let left: Vec<&String> = k.pods.keys().collect();
    assert_eq!(
        left,
        ["netkit-cni/podnet/victim1/eth0"],
        "the live pod keeps its device"
    );
    assert_eq!(k.leased_queues(), [1], "the orphans' leases ended");
    assert_eq!(*ipam.calls.borrow(), ["del orphan eth0", "gc"]);
}

#[test]
fn status_is_50_without_queue_create_or_without_a_free_pool_queue() {
    let dir = DevDir::new();
    let req = request(
        "STATUS",
        "x",
        lease_conf(&dir, "single", json!({"allowedQueues": "1-2"})),
    );
    let mut k = FakeKernel::with_nic();
    cmd_status(&req, &mut k, None, &quiet()).unwrap();

    k.lease_ok = false;
    let err = cmd_status(&req, &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("queue"), "{}", err.msg);

    let mut k = FakeKernel::with_nic();
    k.nic().leases.insert(1, (Some(1), 5, 1));
    cmd_status(&req, &mut k, None, &quiet()).unwrap();
    k.nic().xsk.push(2);
    let err = cmd_status(&req, &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("allowedQueues 1-2"), "{}", err.msg);

    k.nic = None;
    let err = cmd_status(&req, &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 50);
    assert!(err.msg.contains("nic0"), "{}", err.msg);
}

#[test]
fn a_down_nic_dumps_nothing_so_the_kernel_decides_occupancy_and_range() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.nic().up = false;
    k.nic().rx = 3; // real queues; the fake's master() reports the same as allocated
    k.nic().leases.insert(1, (Some(3), 77, 1));
    let req = request(
        "ADD",
        "c1",
        lease_conf(&dir, "single", json!({"queues": 1})),
    );
    cmd_add(&req, &mut k, None, &quiet()).unwrap();
    let tries: Vec<&String> = k.calls.iter().filter(|c| c.starts_with("lease ")).collect();
    assert_eq!(
        tries,
        ["lease 1", "lease 2"],
        "1 was busy, learnt from EBUSY"
    );
}

// ---------------------------------------------------------------------------------------------
// XDP steering of leased queues

fn xdp_conf(dir: &DevDir, lease: serde_json::Value) -> serde_json::Value {
    let mut c = lease_conf(dir, "single", lease);
    c["xdp"] = json!({"bpffs": "/sys/fs/bpf", "ranges": [{"queues": "0", "action": "pass"}, {"queues": "6-7", "action": "drop"}]});
    c
}

#[test]
fn add_steers_the_leased_queues_after_leasing_and_hands_the_map_over() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queueIds": [3, 5]}));
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let lease_at = k.calls.iter().position(|c| c == "lease 5").unwrap();
    let steer_at = k
        .calls
        .iter()
        .position(|c| c.starts_with("xdp_steer"))
        .unwrap();
    assert!(
        lease_at < steer_at,
        "virtual ids come from queue-create: {:?}",
        k.calls
    );
    assert_eq!(k.calls[steer_at], "xdp_steer [(3, 1), (5, 2)]");
    assert_eq!(k.xdp.steered.get(&3), Some(&("c1/eth0".to_string(), 1)));
    let x = &dir.info("c1")["netkit-lease"]["xdp"];
    assert_eq!(x["xsk-map"], "/sys/fs/bpf/netkit-cni/nic/pods/c1/eth0/xsks");
    assert_eq!(
        (
            x["start-queue"].as_u64(),
            x["queue-count"].as_u64(),
            x["map-start-index"].as_u64()
        ),
        (Some(1), Some(2), Some(1))
    );

    // A second pod shares the one dispatcher.
    cmd_add(
        &request("ADD", "c2", xdp_conf(&dir, json!({"queueIds": [4]}))),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(k.xdp.attaches, 1);
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(k.xdp.attached, "c2 still has queues");
    assert!(!k.xdp.steered.values().any(|(o, _)| o == "c1/eth0"));
    cmd_del(&request("DEL", "c2", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(
        !k.xdp.attached && k.xdp.pins.is_empty() && k.xdp.steered.is_empty(),
        "the last DEL detaches"
    );
    // Idempotent: again, and with the NIC gone.
    cmd_del(&request("DEL", "c2", conf.clone()), &mut k, None, &quiet()).unwrap();
    k.nic = None;
    cmd_del(&request("DEL", "c2", conf), &mut k, None, &quiet()).unwrap();
    assert!(
        k.calls.iter().any(|c| c == "xdp_sweep"),
        "no master: the dead NIC's pins are swept: {:?}",
        k.calls
    );
}

#[test]
fn del_for_another_network_leaves_the_owners_xdp_steering_alone() {
    // XDP pins are keyed by container id and ifname: network A's DEL after its ADD was refused
    // (network B's device has that ifname) must not reset B's queues or unpin B's map.
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let b = xdp_conf(&dir, json!({"queueIds": [3]}));
    let mut a = b.clone();
    a["name"] = json!("othernet");
    cmd_add(&request("ADD", "c1", b.clone()), &mut k, None, &quiet()).unwrap();
    // (The fake kernel does not model A's refused ADD; the VM test does. DEL is what matters.)
    cmd_del(&request("DEL", "c1", a), &mut k, None, &quiet()).unwrap();
    assert_eq!(
        k.xdp.steered.get(&3),
        Some(&("c1/eth0".to_string(), 1)),
        "B's queue still steered"
    );
    assert!(
        k.xdp.pins.contains("c1/eth0") && k.xdp.attached,
        "B's map still pinned"
    );
    assert!(
        !k.calls.iter().any(|c| c.starts_with("xdp_release")),
        "{:?}",
        k.calls
    );
    // B's own DEL releases it.
    cmd_del(&request("DEL", "c1", b), &mut k, None, &quiet()).unwrap();
    assert!(k.xdp.steered.is_empty() && !k.xdp.attached);
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

#[test]
fn an_alias_never_makes_del_skip_the_release_of_the_xdp_steering() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    for cid in ["victim", "attacker"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    forge_foreign(&mut k, &dir, "attacker", "victim");
    cmd_del(&request("DEL", "victim", conf), &mut k, None, &quiet()).unwrap();
    assert!(
        !k.xdp.pins.contains("victim/eth0")
            && !k.xdp.steered.values().any(|(o, _)| o == "victim/eth0"),
        "the victim's queue must not stay steered to its dead XSKMAP: {:?} {:?}",
        k.xdp.steered,
        k.calls
    );
    assert!(k.xdp.pins.contains("attacker/eth0"));
}

/// Another network's DEL or GC for the same container id and ifname (its ADD was refused with
/// 103) leaves the owner's XDP steering alone, although the owner's record is in another
/// directory: a live device leases the steered queue and no record of that network describes it.
#[test]
fn another_networks_del_and_gc_leave_the_owners_xdp_steering_alone() {
    let (mut k, owner_dir, other_dir) = (FakeKernel::with_nic(), DevDir::new(), DevDir::new());
    let owner = xdp_conf(&owner_dir, json!({"queues": 1}));
    let mut other = xdp_conf(&other_dir, json!({"queues": 1}));
    other["name"] = json!("othernet");
    cmd_add(&request("ADD", "c1", owner.clone()), &mut k, None, &quiet()).unwrap();
    // (The fake keeps devices per network, so the other network's ADD is not refused here as
    // the kernel refuses it, with 103, for the name clash in the pod; tests/vm_xdp.rs has that.)
    cmd_del(&request("DEL", "c1", other.clone()), &mut k, None, &quiet()).unwrap();
    let mut gc = other;
    gc["cni.dev/valid-attachments"] = json!([]);
    cmd_gc(&request("GC", "x", gc), &mut k, None, &quiet()).unwrap();
    assert!(
        k.xdp.pins.contains("c1/eth0") && k.xdp.steered.values().any(|(o, _)| o == "c1/eth0"),
        "the owner's steering must survive: {:?} {:?}",
        k.xdp.steered,
        k.calls
    );
    cmd_del(&request("DEL", "c1", owner), &mut k, None, &quiet()).unwrap();
    assert!(!k.xdp.pins.contains("c1/eth0"), "{:?}", k.calls);
}

#[test]
fn an_alias_never_keeps_an_orphans_xdp_steering_from_gc() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    for cid in ["orphan", "attacker"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    // The orphan's device died with its netns, without DEL; its pin and steering stayed.
    let orphan = k.pods.remove("netkit-cni/podnet/orphan/eth0").unwrap();
    k.nic()
        .leases
        .retain(|_, (_, ifx, _)| *ifx != orphan.ifindex);
    forge_foreign(&mut k, &dir, "attacker", "orphan");
    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "attacker", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, None, &quiet()).unwrap();
    assert!(
        !k.xdp.pins.contains("orphan/eth0"),
        "GC must release the orphan's steering: {:?}",
        k.calls
    );
}

#[test]
fn del_releases_the_queues_only_after_the_device_and_its_leases_are_gone() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    k.calls.clear();
    cmd_del(&request("DEL", "c1", conf), &mut k, None, &quiet()).unwrap();
    // The device goes by the leases its record names (delete_remote), or by name.
    let del_at = k
        .calls
        .iter()
        .position(|c| c == "delete_single" || c.starts_with("delete_remote"))
        .unwrap();
    let rel_at = k
        .calls
        .iter()
        .position(|c| c.starts_with("xdp_release"))
        .unwrap();
    assert!(del_at < rel_at, "{:?}", k.calls);
}

#[test]
fn failures_after_steering_give_the_queues_back_and_leave_nothing() {
    for step in ["configure_pod", "xdp_steer"] {
        let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
        k.fail_on = Some(step);
        let err = cmd_add(
            &request("ADD", "c1", xdp_conf(&dir, json!({"queues": 2}))),
            &mut k,
            None,
            &quiet(),
        )
        .unwrap_err();
        let want = if step == "xdp_steer" {
            errcodes::XDP_FAILED
        } else {
            errcodes::KERNEL_FAILED
        };
        assert_eq!(err.code, want, "{step}: {}", err.msg);
        assert!(
            k.pods.is_empty() && k.leased_queues().is_empty(),
            "{step}: device and leases rolled back"
        );
        assert!(
            !k.xdp.attached && k.xdp.steered.is_empty() && k.xdp.pins.is_empty(),
            "{step}: dispatcher released"
        );
        assert!(dir.files().is_empty(), "{step}: {:?}", dir.files());
        assert!(
            k.calls.iter().any(|c| c == "xdp_release c1/eth0"),
            "{step}: {:?}",
            k.calls
        );
    }
}

#[test]
fn check_needs_the_dispatcher_and_exactly_the_recorded_steering() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queueIds": [2, 4]}));
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf;
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap();

    // A queue steered elsewhere (e.g. by hand) is named.
    k.xdp.steered.insert(4, ("c1/eth0".into(), 7));
    let err = cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(
        err.msg.contains("(4, 7)") && err.msg.contains("(4, 2)"),
        "{}",
        err.msg
    );

    k.xdp.attached = false;
    let err = cmd_check(&request("CHECK", "c1", check), &mut k, None).unwrap_err();
    assert!(
        err.msg.contains("no XDP dispatcher is attached to nic0"),
        "{}",
        err.msg
    );
}

#[test]
fn gc_releases_unlisted_pods_but_not_other_networks_live_ones() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = xdp_conf(&dir, json!({"queues": 1}));
    for cid in ["live", "orphan"] {
        cmd_add(&request("ADD", cid, conf.clone()), &mut k, None, &quiet()).unwrap();
    }
    // Another network's live pod on the same NIC and dispatcher (its root-owned record
    // describes its leases: an alias alone would not keep its steering).
    let mut other = conf.clone();
    other["name"] = json!("othernet");
    other["lease"]["queueIds"] = json!([7]);
    other["lease"].as_object_mut().unwrap().remove("queues");
    cmd_add(&request("ADD", "f1", other), &mut k, None, &quiet()).unwrap();
    // A pin left by a pod whose device died with its netns without DEL.
    k.xdp.steered.insert(6, ("dead/eth0".into(), 1));
    k.xdp.pins.insert("dead/eth0".into());

    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    cmd_gc(&request("GC", "x", gc), &mut k, None, &quiet()).unwrap();
    let pins: Vec<&String> = k.xdp.pins.iter().collect();
    assert_eq!(pins, ["f1/eth0", "live/eth0"]);
    assert_eq!(k.xdp.steered.keys().copied().collect::<Vec<_>>(), [1, 7]);
    assert!(k.xdp.attached);
}

#[test]
fn a_held_xdp_lock_is_try_again_later_naming_the_directory_and_other_xdp_errors_are_110() {
    let dir = PathBuf::from("/sys/fs/bpf/netkit-cni/netns1-if4");
    let timeout = DpError::Xdp {
        step: "steer queues",
        source: Box::new(crate::xdp::XdpError::from(
            crate::safefs::SafeFsError::LockTimeout {
                path: dir.clone(),
                waited: std::time::Duration::from_secs(20),
            },
        )),
    };
    let e = xdp_error(timeout);
    assert_eq!(e.code, crate::cni::codes::TRY_AGAIN_LATER);
    assert!(
        e.msg.contains("/sys/fs/bpf/netkit-cni/netns1-if4"),
        "{}",
        e.msg
    );
    let planted = DpError::Xdp {
        step: "sweep",
        source: Box::new(crate::xdp::XdpError::from(
            crate::safefs::SafeFsError::Untrusted {
                path: dir,
                expected: "directory",
                reason: "it is a symbolic link".into(),
            },
        )),
    };
    let e = xdp_error(planted);
    assert_eq!(e.code, errcodes::XDP_FAILED);
    assert!(
        e.msg.contains("netns1-if4") && e.msg.contains("symbolic link"),
        "{}",
        e.msg
    );
}

// ---------------------------------------------------------------------------------------------
// Leases for memory providers

#[test]
fn a_memory_provider_add_is_refused_on_a_nic_with_xdp_before_ipam_naming_nic_and_owner() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let conf = lease_conf(&dir, "pair", json!({"consumer": "memory-provider"}));
    for (prog, owner) in [
        (
            NicXdpProgram {
                mode: "generic",
                id: 40,
                name: "nkc_dispatch".into(),
                ours: true,
            },
            "netkit-cni XDP dispatcher (program id 40, generic mode)",
        ),
        (
            NicXdpProgram {
                mode: "driver",
                id: 77,
                name: "xdp_fw".into(),
                ours: false,
            },
            "XDP program id 77 name \"xdp_fw\" (driver mode), not netkit-cni's",
        ),
    ] {
        k.nic_xdp = vec![prog];
        k.calls.clear();
        let e = cmd_add(
            &request("ADD", "c1", conf.clone()),
            &mut k,
            Some(&ipam),
            &quiet(),
        )
        .unwrap_err();
        assert_eq!(e.code, errcodes::MEMORY_PROVIDER_CONFLICT, "{}", e.msg);
        assert!(
            e.msg.contains("lease master nic0") && e.msg.contains(owner),
            "{}",
            e.msg
        );
        assert!(
            ipam.calls.borrow().is_empty(),
            "refused before IPAM: {:?}",
            ipam.calls
        );
        assert!(
            !k.calls
                .iter()
                .any(|c| c.starts_with("create") || c.starts_with("lease ")),
            "{:?}",
            k.calls
        );
        assert!(k.pods.is_empty() && leases_of(&k).is_empty());
        assert!(!dir.0.join("podnet:c1:eth0-device.json").exists());
    }

    // Without XDP on the NIC it goes through, under the NIC lock, and the record says what
    // the leases are for.
    k.nic_xdp.clear();
    k.calls.clear();
    cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap();
    let at = |p: &str| k.calls.iter().position(|c| c.starts_with(p));
    assert!(
        at("nic_lock /sys/fs/bpf 50").is_some()
            && at("nic_lock /sys/fs/bpf 50") < at("create_pair"),
        "{:?}",
        k.calls
    );
    assert_eq!(
        dir.info("c1")["netkit-lease"]["consumer"],
        "memory-provider"
    );
}

#[test]
fn an_af_xdp_network_records_its_consumer_and_takes_no_extra_lock() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    // A foreign XDP program does not concern an AF_XDP network's check (the dispatcher's own
    // attach meets it).
    k.nic_xdp = vec![NicXdpProgram {
        mode: "driver",
        id: 77,
        name: "xdp_fw".into(),
        ours: false,
    }];
    cmd_add(
        &request("ADD", "c1", xdp_conf(&dir, json!({}))),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert!(
        !k.calls.iter().any(|c| c.starts_with("nic_lock")),
        "{:?}",
        k.calls
    );
    assert_eq!(dir.info("c1")["netkit-lease"]["consumer"], "af-xdp");
}

// ---------------------------------------------------------------------------------------------
// Steering (lease.steering)

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

#[test]
fn exclude_pool_mac_writes_rss_before_leasing_then_rule_and_unicast_and_del_removes_them() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.steer.table = Some(equal_over_all());
    let conf = steer_conf(
        &dir,
        json!({}),
        json!({"rss": "exclude-pool", "match": "mac"}),
    );
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    // The default table now spreads over 0-1 only, written before the lease.
    let t = k.steer.table.clone().unwrap();
    assert_eq!(t.len(), 16);
    assert!(
        t.iter().enumerate().all(|(i, q)| *q == (i % 2) as u32),
        "{t:?}"
    );
    assert!(pos(&k, "rss_set") < pos(&k, "lease 2"), "{:?}", k.calls);
    // One queue (2): rule at ruleBase + 4*2 = 8, to the queue, after the lease; then the MAC.
    let rule = k.steer.rules[&8];
    assert_eq!(
        rule.to_string(),
        format!("rule 8: ether dst {POD_MAC} -> queue 2")
    );
    assert!(pos(&k, "lease 2") < pos(&k, "rule_insert"));
    assert!(pos(&k, "rule_insert") < pos(&k, "unicast add"));
    assert_eq!(k.steer.unicast.len(), 1);
    let st = &dir.info("c1")["netkit-lease"]["steering"];
    assert_eq!(
        *st,
        json!({"rss": "exclude-pool", "match": "mac", "pool": "2-7", "rule-base": 0,
               "rules": [{"location": 8, "rule": format!("ether dst {POD_MAC} -> queue 2")}],
               "unicast": POD_MAC})
    );
    // A second ADD finds the table right and does not write it again.
    cmd_add(&request("ADD", "c2", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.steer.writes, 1);
    assert!(
        k.steer.rules.contains_key(&12),
        "c2 has queue 3: {:?}",
        k.steer.rules
    );

    // DEL: the unicast address and the rule go, before the device; c2's stay.
    k.calls.clear();
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(pos(&k, "unicast del") < pos(&k, "rule_delete 8"));
    assert!(pos(&k, "rule_delete 8") < pos(&k, "delete_remote"));
    assert_eq!(k.steer.rules.keys().copied().collect::<Vec<_>>(), [12]);
    // Again: already gone is success, and nothing of c2's is touched.
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.steer.rules.keys().copied().collect::<Vec<_>>(), [12]);
    cmd_del(&request("DEL", "c2", conf), &mut k, None, &quiet()).unwrap();
    assert!(k.steer.rules.is_empty() && k.steer.unicast.is_empty());
    // The shared table stays as written.
    assert_eq!(k.steer.table.as_deref(), Some(&t[..]));
}

#[test]
fn admin_refuses_a_pool_queue_in_rss_before_ipam_naming_queue_nic_and_fix() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    k.steer.table = Some(equal_over_all());
    let mut conf = steer_conf(&dir, json!({}), json!({"match": "mac"}));
    conf["ipam"] = json!({"type": "host-local"});
    let err = cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.msg.contains("queue 2") && err.msg.contains("nic0"),
        "{}",
        err.msg
    );
    assert!(
        err.details.contains("ethtool -X nic0 equal 2"),
        "{}",
        err.details
    );
    // Nothing left: no IPAM, no device, no lease, no rule, no RSS write.
    assert!(ipam.calls.borrow().is_empty());
    assert!(k.pods.is_empty() && k.leased_queues().is_empty());
    assert!(k.steer.rules.is_empty() && k.steer.unicast.is_empty() && k.steer.writes == 0);
    assert!(dir.files().is_empty());

    // An unreadable RSS is refused the same way, with how to restore it.
    k.steer.table = None;
    let err = cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.details.contains("ethtool -X nic0 default"),
        "{}",
        err.details
    );

    // So is a driver that reports no table at all.
    k.steer.table = Some(vec![]);
    let err = cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(err.msg.contains("no RSS indirection table"), "{}", err.msg);
    assert!(ipam.calls.borrow().is_empty() && k.pods.is_empty());

    // After `ethtool -X nic0 equal 2`: passes.
    k.steer.table = Some((0..16).map(|i| i % 2).collect());
    cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap();
    assert_eq!(k.steer.writes, 0, "admin never writes RSS");
    assert_eq!(k.steer.rules.len(), 1);

    // A pool in the middle gets the weight form.
    let pool = crate::cni::config::QueueSet::parse("2-3").unwrap();
    assert_eq!(
        steer::fix_command("nic0", &pool, 6),
        "ethtool -X nic0 weight 1 1 0 0 1 1"
    );
}

#[test]
fn several_queues_get_a_context_and_a_failure_rolls_back_unicast_rules_context_in_order() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(&dir, json!({"queues": 2}), json!({"match": "mac"}));
    cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert_eq!(
        k.steer.contexts[&1],
        [2, 3].repeat(8),
        "a context over exactly 2-3"
    );
    assert_eq!(
        k.steer.rules[&8].action,
        crate::kernel::ethtool::RuleAction::Context(1)
    );
    let st = &dir.info("c1")["netkit-lease"]["steering"];
    assert_eq!(st["context"], 1);
    assert_eq!(
        st["rules"][0]["rule"],
        format!("ether dst {POD_MAC} -> context 1")
    );
    cmd_del(&request("DEL", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    assert!(k.steer.contexts.is_empty() && k.steer.rules.is_empty());

    // configure_pod fails after the steering: everything it did is undone, in reverse.
    k.calls.clear();
    k.fail_on = Some("configure_pod");
    cmd_add(&request("ADD", "c2", conf), &mut k, None, &quiet()).unwrap_err();
    let (u, r, c, d) = (
        pos(&k, "unicast del"),
        pos(&k, "rule_delete"),
        pos(&k, "rss_delete"),
        pos(&k, "delete_single"),
    );
    assert!(u < r && r < c && c < d, "{:?}", k.calls);
    assert!(k.steer.contexts.is_empty() && k.steer.rules.is_empty() && k.steer.unicast.is_empty());
    assert!(k.pods.is_empty() && dir.files().is_empty());
}

#[test]
fn match_ip_steers_each_ipam_address_and_a_failed_rule_leaves_nothing() {
    let (mut k, ipam, dir) = (FakeKernel::with_nic(), FakeIpam::default(), DevDir::new());
    let mut conf = lease_conf(
        &dir,
        "pair",
        json!({"allowedQueues": "2-7", "steering": {"match": "ip"}}),
    );
    conf["ipam"] = json!({"type": "host-local"});
    cmd_add(
        &request("ADD", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap();
    assert_eq!(
        k.steer.rules[&8].to_string(),
        "rule 8: ip4 dst 10.1.0.5 -> queue 2"
    );
    assert!(k.steer.unicast.is_empty(), "no MAC for match ip");
    cmd_del(
        &request("DEL", "c1", conf.clone()),
        &mut k,
        Some(&ipam),
        &quiet(),
    )
    .unwrap();
    assert!(k.steer.rules.is_empty());

    k.fail_on = Some("rule_insert");
    let err = cmd_add(&request("ADD", "c1", conf), &mut k, Some(&ipam), &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(k.steer.rules.is_empty() && k.pods.is_empty() && k.devices.is_empty());
    assert!(k.leased_queues().is_empty());
}

#[test]
fn a_nic_without_ntuple_or_contexts_is_113_naming_the_nic_and_the_feature() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    k.steer.ntuple = false;
    let conf = steer_conf(&dir, json!({"queues": 2}), json!({"match": "mac"}));
    let err = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.msg.contains("nic0") && err.msg.contains("ntuple"),
        "{}",
        err.msg
    );
    assert!(
        err.details.contains("ethtool -K nic0 ntuple on"),
        "{}",
        err.details
    );
    assert!(k.pods.is_empty(), "refused before any device");

    k.steer.ntuple = true;
    k.steer.contexts_supported = false;
    let err = cmd_add(&request("ADD", "c1", conf), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, errcodes::STEERING);
    assert!(
        err.msg.contains("nic0")
            && err.msg.contains("RSS contexts")
            && err.msg.contains("EOPNOTSUPP"),
        "{}",
        err.msg
    );
    assert!(k.pods.is_empty() && k.steer.rules.is_empty() && dir.files().is_empty());
}

#[test]
fn check_names_a_changed_rule_a_changed_context_and_rss_over_the_pool() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(
        &dir,
        json!({"queues": 2}),
        json!({"rss": "exclude-pool", "match": "mac"}),
    );
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf.clone();
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    let run = |k: &mut FakeKernel| cmd_check(&request("CHECK", "c1", check.clone()), k, None);
    run(&mut k).unwrap();

    // The context now spreads elsewhere.
    k.steer.contexts.insert(1, vec![2, 4]);
    let err = run(&mut k).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(
        err.msg.contains("context 1") && err.msg.contains("[2, 4]"),
        "{}",
        err.msg
    );
    k.steer.contexts.insert(1, vec![2, 3]);

    // The rule was rewritten to a queue.
    let mut rule = k.steer.rules[&8];
    rule.action = crate::kernel::ethtool::RuleAction::Queue(5);
    k.steer.rules.insert(8, rule);
    let err = run(&mut k).unwrap_err();
    assert!(
        err.msg.contains("rule 8") && err.msg.contains("queue 5"),
        "{}",
        err.msg
    );
    k.steer.rules.remove(&8);
    let err = run(&mut k).unwrap_err();
    assert!(
        err.msg.contains("rule 8") && err.msg.contains("gone"),
        "{}",
        err.msg
    );
    k.steer.rules.clear();
    let _ = k.steer.contexts.remove(&1);

    // Someone reset the default table.
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(&dir, json!({}), json!({"rss": "exclude-pool"}));
    let r = cmd_add(&request("ADD", "c1", conf.clone()), &mut k, None, &quiet()).unwrap();
    let mut check = conf.clone();
    check["prevResult"] = r.to_json(crate::cni::CniVersion::V1_1_0);
    cmd_check(&request("CHECK", "c1", check.clone()), &mut k, None).unwrap();
    k.steer.table = Some(equal_over_all());
    let err = cmd_check(&request("CHECK", "c1", check), &mut k, None).unwrap_err();
    assert_eq!(err.code, errcodes::CHECK_FAILED);
    assert!(
        err.msg.contains("default RSS context") && err.msg.contains("queue 2"),
        "{}",
        err.msg
    );
}

#[test]
fn del_and_gc_sweep_what_a_killed_add_left_and_keep_live_pods_steering() {
    use crate::kernel::ethtool::{FlowMatch, FlowRule, RuleAction};
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let conf = steer_conf(&dir, json!({}), json!({"match": "mac"}));
    // A live pod on queue 2.
    cmd_add(
        &request("ADD", "live", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    // A killed ADD left: a rule for queue 5 (unleased) with its unicast address, and a
    // context over 6-7 nothing points at. And an admin's rule in the range, to another queue.
    let mac = [2, 0, 0, 0, 0, 9];
    k.steer.rules.insert(
        20,
        FlowRule {
            location: 20,
            matches: FlowMatch::EtherDst(mac),
            action: RuleAction::Queue(5),
        },
    );
    k.steer.unicast.insert(mac);
    k.steer.contexts.insert(7, vec![6, 7]);
    k.steer.rules.insert(
        24,
        FlowRule {
            location: 24,
            matches: FlowMatch::EtherDst([2, 0, 0, 0, 0, 0x10]),
            action: RuleAction::Queue(1),
        },
    );
    // DEL of an attachment that never got a record: its sweep cleans up.
    cmd_del(
        &request("DEL", "killed", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(
        k.steer.rules.keys().copied().collect::<Vec<_>>(),
        [8, 24],
        "the live pod's and the admin's rules stay"
    );
    assert!(!k.steer.unicast.contains(&mac) && k.steer.unicast.len() == 1);
    assert!(k.steer.contexts.is_empty());

    // A stale rule left at the live ADD's own location is replaced by the next ADD there.
    cmd_del(
        &request("DEL", "live", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    k.steer.rules.insert(
        8,
        FlowRule {
            location: 8,
            matches: FlowMatch::EtherDst(mac),
            action: RuleAction::Queue(2),
        },
    );
    cmd_add(
        &request("ADD", "next", conf.clone()),
        &mut k,
        None,
        &quiet(),
    )
    .unwrap();
    assert_eq!(
        k.steer.rules[&8].to_string(),
        format!("rule 8: ether dst {POD_MAC} -> queue 2")
    );

    // GC: the orphan's device goes, then its rule and address; the address also when its
    // rule was deleted by hand (the record names it).
    k.steer.rules.remove(&8);
    let mut gc = conf;
    gc["cni.dev/valid-attachments"] = json!([]);
    cmd_gc(&request("GC", "", gc), &mut k, None, &quiet()).unwrap();
    assert_eq!(k.steer.rules.keys().copied().collect::<Vec<_>>(), [24]);
    assert!(k.steer.unicast.is_empty(), "{:?}", k.steer.unicast);
    assert!(dir.files().is_empty());
}

#[test]
fn networks_steering_one_nic_must_name_the_same_pool_and_rule_base() {
    let (mut k, dir) = (FakeKernel::with_nic(), DevDir::new());
    let a = steer_conf(
        &dir,
        json!({}),
        json!({"rss": "exclude-pool", "match": "mac"}),
    );
    cmd_add(&request("ADD", "c1", a), &mut k, None, &quiet()).unwrap();
    let mut b = steer_conf(
        &dir,
        json!({"allowedQueues": "4-7"}),
        json!({"rss": "exclude-pool"}),
    );
    b["name"] = json!("othernet");
    let err = cmd_add(&request("ADD", "c2", b.clone()), &mut k, None, &quiet()).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(
        err.msg.contains("lease.allowedQueues")
            && err.msg.contains("4-7")
            && err.msg.contains("2-7"),
        "{}",
        err.msg
    );
    b["lease"]["allowedQueues"] = json!("2-7");
    b["lease"]["steering"]["match"] = json!("mac");
    b["lease"]["steering"]["ruleBase"] = json!(100);
    let err = cmd_add(&request("ADD", "c2", b.clone()), &mut k, None, &quiet()).unwrap_err();
    assert!(err.msg.contains("lease.steering.ruleBase"), "{}", err.msg);
    b["lease"]["steering"]["ruleBase"] = json!(0);
    cmd_add(&request("ADD", "c2", b), &mut k, None, &quiet()).unwrap();
}
