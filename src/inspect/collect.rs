//! Reading the report from the kernel and bpffs (see the [module docs](super)).

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use netlink_packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};

use super::*;
use crate::bpf::pins::{check_bpffs, current_netns_cookie, DEFAULT_BPFFS};
use crate::kernel::link::{self, LinkInfo, Marker};
use crate::kernel::netdev::{NetdevClient, Queue, QueueType};
use crate::kernel::rtnl::Rtnl;
use crate::xdp::{Dispatcher, DispatcherOptions, NicKey, NicPaths};

/// Build the report for the calling thread's netns (see the [module docs](super)).
///
/// Fails on what makes the report meaningless (rtnetlink or netdev netlink failing, a `--master`
/// that does not exist, an explicit `--bpffs` that is not a bpffs); everything that only hides
/// part of the picture (a dispatcher that cannot be read, a lessee that cannot be reached)
/// becomes a warning in the report instead.
pub fn inspect(opts: &Options) -> Result<Report, InspectError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(InspectError::Runtime)?;
    let rtnl = rt.block_on(async {
        let (rtnl, conn) = Rtnl::connect().map_err(InspectError::Rtnl)?;
        tokio::spawn(conn);
        Ok::<_, InspectError>(rtnl)
    })?;
    let links = rt
        .block_on(link::list_links(&rtnl))
        .map_err(|source| InspectError::Link {
            step: "list links",
            source,
        })?;
    let mut warnings = Vec::new();
    let bpffs = opts
        .bpffs
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS));
    let bpffs_mounted = bpffs_mounted(opts, &bpffs, &mut warnings)?;
    let netns_cookie = current_netns_cookie().map_err(|source| InspectError::Xdp {
        step: "netns cookie",
        source: source.into(),
    })?;
    let dirs = if bpffs_mounted {
        nic_dirs(&bpffs, netns_cookie)?
    } else {
        BTreeSet::new()
    };
    let candidates = candidates(opts, &links, &dirs, &bpffs, netns_cookie, &mut warnings)?;
    let records = device_info_records(opts, &mut warnings);
    let mut netdev = open_netdev(&mut warnings)?;
    // The ethtool family for RSS; a kernel without it only hides the steering.
    let mut ethtool = crate::kernel::ethtool::EthtoolClient::open().ok();
    let ctx = NicContext {
        rt: &rt,
        rtnl: &rtnl,
        pairs: netkit_pairs(&links),
        records,
        bpffs: &bpffs,
        netns_cookie,
    };
    let mut nics = Vec::new();
    for l in candidates {
        let rx = match netdev.as_mut() {
            Some(c) => rx_queues(c, l.index)?,
            None => Vec::new(),
        };
        let has_dir = dirs.contains(&l.index);
        // A hostRouting uplink is shown even without leases or a dispatcher.
        let mut hr_warnings = Vec::new();
        let host_routing = if bpffs_mounted {
            read_host_routing(&bpffs, &l.name, &mut hr_warnings)
        } else {
            None
        };
        if opts.master.is_none()
            && !has_dir
            && host_routing.is_none()
            && !rx.iter().any(|q| q.lease.is_some())
        {
            continue;
        }
        let mut report = ctx.nic_report(l, &rx, has_dir, netdev.is_some());
        report.host_routing = host_routing;
        report.steering = read_steering(&mut ethtool, l, &ctx.records, &mut report.warnings);
        report.warnings.extend(hr_warnings);
        nics.push(report);
    }
    nics.sort_by_key(|n| n.ifindex);
    Ok(Report {
        version: REPORT_VERSION,
        bpffs,
        bpffs_mounted,
        nics,
        warnings,
    })
}

