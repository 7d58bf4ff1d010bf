//! Flow steering on the lease master (`lease.steering`): the NIC must put the pod's frames, and
//! only them, on its leased queues. RSS spreads every flow over every queue of its table, so
//! the pool is kept out of the default RSS context (`rss`), and each pod gets an ntuple rule,
//! destination MAC or IP to its queue or to an RSS context over its queues (`match`). This is
//! what the kernel's own lease test does by hand (tools/testing/selftests/drivers/net/hw/
//! nk_qlease.py: `ethtool -X <nic> equal N`, `ethtool -N … action <queue>`).
//!
//! Stateless, as the rest of the plugin: which rules are the plugin's follows from where they
//! sit. A pod whose lowest leased queue is `q` owns locations
//! `ruleBase + RULES_PER_QUEUE * q + i` (i < [`RULES_PER_QUEUE`]), and a rule there that sends
//! to queue `q` or to a context over `q` is the plugin's. A physical queue is leased to at most
//! one pod at a time (the kernel's `netdev_queue_busy`), so those locations are the pod's alone
//! while it lives, and a rule there whose queue is no longer leased is stale: left by an ADD
//! that was killed, or a DEL that was not run. [`sweep`] removes such rules (and their unicast
//! address), and contexts over pool queues that nothing leases and no rule points at. The
//! device-info record names what the ADD made, for DEL, CHECK and inspect; its absence never
//! keeps anything alive or dead.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::cni::CniError;
use crate::config::{LeaseConfig, QueueSet, RssPolicy, SteerMatch, Steering, RULES_PER_QUEUE};
use crate::kernel::ethtool::ntuple::{mac_string, parse_mac};
use crate::kernel::ethtool::rss::{table_excluding, table_over};
use crate::kernel::ethtool::{FlowMatch, FlowRule, RuleAction};
use crate::kernel::netdev::QueueType;
use crate::logging::Logger;

use super::dataplane::{Dataplane, DpError, Master, Rss};
use super::devinfo::{self, RuleInfo, SteeringInfo};
use super::errcodes;
use super::lease::{LeasePlan, Leased};

/// Code 113 with a message naming the NIC.
fn refused(msg: String, details: impl Into<String>) -> CniError {
    CniError::plugin_specific(errcodes::STEERING, msg, details)
}

fn failed(nic: &Master, what: &str, e: DpError) -> CniError {
    let missing = match &e {
        DpError::Ethtool { source, .. } if source.is_unsupported() => Some(source),
        _ => None,
    };
    match missing {
        Some(_) => refused(
            format!(
                "lease master {} cannot steer: its driver does not support {what} (EOPNOTSUPP)",
                nic.name
            ),
            format!(
                "{e}; see the README's steering section for the drivers with ntuple rules and RSS contexts, or use steering.match \"none\""
            ),
        ),
        None => refused(
            format!("lease master {}: {what} failed", nic.name),
            e.to_string(),
        ),
    }
}

/// The ethtool command that takes `pool` out of the default context on a NIC with `rx` queues.
pub fn fix_command(nic: &str, pool: &QueueSet, rx: u32) -> String {
    let first = pool.iter().next().unwrap_or(0);
    if first > 0 && (first..rx).all(|q| pool.contains(q)) {
        return format!("ethtool -X {nic} equal {first}");
    }
    let weights: Vec<&str> = (0..rx)
        .map(|q| if pool.contains(q) { "0" } else { "1" })
        .collect();
    format!("ethtool -X {nic} weight {}", weights.join(" "))
}

/// What [`prepare`] learnt, for [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerPrep {
    /// The network's `lease.steering`.
    pub steering: Steering,
    /// The driver's indirection table size (contexts are made with as many entries).
    pub table_size: usize,
}

