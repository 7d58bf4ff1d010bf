// SPDX-License-Identifier: Apache-2.0
/*
 * BPF host routing, egress half: runs on every packet the pod transmits, attached to the pod's
 * pair with attach type BPF_NETKIT_PEER (target: the primary's ifindex). netkit stores peer
 * programs on the peer device and runs them in netkit_xmit() of the peer, i.e. on the pod's
 * transmit, after setting skb->dev to the primary (drivers/net/netkit.c netkit_dev_fetch(),
 * netkit_xmit()); BPF_NETKIT_PRIMARY programs run on the primary's transmit, towards the pod.
 * So skb->ifindex is the primary and bpf_fib_lookup() looks up in the node's netns.
 *
 * A packet from one of this pod's own addresses to a destination inside the admin's bypass
 * prefixes, which the node's FIB routes out of the uplink and whose flow the node's conntrack
 * does not NAT (nkc_hr_ct_nat() in host_routing.h), leaves with bpf_redirect_neigh()
 * (neighbour resolution by the kernel, net/core/filter.c __bpf_redirect_neigh()): no host IP
 * forwarding, no netfilter. Everything else is NETKIT_NEXT: later netkit programs, then the
 * node's stack (as without a program, whatever the pair's policy says is only consulted when no
 * program is attached: the config refuses peerPolicy "blackhole" with host routing).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "host_routing.h"

/* The uplink's ifindex in the node's netns, set by the loader. */
const volatile __u32 nkc_uplink_ifindex = 0;

SEC("netkit/peer")
int nkc_host_egress(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	struct nkc_hr_ip ip = {};
	struct nkc_hr_pod *own;
	long rc;

	if (nkc_hr_parse(skb, &ip) || nkc_hr_special(&ip.dst) || nkc_hr_special(&ip.src)) {
		nkc_hr_count(NKC_HR_OTHER);
		return NKC_NETKIT_NEXT;
	}
	/* Only the pod's own addresses bypass: a spoofed source takes the stack (rp_filter etc). */
	own = bpf_map_lookup_elem(&hr_pods, &ip.src);
	if (!own || own->ifindex != skb->ifindex) {
		nkc_hr_count(NKC_HR_OUT_NOT_OWN);
		return NKC_NETKIT_NEXT;
	}
	if (!nkc_hr_bypassed(&ip.dst)) {
		nkc_hr_count(NKC_HR_OUT_NOT_BYPASS);
		return NKC_NETKIT_NEXT;
	}
	if (ip.ttl <= 1) {
		nkc_hr_count(NKC_HR_OUT_TTL);
		return NKC_NETKIT_NEXT;
	}
	fib.family = ip.dst.family;
	fib.l4_protocol = ip.proto;
	/*
	 * tot_len stays 0: with a length the helper compares the IP header's total length with the
	 * route's MTU, which a GSO packet from the pod (up to 64 KiB in one skb) always exceeds;
	 * without one it checks the skb itself with is_skb_forwardable(), which validates GSO
	 * segments against the MTU (bpf_skb_fib_lookup() in net/core/filter.c).
	 */
	fib.ifindex = skb->ifindex;
	if (ip.dst.family == NKC_AF_INET) {
		fib.tos = ip.tos;
		__builtin_memcpy(&fib.ipv4_src, ip.src.addr, 4);
		__builtin_memcpy(&fib.ipv4_dst, ip.dst.addr, 4);
	} else {
		fib.flowinfo = ip.flowinfo;
		__builtin_memcpy(fib.ipv6_src, ip.src.addr, 16);
		__builtin_memcpy(fib.ipv6_dst, ip.dst.addr, 16);
	}
	/*
	 * SKIP_NEIGH: bpf_redirect_neigh() resolves (and queues on) the neighbour itself. A packet
	 * the uplink cannot forward (above its MTU, GSO segments included) gets FRAG_NEEDED and
	 * takes the stack, which fragments or answers ICMP.
	 */
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex != nkc_uplink_ifindex) {
		nkc_hr_count(NKC_HR_OUT_FIB);
		return NKC_NETKIT_NEXT;
	}
	/*
	 * Last, as the dearest check: a flow the node's conntrack NATs (the pod's reply to a
	 * hostPort client portmap DNATed, ...) must take the stack for its reverse translation.
	 */
	switch (nkc_hr_ct_nat(skb, &ip)) {
	case NKC_HR_CT_NAT:
		nkc_hr_count(NKC_HR_OUT_NAT);
		return NKC_NETKIT_NEXT;
	case NKC_HR_CT_UNCHECKED:
		nkc_hr_count(NKC_HR_OTHER);
		return NKC_NETKIT_NEXT;
	}
	if (nkc_hr_dec_ttl(skb, &ip)) {
		nkc_hr_count(NKC_HR_OTHER);
		return NKC_NETKIT_NEXT;
	}
	/* The lookup replaced the destination with the route's gateway, if it has one. */
	nh.nh_family = fib.family;
	if (fib.family == NKC_AF_INET)
		nh.ipv4_nh = fib.ipv4_dst;
	else
		__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
	nkc_hr_count(NKC_HR_OUT_REDIRECT);
	/* TC_ACT_REDIRECT (7) is NETKIT_REDIRECT (include/uapi/linux/if_link.h). */
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

char LICENSE[] SEC("license") = "GPL";
