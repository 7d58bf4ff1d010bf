//! The `lease` block (NIC queue leasing, with `steering`) and queue-id lists.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{object, one_of, plain_absolute_path, string, uint_in, ConfigError};
use crate::bpf::pins::DEFAULT_BPFFS;
use crate::text::render_value;

/// Where device-info files go unless the config says otherwise: the NPWG device-info spec's
/// directory for files written by CNI plugins (section 4.2; `devinfo/dp/` belongs to device
/// plugins).
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/cni";

/// Highest queue id a config may name. NICs have at most a few hundred RX queues; the bound
/// keeps a typo like `"0-4294967295"` from becoming a four-billion-entry set.
pub const MAX_QUEUE_ID: u32 = 65535;

/// Longest queue-list text accepted (`"1,3-5"`): far above any real pool, far below what would
/// cost time to read.
pub const MAX_QUEUE_LIST_LEN: usize = 4096;

/// Most leases one netkit device can hold: netkit allocates at most 1024 RX queues and queue 0
/// is the device's own.
pub const MAX_LEASES_PER_DEVICE: u32 = 1023;

/// A set of RX queue ids, written `"2-7"` or `"1,3-5"` (or as a JSON list of ids).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueSet(BTreeSet<u32>);

impl QueueSet {
    /// Parses `"2-7"`, `"1,3-5"`, `"4"`; spaces around items are allowed. `Err` says why.
    /// At most [`MAX_QUEUE_ID`]` + 1` ids in all (see [`QueueSet::parse_capped`]).
    pub fn parse(s: &str) -> Result<QueueSet, String> {
        Self::parse_capped(s, MAX_QUEUE_ID as usize + 1)
    }

    /// As [`QueueSet::parse`], refusing a text longer than [`MAX_QUEUE_LIST_LEN`] bytes and a
    /// list whose ranges add up to more than `cap` ids. Each range's size is computed with
    /// checked arithmetic and counted *before* it is expanded, so a hostile `"0-65535,0-65535,…"`
    /// costs no more than reading its text (overlapping ranges count twice).
    pub fn parse_capped(s: &str, cap: usize) -> Result<QueueSet, String> {
        if s.len() > MAX_QUEUE_LIST_LEN {
            return Err(format!(
                "{} bytes long; a queue list has at most {MAX_QUEUE_LIST_LEN}",
                s.len()
            ));
        }
        let mut set = BTreeSet::new();
        let mut total: usize = 0;
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                return Err("empty item (expected ids and ranges like \"1,3-5\")".into());
            }
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (queue_id(a.trim())?, queue_id(b.trim())?),
                None => {
                    let id = queue_id(item)?;
                    (id, id)
                }
            };
            if lo > hi {
                return Err(format!(
                    "range {:?} is reversed",
                    crate::logging::clip(item, 32)
                ));
            }
            total = (hi - lo)
                .checked_add(1)
                .and_then(|n| total.checked_add(n as usize))
                .filter(|t| *t <= cap)
                .ok_or_else(|| format!("names more than {cap} queues"))?;
            set.extend(lo..=hi);
        }
        Ok(QueueSet(set))
    }

    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> QueueSet {
        QueueSet(ids.into_iter().collect())
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// The ids below `limit` (a NIC's queue count).
    pub fn below(&self, limit: u32) -> QueueSet {
        QueueSet(self.0.range(..limit).copied().collect())
    }
}

/// Renders as compact ranges (`1,3-5`), the way operators write pools.
impl fmt::Display for QueueSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(lo) = ids.next() {
            let mut hi = lo;
            while ids.peek() == Some(&(hi + 1)) {
                hi = ids.next().unwrap();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

fn queue_id(s: &str) -> Result<u32, String> {
    // Only plain decimal digits: "+3" or " 3" parse as u32 but are not what anyone meant.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{:?} is not a queue id",
            crate::logging::clip(s, 32)
        ));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_QUEUE_ID => Ok(n),
        _ => Err(format!(
            "queue id {} is above {MAX_QUEUE_ID}",
            crate::logging::clip(s, 32)
        )),
    }
}

/// How many queues a pod gets, or exactly which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseQueues {
    /// Any `n` free queues of the pool.
    Count(u32),
    /// These physical queue ids, in this order.
    Ids(Vec<u32>),
}

