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
 * reasoning makes a missing pod map and an unknown action value drop.
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

/*
 * Physical queue id -> what to do with its frames. A global array (its own internal map, which
 * libbpf creates mmapable) rather than an ARRAY map: the dispatcher indexes it directly instead
 * of going through a map lookup, and the loader reads and writes entries through an mmap of the
 * pinned map, one atomic 8-byte store each.
 */
struct nkc_queue nkc_queues[NKC_MAX_QUEUES] SEC(".data.queues");

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

/* One 64-bit load of a whole entry: see struct nkc_queue on why it must not be split. */
static __always_inline struct nkc_queue nkc_queue_read(__u32 queue)
{
	union {
		__u64 raw;
		struct nkc_queue entry;
	} u;

	u.raw = *(volatile __u64 *)&nkc_queues[queue];
	return u.entry;
}

/* A pod queue: the owning pod's XSKMAP at the virtual queue, else drop. */
static __always_inline long nkc_to_pod(__u32 queue, __u32 vqueue)
{
	void *xsks = bpf_map_lookup_elem(&pod_xsks, &queue);

	if (!xsks)
		return XDP_DROP; /* no pod map (never left so by the loader): still the pod's traffic */
	/* The low bits of flags are the verdict when the slot holds no socket. */
	return bpf_redirect_map(xsks, vqueue, XDP_DROP);
}

/*
 * nkc_to_pod for the lean dispatcher, written so that nothing lives in a callee-saved register
 * across the map lookup: the key and the virtual queue go to the stack together and the queue is
 * read back (volatile) after the call. The JIT saves and restores the callee-saved registers a
 * program uses in its prologue and epilogue, i.e. on *every* packet, pass path included; the
 * stack slot costs the pod path one store and one load instead.
 */
static __always_inline long nkc_to_pod_lean(__u32 queue, __u32 vqueue)
{
	struct {
		__u32 queue;
		__u32 vqueue;
	} k = { queue, vqueue };
	void *xsks = bpf_map_lookup_elem(&pod_xsks, &k.queue);

	if (!xsks)
		return XDP_DROP;
	return bpf_redirect_map(xsks, *(volatile __u32 *)&k.vqueue, XDP_DROP);
}

/*
 * The per-packet path without counters. It shares no computed value with the counted path, so
 * that the compiler keeps nothing in callee-saved registers for the counters' helper calls: with
 * the counted path removed by the verifier, the JIT saves only what the pod path needs, and the
 * pass and drop paths are a bounds check, one load and a compare or two.
 */
static __always_inline int nkc_dispatch_fast(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	struct nkc_queue entry;

	if (queue >= NKC_MAX_QUEUES)
		return XDP_PASS; /* never configurable: the host's */
	entry = nkc_queue_read(queue);
	switch (entry.action) {
	case NKC_ACTION_PASS:
		return XDP_PASS;
	case NKC_ACTION_POD:
		return nkc_to_pod(queue, entry.vqueue);
	case NKC_ACTION_DROP:
		return XDP_DROP;
	case NKC_ACTION_PROGRAM:
		bpf_tail_call(ctx, &programs, queue);
		/* Empty slot or incompatible program: the queue was configured for the host's use. */
		return XDP_PASS;
	default:
		/* Only a loader newer than this program writes other values: fail closed. */
		return XDP_DROP;
	}
}

static __always_inline void nkc_count(__u32 queue, __u32 field)
{
	__u64 *s = bpf_map_lookup_elem(&stats, &queue);

	if (s && field < sizeof(struct nkc_stats) / sizeof(__u64))
		s[field]++;
}

#define NKC_FIELD(name) (__builtin_offsetof(struct nkc_stats, name) / sizeof(__u64))

/*
 * The same decisions as nkc_dispatch_fast, counted. A separate BPF function so that its
 * register needs do not leak into the fast path; with statistics off the verifier removes it.
 */
static __noinline int nkc_dispatch_counted(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	struct nkc_queue entry;
	long verdict;

	if (queue >= NKC_MAX_QUEUES)
		return XDP_PASS;
	entry = nkc_queue_read(queue);
	switch (entry.action) {
	case NKC_ACTION_PASS:
		nkc_count(queue, NKC_FIELD(pass));
		return XDP_PASS;
	case NKC_ACTION_POD:
		verdict = nkc_to_pod(queue, entry.vqueue);
		nkc_count(queue, verdict == XDP_REDIRECT ? NKC_FIELD(redirect) : NKC_FIELD(pod_drop));
		return verdict;
	case NKC_ACTION_DROP:
		nkc_count(queue, NKC_FIELD(drop));
		return XDP_DROP;
	case NKC_ACTION_PROGRAM:
		nkc_count(queue, NKC_FIELD(program));
		bpf_tail_call(ctx, &programs, queue);
		nkc_count(queue, NKC_FIELD(program_fallback));
		return XDP_PASS;
	default:
		return XDP_DROP;
	}
}

/*
 * The full dispatcher: every action, and the counters when the loader turned them on. The
 * loader attaches it only when the NIC needs it (statistics on, or a range with action
 * `program`), because its tail call has a per-packet price even on queues that never take it:
 * a program containing bpf_tail_call is "tail call reachable" (kernel/bpf/verifier.c,
 * check_subprogs), and the x86 JIT then sets up the tail call counter in its prologue on every
 * run (arch/x86/net/bpf_jit_comp.c, emit_prologue_tail_call), ~8 instructions per packet, and
 * pushes and pops the registers the tail call path needs.
 */
SEC("xdp")
int nkc_disp_full(struct xdp_md *ctx)
{
	/*
	 * The knob is a known constant to the verifier, which removes the branch not taken: with
	 * statistics off, only the fast path is left in the loaded program.
	 */
	if (nkc_stats_enabled)
		return nkc_dispatch_counted(ctx);
	return nkc_dispatch_fast(ctx);
}

/*
 * The lean dispatcher, attached whenever statistics are off and no range runs an admin program:
 * no tail call, no counters, no knob to test. Only the action byte decides the pass path (the
 * most common verdict: every queue not leased to a pod), one byte load after the bounds check;
 * every other action rereads the whole entry in one 64-bit load and decides on that, so a pod
 * frame still sees `action` and `vqueue` of the same write (see struct nkc_queue). If it ever
 * sees NKC_ACTION_PROGRAM (it cannot: the loader switches the link to nkc_disp_full before it
 * writes a program action), it does what the full dispatcher does on an empty program slot.
 */
SEC("xdp")
int nkc_dispatch(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	struct nkc_queue entry;

	if (queue >= NKC_MAX_QUEUES)
		return XDP_PASS;
	if (*(volatile enum nkc_action *)&nkc_queues[queue].action == NKC_ACTION_PASS)
		return XDP_PASS;
	entry = nkc_queue_read(queue);
	/* The pod path first: it is the one whose every instruction an AF_XDP consumer pays. */
	if (entry.action == NKC_ACTION_POD)
		return nkc_to_pod_lean(queue, entry.vqueue);
	if (entry.action == NKC_ACTION_PASS || entry.action == NKC_ACTION_PROGRAM)
		return XDP_PASS;
	return XDP_DROP; /* drop, and values only a newer loader writes: fail closed */
}

char LICENSE[] SEC("license") = "Apache-2.0";