/// Before IPAM and before any device: the NIC can do what the config asks (ntuple on when
/// rules are wanted), and the default RSS context keeps off the queues this pod may get:
/// `admin` refuses otherwise (code 113, naming the queue, the NIC and the ethtool command);
/// `exclude-pool` writes the table over the queues outside the pool when it differs (the
/// write is idempotent and shared by every network on the NIC, so it is never rolled back),
/// after refusing a pool or rule base that another network steering on the NIC disagrees with.
pub fn prepare(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    plan: &LeasePlan,
    log: &Logger,
) -> Result<SteerPrep, CniError> {
    let s = conf.steering;
    let nic = &plan.master;
    if s.match_on != SteerMatch::None {
        need_ntuple(dp, nic, s.match_on)?;
    }
    agree_with_other_networks(conf, plan)?;
    let rss = read_default_rss(dp, nic)?;
    match s.rss {
        RssPolicy::Admin => refuse_rss_on_pool(plan, &rss)?,
        RssPolicy::ExcludePool => exclude_pool(dp, plan, &rss, log)?,
    }
    Ok(SteerPrep {
        steering: s,
        table_size: rss.indir.len(),
    })
}

/// The hint that names how to undo a table the admin or the plugin wrote.
fn restore_hint(nic: &Master) -> String {
    format!(
        "ethtool -X {} default restores the driver's table",
        nic.name
    )
}

/// Rules need ntuple filtering on.
fn need_ntuple(dp: &mut dyn Dataplane, nic: &Master, match_on: SteerMatch) -> Result<(), CniError> {
    match dp.steering().ntuple_enabled(nic) {
        Ok(true) => Ok(()),
        Ok(false) => Err(refused(
            format!(
                "lease master {} has ntuple filtering off (NETIF_F_NTUPLE): steering.match {:?} needs its rules",
                nic.name,
                match_on.as_str()
            ),
            format!("turn it on with `ethtool -K {} ntuple on`", nic.name),
        )),
        Err(e) => Err(failed(nic, "ntuple filters (ETHTOOL_GFLAGS)", e)),
    }
}

/// The default RSS context, refused when it cannot be read or has no table: where a flow lands
/// is then nothing the plugin can vouch for.
fn read_default_rss(dp: &mut dyn Dataplane, nic: &Master) -> Result<Rss, CniError> {
    let restore = restore_hint(nic);
    let rss = dp.steering().rss_get(nic, 0).map_err(|e| {
        refused(
            format!(
                "cannot read the default RSS context of lease master {}, so cannot tell whether it spreads onto the pool: {e}",
                nic.name
            ),
            format!(
                "a NIC whose RSS cannot be read is refused; if `ethtool -x {}` works, {restore}",
                nic.name
            ),
        )
    })?;
    if rss.indir.is_empty() {
        // No table (virtio-net without the RSS feature answers so): which queue a flow lands
        // on is not something the plugin can read, so not something it can vouch for.
        return Err(refused(
            format!(
                "lease master {} reports no RSS indirection table, so whether it spreads flows onto the pool cannot be read",
                nic.name
            ),
            format!("steering needs a driver with RSS (get_rxfh); {restore} on one that has it"),
        ));
    }
    Ok(rss)
}

/// `rss: admin`: the admin keeps the default context off the queues this pod may get.
fn refuse_rss_on_pool(plan: &LeasePlan, rss: &Rss) -> Result<(), CniError> {
    let nic = &plan.master;
    let candidates: Vec<u32> = match &plan.want {
        crate::config::LeaseQueues::Ids(ids) => ids.clone(),
        crate::config::LeaseQueues::Count(_) => plan.pool.iter().collect(),
    };
    let spread = rss.queues();
    match candidates.iter().find(|q| spread.contains(q)) {
        Some(q) => Err(refused(
            format!(
                "the default RSS context of lease master {} still spreads onto queue {q} of the pool: the pod would receive other flows there",
                nic.name
            ),
            format!(
                "steering.rss is \"admin\": run `{}` (or set steering.rss \"exclude-pool\"); {} later",
                fix_command(&nic.name, &plan.pool, plan.rx_queues),
                restore_hint(nic)
            ),
        )),
        None => Ok(()),
    }
}