/// The `lease` block: which NIC's RX queues are leased into pods, from which pool, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The physical NIC, by name in the node's (the plugin's) network namespace.
    pub master: String,
    /// What a pod gets when it asks for nothing itself (`queues`, default 1, or `queueIds`).
    pub queues: LeaseQueues,
    /// The admin's pool (`allowedQueues`). `None`: every RX queue of the master but queue 0,
    /// which stays with the host (it usually carries the node's own traffic).
    pub allowed_queues: Option<QueueSet>,
    /// Most queues one pod may ask for (`maxQueuesPerPod`).
    pub max_queues_per_pod: Option<u32>,
    /// Where the device-info file of each attachment is written (`deviceInfoDir`).
    pub device_info_dir: PathBuf,
    /// What the pod binds to its leased queues (`consumer`). `None`: not declared (AF_XDP when
    /// the network has an `xdp` block, see [`NetConf::lease_consumer`]).
    pub consumer: Option<LeaseConsumer>,
    /// The bpf file system whose NIC directory a memory-provider ADD locks (`bpffs`, default
    /// `/sys/fs/bpf`): the directory, and so the lock, the XDP dispatcher of a network with the
    /// same `xdp.bpffs` takes.
    pub bpffs: PathBuf,
    /// How the NIC is made to deliver the pod's frames, and only them, to its leased queues
    /// (`steering`; absent: [`Steering::default`], RSS checked but never written, no rules).
    pub steering: Steering,
}

/// `lease.steering`: RSS over the pool and the pod's ntuple rule. See docs/steering.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steering {
    pub rss: RssPolicy,
    pub match_on: SteerMatch,
    /// First ntuple rule location the plugin owns on the NIC (`ruleBase`, default
    /// [`DEFAULT_RULE_BASE`]): a pod whose first leased queue is `q` gets locations
    /// `ruleBase + RULES_PER_QUEUE * q ..`, so a rule's location names its queue without state.
    pub rule_base: u32,
}

impl Default for Steering {
    fn default() -> Self {
        Steering {
            rss: RssPolicy::Admin,
            match_on: SteerMatch::None,
            rule_base: DEFAULT_RULE_BASE,
        }
    }
}

/// Default `steering.ruleBase`: the start of the rule table. The admin's own rules go above
/// the plugin's range (`ruleBase + RULES_PER_QUEUE * <NIC's RX queues>`) or below `ruleBase`.
pub const DEFAULT_RULE_BASE: u32 = 0;
/// Rule locations reserved per physical queue: one per pod address (`match: ip`) or one MAC.
pub const RULES_PER_QUEUE: u32 = 4;
/// Highest `steering.ruleBase`: keeps every location of a 1024-queue NIC inside a u32 and below
/// `RX_CLS_LOC_SPECIAL` (include/uapi/linux/ethtool.h).
pub const MAX_RULE_BASE: u32 = 1 << 24;

/// `steering.rss`: who keeps the pool out of the NIC's default RSS context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssPolicy {
    /// The admin (`ethtool -X`); ADD refuses a queue the default context still spreads onto.
    Admin,
    /// The plugin writes the default context's table over the queues outside the pool.
    ExcludePool,
}

impl RssPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RssPolicy::Admin => "admin",
            RssPolicy::ExcludePool => "exclude-pool",
        }
    }
}

/// `steering.match`: which frames the pod's rule sends to its leased queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerMatch {
    /// No rule: the admin steers.
    None,
    /// Destination MAC = the pod interface's MAC (runtimeConfig `mac`, else the device's own).
    Mac,
    /// Destination IP = each of the pod's IPAM addresses.
    Ip,
}

impl SteerMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            SteerMatch::None => "none",
            SteerMatch::Mac => "mac",
            SteerMatch::Ip => "ip",
        }
    }
}

const RSS_POLICIES: &[(&str, RssPolicy)] = &[
    ("admin", RssPolicy::Admin),
    ("exclude-pool", RssPolicy::ExcludePool),
];
const STEER_MATCHES: &[(&str, SteerMatch)] = &[
    ("none", SteerMatch::None),
    ("mac", SteerMatch::Mac),
    ("ip", SteerMatch::Ip),
];
const STEERING_KEYS: &[&str] = &["rss", "match", "ruleBase"];

