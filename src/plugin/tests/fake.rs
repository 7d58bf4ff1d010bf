//! The recording fakes: a kernel (one NIC, its leases, its XDP dispatcher and steering) that
//! logs each change in `calls`, and an IPAM that logs each call.

use super::*;

/// The physical NIC of the fake node.
pub(super) struct FakeNic {
    pub(super) name: String,
    pub(super) ifindex: u32,
    pub(super) rx: u32,
    pub(super) up: bool,
    /// physical queue → (lessee's netns id as the node sees it, lessee ifindex, its queue id)
    pub(super) leases: BTreeMap<u32, (Option<i32>, u32, u32)>,
    pub(super) xsk: Vec<u32>,
}

/// A pod-side netkit device: a pair's peer or a single device.
#[derive(Clone)]
pub(super) struct FakePod {
    pub(super) netns: PathBuf,
    pub(super) ifindex: u32,
    pub(super) single: bool,
    /// RX queues allocated (1 + leases it can take).
    pub(super) rx_cap: u32,
    pub(super) leased: u32,
    /// What `configure_pod` put on it, as CHECK observes it.
    pub(super) addrs: Vec<IpCidr>,
    pub(super) routes: Vec<PlannedRoute>,
}

#[derive(Default)]
pub(super) struct FakeKernel {
    pub(super) calls: Vec<String>,
    /// Host devices by marker string.
    pub(super) devices: HashMap<String, Marker>,
    /// Pod-side devices by marker string.
    pub(super) pods: HashMap<String, FakePod>,
    pub(super) next_ifindex: u32,
    pub(super) fail_on: Option<&'static str>,
    pub(super) netkit: bool,
    pub(super) lease_ok: bool,
    pub(super) nic: Option<FakeNic>,
    /// Queues a concurrent ADD takes just before ours asks for them: our queue-create on them
    /// answers EBUSY.
    pub(super) race: Vec<u32>,
    /// Error (errno, extack) every queue-create answers, e.g. a virtual master.
    pub(super) lease_refusal: Option<(Errno, &'static str)>,
    /// The master's dispatcher.
    pub(super) xdp: FakeXdp,
    /// What `nic_xdp` reports on the master.
    pub(super) nic_xdp: Vec<NicXdpProgram>,
    /// The master's RSS, rules and unicast filter.
    pub(super) steer: FakeSteer,
    /// Routes on the host devices (every host device is ifindex 10), as CHECK observes them.
    pub(super) host_routes: Vec<IpCidr>,
    /// BPF host routing's map: pod address → the primary (ifindex) it is redirected to.
    pub(super) host_routed: BTreeMap<IpAddr, u32>,
    /// What the next host-routing ADD answers instead of routing (a refusal, a held lock).
    pub(super) host_routing_refusal: Option<crate::hostrouting::HostRoutingError>,
}

/// The fake NIC's steering state. Reads are not recorded in `calls` (only what changes the
/// NIC is, so orderings stay readable).
pub(super) struct FakeSteer {
    pub(super) ntuple: bool,
    /// `None`: rss-get fails (a driver without get_rxfh).
    pub(super) table: Option<Vec<u32>>,
    pub(super) contexts_supported: bool,
    pub(super) contexts: BTreeMap<u32, Vec<u32>>,
    pub(super) next_context: u32,
    pub(super) rules: BTreeMap<u32, crate::kernel::ethtool::FlowRule>,
    pub(super) unicast: std::collections::BTreeSet<[u8; 6]>,
    /// `rss_set_default` writes.
    pub(super) writes: u32,
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

pub(super) fn eth_err(step: &'static str, errno: Errno) -> DpError {
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
pub(super) struct FakeXdp {
    pub(super) attached: bool,
    /// Attached this many times (an attach while attached would be a second dispatcher).
    pub(super) attaches: u32,
    pub(super) steered: BTreeMap<u32, (String, u32)>,
    /// Pods with an XSKMAP pin.
    pub(super) pins: std::collections::BTreeSet<String>,
    /// The NIC died with the dispatcher attached: pins left for a sweep.
    pub(super) defunct: bool,
    /// Entries the sweep reports it had to leave (junk under other NICs' directories).
    pub(super) sweep_refuses: Vec<String>,
}

/// Every pod netns has this nsid in the node netns.
pub(super) const POD_NSID: i32 = 7;

pub(super) fn kernel_err(op: &'static str, errno: Errno, msg: &str) -> NetdevError {
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

pub(super) fn netdev(step: &'static str, e: NetdevError) -> DpError {
    DpError::Netdev {
        step,
        source: Box::new(e),
    }
}

impl FakeKernel {
    pub(super) fn new() -> Self {
        FakeKernel {
            netkit: true,
            lease_ok: true,
            next_ifindex: 2,
            ..Default::default()
        }
    }
    /// With an 8-queue NIC "nic0" (ifindex 50), up, nothing leased.
    pub(super) fn with_nic() -> Self {
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
    pub(super) fn nic(&mut self) -> &mut FakeNic {
        self.nic.as_mut().unwrap()
    }
    pub(super) fn leased_queues(&self) -> Vec<u32> {
        self.nic
            .as_ref()
            .map(|n| n.leases.keys().copied().collect())
            .unwrap_or_default()
    }
    pub(super) fn step(&mut self, name: &'static str) -> Result<(), DpError> {
        self.calls.push(name.to_string());
        if self.fail_on == Some(name) {
            return Err(DpError::Other(format!("injected failure in {name}")));
        }
        Ok(())
    }
    pub(super) fn add_pod(
        &mut self,
        marker: &Marker,
        netns: &Path,
        single: bool,
        rx_cap: u32,
    ) -> u32 {
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
                addrs: vec![],
                routes: vec![],
            },
        );
        ifindex
    }
    pub(super) fn handoff(&self, conf: &crate::config::XdpConfig, pod: &PodId) -> PodHandoff {
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
    pub(super) fn remove_pod(&mut self, key: &str) -> bool {
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
        self.step("configure_pod")?;
        let pod = self
            .pods
            .values_mut()
            .find(|p| p.netns == netns && p.ifindex == plan.ifindex)
            .expect("asserted above");
        pod.addrs = plan.addrs.clone();
        pod.routes = plan.routes.clone();
        Ok(())
    }
    fn configure_host(&mut self, plan: &HostPlan) -> Result<(), DpError> {
        self.step("configure_host")?;
        for a in &plan.pod_addrs {
            let full = if a.is_ipv4() { 32 } else { 128 };
            self.host_routes.push(IpCidr::new(*a, full).unwrap());
        }
        Ok(())
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
        let pod = netns.and_then(|ns| self.pods.get(&marker.to_string()).filter(|p| p.netns == ns));
        Ok(Observed {
            host_routes: if host.is_some() {
                self.host_routes.clone()
            } else {
                vec![]
            },
            host,
            pod: pod.map(|p| ObservedLink {
                ifindex: p.ifindex,
                is_netkit: true,
                mode: Some(crate::config::Mode::L3),
                marker: p.single.then(|| marker.clone()),
            }),
            pod_addrs: pod.map(|p| p.addrs.clone()).unwrap_or_default(),
            pod_routes: pod.map(|p| p.routes.clone()).unwrap_or_default(),
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
        conf: &crate::config::XdpConfig,
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
        _conf: &crate::config::XdpConfig,
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
        conf: &crate::config::XdpConfig,
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
        _conf: &crate::config::XdpConfig,
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
    fn host_routing(&mut self) -> &mut dyn HostRoutingOps {
        self
    }
    fn xdp_sweep(&mut self, conf: &crate::config::XdpConfig) -> Result<crate::xdp::Swept, DpError> {
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
pub(super) struct FakeIpam {
    pub(super) calls: RefCell<Vec<String>>,
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

/// Host routing as a map of pod addresses to primaries; every call is recorded in `calls`, in
/// the same list as the dataplane's, so orderings across the two can be asserted.
impl HostRoutingOps for FakeKernel {
    fn add(
        &mut self,
        _conf: &HostRoutingConfig,
        primary_ifindex: u32,
        ips: &[IpAddr],
        _log: &Logger,
    ) -> Result<(), HostRoutingError> {
        self.calls
            .push(format!("host_routing_add {primary_ifindex}"));
        if let Some(e) = self.host_routing_refusal.take() {
            return Err(e);
        }
        for ip in ips {
            self.host_routed.insert(*ip, primary_ifindex);
        }
        Ok(())
    }
    fn release(
        &mut self,
        _conf: &HostRoutingConfig,
        primary_ifindex: Option<u32>,
        _log: &Logger,
    ) -> Result<(), HostRoutingError> {
        self.calls
            .push(format!("host_routing_release {primary_ifindex:?}"));
        if let Some(ifindex) = primary_ifindex {
            self.host_routed.retain(|_, i| *i != ifindex);
        }
        Ok(())
    }
    fn check(
        &mut self,
        _conf: &HostRoutingConfig,
        host_ifname: &str,
        ips: &[IpAddr],
    ) -> Result<Result<(), String>, HostRoutingError> {
        self.calls.push("host_routing_check".into());
        Ok(
            match ips.iter().find(|ip| !self.host_routed.contains_key(ip)) {
                Some(ip) => Err(format!(
                    "address {ip} is not routed to host device {host_ifname}"
                )),
                None => Ok(()),
            },
        )
    }
    fn gc(&mut self, _conf: &HostRoutingConfig, _log: &Logger) -> Result<(), HostRoutingError> {
        self.calls.push("host_routing_gc".into());
        Ok(())
    }
}
