// SPDX-License-Identifier: Apache-2.0
/*
 * Per-queue XDP dispatcher for one physical NIC, shared by every pod that leases a queue of it.
 *
 * The kernel runs XDP for a leased queue on the physical NIC and has no per-queue attach, so this
 * one program, attached to the whole NIC, decides per `rx_queue_index`:
 *
 *   pass     host stack (the default of every queue: an all-zero entry means pass)
 *   drop     XDP_DROP
 *   pod      bpf_redirect_map() into the XSKMAP of the pod that leased the queue, at the pod's
 *            *virtual* queue id; no socket there -> XDP_DROP (never the host, see below)
 *   program  tail call into an admin-supplied XDP program; if that fails -> XDP_PASS
 *
 * It never reads packet data, so there is nothing to bounds-check: the verdict depends only on
 * the queue the frame arrived on.
 *
 * Why a leased queue without a socket drops instead of passing: frames steered to a leased queue
 * are the pod's traffic. XDP_PASS would hand them to the *host's* stack on the physical NIC, i.e.
 * let the host (and its sockets, netfilter, routing) see or answer another tenant's packets, and
 * let a pod that has not bound its socket yet get traffic injected into the host. The same
 * reasoning makes a missing pod map (a half-written entry) and an unknown action value drop.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "dispatch.h"

/*
 * Knobs, set by the loader before load. They live in frozen rodata, so the verifier knows their
 * values and removes the code they switch off: with statistics off, the per-packet path carries
 * no counter code at all.
 */
const volatile bool nkc_stats_enabled = false;

/* Physical queue id -> what to do with its frames. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NKC_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct nkc_queue);
} queues SEC(".maps");

/*
 * Physical queue id -> the XSKMAP of the pod that leased it (one map per pod interface, created
 * and pinned by the loader). A separate map per pod is what keeps pods apart: the dispatcher can
 * only ever redirect a queue's frames into the one map stored at that queue's index.
 * XSKMAP takes no BTF key/value types (map_check_no_btf), hence key_size/value_size.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, NKC_MAX_QUEUES);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_XSKMAP);
		__uint(max_entries, NKC_MAX_VQUEUES);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(__u32));
	});
} pod_xsks SEC(".maps");

/* Physical queue id -> admin XDP program for queues whose action is `program`. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, NKC_MAX_QUEUES);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} programs SEC(".maps");

/* Per-queue counters; the loader shrinks this to one entry when statistics are off. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NKC_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct nkc_stats);
} stats SEC(".maps");

#define NKC_COUNT(stats_on, queue, field)                                       \
	do {                                                                    \
		if (stats_on) {                                                 \
			struct nkc_stats *s_ = bpf_map_lookup_elem(&stats, &(queue)); \
			if (s_)                                                 \
				s_->field++;                                    \
		}                                                               \
	} while (0)

SEC("xdp")
int nkc_dispatch(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	/* One read of the knob: every use below is then a known constant for the verifier. */
	const bool stats_on = nkc_stats_enabled;
	struct nkc_queue *entry;
	void *xsks;
	long verdict;

	entry = bpf_map_lookup_elem(&queues, &queue);
	if (!entry)
		return XDP_PASS; /* queue >= NKC_MAX_QUEUES: never configurable, host's */

	switch (entry->action) {
	case NKC_ACTION_PASS:
		NKC_COUNT(stats_on, queue, pass);
		return XDP_PASS;
	case NKC_ACTION_POD:
		xsks = bpf_map_lookup_elem(&pod_xsks, &queue);
		if (!xsks) {
			NKC_COUNT(stats_on, queue, pod_drop);
			return XDP_DROP;
		}
		/* The low bits of flags are the verdict when the slot holds no socket. */
		verdict = bpf_redirect_map(xsks, entry->vqueue, XDP_DROP);
		if (stats_on) {
			if (verdict == XDP_REDIRECT)
				NKC_COUNT(stats_on, queue, redirect);
			else
				NKC_COUNT(stats_on, queue, pod_drop);
		}
		return verdict;
	case NKC_ACTION_DROP:
		NKC_COUNT(stats_on, queue, drop);
		return XDP_DROP;
	case NKC_ACTION_PROGRAM:
		NKC_COUNT(stats_on, queue, program);
		bpf_tail_call(ctx, &programs, queue);
		/* Empty slot or incompatible program: the queue was configured for the host's use. */
		NKC_COUNT(stats_on, queue, program_fallback);
		return XDP_PASS;
	default:
		/* Only a loader newer than this program writes other values: fail closed. */
		return XDP_DROP;
	}
}

char LICENSE[] SEC("license") = "Apache-2.0";
