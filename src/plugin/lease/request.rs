//! What a pod asks for (runtimeConfig, CNI_ARGS or the config's default) and whether the
//! admin's pool and cap allow it; checked against the NIC later, in [`super::plan`].

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::cni::{CniArgs, CniError};
use crate::config::{LeaseConfig, LeaseQueues, QueueSet, MAX_LEASES_PER_DEVICE};

// The pod's side of a lease request (CNI_ARGS, runtimeConfig) is named with the config, which
// the parse layer checks before anything acts.
pub use crate::config::{ARG_QUEUES, ARG_QUEUE_IDS, RC_QUEUES, RC_QUEUE_IDS};

/// How much of a pod-supplied value an error message or log line repeats.
const ECHO_MAX: usize = 64;

/// CNI_ARGS without this plugin's own keys, for delegated plugins.
pub fn strip_own_args(raw: &str) -> String {
    raw.split(';')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            key != ARG_QUEUES && key != ARG_QUEUE_IDS
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A pod's resolved request and where it came from (named in error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRequest {
    pub queues: LeaseQueues,
    pub origin: String,
}

/// Reads the pod's request: runtimeConfig first (the runtime's structured channel), then
/// CNI_ARGS, then the config's own default. The request is checked against the admin's pool and
/// cap here; against the NIC in [`super::plan`].
pub fn pod_request(
    conf: &LeaseConfig,
    args: &CniArgs,
    runtime: Option<&Map<String, Value>>,
) -> Result<PodRequest, CniError> {
    // The pod controls these values: bounded before they are expanded, clipped where echoed.
    let cap = conf.max_queues_per_pod.unwrap_or(MAX_LEASES_PER_DEVICE) as usize;
    let asked = match from_runtime_config(runtime, cap)? {
        Some(r) => Some(r),
        None => from_cni_args(args, cap)?,
    };
    let Some(req) = asked else {
        return Ok(PodRequest {
            queues: conf.queues.clone(),
            origin: "the lease block".into(),
        });
    };
    check_against_pool(conf, &req)?;
    Ok(req)
}

/// A pod-supplied value as an error message repeats it.
fn clip(v: &dyn std::fmt::Display) -> String {
    crate::logging::clip(&v.to_string(), ECHO_MAX)
}

/// The request in runtimeConfig, if it has one; `cap` bounds a list before it is read.
fn from_runtime_config(
    runtime: Option<&Map<String, Value>>,
    cap: usize,
) -> Result<Option<PodRequest>, CniError> {
    let rc = |k: &str| runtime.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    Ok(match (rc(RC_QUEUES), rc(RC_QUEUE_IDS)) {
        (Some(_), Some(_)) => {
            return Err(CniError::invalid_config(
                format!("runtimeConfig has both {RC_QUEUES} and {RC_QUEUE_IDS}"),
                "ask for a number of queues or for exact queue ids, not both",
            ))
        }
        (Some(v), None) => {
            let n = v
                .as_u64()
                .filter(|n| *n <= u64::from(u32::MAX))
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!("runtimeConfig {RC_QUEUES}={} is not a queue count", clip(v)),
                        "expected a positive integer",
                    )
                })?;
            Some(PodRequest {
                queues: LeaseQueues::Count(n as u32),
                origin: format!("runtimeConfig {RC_QUEUES}={n}"),
            })
        }
        (None, Some(v)) => {
            if let Some(a) = v.as_array().filter(|a| a.len() > cap) {
                return Err(CniError::invalid_config(
                    format!("runtimeConfig {RC_QUEUE_IDS}={} asks for {} queues, more than the {cap} a pod may have", clip(v), a.len()),
                    "",
                ));
            }
            let ids = v
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| {
                    a.iter()
                        .map(|i| {
                            i.as_u64()
                                .filter(|n| *n <= u64::from(u32::MAX))
                                .map(|n| n as u32)
                        })
                        .collect::<Option<Vec<u32>>>()
                })
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!(
                            "runtimeConfig {RC_QUEUE_IDS}={} is not a list of queue ids",
                            clip(v)
                        ),
                        "expected e.g. [2, 3]",
                    )
                })?;
            Some(PodRequest {
                queues: LeaseQueues::Ids(ids),
                origin: format!("runtimeConfig {RC_QUEUE_IDS}={}", clip(v)),
            })
        }
        (None, None) => None,
    })
}

