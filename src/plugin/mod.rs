//! The CNI verbs. `cmd_add`, `cmd_del`, `cmd_check`, `cmd_gc` and `cmd_status` come first; the
//! pod-side and host-side planning they share follows; the process entry point ([`run`]) last.
//!
//! No state files for the devices: a pair's host device name is derived from (container id,
//! ifname) and its alias carries a [`Marker`] (network, container id, ifname); a single device
//! (lease-only, no host side) carries the marker itself. DEL and GC find everything in the
//! kernel — a single device inside a pod netns through the master NIC's leases. The one file
//! per leasing attachment is its device-info file ([`devinfo`]), written for consumers such as
//! Multus and read back by CHECK to know which leases to expect.

pub mod dataplane;
pub mod devinfo;
pub mod kernel_dp;
pub mod lease;
pub mod steer;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use serde_json::Value;

use crate::cni::config::{LeaseConfig, LeaseConsumer, NetConf, Pairing};
use crate::cni::{
    self, CniEnv, CniError, CniResult, CniVersion, Command, Interface, IpCidr, Route,
};
pub use crate::ipam::delegate::{ExecIpam, IpamDelegate};
use crate::kernel::link::{LinkError, Marker};
use crate::kernel::rtnl::Deletion;
use crate::logging::Logger;
use crate::xdp::{PodHandoff, PodId};
use dataplane::*;
use lease::{LeasePlan, Leased};

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
// ADD

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
            undo.ipam = Some(ipam);
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

/// What an ADD has done so far, so that a failure undoes exactly that. A step whose call can fail
/// half-way (XDP steering, the device-info file) records itself before the call, since its undo
/// is idempotent; the device records itself once created, since a failed create leaves nothing.
struct AddUndo<'a> {
    req: &'a Request,
    marker: Marker,
    /// IPAM gave addresses: IPAM DEL releases them.
    ipam: Option<&'a dyn IpamDelegate>,
    /// The device may exist: deleting it also ends its leases and its host routes.
    device: bool,
    /// The master whose dispatcher this invocation may have attached or steered.
    xdp_master: Option<u32>,
    /// The device-info file may exist.
    device_info: bool,
    /// BPF host routing may hold the pod's addresses.
    host_routing: bool,
    /// The NIC's rules, context and unicast address this ADD made.
    steer: steer::SteerUndo,
}

impl<'a> AddUndo<'a> {
    fn new(req: &'a Request, marker: Marker) -> Self {
        AddUndo {
            req,
            marker,
            ipam: None,
            device: false,
            xdp_master: None,
            device_info: false,
            host_routing: false,
            steer: steer::SteerUndo::default(),
        }
    }

