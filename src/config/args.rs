//! The pod's own side of the config: the CNI_ARGS and runtimeConfig keys a pod may set, and
//! the CNI_ARGS keys the parse layer lets through.

/// CNI_ARGS key: how many queues the pod asks for.
pub const ARG_QUEUES: &str = "NETKIT_LEASE_QUEUES";
/// CNI_ARGS key: exactly which physical queues the pod asks for (`"3"`, `"3,5"`, `"3-5"`).
pub const ARG_QUEUE_IDS: &str = "NETKIT_LEASE_QUEUE_IDS";
/// runtimeConfig key: as [`ARG_QUEUES`] (a number).
pub const RC_QUEUES: &str = "netkitLeaseQueues";
/// runtimeConfig key: as [`ARG_QUEUE_IDS`] (a list of numbers).
pub const RC_QUEUE_IDS: &str = "netkitLeaseQueueIds";

/// CNI_ARGS keys accepted without `IgnoreUnknown=1`. CNI_ARGS is passed on unchanged to the IPAM
/// delegate, so keys meant for it must get through us: `IP` is host-local's request for a fixed
/// address, and the `K8S_POD_*` keys are what Kubernetes runtimes send for every pod.
pub const KNOWN_ARGS: &[&str] = &[
    // A pod's lease request (bounded by the admin's lease block).
    ARG_QUEUES,
    ARG_QUEUE_IDS,
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];