/// Whether `bpffs` is a mounted bpffs. Not being one is an error only when `--bpffs` named it;
/// the default path missing only hides the dispatchers.
fn bpffs_mounted(
    opts: &Options,
    bpffs: &Path,
    warnings: &mut Vec<String>,
) -> Result<bool, InspectError> {
    match check_bpffs(bpffs) {
        Ok(()) => Ok(true),
        Err(source) if opts.bpffs.is_some() => Err(InspectError::Xdp {
            step: "--bpffs",
            source: source.into(),
        }),
        Err(e) => {
            warnings.push(format!(
                "{e}: dispatchers not shown (is bpffs mounted elsewhere? pass --bpffs)"
            ));
            Ok(false)
        }
    }
}

/// The devices whose queues are dumped: `--master`, or every device that can lend queues or has
/// a dispatcher directory. A directory without a device is reported as left over.
fn candidates<'l>(
    opts: &Options,
    links: &'l [LinkInfo],
    dirs: &BTreeSet<u32>,
    bpffs: &Path,
    netns_cookie: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'l LinkInfo>, InspectError> {
    if let Some(name) = &opts.master {
        let l = links
            .iter()
            .find(|l| l.name == *name)
            .ok_or_else(|| InspectError::NoSuchMaster(name.clone()))?;
        return Ok(vec![l]);
    }
    for ifindex in dirs
        .iter()
        .filter(|i| !links.iter().any(|l| l.index == **i))
    {
        let key = NicKey {
            netns_cookie,
            ifindex: *ifindex,
        };
        warnings.push(format!(
            "{}: no device with ifindex {ifindex} in this netns (left over?)",
            NicPaths::new(bpffs, &key).dir.display()
        ));
    }
    // Only a device with a parent (a real NIC) can lend queues; the kernel refuses leases from
    // virtual devices, so their queues need not be dumped.
    Ok(links
        .iter()
        .filter(|l| has_parent(l) || dirs.contains(&l.index))
        .collect())
}

/// Host-side halves of netkit-cni pairs: the peer (the lessee, in the pod) carries no marker, the
/// primary does, and names its peer by (nsid as the node sees it, ifindex). The peer's ifindex
/// may well equal the primary's own: ifindexes are per netns.
fn netkit_pairs(links: &[LinkInfo]) -> HashMap<(Option<i32>, u32), (Marker, String)> {
    links
        .iter()
        .filter(|l| {
            l.is_netkit()
                && l.netkit.as_ref().and_then(|n| n.pairing) != Some(link::NetkitPairing::Single)
        })
        .filter_map(|l| Some(((l.link_netnsid, l.link?), (l.marker()?, l.name.clone()))))
        .collect()
}

/// The NIC's default RSS context, its other contexts, and the rules the steering records on it
/// name, as the NIC has them now. `None` for a NIC with neither readable RSS nor records.
fn read_steering(
    ethtool: &mut Option<crate::kernel::ethtool::EthtoolClient>,
    l: &LinkInfo,
    records: &[crate::plugin::devinfo::Record],
    warnings: &mut Vec<String>,
) -> Option<SteeringReport> {
    use crate::kernel::ethtool::client::Ioctl;
    let mine: Vec<_> = records
        .iter()
        .filter(|(_, r)| r.master.ifindex == l.index && r.steering.is_some())
        .collect();
    let contexts = ethtool.as_mut().and_then(|c| c.rss_dump(l.index).ok());
    if contexts.is_none() && mine.is_empty() {
        return None;
    }
    let default_queues = contexts
        .as_ref()
        .and_then(|c| c.iter().find(|r| r.context == 0))
        .map(|r| r.queues());
    let ioctl = Ioctl::open(&l.name).ok();
    let pods = mine
        .into_iter()
        .map(|(m, r)| {
            let st = r.steering.as_ref().expect("filtered");
            PodSteeringReport {
                network: m.network().to_string(),
                container_id: m.container_id().to_string(),
                ifname: m.ifname().to_string(),
                match_on: st.match_on.clone(),
                rules: st
                    .rules
                    .iter()
                    .map(|ri| RuleReport {
                        location: ri.location,
                        rule: ri.rule.clone(),
                        live: ioctl
                            .as_ref()
                            .and_then(|i| i.rule(ri.location).ok().flatten())
                            .map(|r| crate::plugin::steer::rule_text(&r)),
                    })
                    .collect(),
                context: st.context,
            }
        })
        .collect::<Vec<_>>();
    for p in &pods {
        for r in p
            .rules
            .iter()
            .filter(|r| r.live.as_deref() != Some(&r.rule))
        {
            warnings.push(format!(
                "{}/{}: rule {} is {}, its record says {}",
                p.container_id,
                p.ifname,
                r.location,
                r.live.as_deref().unwrap_or("missing"),
                r.rule
            ));
        }
    }
    Some(SteeringReport {
        default_queues,
        contexts: contexts
            .unwrap_or_default()
            .iter()
            .filter(|c| c.context != 0)
            .map(|c| ContextReport {
                id: c.context,
                queues: c.queues(),
            })
            .collect(),
        pods,
    })
}

