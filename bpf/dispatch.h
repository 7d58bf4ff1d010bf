/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Types and sizes shared by the XDP dispatcher (dispatcher.bpf.c) and its Rust loader
 * (src/xdp/). Rust uses the types libbpf-cargo generates from this object's BTF (the skeleton's
 * `types` module); the sizes (NKC_MAX_*) are repeated as Rust constants and a unit test checks
 * them against the compiled object.
 */
#ifndef NKC_DISPATCH_H
#define NKC_DISPATCH_H

#include <linux/types.h>

/*
 * Physical RX queues the dispatcher has a table entry for. A frame on a queue at or above this
 * goes to the host (XDP_PASS): the loader refuses to configure such queues, so nothing can be
 * leased through them.
 */
#define NKC_MAX_QUEUES 1024

/*
 * Entries of every pod XSKMAP, i.e. the exclusive bound on virtual queue ids. The kernel
 * requires every inner map of an ARRAY_OF_MAPS holding XSKMAPs to have exactly the template's
 * max_entries (xsk_map_meta_equal), and XSKMAP refuses BPF_F_INNER_MAP, so this is one fixed size.
 */
#define NKC_MAX_VQUEUES 1024

/*
 * What the dispatcher does with a frame of one physical queue. The fixed 1-byte underlying type
 * (a clang extension; BPF is only ever built with clang) keeps `struct nkc_queue` at 8 bytes and
 * still puts the enumerators into BTF, where the Rust unit test reads them.
 */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wfixed-enum-extension"
enum nkc_action : __u8 {
	NKC_ACTION_PASS = 0,    /* host stack; also what an all-zero (never written) entry means */
	NKC_ACTION_DROP = 1,
	NKC_ACTION_POD = 2,     /* the pod that leased the queue: its XSKMAP at `vqueue` */
	NKC_ACTION_PROGRAM = 3, /* tail call into the admin program at the same index */
};
#pragma clang diagnostic pop

/*
 * One physical queue: element of the dispatcher's `nkc_queues` table, index = physical queue id.
 *
 * `base` is not read by the dispatcher: it records the queue's configured range action so that
 * the loader can restore it when a pod gives the queue back, with the state living in bpffs
 * only (no daemon, no files: bpffs holds nothing but BPF objects).
 *
 * 8 bytes, 8-aligned: user space writes an entry with one atomic 64-bit store through an mmap of
 * the table and the dispatcher reads it with one 64-bit load, so a frame sees either the old or
 * the new entry, never a mix of both.
 */
struct nkc_queue {
	__u32 vqueue;            /* virtual queue id in the pod (NKC_ACTION_POD only) */
	enum nkc_action action;  /* what the dispatcher does now */
	enum nkc_action base;    /* the range action to restore on reset (never NKC_ACTION_POD) */
	__u16 reserved;          /* zero */
} __attribute__((aligned(8)));

_Static_assert(sizeof(struct nkc_queue) == 8, "one 64-bit load or store per entry");

/*
 * Per-queue counters (per-CPU array, key = physical queue id), kept only when the
 * `nkc_stats_enabled` knob is set at load time.
 */
struct nkc_stats {
	__u64 pass;             /* NKC_ACTION_PASS */
	__u64 drop;             /* NKC_ACTION_DROP */
	__u64 redirect;         /* NKC_ACTION_POD, handed to the pod's socket map */
	__u64 pod_drop;         /* NKC_ACTION_POD, no socket (or no pod map) at the virtual queue */
	__u64 program;          /* NKC_ACTION_PROGRAM, tail call attempted */
	__u64 program_fallback; /* NKC_ACTION_PROGRAM, tail call failed: passed to the host */
};

#endif /* NKC_DISPATCH_H */