/// The `lease.steering` block. An unknown key is an invalid value of the block (code 7), as the
/// block is ours end to end: a misspelt `rss` must not silently leave the pool in RSS.
fn steering(v: &Value) -> Result<Steering, ConfigError> {
    let obj = object(v, "lease.steering")?;
    if let Some((k, val)) = obj
        .iter()
        .find(|(k, _)| !STEERING_KEYS.contains(&k.as_str()))
    {
        return Err(ConfigError::invalid(
            format!("lease.steering.{k}"),
            val,
            format!("unknown key; expected one of {}", STEERING_KEYS.join(", ")),
        ));
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let mut s = Steering::default();
    if let Some(r) = get("rss") {
        s.rss = one_of(r, "lease.steering.rss", RSS_POLICIES)?;
    }
    if let Some(m) = get("match") {
        s.match_on = one_of(m, "lease.steering.match", STEER_MATCHES)?;
    }
    if let Some(b) = get("ruleBase") {
        s.rule_base = uint_in(b, "lease.steering.ruleBase", 0, u64::from(MAX_RULE_BASE))? as u32;
    }
    Ok(s)
}

/// `lease.consumer`: what the pod binds to its leased queues. The kernel makes the two exclusive
/// per NIC: a memory provider cannot be bound while the NIC carries any XDP program
/// (`__netif_mp_open_rxq`, net/core/netdev_rx_queue.c: "unable to custom memory provider to
/// device with XDP program attached", checked on the *physical* NIC, since
/// `netif_mp_open_rxq` follows the lease from the netkit queue to it first), and no XDP program
/// can be attached while one is bound (`dev_xdp_attach`, net/core/dev.c: "unable to install XDP
/// to device using memory provider"). See docs/memory-providers.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseConsumer {
    /// AF_XDP sockets, fed by the XDP dispatcher (`xdp` block) or by the admin's own program.
    AfXdp,
    /// A page-pool memory provider (io_uring zero-copy receive, devmem TCP) bound to the leased
    /// queue through the pod's netkit device.
    MemoryProvider,
}

impl LeaseConsumer {
    /// The config and device-info spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseConsumer::AfXdp => "af-xdp",
            LeaseConsumer::MemoryProvider => "memory-provider",
        }
    }

    /// The device-info spelling back (`None` for anything else).
    pub fn parse(s: &str) -> Option<LeaseConsumer> {
        LEASE_CONSUMERS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
    }
}

pub(super) const LEASE_CONSUMERS: &[(&str, LeaseConsumer)] = &[
    ("af-xdp", LeaseConsumer::AfXdp),
    ("memory-provider", LeaseConsumer::MemoryProvider),
];

impl LeaseConfig {
    /// The pool as configured, for messages: the explicit set, or a description of the default.
    pub fn pool_description(&self) -> String {
        match &self.allowed_queues {
            Some(set) => format!("allowedQueues {set}"),
            None => "every RX queue but 0 (default pool)".into(),
        }
    }

    /// Whether `id` is in the admin's pool (the NIC's range is checked separately).
    pub fn allows(&self, id: u32) -> bool {
        match &self.allowed_queues {
            Some(set) => set.contains(id),
            None => id != 0,
        }
    }
}

const LEASE_KEYS: &[&str] = &[
    "master",
    "queues",
    "queueIds",
    "allowedQueues",
    "maxQueuesPerPod",
    "deviceInfoDir",
    "consumer",
    "bpffs",
    "steering",
];