/// The netdev family's client; a kernel without it only hides the queues.
/// Device-info records: what verifies the owner of a single device (see the module docs).
/// Read-only: a missing directory is no records; an unreadable one a warning.
fn device_info_records(
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Vec<crate::plugin::devinfo::Record> {
    let dir = opts
        .device_info_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DEVICE_INFO_DIR));
    match crate::plugin::devinfo::records(&dir) {
        Ok((records, skipped)) => {
            warnings.extend(
                skipped
                    .into_iter()
                    .map(|s| format!("device-info record left out: {s}")),
            );
            records
        }
        Err(e) => {
            warnings.push(format!(
                "{e}: the owners of single devices cannot be verified"
            ));
            vec![]
        }
    }
}

fn open_netdev(warnings: &mut Vec<String>) -> Result<Option<NetdevClient>, InspectError> {
    match NetdevClient::open() {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.is_kernel_unsupported() => {
            warnings.push(format!("{e}: queues not shown"));
            Ok(None)
        }
        Err(source) => Err(InspectError::Netdev {
            step: "open netdev netlink",
            source: Box::new(source),
        }),
    }
}

/// What every NIC's report is read with.
struct NicContext<'a> {
    rt: &'a tokio::runtime::Runtime,
    rtnl: &'a Rtnl,
    pairs: HashMap<(Option<i32>, u32), (Marker, String)>,
    /// The device-info records, which verify the owners of single devices.
    records: Vec<crate::plugin::devinfo::Record>,
    bpffs: &'a Path,
    netns_cookie: u64,
}