/// `rss: exclude-pool`: the default context spread over the queues outside the pool, written
/// only when it differs.
fn exclude_pool(
    dp: &mut dyn Dataplane,
    plan: &LeasePlan,
    rss: &Rss,
    log: &Logger,
) -> Result<(), CniError> {
    let nic = &plan.master;
    let pool: Vec<u32> = plan.pool.iter().collect();
    let Some(want) = table_excluding(rss.indir.len(), plan.rx_queues, &pool) else {
        return Err(refused(
            format!(
                "the pool {} covers every RX queue of lease master {}: nothing is left for RSS",
                plan.pool, nic.name
            ),
            "leave at least one queue (usually 0) out of lease.allowedQueues",
        ));
    };
    if want != rss.indir {
        dp.steering()
            .rss_set_default(nic, &want)
            .map_err(|e| failed(nic, "writing the default RSS table (rss-set)", e))?;
        log.info(format_args!(
            "steering: default RSS context of {} now spreads over {:?} (pool {} excluded)",
            nic.name,
            table_queues(&want),
            plan.pool
        ));
    }
    Ok(())
}

fn table_queues(t: &[u32]) -> Vec<u32> {
    t.iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Every network steering on one NIC names the same pool (with `exclude-pool`: two pools
/// would fight over the table) and the same rule base (a rule's location names its queue only
/// under one base). The other networks' facts are their device-info records (root-written, in
/// the directory of this network's `lease.deviceInfoDir`).
fn agree_with_other_networks(conf: &LeaseConfig, plan: &LeasePlan) -> Result<(), CniError> {
    let Ok((records, _)) = devinfo::records(&conf.device_info_dir) else {
        return Ok(());
    };
    let pool = plan.pool.to_string();
    for (m, info) in records {
        let Some(st) = &info.steering else { continue };
        if info.master.ifindex != plan.master.ifindex {
            continue;
        }
        let exclude = RssPolicy::ExcludePool.as_str();
        if (st.rss == exclude || conf.steering.rss == RssPolicy::ExcludePool) && st.pool != pool {
            return Err(CniError::new(
                crate::cni::codes::INVALID_CONFIG,
                format!(
                    "invalid value {:?} for field lease.allowedQueues: lease master {} is steered with pool {} by network {}",
                    pool, plan.master.name, st.pool, m.network()
                ),
                "every network that steers on one NIC must name the same pool (steering.rss \"exclude-pool\" keeps it out of RSS)",
            ));
        }
        // Only rule-making networks care where rules sit.
        let makes_rules = |m: &str| m != SteerMatch::None.as_str();
        if makes_rules(&st.match_on)
            && conf.steering.match_on != SteerMatch::None
            && st.rule_base != conf.steering.rule_base
        {
            return Err(CniError::new(
                crate::cni::codes::INVALID_CONFIG,
                format!(
                    "invalid value {} for field lease.steering.ruleBase: network {} steers on lease master {} with ruleBase {}",
                    conf.steering.rule_base, m.network(), plan.master.name, st.rule_base
                ),
                "every network that steers on one NIC must use the same ruleBase",
            ));
        }
    }
    Ok(())
}

/// The first rule location of the pod whose lowest leased queue is `q`.
pub fn location(s: &Steering, q: u32, i: u32) -> u32 {
    s.rule_base + RULES_PER_QUEUE * q + i
}

/// The queue a location in the plugin's range belongs to, if it is in the range.
pub fn queue_of(s: &Steering, loc: u32, rx_queues: u32) -> Option<u32> {
    let off = loc.checked_sub(s.rule_base)?;
    let q = off / RULES_PER_QUEUE;
    (q < rx_queues).then_some(q)
}

/// What an ADD's steering did, for its rollback.
#[derive(Debug, Default)]
pub struct SteerUndo {
    pub master: Option<Master>,
    pub context: Option<u32>,
    pub rules: Vec<u32>,
    pub unicast: Option<[u8; 6]>,
}

impl SteerUndo {
    /// In reverse: the unicast address (only if this ADD added it), the rules, the context
    /// (after the rules: the kernel refuses to delete a context a rule points at,
    /// `ethtool_check_rss_ctx_busy`). The default RSS table stays: it is shared by every
    /// network on the NIC and idempotent, and what it excludes is the pool, not this pod.
    pub fn roll_back(&self, dp: &mut dyn Dataplane, log: &Logger) {
        let Some(nic) = &self.master else { return };
        if let Some(mac) = self.unicast {
            if let Err(e) = dp.steering().unicast(nic, mac, false) {
                log.error(format_args!("rollback: {e}"));
            }
        }
        for loc in self.rules.iter().rev() {
            if let Err(e) = dp.steering().rule_delete(nic, *loc) {
                log.error(format_args!("rollback: rule {loc}: {e}"));
            }
        }
        if let Some(c) = self.context {
            if let Err(e) = dp.steering().rss_delete(nic, c) {
                log.error(format_args!("rollback: context {c}: {e}"));
            }
        }
    }
}

/// What the pod's rules match: its MAC, or its addresses.
pub fn matches_for(
    s: &Steering,
    mac: Option<&str>,
    addrs: &[IpAddr],
) -> Result<Vec<FlowMatch>, CniError> {
    match s.match_on {
        SteerMatch::None => Ok(vec![]),
        SteerMatch::Mac => {
            let text = mac.ok_or_else(|| {
                refused(
                    "steering.match \"mac\": the pod interface has no MAC to steer by".into(),
                    "pass runtimeConfig.mac",
                )
            })?;
            let m = parse_mac(text).ok_or_else(|| {
                CniError::invalid_config(
                    format!("invalid value {text:?} for field runtimeConfig.mac"),
                    "expected a MAC address like 02:00:00:00:00:01",
                )
            })?;
            if m[0] & 1 != 0 {
                return Err(CniError::invalid_config(
                    format!("invalid value {text:?} for field runtimeConfig.mac"),
                    "a multicast MAC cannot be a pod's unicast address",
                ));
            }
            Ok(vec![FlowMatch::EtherDst(m)])
        }
        SteerMatch::Ip => {
            if addrs.is_empty() {
                return Err(refused(
                    "steering.match \"ip\": IPAM gave the pod no address to steer by".into(),
                    "add an ipam block, or use steering.match \"mac\"",
                ));
            }
            if addrs.len() > RULES_PER_QUEUE as usize {
                return Err(refused(
                    format!(
                        "steering.match \"ip\": {} addresses, more than the {RULES_PER_QUEUE} rules a pod owns",
                        addrs.len()
                    ),
                    "see docs/steering.md, rule locations",
                ));
            }
            Ok(addrs
                .iter()
                .map(|a| match a {
                    IpAddr::V4(a) => FlowMatch::Ip4Dst(*a),
                    IpAddr::V6(a) => FlowMatch::Ip6Dst(*a),
                })
                .collect())
        }
    }
}

/// After the leases: a context over the leased queues when there are several, the rules, the
/// unicast address. Each step records itself in `undo` before the failpoint after it.
pub fn apply(
    dp: &mut dyn Dataplane,
    plan: &LeasePlan,
    prep: &SteerPrep,
    leased: &[Leased],
    matches: &[FlowMatch],
    undo: &mut SteerUndo,
    log: &Logger,
) -> Result<SteeringInfo, CniError> {
    let s = prep.steering;
    let nic = &plan.master;
    let mut info = SteeringInfo {
        rss: s.rss.as_str().into(),
        match_on: s.match_on.as_str().into(),
        pool: plan.pool.to_string(),
        rule_base: s.rule_base,
        rules: vec![],
        context: None,
        unicast: None,
    };
    let mut queues: Vec<u32> = leased.iter().map(|l| l.physical).collect();
    queues.sort_unstable();
    let (Some(&first), false) = (queues.first(), matches.is_empty()) else {
        return Ok(info);
    };
    undo.master = Some(nic.clone());
    remove_stale_rules(dp, nic, &s, first, log)?;
    let action = if queues.len() == 1 {
        RuleAction::Queue(first)
    } else {
        let c = create_context(dp, nic, prep, &queues)?;
        undo.context = Some(c);
        info.context = Some(c);
        crate::failpoint::hit("add-after-steer-context").map_err(super::injected)?;
        RuleAction::Context(c)
    };
    for (i, m) in matches.iter().enumerate() {
        let rule = FlowRule {
            location: location(&s, first, i as u32),
            matches: *m,
            action,
        };
        undo.rules.push(rule.location);
        dp.steering()
            .rule_insert(nic, &rule)
            .map_err(|e| failed(nic, "ntuple rules (ETHTOOL_SRXCLSRLINS)", e))?;
        info.rules.push(RuleInfo {
            location: rule.location,
            rule: rule_text(&rule),
        });
    }
    crate::failpoint::hit("add-after-steer-rule").map_err(super::injected)?;
    if let Some(FlowMatch::EtherDst(mac)) = matches.first() {
        if dp
            .steering()
            .unicast(nic, *mac, true)
            .map_err(|e| failed(nic, "its unicast address filter (fdb add self)", e))?
        {
            undo.unicast = Some(*mac);
        }
        info.unicast = Some(mac_string(mac));
        crate::failpoint::hit("add-after-steer-unicast").map_err(super::injected)?;
    }
    log.info(format_args!(
        "steering: {} on {}",
        info.rules
            .iter()
            .map(|r| format!("rule {}: {}", r.location, r.rule))
            .collect::<Vec<_>>()
            .join(", "),
        nic.name
    ));
    Ok(info)
}

/// Our locations were free for the taking: their queue was not leased until this ADD. A rule
/// still there is stale (a killed ADD, a DEL never run) and goes first.
fn remove_stale_rules(
    dp: &mut dyn Dataplane,
    nic: &Master,
    s: &Steering,
    first: u32,
    log: &Logger,
) -> Result<(), CniError> {
    for i in 0..RULES_PER_QUEUE {
        let loc = location(s, first, i);
        if let Some(old) = dp
            .steering()
            .rule_get(nic, loc)
            .map_err(|e| failed(nic, "ntuple rules (ETHTOOL_GRXCLSRULE)", e))?
        {
            log.warn(format_args!(
                "steering: removing the stale {old} on {}",
                nic.name
            ));
            remove_rule(dp, nic, &old).map_err(|e| failed(nic, "ntuple rules", e))?;
        }
    }
    Ok(())
}

/// An RSS context spreading over exactly the leased `queues`; its id.
fn create_context(
    dp: &mut dyn Dataplane,
    nic: &Master,
    prep: &SteerPrep,
    queues: &[u32],
) -> Result<u32, CniError> {
    let table = table_over(prep.table_size.max(queues.len()), queues);
    dp.steering()
        .rss_create(nic, &table)
        .map_err(|e| failed(nic, "additional RSS contexts (rss-create-act)", e))
}

/// A rule as the record and CHECK say it, without its location.
pub fn rule_text(r: &FlowRule) -> String {
    format!("{} -> {}", r.matches, r.action)
}

/// Remove a rule of ours and, for a MAC rule, the MAC from the unicast filter (added after
/// the rule, removed before it).
fn remove_rule(dp: &mut dyn Dataplane, nic: &Master, r: &FlowRule) -> Result<(), DpError> {
    if let FlowMatch::EtherDst(mac) = r.matches {
        dp.steering().unicast(nic, mac, false)?;
    }
    dp.steering().rule_delete(nic, r.location)?;
    Ok(())
}

/// DEL, with the attachment's record: its unicast address, rules and context. Each is
/// idempotent (already gone is success): DEL may run twice, after a failed ADD, or after the
/// NIC lost them. A rule is only removed while it still is the one recorded (a later pod on
/// the same queue owns a rule there otherwise).
pub fn release(
    dp: &mut dyn Dataplane,
    nic: &Master,
    info: &SteeringInfo,
    log: &Logger,
) -> Result<(), CniError> {
    if let Some(mac) = info.unicast.as_deref().and_then(parse_mac) {
        dp.steering()
            .unicast(nic, mac, false)
            .map_err(|e| failed(nic, "its unicast address filter (fdb del self)", e))?;
    }
    for r in &info.rules {
        let live = dp
            .steering()
            .rule_get(nic, r.location)
            .map_err(|e| failed(nic, "ntuple rules", e))?;
        match live {
            Some(l) if rule_text(&l) == r.rule => {
                dp.steering()
                    .rule_delete(nic, r.location)
                    .map_err(|e| failed(nic, "ntuple rules (ETHTOOL_SRXCLSRLDEL)", e))?;
            }
            Some(l) => log.warn(format_args!(
                "steering: rule {} on {} is now {l}, not ours ({}), left alone",
                r.location, nic.name, r.rule
            )),
            None => {}
        }
    }
    if let Some(c) = info.context {
        match dp.steering().rss_delete(nic, c) {
            Ok(_) => {}
            // EBUSY: a rule points at it, so it was handed to someone else since; not ours.
            Err(e) if e_errno(&e) == Some(nix::errno::Errno::EBUSY) => log.warn(format_args!(
                "steering: context {c} on {} is in use by another rule, left alone",
                nic.name
            )),
            Err(e) => return Err(failed(nic, "RSS contexts (rss-delete-act)", e)),
        }
    }
    Ok(())
}

fn e_errno(e: &DpError) -> Option<nix::errno::Errno> {
    match e {
        DpError::Ethtool { source, .. } => source.errno(),
        _ => None,
    }
}

/// Remove what no live lease accounts for: rules in the plugin's range whose queue is not
/// leased (with their unicast address), then contexts over pool queues only that no queue of
/// theirs is leased for and no rule points at. Returns what it removed, described. A NIC
/// without ntuple or RSS support has nothing to sweep.
///
/// Rules and contexts are read *before* the leases, and each removal re-reads its queue's lease
/// and the rule first: an ADD leases its queue before it writes its rule, so a rule seen
/// before a lease that is absent afterwards was stale, and an ADD that takes the queue in
/// between is seen by the re-read. (What remains is the few microseconds between the re-read and
/// the delete; the plugin holds no lock across NICs' ethtool state.)
pub fn sweep(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    nic: &Master,
    log: &Logger,
) -> Result<Vec<String>, DpError> {
    let (contexts, rules) = read_steering(dp, nic)?;
    let queues = dp.master_queues(nic.ifindex)?;
    let rx: Vec<_> = queues
        .iter()
        .filter(|q| q.queue_type == QueueType::Rx)
        .collect();
    if rx.is_empty() {
        // A down NIC lists no queues, so leases cannot be told from their absence.
        return Ok(vec![]);
    }
    let rx_queues = rx.len() as u32;
    let leased: BTreeSet<u32> = rx
        .iter()
        .filter(|q| q.lease.is_some())
        .map(|q| q.id)
        .collect();
    let pool: BTreeSet<u32> = match &conf.allowed_queues {
        Some(set) => set.below(rx_queues).iter().collect(),
        None => (1..rx_queues).collect(),
    };
    let (mut removed, pointed) = sweep_rules(
        dp,
        nic,
        &conf.steering,
        rules,
        &contexts,
        rx_queues,
        &leased,
    )?;
    for c in contexts.iter().filter(|c| c.context != 0) {
        let q = c.queues();
        let stale = !q.is_empty()
            && q.iter().all(|x| pool.contains(x))
            && !q.iter().any(|x| leased.contains(x))
            && !pointed.contains(&c.context);
        if !stale {
            continue;
        }
        // The kernel refuses to delete a context a rule points at (EBUSY): one made since.
        match dp.steering().rss_delete(nic, c.context) {
            Ok(true) => removed.push(format!("stale RSS context {} over queues {q:?}", c.context)),
            Ok(false) => {}
            Err(e) if e_errno(&e) == Some(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(e),
        }
    }
    for r in &removed {
        log.info(format_args!("steering: removed {r} on {}", nic.name));
    }
    Ok(removed)
}

/// The NIC's RSS contexts and ntuple rules; none of either on a NIC that supports neither.
fn read_steering(
    dp: &mut dyn Dataplane,
    nic: &Master,
) -> Result<(Vec<Rss>, Vec<FlowRule>), DpError> {
    let unsupported =
        |e: &DpError| matches!(e, DpError::Ethtool { source, .. } if source.is_unsupported());
    let contexts = match dp.steering().rss_contexts(nic) {
        Ok(c) => c,
        Err(e) if unsupported(&e) => vec![],
        Err(e) => return Err(e),
    };
    let table = match dp.steering().rules(nic) {
        Ok(t) => t,
        Err(e) if unsupported(&e) => Default::default(),
        Err(e) => return Err(e),
    };
    let mut rules = Vec::new();
    for loc in table.locations {
        if let Some(r) = dp.steering().rule_get(nic, loc)? {
            rules.push(r);
        }
    }
    Ok((contexts, rules))
}

/// Removes the rules of ours (by location and action) whose queue is not leased; returns what
/// it removed and the contexts the remaining rules point at.
fn sweep_rules(
    dp: &mut dyn Dataplane,
    nic: &Master,
    s: &Steering,
    rules: Vec<FlowRule>,
    contexts: &[Rss],
    rx_queues: u32,
    leased: &BTreeSet<u32>,
) -> Result<(Vec<String>, BTreeSet<u32>), DpError> {
    let mut removed = Vec::new();
    let mut pointed = BTreeSet::new();
    for rule in rules {
        if let RuleAction::Context(c) = rule.action {
            pointed.insert(c);
        }
        let Some(q) = queue_of(s, rule.location, rx_queues) else {
            continue;
        };
        let ours = match rule.action {
            RuleAction::Queue(x) => x == q,
            RuleAction::Context(c) => contexts
                .iter()
                .any(|r| r.context == c && r.queues().first() == Some(&q)),
            RuleAction::Drop => false,
        };
        if !ours || leased.contains(&q) {
            continue;
        }
        // The re-read: still unleased, still this rule.
        if dp.master_queue(nic.ifindex, q)?.lease.is_some()
            || dp.steering().rule_get(nic, rule.location)? != Some(rule)
        {
            continue;
        }
        remove_rule(dp, nic, &rule)?;
        if let RuleAction::Context(c) = rule.action {
            pointed.remove(&c);
        }
        removed.push(format!("stale {rule}"));
    }
    Ok((removed, pointed))
}

/// CHECK: the recorded rules still sit where they were put and still send to the leased
/// queues, the context still spreads over exactly them, and with `exclude-pool` the default
/// context still keeps off the pool. Code 104 naming what differs.
pub fn check(
    dp: &mut dyn Dataplane,
    conf: &LeaseConfig,
    nic: &Master,
    info: &SteeringInfo,
    physical: &[u32],
) -> Result<(), CniError> {
    let differs = |what: String| {
        CniError::plugin_specific(
            errcodes::CHECK_FAILED,
            format!("steering on lease master {}: {what}", nic.name),
            "the NIC no longer steers this attachment's frames as ADD set it up",
        )
    };
    let mut queues = physical.to_vec();
    queues.sort_unstable();
    for r in &info.rules {
        let live = dp
            .steering()
            .rule_get(nic, r.location)
            .map_err(|e| failed(nic, "ntuple rules", e))?;
        match live {
            None => return Err(differs(format!("rule {} ({}) is gone", r.location, r.rule))),
            Some(l) if rule_text(&l) != r.rule => {
                return Err(differs(format!(
                    "rule {} is {}, ADD made {}",
                    r.location,
                    rule_text(&l),
                    r.rule
                )))
            }
            Some(l) => {
                if let RuleAction::Queue(q) = l.action {
                    if queues != [q] {
                        return Err(differs(format!(
                            "rule {} sends to queue {q}, the leased queues are {queues:?}",
                            r.location
                        )));
                    }
                }
            }
        }
    }
    if let Some(c) = info.context {
        let live = dp
            .steering()
            .rss_get(nic, c)
            .map_err(|e| differs(format!("RSS context {c} cannot be read: {e}")))?;
        if live.queues() != queues {
            return Err(differs(format!(
                "RSS context {c} spreads over queues {:?}, the leased queues are {queues:?}",
                live.queues()
            )));
        }
    }
    if conf.steering.rss == RssPolicy::ExcludePool {
        let rss = dp
            .steering()
            .rss_get(nic, 0)
            .map_err(|e| differs(format!("the default RSS context cannot be read: {e}")))?;
        let pool = QueueSet::parse(&info.pool).unwrap_or_default();
        if let Some(q) = rss.queues().into_iter().find(|q| pool.contains(*q)) {
            return Err(differs(format!(
                "the default RSS context spreads onto queue {q} of the pool {}",
                info.pool
            )));
        }
    }
    Ok(())
}