pub(super) fn lease(v: &Value) -> Result<LeaseConfig, ConfigError> {
    let obj = object(v, "lease")?;
    if let Some((k, val)) = obj.iter().find(|(k, _)| !LEASE_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::UnsupportedField {
            key: format!("lease.{k}"),
            value: render_value(val),
        });
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());

    let master =
        match get("master") {
            None => return Err(ConfigError::missing(
                "lease.master",
                "the physical NIC (by name in the node's network namespace) to lease queues from",
            )),
            Some(m) => {
                let s = string(m, "lease.master")?;
                if let Err(e) = crate::kernel::link::validate_ifname(s) {
                    return Err(ConfigError::invalid("lease.master", m, e.to_string()));
                }
                s.to_owned()
            }
        };

    let max_leases = u64::from(MAX_LEASES_PER_DEVICE);
    let queues = match (get("queues"), get("queueIds")) {
        (Some(_), Some(ids)) => {
            return Err(ConfigError::invalid(
                "lease.queueIds",
                ids,
                "give either lease.queues (a count) or lease.queueIds (exact ids), not both",
            ))
        }
        (Some(n), None) => LeaseQueues::Count(uint_in(n, "lease.queues", 1, max_leases)? as u32),
        (None, Some(ids)) => LeaseQueues::Ids(queue_id_list(ids, "lease.queueIds")?),
        (None, None) => LeaseQueues::Count(1),
    };

    let allowed_queues = match get("allowedQueues") {
        None => None,
        Some(a) => {
            let set = match a {
                Value::String(s) => QueueSet::parse(s)
                    .map_err(|why| ConfigError::invalid("lease.allowedQueues", a, why))?,
                Value::Array(_) => QueueSet::from_ids(queue_id_list(a, "lease.allowedQueues")?),
                _ => {
                    return Err(ConfigError::invalid(
                        "lease.allowedQueues",
                        a,
                        "expected a string like \"2-7\" or \"1,3-5\", or a list of queue ids",
                    ))
                }
            };
            Some(set)
        }
    };

    let max_queues_per_pod = get("maxQueuesPerPod")
        .map(|m| uint_in(m, "lease.maxQueuesPerPod", 1, max_leases).map(|n| n as u32))
        .transpose()?;

    let device_info_dir = match get("deviceInfoDir") {
        None => PathBuf::from(DEFAULT_DEVICE_INFO_DIR),
        Some(d) => plain_absolute_path(d, "lease.deviceInfoDir")?,
    };

    let consumer = get("consumer")
        .map(|c| one_of(c, "lease.consumer", LEASE_CONSUMERS))
        .transpose()?;

    let bpffs = match get("bpffs") {
        None => PathBuf::from(DEFAULT_BPFFS),
        Some(b) => plain_absolute_path(b, "lease.bpffs")?,
    };

    let steering = get("steering")
        .map(steering)
        .transpose()?
        .unwrap_or_default();

    let conf = LeaseConfig {
        master,
        queues,
        allowed_queues,
        max_queues_per_pod,
        device_info_dir,
        consumer,
        bpffs,
        steering,
    };
    lease_consistency(&conf, obj)?;
    Ok(conf)
}

/// The admin's own defaults must fit the admin's own pool and cap; a pod's request is checked
/// against the same rules at ADD time.
fn lease_consistency(c: &LeaseConfig, obj: &Map<String, Value>) -> Result<(), ConfigError> {
    let field = |k: &str| obj.get(k).cloned().unwrap_or(Value::Null);
    if c.allowed_queues.as_ref().is_some_and(QueueSet::is_empty) {
        return Err(ConfigError::invalid(
            "lease.allowedQueues",
            &field("allowedQueues"),
            "the pool is empty",
        ));
    }
    let cap = c.max_queues_per_pod.unwrap_or(MAX_LEASES_PER_DEVICE);
    match &c.queues {
        LeaseQueues::Count(n) => {
            if *n > cap {
                return Err(ConfigError::invalid(
                    "lease.queues",
                    &field("queues"),
                    format!("more than maxQueuesPerPod {cap}"),
                ));
            }
            if let Some(pool) = &c.allowed_queues {
                if *n as usize > pool.len() {
                    return Err(ConfigError::invalid(
                        "lease.queues",
                        &field("queues"),
                        format!(
                            "more than the {} queue(s) in allowedQueues {pool}",
                            pool.len()
                        ),
                    ));
                }
            }
        }
        LeaseQueues::Ids(ids) => {
            if ids.len() as u32 > cap {
                return Err(ConfigError::invalid(
                    "lease.queueIds",
                    &field("queueIds"),
                    format!("{} queues, more than maxQueuesPerPod {cap}", ids.len()),
                ));
            }
            if let Some(id) = ids.iter().find(|id| !c.allows(**id)) {
                return Err(ConfigError::invalid(
                    "lease.queueIds",
                    &field("queueIds"),
                    format!("queue {id} is outside the pool: {}", c.pool_description()),
                ));
            }
        }
    }
    Ok(())
}

/// A non-empty JSON list of distinct queue ids.
fn queue_id_list(v: &Value, field: &str) -> Result<Vec<u32>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| ConfigError::invalid(field, v, "expected a list of queue ids"))?;
    if items.is_empty() {
        return Err(ConfigError::invalid(field, v, "the list is empty"));
    }
    if items.len() > MAX_LEASES_PER_DEVICE as usize && field == "lease.queueIds" {
        return Err(ConfigError::invalid(
            field,
            v,
            format!("a netkit device holds at most {MAX_LEASES_PER_DEVICE} leases"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = uint_in(item, &format!("{field}[{i}]"), 0, u64::from(MAX_QUEUE_ID))? as u32;
        if !seen.insert(id) {
            return Err(ConfigError::invalid(
                field,
                v,
                format!("queue {id} is listed twice"),
            ));
        }
        out.push(id);
    }
    Ok(out)
}