impl NicContext<'_> {
    /// One NIC: its state, its dispatcher (when it has a directory) and each RX queue.
    fn nic_report(&self, l: &LinkInfo, rx: &[Queue], has_dir: bool, netdev: bool) -> NicReport {
        let nic = NicKey {
            netns_cookie: self.netns_cookie,
            ifindex: l.index,
        };
        let mut report = NicReport {
            name: l.name.clone(),
            ifindex: l.index,
            up: l.is_up(),
            netns_cookie: self.netns_cookie,
            bpffs_dir: NicPaths::new(self.bpffs, &nic).dir,
            rx_queues: (l.is_up() && netdev).then_some(rx.len() as u32),
            xdp: xdp_of(l),
            dispatcher: None,
            host_routing: None,
            steering: None,
            queues: Vec::new(),
            warnings: Vec::new(),
        };
        if !l.is_up() {
            report
                .warnings
                .push("device is down: the kernel reports no queues".into());
        }
        let statuses = if has_dir {
            read_dispatcher(self.bpffs, &mut report, rx)
        } else {
            HashMap::new()
        };
        // Each lessee with the one record describing exactly it, if any.
        let recorded: HashMap<(Option<i32>, u32), &crate::plugin::devinfo::Record> =
            crate::plugin::lease::lessees(rx)
                .into_iter()
                .filter_map(|(ns, ifindex, queues)| {
                    let mut it = self
                        .records
                        .iter()
                        .filter(|(_, r)| r.describes(l.index, ifindex, &queues));
                    match (it.next(), it.next()) {
                        (Some(r), None) => Some(((ns, ifindex), r)),
                        _ => None,
                    }
                })
                .collect();
        for q in rx {
            let queue = self.queue_report(
                q,
                statuses.get(&q.id).cloned(),
                &recorded,
                &mut report.warnings,
            );
            report.queues.push(queue);
        }
        report
    }

    /// One RX queue: free, leased by one of ours (resolved to its attachment) or by someone
    /// else, what else binds it, and the dispatcher's verdict for it.
    fn queue_report(
        &self,
        q: &Queue,
        dispatch: Option<DispatchReport>,
        recorded: &HashMap<(Option<i32>, u32), &crate::plugin::devinfo::Record>,
        warnings: &mut Vec<String>,
    ) -> QueueReport {
        let lease = q.lease.as_ref().map(|lease| {
            let record = recorded.get(&(lease.netns_id, lease.ifindex)).copied();
            let mut out = resolve_lessee(
                self.rt,
                self.rtnl,
                &self.pairs,
                record.map(|(m, _)| m),
                lease,
                q.id,
                warnings,
            );
            // Only a record that describes exactly this lessee says what it is for.
            out.consumer = record.and_then(|(_, r)| r.consumer.clone());
            out
        });
        let state = match &lease {
            None => QueueState::Free,
            Some(l) if l.container_id.is_some() => QueueState::Leased,
            Some(_) => QueueState::Foreign,
        };
        let mut busy = Vec::new();
        if q.xsk {
            busy.push("af-xdp".to_string());
        }
        if q.dmabuf.is_some() {
            busy.push("dmabuf".to_string());
        }
        if q.io_uring.is_some() {
            busy.push("io-uring".to_string());
        }
        QueueReport {
            id: q.id,
            state,
            busy,
            lease,
            dispatch,
        }
    }
}

/// The NIC's BPF host routing, when it is an uplink with a live tcx link (read-only use of
/// [`crate::hostrouting::Uplink`]: its directory's lock is held only while reading).
fn read_host_routing(
    bpffs: &Path,
    name: &str,
    warnings: &mut Vec<String>,
) -> Option<HostRoutingReport> {
    let up = match crate::hostrouting::Uplink::open(bpffs, name) {
        Ok(Some(u)) => u,
        Ok(None) => return None,
        Err(e) => {
            warnings.push(format!("host routing not readable: {e}"));
            return None;
        }
    };
    let entries = match up.entries() {
        Ok(e) => e,
        Err(e) => {
            warnings.push(format!("host routing's pod map not readable: {e}"));
            vec![]
        }
    };
    let pods: BTreeSet<u32> = entries.iter().map(|(_, primary)| *primary).collect();
    Some(HostRoutingReport {
        dir: up.dir().to_path_buf(),
        ingress_prog_id: up.ingress_prog_id().ok(),
        pods: pods.len(),
        addresses: entries.len(),
    })
}

/// ifindexes with a directory `netns<cookie>-if<ifindex>` under `<bpffs>/netkit-cni/`.
fn nic_dirs(bpffs: &Path, cookie: u64) -> Result<BTreeSet<u32>, InspectError> {
    // Through the same checked walk as the dispatcher: a symlink at `netkit-cni` is refused,
    // not listed through.
    let fs_err = |e: crate::safefs::SafeFsError| InspectError::Xdp {
        step: "list the plugin's bpffs directory",
        source: XdpError::Fs(e),
    };
    let root = crate::safefs::Dir::open_trusted(bpffs, crate::safefs::Owner::Us).map_err(fs_err)?;
    let Some(plugin) = root
        .child_dir(crate::bpf::pins::PLUGIN_DIR)
        .map_err(fs_err)?
    else {
        return Ok(BTreeSet::new());
    };
    let prefix = format!("netns{cookie}-if");
    let mut out = BTreeSet::new();
    for entry in plugin.entries().map_err(fs_err)? {
        if let Some(i) = crate::safefs::utf8_name(&entry.name)
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|i| i.parse().ok())
        {
            out.insert(i);
        }
    }
    Ok(out)
}

