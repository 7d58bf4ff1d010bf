// SPDX-License-Identifier: Apache-2.0
/*
 * `make bench` only: a bare XDP_PASS program in an object file, for xdp-loader to load so that
 * libxdp puts its multi-program dispatcher in front of it (nkc-bench, XDP dispatcher cost). Built
 * with BTF (-g): libxdp attaches it to its dispatcher as a freplace program, which needs BTF.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int nkc_bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* GPL-compatible like libxdp's own dispatcher, which this program is linked into (freplace). */
char LICENSE[] SEC("license") = "GPL";
