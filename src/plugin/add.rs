//! ADD: the free refusals before IPAM, then the steps that build the attachment, and the undo
//! that takes a failed ADD back to where it started.

use std::net::IpAddr;
use std::path::Path;

use crate::cni::{self, CniError, CniResult, Interface, Route};
use crate::config::{LeaseConsumer, Pairing, XdpConfig};
use crate::hostrouting::HostRoutingConfig;
use crate::kernel::link::Marker;
use crate::logging::Logger;
use crate::xdp::PodHandoff;

use super::dataplane::*;
use super::del::own_primary;
use super::lease::{self, LeasePlan, Leased};
use super::plan::{host_plan, pod_plan};
use super::{
    devinfo, devinfo_error, dp_error, errcodes, host_routing_error, injected, kernel_error, pod_id,
    steer, xdp_error, IpamDelegate, Request,
};

/// ADD, as ptp's `cmdAdd`: check what can be refused for free (the lease plan: master, kernel,
/// pool, cap, NIC range; an existing attachment), then IPAM, then [`Add::run`]'s steps: the device
/// (a pair with its peer created directly in the pod netns, or a single device in the pod netns),
/// the leases onto the pod-side device, the XDP steering, the pod side, the host side and the
/// device-info file. A failure after IPAM hands the [`AddUndo`] that the steps filled back to
/// [`AddUndo::roll_back`]: only what this invocation did is undone, nothing that existed before.
pub fn cmd_add(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<CniResult, CniError> {
    let marker = req.marker()?;
    if req.conf.pairing == Pairing::Pair && ipam.is_none() {
        return Err(CniError::invalid_config(
            "pairing \"pair\" needs an `ipam` block",
            "field ipam",
        ));
    }
    dp.validate_netns(req.netns())
        .map_err(|e| dp_error(e, req))?;
    // Before IPAM and before any device: a request the pool, the cap or the NIC can never serve,
    // or an exhausted pool, costs nothing to refuse here.
    let plan = match &req.conf.lease {
        Some(l) => Some(lease::prepare(
            dp,
            l,
            &req.env.args,
            req.conf.runtime_config.as_ref(),
        )?),
        None => None,
    };
    // Held to the end of this ADD, rollback included: see refuse_xdp_for_memory_provider.
    let _nic_guard = match (&plan, &req.conf.lease) {
        (Some(p), Some(l)) if req.conf.lease_consumer() == Some(LeaseConsumer::MemoryProvider) => {
            Some(refuse_xdp_for_memory_provider(dp, &l.bpffs, &p.master)?)
        }
        _ => None,
    };
    refuse_existing(req, dp, &marker)?;
    // Still before IPAM: a NIC that cannot steer, or an RSS table over the pool, is refused
    // for free; `exclude-pool` writes the default table here, before any queue is leased.
    let steer_prep = match (&plan, &req.conf.lease) {
        (Some(p), Some(l)) => Some(steer::prepare(dp, l, p, log)?),
        _ => None,
    };

    let mut undo = AddUndo::new(req, marker.clone());
    let addresses = match ipam {
        Some(ipam) => {
            let r = ipam.add()?;
            undo.push(Undo::Ipam(ipam));
            log.debug(format_args!("ipam gave {} address(es)", r.ips.len()));
            r
        }
        None => CniResult::default(),
    };
    let add = Add {
        req,
        marker,
        plan,
        steer_prep,
        addresses,
        log,
    };
    add.run(dp, &mut undo).inspect_err(|err| {
        log.warn(format_args!(
            "ADD {} failed, rolling back: {}",
            add.marker, err.msg
        ));
        undo.roll_back(dp, log);
    })
}

/// A network whose leases are for a memory provider is refused on a master carrying any XDP
/// program (any mode): the kernel would refuse the pod's bind later (`__netif_mp_open_rxq`,
/// net/core/netdev_rx_queue.c, checks the *physical* NIC's `dev_xdp_prog_count` after following
/// the lease from the netkit queue), long after the pod started. Checked before IPAM and before
/// any device, so a refusal leaves nothing behind.
///
/// Returns the NIC's lock (the one the XDP dispatcher takes), which the caller holds until its
/// device-info record (the declaration the dispatcher's attach refusal reads) is written: an XDP
/// ADD that would attach asks, under the same lock, whether such leases exist, so the two ADDs
/// cannot both pass their checks.
fn refuse_xdp_for_memory_provider(
    dp: &mut dyn Dataplane,
    bpffs: &Path,
    master: &Master,
) -> Result<NicGuard, CniError> {
    let lock_failed = |e: DpError| {
        if let DpError::Xdp { source, .. } = &e {
            if source.is_lock_timeout() {
                return CniError::try_again_later(
                    e.to_string(),
                    "another plugin operation holds the NIC's directory in bpffs",
                );
            }
        }
        CniError::plugin_specific(
            errcodes::MEMORY_PROVIDER_CONFLICT,
            format!(
                "cannot check lease master {} for XDP programs: {e}",
                master.name
            ),
            format!(
                "a memory-provider network locks the NIC's directory under lease.bpffs ({}), the lock the XDP dispatcher takes",
                bpffs.display()
            ),
        )
    };
    let guard = dp.nic_lock(bpffs, master.ifindex).map_err(lock_failed)?;
    let progs = dp.nic_xdp(master.ifindex, &guard).map_err(lock_failed)?;
    if progs.is_empty() {
        return Ok(guard);
    }
    let owners: Vec<String> = progs.iter().map(ToString::to_string).collect();
    Err(CniError::plugin_specific(
        errcodes::MEMORY_PROVIDER_CONFLICT,
        format!(
            "lease master {} (ifindex {}) carries {}: its leases are for a memory provider (lease.consumer), which the kernel refuses to bind on a NIC with any XDP program",
            master.name,
            master.ifindex,
            owners.join(" and ")
        ),
        "net/core/netdev_rx_queue.c: \"unable to custom memory provider to device with XDP program attached\"; use another NIC, or DEL the XDP network's attachments (or detach the program) first",
    ))
}

/// Refuses a second ADD of the same attachment before IPAM: a rollback after IPAM would release
/// every address of this container id + ifname, including those of the live attachment.
fn refuse_existing(req: &Request, dp: &mut dyn Dataplane, marker: &Marker) -> Result<(), CniError> {
    if req.conf.pairing == Pairing::Single {
        let existing = dp
            .observe(marker, Some(req.netns()), req.ifname())
            .map_err(|e| dp_error(e, req))?;
        if let Some(pod) = existing.pod {
            let whose = if pod.marker.as_ref() == Some(marker) {
                "this attachment's device"
            } else {
                "a device this attachment does not own"
            };
            return Err(CniError::plugin_specific(
                errcodes::ALREADY_EXISTS,
                format!(
                    "interface {} already exists in the pod netns {} ({whose})",
                    req.ifname(),
                    req.netns().display()
                ),
                format!("attachment {marker}; DEL it first"),
            ));
        }
    } else {
        let existing = dp
            .observe(marker, None, req.ifname())
            .map_err(kernel_error)?;
        if existing.host.is_some() {
            return Err(CniError::plugin_specific(
                errcodes::ALREADY_EXISTS,
                format!(
                    "attachment {marker} already exists (host device {})",
                    marker.host_ifname()
                ),
                "CNI_CONTAINERID and CNI_IFNAME name a live attachment; DEL it first",
            ));
        }
    }
    Ok(())
}

/// One step an ADD took, as its rollback undoes it. Pushed onto [`AddUndo`] as the step is
/// taken: a step whose call can fail half-way (XDP steering, NIC steering, host routing, the
/// device-info file) before the call, since its undo is idempotent and finds only what exists;
/// the device once created, since a failed create leaves nothing, and a device of the same name
/// that made it fail may be another attachment's. The leases need no step of their own: they
/// end with the device.
enum Undo<'a> {
    /// IPAM gave addresses: IPAM DEL releases them.
    Ipam(&'a dyn IpamDelegate),
    /// The device exists: deleting it also ends its leases and its host routes.
    Device,
    /// The master's dispatcher this ADD may have attached or steered.
    Xdp { conf: &'a XdpConfig, master: u32 },
    /// The NIC's rules, context and unicast address this ADD made, filled as they are made.
    Steering(steer::SteerUndo),
    /// BPF host routing may hold the pod's addresses.
    HostRouting(&'a HostRoutingConfig),
    /// The device-info file may exist.
    DeviceInfo { dir: &'a Path },
}

impl Undo<'_> {
    /// Undone only once the device is gone, whatever was pushed after it: the XDP steering
    /// (resetting a queue that is still leased would hand its frames to the host) and the
    /// device-info file (the record of the leases outlives them, as in DEL; it is what tells
    /// the dispatcher that memory-provider leases exist on the NIC).
    fn waits_for_device(&self) -> bool {
        matches!(self, Undo::Xdp { .. } | Undo::DeviceInfo { .. })
    }
}

/// What an ADD has done so far, so that a failure undoes exactly that, and nothing that existed
/// before: the steps it took, in the order it took them.
struct AddUndo<'a> {
    req: &'a Request,
    marker: Marker,
    steps: Vec<Undo<'a>>,
}

impl<'a> AddUndo<'a> {
    fn new(req: &'a Request, marker: Marker) -> Self {
        AddUndo {
            req,
            marker,
            steps: Vec::new(),
        }
    }

    fn push(&mut self, step: Undo<'a>) {
        self.steps.push(step);
    }

    /// A NIC-steering step, pushed before the first change, for [`steer::apply`] to fill.
    fn steering(&mut self) -> &mut steer::SteerUndo {
        self.steps.push(Undo::Steering(steer::SteerUndo::default()));
        match self.steps.last_mut() {
            Some(Undo::Steering(s)) => s,
            _ => unreachable!("pushed above"),
        }
    }

    /// Undoes the steps in reverse, except that those that wait for the device
    /// ([`Undo::waits_for_device`]) run right after it, in the order they were taken; so the
    /// order is DEL's: host routing and the NIC's steering, the device (and with it the leases
    /// and host routes), the XDP steering, the device-info file, IPAM. Failures are logged, not
    /// returned: the ADD's own error is what the runtime must see.
    fn roll_back(mut self, dp: &mut dyn Dataplane, log: &Logger) {
        let mut waiting = Vec::new();
        while let Some(step) = self.steps.pop() {
            let device_left = self.steps.iter().any(|s| matches!(s, Undo::Device));
            if step.waits_for_device() && device_left {
                waiting.push(step);
                continue;
            }
            let device = matches!(step, Undo::Device);
            self.undo(step, dp, log);
            if device {
                for step in waiting.drain(..).rev() {
                    self.undo(step, dp, log);
                }
            }
        }
    }

    fn undo(&self, step: Undo, dp: &mut dyn Dataplane, log: &Logger) {
        let marker = &self.marker;
        match step {
            Undo::Ipam(ipam) => {
                if let Err(e) = ipam.del(marker.container_id(), marker.ifname()) {
                    log.error(format_args!("rollback: IPAM DEL failed: {}", e.msg));
                }
            }
            Undo::Device => {
                let deleted = match self.req.conf.pairing {
                    Pairing::Single => dp.delete_single(self.req.netns(), marker),
                    Pairing::Pair => dp.delete(marker),
                };
                if let Err(e) = deleted {
                    log.error(format_args!(
                        "rollback: cannot delete the device of {marker}: {e}"
                    ));
                }
            }
            Undo::Xdp { conf, master } => {
                match pod_id(marker).map(|pod| dp.xdp_release(conf, master, &pod)) {
                    Ok(Ok(r)) => log.debug(format_args!(
                        "rollback: XDP queues {:?} given back, dispatcher detached: {}",
                        r.reset, r.detached
                    )),
                    Ok(Err(e)) => log.error(format_args!(
                        "rollback: cannot release the XDP steering of {marker}: {e}"
                    )),
                    Err(e) => log.error(format_args!("rollback: {}", e.msg)),
                }
            }
            // The NIC stops steering frames to queues about to be given back.
            Undo::Steering(s) => s.roll_back(dp, log),
            // Only the entries of the host device that names this attachment, as in DEL.
            Undo::HostRouting(conf) => {
                let ours = own_primary(dp, marker).unwrap_or_else(|e| {
                    log.warn(format_args!("rollback: host device of {marker}: {e}"));
                    None
                });
                if let Err(e) = dp.host_routing().release(conf, ours, log) {
                    let e = host_routing_error(e);
                    log.error(format_args!("rollback: host routing: {e}"));
                }
            }
            Undo::DeviceInfo { dir } => {
                if let Err(e) = devinfo::remove(dir, marker) {
                    log.error(format_args!("rollback: {e}"));
                }
            }
        }
    }
}

/// One ADD after IPAM: what it was asked, what was planned and what IPAM gave.
struct Add<'a> {
    req: &'a Request,
    marker: Marker,
    plan: Option<LeasePlan>,
    /// What the steering check before IPAM learnt of the NIC.
    steer_prep: Option<steer::SteerPrep>,
    /// IPAM's result; empty for a single device without IPAM.
    addresses: CniResult,
    log: &'a Logger,
}

impl<'a> Add<'a> {
    fn single(&self) -> bool {
        self.req.conf.pairing == Pairing::Single
    }

    /// IPAM's addresses for the pod, without their prefixes.
    fn pod_ips(&self) -> Vec<IpAddr> {
        self.addresses
            .ips
            .iter()
            .map(|ip| ip.address.addr())
            .collect()
    }

    fn run(&self, dp: &mut dyn Dataplane, undo: &mut AddUndo<'a>) -> Result<CniResult, CniError> {
        crate::failpoint::hit("add-after-ipam").map_err(injected)?;
        let created = self.create_device(dp)?;
        // Only once created: a device at this name that made the create fail may be another
        // attachment's (see Undo).
        undo.push(Undo::Device);
        crate::failpoint::hit("add-after-device").map_err(injected)?;
        let leased = self.lease_queues(dp, &created)?;
        let handoff = self.steer_xdp(dp, &leased, undo)?;
        let steering = self.steer_nic(dp, &created, &leased, undo)?;
        let (pod, reported_routes) = self.setup_pod(dp, &created)?;
        crate::failpoint::hit("add-after-pod-config").map_err(injected)?;
        if !self.single() {
            self.setup_host(dp, &created, &pod)?;
            crate::failpoint::hit("add-after-host-config").map_err(injected)?;
            self.setup_host_routing(dp, &created, undo)?;
        }
        self.write_device_info(&created, &leased, handoff.as_ref(), steering, undo)?;
        let result = self.result(&created, reported_routes);
        crate::failpoint::hit("add-before-result").map_err(injected)?;
        Ok(result)
    }

    /// A pair (its peer created directly in the pod netns) or a single device in the pod netns,
    /// with one RX queue of its own plus one per lease on the pod side.
    fn create_device(&self, dp: &mut dyn Dataplane) -> Result<Created, CniError> {
        let conf = &self.req.conf;
        let rx_queues = self.plan.as_ref().map(|p| 1 + p.count());
        let created = if self.single() {
            dp.create_single(&SingleSpec {
                marker: self.marker.clone(),
                netns: self.req.netns().to_path_buf(),
                mode: conf.mode,
                headroom: conf.headroom,
                tailroom: conf.tailroom,
                mtu: conf.mtu,
                rx_queues: rx_queues.unwrap_or(1),
            })
        } else {
            dp.create_pair(&PairSpec {
                marker: self.marker.clone(),
                netns: self.req.netns().to_path_buf(),
                mode: conf.mode,
                policy: conf.policy,
                peer_policy: conf.peer_policy,
                scrub: conf.scrub,
                peer_scrub: conf.peer_scrub,
                headroom: conf.headroom,
                tailroom: conf.tailroom,
                mtu: conf.mtu,
                peer_rx_queues: rx_queues,
            })
        };
        created.map_err(|e| dp_error(e, self.req))
    }

    /// Leases go onto the pod-side device: the peer of a pair (the kernel refuses the primary)
    /// or the single device.
    fn lease_queues(
        &self,
        dp: &mut dyn Dataplane,
        created: &Created,
    ) -> Result<Vec<Leased>, CniError> {
        let (Some(plan), Some(lconf)) = (&self.plan, &self.req.conf.lease) else {
            return Ok(vec![]);
        };
        let target = LeaseTarget {
            netns: self.req.netns().to_path_buf(),
            ifindex: created.pod_ifindex,
            master_ifindex: plan.master.ifindex,
        };
        lease::lease_queues(dp, lconf, &target, plan, self.log)
    }

    /// Steered after the leases exist: the virtual queue ids are the kernel's answer to
    /// queue-create. Until then the queues' frames keep their range action.
    fn steer_xdp(
        &self,
        dp: &mut dyn Dataplane,
        leased: &[Leased],
        undo: &mut AddUndo<'a>,
    ) -> Result<Option<PodHandoff>, CniError> {
        let (Some(plan), Some(x)) = (&self.plan, self.req.conf.xdp.as_ref()) else {
            return Ok(None);
        };
        if leased.is_empty() {
            return Ok(None);
        }
        let pod = pod_id(&self.marker)?;
        undo.push(Undo::Xdp {
            conf: x,
            master: plan.master.ifindex,
        });
        let queues: Vec<SteerQueue> = leased
            .iter()
            .map(|l| SteerQueue {
                physical: l.physical,
                virtual_id: l.virtual_id,
            })
            .collect();
        let h = dp
            .xdp_steer(
                x,
                plan.master.ifindex,
                &pod,
                &queues,
                &self
                    .req
                    .conf
                    .lease
                    .as_ref()
                    .expect("a plan")
                    .device_info_dir,
            )
            .map_err(xdp_error)?;
        crate::failpoint::hit("add-after-xdp").map_err(injected)?;
        self.log.debug(format_args!(
            "XDP: queues {:?} of {} steered to {}",
            h.queues,
            plan.master.name,
            h.xskmap_pin.display()
        ));
        Ok(Some(h))
    }

    /// The NIC's steering ([`steer::apply`]): after the leases and the dispatcher, so the rule
    /// that brings the pod's frames to its queues is the last thing to appear; before the pod
    /// side is configured, which steering does not need.
    fn steer_nic(
        &self,
        dp: &mut dyn Dataplane,
        created: &Created,
        leased: &[Leased],
        undo: &mut AddUndo<'a>,
    ) -> Result<Option<devinfo::SteeringInfo>, CniError> {
        let (Some(plan), Some(prep)) = (&self.plan, &self.steer_prep) else {
            return Ok(None);
        };
        let mac = self
            .req
            .conf
            .runtime_config
            .as_ref()
            .and_then(|rc| rc.get("mac"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .or_else(|| created.pod_mac.clone());
        let matches = steer::matches_for(&prep.steering, mac.as_deref(), &self.pod_ips())?;
        steer::apply(dp, plan, prep, leased, &matches, undo.steering(), self.log).map(Some)
    }

    /// The pod side: addresses and routes on the pod-side device. Returns the plan (the host side
    /// routes to its addresses) and the routes to report.
    fn setup_pod(
        &self,
        dp: &mut dyn Dataplane,
        created: &Created,
    ) -> Result<(PodPlan, Vec<Route>), CniError> {
        let (plan, reported_routes) = if self.single() {
            // No host side, so no gateway to route through: just the addresses, with their
            // subnet routes, on the device the leased queues deliver to.
            let plan = PodPlan {
                ifname: self.req.ifname().to_string(),
                ifindex: created.pod_ifindex,
                addrs: self.addresses.ips.iter().map(|ip| ip.address).collect(),
                routes: vec![],
                prefix_routes: true,
            };
            (plan, vec![])
        } else {
            let (mut plan, routes) = pod_plan(self.req.ifname(), &self.addresses)?;
            plan.ifindex = created.pod_ifindex;
            (plan, routes)
        };
        dp.configure_pod(self.req.netns(), &plan)
            .map_err(|e| dp_error(e, self.req))?;
        Ok((plan, reported_routes))
    }

    /// The host side of a pair: the gateways on the primary and a host route to each pod address.
    fn setup_host(
        &self,
        dp: &mut dyn Dataplane,
        created: &Created,
        pod: &PodPlan,
    ) -> Result<(), CniError> {
        let plan = host_plan(created.host_ifindex, &self.addresses, pod);
        dp.configure_host(&plan).map_err(|e| dp_error(e, self.req))
    }

    /// BPF host routing (`hostRouting`): after the host route exists (the egress FIB lookup and
    /// the stack agree on the pod), before the result.
    fn setup_host_routing(
        &self,
        dp: &mut dyn Dataplane,
        created: &Created,
        undo: &mut AddUndo<'a>,
    ) -> Result<(), CniError> {
        let Some(h) = self.req.conf.host_routing.as_ref() else {
            return Ok(());
        };
        undo.push(Undo::HostRouting(h));
        dp.host_routing()
            .add(h, created.host_ifindex, &self.pod_ips(), self.log)
            .map_err(host_routing_error)?;
        // Reached only with `hostRouting.mode: bpf`: the uplink's program, the pod's map entries
        // and its egress program all exist here, none of them yet in a result.
        crate::failpoint::hit("add-after-host-routing").map_err(injected)
    }

    /// The device-info file of a leasing attachment, for Multus and the pod's consumers.
    fn write_device_info(
        &self,
        created: &Created,
        leased: &[Leased],
        handoff: Option<&PodHandoff>,
        steering: Option<devinfo::SteeringInfo>,
        undo: &mut AddUndo<'a>,
    ) -> Result<(), CniError> {
        let (Some(plan), Some(lconf)) = (&self.plan, self.req.conf.lease.as_ref()) else {
            return Ok(());
        };
        let info = device_info(
            self.req,
            &self.marker,
            created,
            plan,
            leased,
            handoff,
            steering,
        );
        undo.push(Undo::DeviceInfo {
            dir: &lconf.device_info_dir,
        });
        let path =
            devinfo::write(&lconf.device_info_dir, &self.marker, &info).map_err(devinfo_error)?;
        crate::failpoint::hit("add-after-device-info").map_err(injected)?;
        self.log.info(format_args!(
            "ADD {}: leased {} (ifindex {}) queues [{}] into {} (ifindex {}) in {}; device info {}",
            self.marker,
            plan.master.name,
            plan.master.ifindex,
            leased
                .iter()
                .map(|l| format!("{}->{}", l.physical, l.virtual_id))
                .collect::<Vec<_>>()
                .join(", "),
            self.req.ifname(),
            created.pod_ifindex,
            self.req.netns().display(),
            path.display()
        ));
        Ok(())
    }

    /// This plugin's interfaces (the host device of a pair, then the pod's) and IPAM's addresses
    /// on the pod's; chained after another plugin, its `prevResult` extended with them.
    fn result(&self, created: &Created, routes: Vec<Route>) -> CniResult {
        let mut interfaces = Vec::new();
        if !self.single() {
            interfaces.push(Interface {
                name: created.host_ifname.clone(),
                mac: created.host_mac.clone(),
                ..Default::default()
            });
        }
        interfaces.push(Interface {
            name: self.req.ifname().to_string(),
            mac: created.pod_mac.clone(),
            mtu: self.req.conf.mtu,
            sandbox: Some(self.req.netns().display().to_string()),
            ..Default::default()
        });
        let pod_idx = interfaces.len() - 1;
        let on_pod = |pos: usize| {
            self.addresses.ips.iter().map(move |ip| cni::IpConfig {
                interface: Some(pos),
                ..ip.clone()
            })
        };
        let Some(prev) = &self.req.conf.prev_result else {
            return CniResult {
                interfaces,
                ips: on_pod(pod_idx).collect(),
                routes,
                dns: self.addresses.dns.clone(),
            };
        };
        // Our IPs point at our interface's position in the merged list.
        let mut merged = prev.clone();
        let positions = merged.merge(CniResult {
            interfaces,
            ips: vec![],
            routes,
            dns: self.addresses.dns.clone(),
        });
        merged.ips.extend(on_pod(positions[pod_idx]));
        merged
    }
}

fn device_info(
    req: &Request,
    marker: &Marker,
    created: &Created,
    plan: &LeasePlan,
    leased: &[Leased],
    handoff: Option<&PodHandoff>,
    steering: Option<devinfo::SteeringInfo>,
) -> devinfo::DeviceInfo {
    devinfo::DeviceInfo::new(devinfo::LeaseInfo {
        network: marker.network().to_string(),
        container_id: marker.container_id().to_string(),
        interface: marker.ifname().to_string(),
        pairing: if req.conf.pairing == Pairing::Single {
            "single"
        } else {
            "pair"
        }
        .into(),
        ifindex: created.pod_ifindex,
        sandbox: req.netns().display().to_string(),
        master: devinfo::MasterInfo {
            name: plan.master.name.clone(),
            ifindex: plan.master.ifindex,
        },
        queues: leased
            .iter()
            .map(|l| devinfo::QueueMap {
                physical: l.physical,
                virtual_id: l.virtual_id,
            })
            .collect(),
        xdp: handoff.map(devinfo::XdpInfo::from_handoff),
        consumer: req.conf.lease_consumer().map(|c| c.as_str().to_string()),
        steering,
    })
}