fn has_parent(l: &LinkInfo) -> bool {
    l.message
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::ParentDevName(_)))
}

/// The device's real RX queues, by id (a down device has none; an interrupted dump is redone).
fn rx_queues(client: &mut NetdevClient, ifindex: u32) -> Result<Vec<Queue>, InspectError> {
    let mut attempt = 0;
    let all = loop {
        match client.queue_dump(ifindex) {
            Err(crate::kernel::netdev::NetdevError::DumpInterrupted { .. }) if attempt < 2 => {
                attempt += 1
            }
            other => {
                break other.map_err(|source| InspectError::Netdev {
                    step: "dump the NIC's queues",
                    source: Box::new(source),
                })?
            }
        }
    };
    let mut rx: Vec<Queue> = all
        .into_iter()
        .filter(|q| q.queue_type == QueueType::Rx)
        .collect();
    rx.sort_by_key(|q| q.id);
    Ok(rx)
}

/// `IFLA_XDP` of a link.
pub(super) fn xdp_of(l: &LinkInfo) -> Option<XdpReport> {
    let nest = l.message.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    })?;
    let (mut mode, mut prog, mut drv, mut skb, mut hw) = (None, None, None, None, None);
    for x in nest {
        match x {
            LinkXdp::Attached(a) => {
                mode = match a {
                    XdpAttached::Driver => Some(XdpAttachMode::Native),
                    XdpAttached::SocketBuffer => Some(XdpAttachMode::Generic),
                    XdpAttached::Hardware => Some(XdpAttachMode::Offload),
                    XdpAttached::Multiple => Some(XdpAttachMode::Multi),
                    _ => None,
                }
            }
            LinkXdp::ProgId(id) => prog = Some(*id),
            LinkXdp::DrvProgId(id) => drv = Some(*id),
            LinkXdp::SkbProgId(id) => skb = Some(*id),
            LinkXdp::HwProgId(id) => hw = Some(*id),
            _ => {}
        }
    }
    Some(XdpReport {
        mode: mode?,
        prog_id: prog.or(drv).or(skb).or(hw),
    })
}

/// Fill in the dispatcher (or a warning) and return its entries for the NIC's real queues. The
/// dispatcher's lock is held only inside this function.
fn read_dispatcher(
    bpffs: &Path,
    report: &mut NicReport,
    rx: &[Queue],
) -> HashMap<u32, DispatchReport> {
    let opts = DispatcherOptions {
        bpffs: bpffs.to_path_buf(),
        ..DispatcherOptions::default()
    };
    let d = match Dispatcher::open(&opts, report.ifindex) {
        Ok(Some(d)) => d,
        Ok(None) => {
            report.warnings.push(format!(
                "{}: no live XDP link (a stale directory; the next ADD clears it)",
                report.bpffs_dir.display()
            ));
            return HashMap::new();
        }
        Err(e) => {
            report
                .warnings
                .push(format!("dispatcher not readable: {e}"));
            return HashMap::new();
        }
    };
    let read = || -> Result<(DispatcherReport, HashMap<u32, DispatchReport>), XdpError> {
        let pins: Vec<PinReport> = d
            .pins()?
            .into_iter()
            .map(|p| PinReport {
                path: p.path.to_string_lossy().into_owned(),
                kind: match p.kind {
                    crate::xdp::PinKind::Link => PinKind::Link,
                    crate::xdp::PinKind::Map => PinKind::Map,
                },
                id: p.id,
            })
            .collect();
        let pods: HashMap<u32, String> = pins
            .iter()
            .filter_map(|p| Some((p.id?, pod_of_pin(&p.path)?)))
            .collect();
        let mut statuses = HashMap::new();
        for q in rx {
            let s = d.queue_status(q.id)?;
            statuses.insert(
                q.id,
                DispatchReport {
                    action: s.action.into(),
                    range_action: s.base.into(),
                    vqueue: s.vqueue,
                    xskmap_id: s.pod_map_id,
                    pod: s.pod_map_id.and_then(|id| pods.get(&id).cloned()),
                },
            );
        }
        let program_id = d.program_id()?;
        let dispatcher = DispatcherReport {
            link_id: d.link_id()?,
            program_id,
            mode: report
                .xdp
                .as_ref()
                .filter(|x| x.prog_id == Some(program_id))
                .map(|x| x.mode),
            stats: d.stats_enabled(),
            pins,
        };
        Ok((dispatcher, statuses))
    };
    let out = read();
    drop(d);
    match out {
        Ok((dispatcher, statuses)) => {
            report.dispatcher = Some(dispatcher);
            statuses
        }
        Err(e) => {
            report
                .warnings
                .push(format!("dispatcher not readable: {e}"));
            HashMap::new()
        }
    }
}