/// The request in CNI_ARGS, if it has one; `cap` bounds a list before it is expanded.
fn from_cni_args(args: &CniArgs, cap: usize) -> Result<Option<PodRequest>, CniError> {
    Ok(match (args.get(ARG_QUEUES), args.get(ARG_QUEUE_IDS)) {
        (Some(_), Some(_)) => {
            return Err(CniError::invalid_config(
                format!("CNI_ARGS has both {ARG_QUEUES} and {ARG_QUEUE_IDS}"),
                "ask for a number of queues or for exact queue ids, not both",
            ))
        }
        (Some(v), None) => {
            let n = v
                .parse::<u32>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    CniError::invalid_config(
                        format!("CNI_ARGS {ARG_QUEUES}={:?} is not a queue count", clip(&v)),
                        "expected a positive integer",
                    )
                })?;
            Some(PodRequest {
                queues: LeaseQueues::Count(n),
                origin: format!("CNI_ARGS {ARG_QUEUES}={n}"),
            })
        }
        (None, Some(v)) => {
            // Capped at what the pod may hold before anything is expanded.
            let set = QueueSet::parse_capped(v, cap).map_err(|why| {
                CniError::invalid_config(
                    format!(
                        "CNI_ARGS {ARG_QUEUE_IDS}={:?} is not a list of at most {cap} queue ids",
                        clip(&v)
                    ),
                    why,
                )
            })?;
            Some(PodRequest {
                queues: LeaseQueues::Ids(set.iter().collect()),
                origin: format!("CNI_ARGS {ARG_QUEUE_IDS}={}", clip(&v)),
            })
        }
        (None, None) => None,
    })
}

/// A pod may only ask within the admin's pool and cap.
fn check_against_pool(conf: &LeaseConfig, req: &PodRequest) -> Result<(), CniError> {
    let cap = conf.max_queues_per_pod.unwrap_or(MAX_LEASES_PER_DEVICE);
    let cap_name = if conf.max_queues_per_pod.is_some() {
        "maxQueuesPerPod"
    } else {
        "the netkit limit"
    };
    let origin = &req.origin;
    match &req.queues {
        LeaseQueues::Count(0) => Err(CniError::invalid_config(
            format!("{origin}: a pod asking for leases needs at least 1 queue"),
            "",
        )),
        LeaseQueues::Count(n) if *n > cap => Err(CniError::invalid_config(
            format!("{origin} asks for {n} queues, more than {cap_name} {cap}"),
            format!("lease pool: {}", conf.pool_description()),
        )),
        LeaseQueues::Count(n) => match &conf.allowed_queues {
            Some(pool) if *n as usize > pool.len() => Err(CniError::invalid_config(
                format!(
                    "{origin} asks for {n} queues, more than the {} in allowedQueues {pool}",
                    pool.len()
                ),
                "",
            )),
            _ => Ok(()),
        },
        LeaseQueues::Ids(ids) => {
            let distinct: BTreeSet<u32> = ids.iter().copied().collect();
            if distinct.len() != ids.len() {
                return Err(CniError::invalid_config(
                    format!("{origin} names a queue twice"),
                    "",
                ));
            }
            if ids.len() as u32 > cap {
                return Err(CniError::invalid_config(
                    format!(
                        "{origin} asks for {} queues, more than {cap_name} {cap}",
                        ids.len()
                    ),
                    "",
                ));
            }
            match ids.iter().find(|id| !conf.allows(**id)) {
                Some(id) => Err(CniError::invalid_config(
                    format!(
                        "{origin} asks for queue {id}, which is outside the lease pool ({})",
                        conf.pool_description()
                    ),
                    "a pod may only ask for queues of the pool the lease block allows",
                )),
                None => Ok(()),
            }
        }
    }
}