    /// Undoes in DEL's order: the host-routing map entries, the device (its deletion also ends
    /// the leases and the host routes), the XDP steering (after the leases ended, so resetting
    /// the queues cannot hand a leased queue's frames to the host), the device-info file, IPAM.
    /// Failures are logged, not returned: the ADD's own error is what the runtime must see.
    fn roll_back(self, dp: &mut dyn Dataplane, log: &Logger) {
        let marker = &self.marker;
        // First, as in DEL: the NIC stops steering frames to queues about to be given back.
        self.steer.roll_back(dp, log);
        // Before the device, as in DEL: no map entry ever names a deleted primary.
        if let (true, Some(h)) = (self.host_routing, &self.req.conf.host_routing) {
            let ours = own_primary(dp, marker).unwrap_or_else(|e| {
                log.warn(format_args!("rollback: host device of {marker}: {e}"));
                None
            });
            if let Err(e) = crate::hostrouting::hooks::release(h, ours, log) {
                log.error(format_args!("rollback: host routing: {e}"));
            }
        }
        if self.device {
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
        if let (Some(master), Some(x)) = (self.xdp_master, &self.req.conf.xdp) {
            match pod_id(marker).map(|pod| dp.xdp_release(x, master, &pod)) {
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
        if let (true, Some(l)) = (self.device_info, &self.req.conf.lease) {
            if let Err(e) = devinfo::remove(&l.device_info_dir, marker) {
                log.error(format_args!("rollback: {e}"));
            }
        }
        if let Some(ipam) = self.ipam {
            if let Err(e) = ipam.del(marker.container_id(), marker.ifname()) {
                log.error(format_args!("rollback: IPAM DEL failed: {}", e.msg));
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

impl Add<'_> {
    fn single(&self) -> bool {
        self.req.conf.pairing == Pairing::Single
    }

    fn run(&self, dp: &mut dyn Dataplane, undo: &mut AddUndo) -> Result<CniResult, CniError> {
        crate::failpoint::hit("add-after-ipam").map_err(injected)?;
        // A create that fails leaves no device (the Dataplane contract), and a device of the same
        // name that failed it may be another attachment's: only a created device is undone.
        let created = self.create_device(dp)?;
        undo.device = true;
        crate::failpoint::hit("add-after-device").map_err(injected)?;
        let leased = self.lease_queues(dp, &created)?;
        let handoff = self.steer_xdp(dp, &leased, undo)?;
        let steering = self.steer_nic(dp, &created, &leased, undo)?;
        let (pod, reported_routes) = self.setup_pod(dp, &created)?;
        crate::failpoint::hit("add-after-pod-config").map_err(injected)?;
        if !self.single() {
            self.setup_host(dp, &created, &pod)?;
            crate::failpoint::hit("add-after-host-config").map_err(injected)?;
            self.setup_host_routing(&created, undo)?;
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
        undo: &mut AddUndo,
    ) -> Result<Option<PodHandoff>, CniError> {
        let (Some(plan), Some(x)) = (&self.plan, &self.req.conf.xdp) else {
            return Ok(None);
        };
        if leased.is_empty() {
            return Ok(None);
        }
        let pod = pod_id(&self.marker)?;
        undo.xdp_master = Some(plan.master.ifindex);
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
        undo: &mut AddUndo,
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
        let addrs: Vec<IpAddr> = self
            .addresses
            .ips
            .iter()
            .map(|ip| ip.address.addr())
            .collect();
        let matches = steer::matches_for(&prep.steering, mac.as_deref(), &addrs)?;
        steer::apply(dp, plan, prep, leased, &matches, &mut undo.steer, self.log).map(Some)
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
    fn setup_host_routing(&self, created: &Created, undo: &mut AddUndo) -> Result<(), CniError> {
        let Some(h) = &self.req.conf.host_routing else {
            return Ok(());
        };
        undo.host_routing = true;
        let ips: Vec<_> = self
            .addresses
            .ips
            .iter()
            .map(|ip| ip.address.addr())
            .collect();
        crate::hostrouting::hooks::add(h, created.host_ifindex, &ips, self.log)?;
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
        undo: &mut AddUndo,
    ) -> Result<(), CniError> {
        let (Some(plan), Some(lconf)) = (&self.plan, &self.req.conf.lease) else {
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
        undo.device_info = true;
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

// ---------------------------------------------------------------------------------------------
// DEL

/// DEL is idempotent and best effort, as the spec asks: a missing netns, a missing device, a
/// missing master NIC or a repeated DEL all succeed. The device goes first so the pod's traffic
/// stops (and its leases end) before its address can be handed to another pod; IPAM DEL is
/// itself idempotent, so a retry after a failure between the steps is harmless.
///
/// A pair needs no netns: the host device's name is derived, and deleting it removes the peer,
/// the host routes and the peer's leases with it. A single device lives only in the pod netns;
/// when the runtime sends no CNI_NETNS it is found through the master's leases instead.
pub fn cmd_del(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<(), CniError> {
    let marker = req.marker()?;
    // Before the device goes: its addresses stop being redirected to it first. Only those of
    // the host device that names this attachment: after network A's refused ADD (103), the
    // device at the derived name is network B's, and A's DEL must not unroute B's pod.
    if let Some(h) = &req.conf.host_routing {
        let ours = own_primary(dp, &marker).map_err(kernel_error)?;
        crate::hostrouting::hooks::release(h, ours, log)?;
    }
    // Before the device goes too: the NIC stops steering the pod's frames to its queues before
    // they return to the host.
    let steer_master = match &req.conf.lease {
        Some(l) => release_steering(dp, l, &marker, log)?,
        None => None,
    };
    let deleted = match (req.conf.pairing, req.env.netns.as_deref(), &req.conf.lease) {
        (Pairing::Pair, _, _) => dp.delete(&marker),
        // Found by the leases its record names, not by the name or alias the pod may change.
        (Pairing::Single, netns, Some(l)) => lease::delete_single(dp, l, netns, &marker, log),
        (Pairing::Single, Some(netns), None) => dp.delete_single(netns, &marker),
        (Pairing::Single, None, None) => Ok(Deletion::AlreadyGone),
    };
    match deleted {
        Ok(d) => log.debug(format_args!("DEL {marker}: device {d:?}")),
        // A device with our name but another owner's marker is not ours to delete.
        Err(DpError::Link {
            source: LinkError::MarkerMismatch { name, alias, .. },
            ..
        }) => log.warn(format_args!(
            "DEL {marker}: {name} belongs to {alias:?}, left alone"
        )),
        Err(e) => return Err(kernel_error(e)),
    }
    // After the device, whose deletion ended its leases: what an ADD killed before its record
    // was written left behind is found by its location and its queue, now unleased.
    if let (Some(l), Some(master)) = (&req.conf.lease, &steer_master) {
        if l.steering.match_on != crate::cni::config::SteerMatch::None {
            steer::sweep(dp, l, master, log).map_err(kernel_error)?;
        }
    }
    // After the device, whose deletion ended the leases (see the rollback in cmd_add).
    if let (Some(l), Some(x)) = (&req.conf.lease, &req.conf.xdp) {
        release_xdp(dp, l, x, &marker, log)?;
    }
    if let Some(l) = &req.conf.lease {
        devinfo::remove(&l.device_info_dir, &marker).map_err(devinfo_error)?;
    }
    if let Some(ipam) = ipam {
        ipam.del(marker.container_id(), marker.ifname())?;
    }
    Ok(())
}

/// The attachment's rules, context and unicast address, as its record names them; returns the
/// master (if it exists) for the sweep after the device is gone. Already gone is success: a
/// missing record, master or rule means there is nothing (left) to remove, and DEL may run
/// any number of times.
fn release_steering(
    dp: &mut dyn Dataplane,
    l: &LeaseConfig,
    marker: &Marker,
    log: &Logger,
) -> Result<Option<Master>, CniError> {
    let Some(master) = dp.master(&l.master).map_err(kernel_error)? else {
        return Ok(None);
    };
    let record = match devinfo::read(&l.device_info_dir, marker) {
        Ok(r) => r,
        // An unreadable record must not stop DEL; the sweep still finds what is stale.
        Err(e) => {
            log.warn(format_args!("DEL {marker}: {e}"));
            None
        }
    };
    // A NIC re-created under the same name (another ifindex) has none of the recorded rules.
    if let Some(r) = record.filter(|r| r.lease.master.ifindex == master.ifindex) {
        if let Some(st) = &r.lease.steering {
            steer::release(dp, &master, st, log)?;
        }
    }
    Ok(Some(master))
}

/// The attachment's queues go back to their range actions and its XSKMAP pin goes; the last pod
/// on the master detaches the dispatcher. With the master gone there is no dispatcher to open
/// (its link died with the NIC): the dead NIC's pins are swept instead.
///
/// XDP pins are keyed by container id and ifname only, so the pin at this key may be another
/// network's: a DEL for network A after A's ADD was refused with 103 (network B's device holds
/// that ifname) must leave B's steering alone, even when B keeps its records in another
/// directory. The release is skipped while a live device leases the steered queues and no
/// record of this network shows it to be this attachment (see [`held_by_another`]); an alias
/// never decides it.
fn release_xdp(
    dp: &mut dyn Dataplane,
    l: &LeaseConfig,
    x: &crate::cni::config::XdpConfig,
    marker: &Marker,
    log: &Logger,
) -> Result<(), CniError> {
    let pod = pod_id(marker)?;
    if let Some(master) = dp.master(&l.master).map_err(kernel_error)? {
        let devs = lease::leasing_devices(dp, l, log).map_err(kernel_error)?;
        if let Some(holder) = held_by_another(dp, x, master.ifindex, &devs, marker.network(), &pod)
            .map_err(kernel_error)?
        {
            log.warn(format_args!(
                "DEL {marker}: the XDP steering of {pod} is left alone: {holder}"
            ));
            return Ok(());
        }
    }
    match dp.master(&l.master).map_err(kernel_error)? {
        Some(master) => {
            let r = dp.xdp_release(x, master.ifindex, &pod).map_err(xdp_error)?;
            log.debug(format_args!(
                "DEL {marker}: XDP queues {:?} given back, dispatcher detached: {}",
                r.reset, r.detached
            ));
        }
        None => {
            let swept = dp.xdp_sweep(x).map_err(xdp_error)?;
            log.debug(format_args!(
                "DEL {marker}: master {} is gone; swept {:?}",
                l.master, swept.removed
            ));
            // Another NIC's directory that cannot be swept (junk a pod planted there) is not
            // this attachment's: reported, and GC reports it too, but it does not fail this DEL.
            for r in &swept.refused {
                log.warn(format_args!("DEL {marker}: left in bpffs: {r}"));
            }
        }
    }
    Ok(())
}

/// The ifindex of the pair's host device (primary) named after `marker` in the node netns, if
/// it carries exactly this marker. The name hashes only the container id and ifname, so it may
/// be another network's device; its marker is in the node netns, out of the pod's reach.
fn own_primary(dp: &mut dyn Dataplane, marker: &Marker) -> Result<Option<u32>, DpError> {
    Ok(dp
        .observe(marker, None, marker.ifname())?
        .host
        .filter(|h| h.marker.as_ref() == Some(marker))
        .map(|h| h.ifindex))
}

/// Why the XDP steering of `pod` on the master is not `network`'s to release, or `None` when it
/// is. The pin is keyed by container id and ifname only, so another network's attachment with
/// the same key (a DEL of a network whose ADD was refused with 103, a GC of another network)
/// finds the same pin. Decided from facts the pod cannot change: the kernel's leases of the
/// queues the dispatcher steers to `pod`, and the root-owned device-info records of this
/// network ([`lease::LeasingDevice::verified`]). The steering is left alone while a live device
/// leases one of those queues and no record shows that device to be `network`'s attachment
/// `pod`; with no live lessee (the device is gone: DEL runs after it is deleted, GC after its
/// netns died) it is released. A device's alias is never asked: a pod can rewrite it, and a pod
/// that deleted its own record and took another attachment's marker as its alias must not make
/// that attachment's DEL or GC skip the release (its queues would stay steered to a dead
/// XSKMAP). What this costs: a steering whose live lessee's record was removed is released only
/// once that device is gone.
fn held_by_another(
    dp: &mut dyn Dataplane,
    x: &crate::cni::config::XdpConfig,
    master_ifindex: u32,
    devs: &[lease::LeasingDevice],
    network: &str,
    pod: &PodId,
) -> Result<Option<String>, DpError> {
    let steered: Vec<u32> = match dp.xdp_observe(x, master_ifindex, pod)? {
        Some(XdpObserved {
            handoff: Some(h), ..
        }) => h.queues.iter().map(|q| q.queue).collect(),
        _ => return Ok(None),
    };
    let holder = devs.iter().find(|d| {
        d.queues.iter().any(|(phys, _)| steered.contains(phys))
            && !d.verified.as_ref().is_some_and(|(m, _)| {
                m.network() == network
                    && m.container_id() == pod.container_id()
                    && m.ifname() == pod.ifname()
            })
    });
    Ok(holder.map(|d| match &d.verified {
        Some((m, _)) => format!(
            "its queues {steered:?} are leased by network {}'s live device (ifindex {})",
            m.network(),
            d.ifindex
        ),
        None => format!(
            "its queues {steered:?} are leased by a live device (ifindex {}) that no device-info record of network {network} describes; released once that device is gone",
            d.ifindex
        ),
    }))
}

// ---------------------------------------------------------------------------------------------
// CHECK

/// CHECK: the attachment must still look like `prevResult` says — the device(s) exist and are
/// netkit in the configured mode, every address and route is in place — every lease recorded
/// in the device-info file still holds on the master, and IPAM agrees.
pub fn cmd_check(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
) -> Result<(), CniError> {
    let marker = req.marker()?;
    let prev = req.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("CHECK needs prevResult", "field prevResult is missing")
    })?;
    let ifname = req.ifname();
    let single = req.conf.pairing == Pairing::Single;
    let obs = dp
        .observe(&marker, Some(req.netns()), ifname)
        .map_err(|e| dp_error(e, req))?;
    let fail = |what: String| {
        CniError::plugin_specific(errcodes::CHECK_FAILED, what, format!("attachment {marker}"))
    };

    let host_name = marker.host_ifname();
    if !single {
        let host = obs
            .host
            .as_ref()
            .ok_or_else(|| fail(format!("host device {host_name} is missing")))?;
        if !host.is_netkit {
            return Err(fail(format!(
                "host device {host_name} is not a netkit device"
            )));
        }
        if host.marker.as_ref() != Some(&marker) {
            return Err(fail(format!(
                "host device {host_name} is not marked as {marker}"
            )));
        }
    }
    let pod = obs
        .pod
        .as_ref()
        .ok_or_else(|| fail(format!("pod interface {ifname} is missing")))?;
    if !pod.is_netkit {
        return Err(fail(format!(
            "pod interface {ifname} is not a netkit device"
        )));
    }
    if single && pod.marker.as_ref() != Some(&marker) {
        return Err(fail(format!(
            "pod interface {ifname} is not marked as {marker}"
        )));
    }
    if pod.mode != Some(req.conf.mode) {
        return Err(fail(format!(
            "pod interface {ifname} is in mode {:?}, config says {:?}",
            pod.mode, req.conf.mode
        )));
    }

    let sandbox = req.netns().display().to_string();
    let is_ours = |i: Option<usize>| {
        i.and_then(|i| prev.interfaces.get(i)).is_some_and(|itf| {
            itf.name == ifname && itf.sandbox.as_deref() == Some(sandbox.as_str())
        })
    };
    for ip in prev.ips.iter().filter(|ip| is_ours(ip.interface)) {
        if !obs.pod_addrs.contains(&ip.address) {
            return Err(fail(format!(
                "address {} is missing on {ifname}",
                cidr_str(&ip.address)
            )));
        }
        if single {
            continue;
        }
        let host_route = IpCidr::new(
            ip.address.addr(),
            if ip.address.is_ipv4() { 32 } else { 128 },
        )
        .unwrap();
        if !obs.host_routes.contains(&host_route) {
            return Err(fail(format!(
                "host route to {} via {host_name} is missing",
                ip.address.addr()
            )));
        }
    }
    // A single device installs no routes, so any in prevResult belong to other plugins.
    for r in prev.routes.iter().filter(|_| !single) {
        let dst = r.dst.network();
        let found = obs
            .pod_routes
            .iter()
            .any(|o| o.dst == dst && (r.gw.is_none() || o.gw == r.gw));
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(fail(format!(
                "route {}{via} is missing in the pod",
                cidr_str(&r.dst)
            )));
        }
    }
    if let Some(l) = &req.conf.lease {
        let info = check_leases(req, dp, l, &marker, pod.ifindex).map_err(fail)?;
        if let Some(x) = &req.conf.xdp {
            check_xdp(dp, x, &marker, &info).map_err(fail)?;
        }
        if let Some(st) = &info.steering {
            let master = dp
                .master(&l.master)
                .map_err(kernel_error)?
                .ok_or_else(|| fail(format!("lease master {} is gone", l.master)))?;
            let physical: Vec<u32> = info.queues.iter().map(|q| q.physical).collect();
            steer::check(dp, l, &master, st, &physical)?;
        }
    }
    if let Some(h) = &req.conf.host_routing {
        let ips: Vec<_> = prev
            .ips
            .iter()
            .filter(|ip| is_ours(ip.interface))
            .map(|ip| ip.address.addr())
            .collect();
        crate::hostrouting::hooks::check(h, &host_name, &ips)?.map_err(fail)?;
    }
    if let Some(ipam) = ipam {
        ipam.check()?;
    }
    Ok(())
}

/// The master's dispatcher must be attached, and exactly the queues the device-info file records
/// must be steered into this attachment's XSKMAP at their virtual queues.
fn check_xdp(
    dp: &mut dyn Dataplane,
    x: &crate::cni::config::XdpConfig,
    marker: &Marker,
    info: &devinfo::LeaseInfo,
) -> Result<(), String> {
    let pod = pod_id(marker).map_err(|e| e.msg)?;
    let master = &info.master;
    let obs = dp
        .xdp_observe(x, master.ifindex, &pod)
        .map_err(|e| format!("cannot read the XDP dispatcher of {}: {e}", master.name))?
        .ok_or_else(|| {
            format!(
                "no XDP dispatcher is attached to {} (under {})",
                master.name,
                x.bpffs.display()
            )
        })?;
    let handoff = obs.handoff.ok_or_else(|| {
        format!(
            "{marker} has no XSKMAP on the dispatcher of {} (link {})",
            master.name, obs.link_id
        )
    })?;
    let mut want: Vec<(u32, u32)> = info
        .queues
        .iter()
        .map(|q| (q.physical, q.virtual_id))
        .collect();
    let mut got: Vec<(u32, u32)> = handoff.queues.iter().map(|q| (q.queue, q.vqueue)).collect();
    want.sort_unstable();
    got.sort_unstable();
    if want != got {
        return Err(format!("the dispatcher of {} steers {got:?} (physical, virtual) to {marker}, the device-info file says {want:?}", master.name));
    }
    if let Some(recorded) = &info.xdp {
        if Path::new(&recorded.xsk_map) != handoff.xskmap_pin {
            return Err(format!(
                "XSKMAP pin is {}, the device-info file says {}",
                handoff.xskmap_pin.display(),
                recorded.xsk_map
            ));
        }
    }
    Ok(())
}

/// Every lease the device-info file records must still be on the master, pointing at this
/// pod's device in this pod's netns. Read with queue-get on each physical queue. Returns the
/// file's lease section.
fn check_leases(
    req: &Request,
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    marker: &Marker,
    pod_ifindex: u32,
) -> Result<devinfo::LeaseInfo, String> {
    let path = devinfo::path_for(&conf.device_info_dir, marker);
    let info = devinfo::read(&conf.device_info_dir, marker)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "device-info file {} is missing, so the leases cannot be checked",
                path.display()
            )
        })?
        .lease;
    let master = dp
        .master(&conf.master)
        .map_err(|e| format!("cannot look up lease master {}: {e}", conf.master))?
        .ok_or_else(|| format!("lease master {} is gone", conf.master))?;
    // The pod's nsid is read after the queues, never before: the node netns may have no id for
    // the pod netns until the kernel allocates one to name it in a lease reply.
    let mut pod_nsid = None;
    for (i, q) in info.queues.iter().enumerate() {
        let got = match dp.master_queue(master.ifindex, q.physical) {
            Ok(got) => got,
            Err(e) if e.netdev_errno() == Some(Errno::ENOENT) => {
                return Err(format!(
                    "queue {} of {}: cannot read it while {} is down ({e})",
                    q.physical, master.name, master.name
                ))
            }
            Err(e) if e.netdev_errno() == Some(Errno::EINVAL) => {
                return Err(format!(
                    "queue {} of {} no longer exists ({e})",
                    q.physical, master.name
                ))
            }
            Err(e) => return Err(format!("queue {} of {}: {e}", q.physical, master.name)),
        };
        let Some(l) = got.lease else {
            return Err(format!(
                "lease of queue {} of {} is gone",
                q.physical, master.name
            ));
        };
        if i == 0 {
            pod_nsid = dp.nsid_of(req.netns()).map_err(|e| e.to_string())?;
        }
        if l.ifindex != pod_ifindex || l.netns_id != pod_nsid || l.queue.id != q.virtual_id {
            return Err(format!(
                "queue {} of {} is leased to ifindex {} queue {} in netns id {:?}, not to {} (ifindex {pod_ifindex}) queue {} in netns id {pod_nsid:?}",
                q.physical,
                master.name,
                l.ifindex,
                l.queue.id,
                l.netns_id,
                marker.ifname(),
                q.virtual_id
            ));
        }
    }
    Ok(info)
}

// ---------------------------------------------------------------------------------------------
// GC

/// GC: every attachment of this network that the runtime no longer lists is deleted and its
/// addresses released — pairs found by their host side, single devices through the master's
/// leases — and stale device-info files are removed; then GC is forwarded to IPAM. Failures on
/// one orphan do not stop the others; they are all reported at the end.
pub fn cmd_gc(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<(), CniError> {
    let valid = req.conf.valid_attachments.as_ref().ok_or_else(|| {
        // Treating a missing list as empty would delete every pod on the node.
        CniError::invalid_config(
            "GC needs cni.dev/valid-attachments",
            "field cni.dev/valid-attachments is missing",
        )
    })?;
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let orphan = |m: &Marker| {
        m.network() == req.conf.name && !valid.contains(&(m.container_id(), m.ifname()))
    };
    let mut failures = Vec::new();
    let mut removed: Vec<Marker> = Vec::new();
    for m in dp
        .list_ours()
        .map_err(kernel_error)?
        .into_iter()
        .filter(|m| orphan(m))
    {
        log.info(format_args!("GC: removing orphan {m}"));
        match dp.delete(&m) {
            Ok(_) => removed.push(m),
            Err(e) => failures.push(format!("{m}: {e}")),
        }
    }
    if let Some(l) = &req.conf.lease {
        match lease::leasing_devices(dp, l, log) {
            Ok(devs) => {
                for d in devs {
                    // Only a device its record describes gets an IPAM release, under the
                    // record's identifiers; an alias the pod may have forged never reaches IPAM.
                    let (m, verified) = match (d.verified, d.alias) {
                        (Some((m, lease::RecordedPairing::Single)), _) => (m, true),
                        // Pairs are found by their host side above.
                        (Some((_, lease::RecordedPairing::Pair)), _) => continue,
                        (None, Some(m)) => (m, false),
                        (None, None) => continue,
                    };
                    if !orphan(&m) {
                        continue;
                    }
                    if verified {
                        log.info(format_args!(
                            "GC: removing orphan single device {m} (ifindex {} in netns id {:?})",
                            d.ifindex, d.netnsid
                        ));
                    } else {
                        log.warn(format_args!(
                            "GC: removing the device ifindex {} in netns id {:?}, whose alias claims orphan {m} and which no device-info record describes; its claim is not handed to IPAM",
                            d.ifindex, d.netnsid
                        ));
                    }
                    match dp.delete_remote(d.netnsid, d.ifindex) {
                        Ok(_) if verified => removed.push(m),
                        Ok(_) => {}
                        Err(e) => failures.push(format!("{m}: {e}")),
                    }
                }
            }
            Err(e) => failures.push(format!("devices leasing from {}: {e}", l.master)),
        }
    }
    if let (Some(l), Some(x)) = (&req.conf.lease, &req.conf.xdp) {
        gc_xdp(dp, l, x, &req.conf.name, &valid, &mut failures, log);
    }
    // After the orphans' devices (and so their leases) are gone: their rules, contexts and
    // unicast addresses are stale now, found by location and queue (see steer::sweep).
    if let Some(l) = req
        .conf
        .lease
        .as_ref()
        .filter(|l| l.steering.match_on != crate::cni::config::SteerMatch::None)
    {
        match dp.master(&l.master) {
            Ok(Some(master)) => {
                if let Err(e) = steer::sweep(dp, l, &master, log) {
                    failures.push(format!("steering on {}: {e}", l.master));
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(format!("lease master {}: {e}", l.master)),
        }
    }
    // After the orphans' devices are gone: their addresses name dead primaries now.
    if let Some(h) = &req.conf.host_routing {
        if let Err(e) = crate::hostrouting::hooks::gc(h, log) {
            failures.push(e.to_string());
        }
    }
    if let Some(ipam) = ipam {
        for m in &removed {
            if let Err(e) = ipam.del(m.container_id(), m.ifname()) {
                failures.push(format!("{m}: IPAM DEL: {}", e.msg));
            }
        }
    }
    if let Some(l) = &req.conf.lease {
        // Files outlive devices that died with their netns without a DEL.
        match devinfo::list(&l.device_info_dir, &req.conf.name) {
            Ok(files) => {
                for m in files.into_iter().filter(|m| orphan(m)) {
                    // What the record names and the sweep cannot find by location (a MAC whose
                    // rule someone else deleted) goes with it.
                    if let Err(e) = release_steering(dp, l, &m, log) {
                        failures.push(format!("{m}: {}", e.msg));
                    }
                    log.info(format_args!("GC: removing the device-info file of {m}"));
                    if let Err(e) = devinfo::remove(&l.device_info_dir, &m) {
                        failures.push(e.to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(ipam) = ipam {
        let d = ipam.gc()?;
        log.info(format_args!("GC forwarded to IPAM: {d}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::plugin_specific(
            errcodes::KERNEL_FAILED,
            "GC could not remove every orphan",
            failures.join("; "),
        ))
    }
}

/// Pods steered on the master's dispatcher that the runtime no longer lists lose their queues
/// and pins (the last one detaches the dispatcher); a dead NIC's pins are swept. The pins carry
/// no network name and the runtime's list covers only this network, so a pin whose attachment
/// still has a live leasing device of another network on the same NIC is left alone.
fn gc_xdp(
    dp: &mut dyn Dataplane,
    l: &LeaseConfig,
    x: &crate::cni::config::XdpConfig,
    network: &str,
    valid: &BTreeSet<(&str, &str)>,
    failures: &mut Vec<String>,
    log: &Logger,
) {
    match dp.xdp_sweep(x) {
        Ok(swept) => {
            if !swept.removed.is_empty() {
                log.info(format_args!(
                    "GC: removed the pins of NICs that are gone: {:?}",
                    swept.removed
                ));
            }
            failures.extend(swept.refused);
        }
        Err(e) => failures.push(e.to_string()),
    }
    let master = match dp.master(&l.master) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => return failures.push(e.to_string()),
    };
    let pods = match dp.xdp_pods(x, master.ifindex) {
        Ok(p) => p,
        Err(e) => return failures.push(e.to_string()),
    };
    let devs = match lease::leasing_devices(dp, l, log) {
        Ok(devs) => devs,
        Err(e) => return failures.push(e.to_string()),
    };
    let mut orphans = Vec::new();
    for p in pods
        .into_iter()
        .filter(|p| !valid.contains(&(p.container_id(), p.ifname())))
    {
        // Kernel facts and this network's records only (see held_by_another).
        match held_by_another(dp, x, master.ifindex, &devs, network, &p) {
            Ok(Some(why)) => log.debug(format_args!("GC: the XDP steering of {p} stays: {why}")),
            Ok(None) => orphans.push(p),
            Err(e) => failures.push(format!("XDP steering of {p}: {e}")),
        }
    }
    for pod in orphans {
        log.info(format_args!(
            "GC: releasing the XDP steering of orphan {network}/{pod} on {}",
            master.name
        ));
        if let Err(e) = dp.xdp_release(x, master.ifindex, &pod) {
            failures.push(format!("XDP steering of {pod}: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// STATUS

/// STATUS: 50 when nothing could be added — the kernel has no netkit, or (with a lease block)
/// cannot lease queues, the master is missing, or its pool has no free queue left — else IPAM's
/// answer.
pub fn cmd_status(
    req: &Request,
    dp: &mut dyn Dataplane,
    ipam: Option<&dyn IpamDelegate>,
    log: &Logger,
) -> Result<(), CniError> {
    if !dp.netkit_available().map_err(kernel_error)? {
        return Err(CniError::plugin_not_available(
            "this kernel has no netkit devices (needs Linux >= 6.7 with CONFIG_NETKIT)",
            "probe: RTM_NEWLINK kind netkit answered \"Unknown device type\"",
        ));
    }
    if let Some(l) = &req.conf.lease {
        lease_status(dp, l, log)?;
    }
    if req.conf.xdp.is_some() {
        // Not a reason to refuse pods (receive steering works), but the operator must know
        // that nothing on the node can filter what pods send through AF_XDP.
        let hook = crate::xdp::egress::probe();
        match hook {
            crate::xdp::egress::EgressHook::Available(_) => {
                log.info(format_args!("STATUS: {}", hook.describe()))
            }
            _ => log.warn(format_args!("STATUS: {}", hook.describe())),
        }
    }
    if let Some(ipam) = ipam {
        let d = ipam.status()?;
        log.debug(format_args!("STATUS forwarded to IPAM: {d}"));
    }
    Ok(())
}

fn lease_status(dp: &mut dyn Dataplane, conf: &LeaseConfig, log: &Logger) -> Result<(), CniError> {
    let unavailable = |msg: String, details: String| CniError::plugin_not_available(msg, details);
    match dp.lease_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(unavailable(
                "this kernel cannot lease NIC queues (needs Linux >= 7.1 with netdev queue-create)"
                    .into(),
                "the netdev generic netlink family has no queue-create operation".into(),
            ))
        }
        Err(e) if e.is_lease_unsupported() => {
            return Err(unavailable(
                "this kernel cannot lease NIC queues (needs Linux >= 7.1 with netdev queue-create)"
                    .into(),
                e.to_string(),
            ))
        }
        Err(e) => return Err(kernel_error(e)),
    }
    let master = match dp.master(&conf.master).map_err(kernel_error)? {
        Some(m) => m,
        None => {
            return Err(unavailable(
                format!(
                    "lease master {} does not exist in the node's network namespace",
                    conf.master
                ),
                "field lease.master".into(),
            ))
        }
    };
    let view = lease::nic_view(dp, &master)?;
    if !view.known {
        log.info(format_args!(
            "STATUS: {} is down, its queue occupancy is unknown",
            master.name
        ));
        return Ok(());
    }
    let pool: Vec<u32> = (0..view.rx_queues).filter(|q| conf.allows(*q)).collect();
    let free = pool
        .iter()
        .filter(|q| !view.busy.iter().any(|(b, _)| b == *q))
        .count();
    log.debug(format_args!(
        "STATUS: {free} of {} pool queues free on {}",
        pool.len(),
        master.name
    ));
    if free == 0 {
        return Err(unavailable(
            format!(
                "no free RX queue left in the lease pool of {} ({})",
                master.name,
                conf.pool_description()
            ),
            format!("{} pool queue(s), all busy", pool.len()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Planning: what goes on the pod side and the host side, from the IPAM result.

/// Pod side: each address without its prefix route, a link route to its gateway, the subnet and
/// IPAM's routes via that gateway, and a default route via it unless IPAM gave one. Returns the
/// plan and the routes to report (all but the gateway's link route).
fn pod_plan(ifname: &str, ipam: &CniResult) -> Result<(PodPlan, Vec<Route>), CniError> {
    let mut plan = PodPlan {
        ifname: ifname.to_string(),
        ..Default::default()
    };
    let mut reported = Vec::new();
    let push = |plan: &mut PodPlan,
                reported: &mut Vec<Route>,
                dst: IpCidr,
                gw: Option<IpAddr>,
                report: bool| {
        let r = PlannedRoute {
            dst: dst.network(),
            gw,
        };
        if !plan.routes.contains(&r) {
            plan.routes.push(r);
            if report {
                reported.push(Route::new(dst.network(), gw));
            }
        }
    };
    for ip in &ipam.ips {
        let gw = gateway_of(ip)?;
        plan.addrs.push(ip.address);
        let full = if gw.is_ipv4() { 32 } else { 128 };
        push(
            &mut plan,
            &mut reported,
            IpCidr::new(gw, full).unwrap(),
            None,
            false,
        );
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
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!(
                            "IPAM route {} has no address of its family",
                            cidr_str(&r.dst)
                        ),
                        "",
                    )
                })?,
        };
        push(&mut plan, &mut reported, r.dst, Some(gw), true);
    }
    for ip in &ipam.ips {
        let v4 = ip.address.is_ipv4();
        let has_default = plan
            .routes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.dst.is_ipv4() == v4);
        if !has_default {
            let any = if v4 {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            };
            push(
                &mut plan,
                &mut reported,
                IpCidr::new(any, 0).unwrap(),
                Some(gateway_of(ip)?),
                true,
            );
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
    HostPlan {
        host_ifindex,
        gateways,
        pod_addrs: pod.addrs.iter().map(|a| a.addr()).collect(),
    }
}

/// IPAM's gateway, or the subnet's first address when it gave none (host-local always does).
fn gateway_of(ip: &cni::IpConfig) -> Result<IpAddr, CniError> {
    if let Some(gw) = ip.gateway {
        return Ok(gw);
    }
    let net = ip.address.network();
    let first = match net.addr() {
        IpAddr::V4(a) => IpAddr::from(u32::from(a).wrapping_add(1).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(u128::from(a).wrapping_add(1).to_be_bytes()),
    };
    if first == ip.address.addr() {
        return Err(CniError::invalid_config(
            format!(
                "IPAM gave {} without a gateway, and its subnet's first address is the pod's own",
                cidr_str(&ip.address)
            ),
            "set a gateway in the ipam block",
        ));
    }
    Ok(first)
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

    let (env, conf) = match crate::cni::request::parse_request(lookup, stdin) {
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