/// `<cid>/<ifname>` of a pin path `pods/<cid>/<ifname>/xsks`.
pub(super) fn pod_of_pin(path: &str) -> Option<String> {
    let parts: Vec<&str> = Path::new(path)
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        ["pods", cid, ifname, "xsks"] => Some(format!("{cid}/{ifname}")),
        _ => None,
    }
}

/// Who holds a leased queue: a pair's peer (known by its host-side primary's marker), a single
/// device (the device-info record describing it, else its own alias, unverified), or someone
/// else's device.
fn resolve_lessee(
    rt: &tokio::runtime::Runtime,
    rtnl: &Rtnl,
    pairs: &HashMap<(Option<i32>, u32), (Marker, String)>,
    recorded: Option<&Marker>,
    lease: &crate::kernel::netdev::Lease,
    queue: u32,
    warnings: &mut Vec<String>,
) -> LeaseReport {
    let mut out = LeaseReport {
        ifindex: lease.ifindex,
        netns_id: lease.netns_id,
        vqueue: lease.queue.id,
        ifname: None,
        network: None,
        container_id: None,
        pairing: None,
        host_ifname: None,
        owner_verified: None,
        consumer: None,
    };
    let remote = match lease.netns_id {
        Some(id) if id < 0 => {
            warnings.push(format!(
                "queue {queue}: the kernel could not name the lessee's netns (nsid {id})"
            ));
            None
        }
        Some(id) => Some(rt.block_on(link::get_link_in(rtnl, id, lease.ifindex))),
        None => Some(rt.block_on(link::get_link_by_index(rtnl, lease.ifindex))),
    };
    let remote = match remote {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            warnings.push(format!("queue {queue}: lessee not readable: {e}"));
            None
        }
        None => None,
    };
    out.ifname = remote.as_ref().map(|l| l.name.clone());
    let alias = remote.as_ref().and_then(LinkInfo::marker);
    let (marker, pairing, host, verified) = match (
        pairs.get(&(lease.netns_id, lease.ifindex)),
        recorded,
    ) {
        // The host side is in the node netns: the pod cannot touch its alias.
        (Some((m, host)), _) => (
            Some(m.clone()),
            Some(Pairing::Pair),
            Some(host.clone()),
            true,
        ),
        (None, Some(m)) => {
            if alias.as_ref().is_some_and(|a| a != m) {
                warnings.push(format!(
                    "queue {queue}: the lessee's alias claims {}, its device-info record says {m}",
                    alias.as_ref().map(ToString::to_string).unwrap_or_default()
                ));
            }
            (Some(m.clone()), Some(Pairing::Single), None, true)
        }
        (None, None) => match alias {
            Some(m) => {
                warnings.push(format!(
                    "queue {queue}: owner {m} read from the lessee's alias, which the pod can rewrite; no device-info record describes this lessee"
                ));
                (Some(m), Some(Pairing::Single), None, false)
            }
            None => (None, None, None, false),
        },
    };
    if let Some(m) = marker {
        out.owner_verified = Some(verified);
        out.network = Some(m.network().to_string());
        out.container_id = Some(m.container_id().to_string());
        out.ifname = out.ifname.or_else(|| Some(m.ifname().to_string()));
        out.pairing = pairing;
        out.host_ifname = host;
    }
    out
}
