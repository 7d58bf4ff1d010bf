// SPDX-License-Identifier: Apache-2.0
/*
 * BPF host routing, ingress half: a tcx ingress program on the uplink NIC (attached through a
 * tcx bpf_link, so it coexists in bpf_mprog with other tcx programs such as Cilium's or an
 * admin's; XDP, including the netkit-cni dispatcher, runs before it).
 *
 * A packet to one of this node's pod addresses (`hr_pods`) from a source inside the admin's
 * bypass prefixes (`hr_bypass`), whose flow the node's conntrack does not NAT, goes straight
 * into the pod with bpf_redirect_peer(): into the
 * netkit peer inside the pod netns, without the node's IP forwarding, netfilter or backlog
 * queue (skb_do_redirect() in net/core/filter.c re-runs __netif_receive_skb_core on the peer).
 * Only a frame addressed to the uplink itself (PACKET_HOST) whose source the node would route
 * back out of the uplink (a reverse-path check like the stack's strict rp_filter:
 * bpf_fib_lookup() of the reversed tuple must answer with the uplink) is redirected, so a
 * spoofed source inside `bypass` cannot reach a pod past netfilter.
 * Everything else is TCX_NEXT: the next tcx program, then the node's stack, see it unchanged.
 * The kernel selftests wire netkit to a NIC the same way (tools/testing/selftests/drivers/net/hw/
 * nk_forward.bpf.c).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "host_routing.h"

/* include/uapi/linux/if_packet.h */
#define NKC_PACKET_HOST 0

/* The uplink's ifindex in the node's netns, set by the loader: the device the reverse path of
 * every redirected packet must leave through. */
const volatile __u32 nkc_uplink_ifindex = 0;

/*
 * Reverse-path check, as fib_validate_source() does for the stack's strict rp_filter
 * (net/ipv4/fib_frontend.c): look up the route back to the packet's source, from the pod
 * address it was sent to, in the node netns's tables (ingress perspective from the uplink, so
 * `ip rule … iif` rules apply as for the packet itself), and require it to leave through the
 * uplink. A source the node routes elsewhere (another NIC, a local prefix, a blackhole) or not
 * at all was spoofed, or at least is not the uplink's to vouch for. Returns 1 if it passes.
 */
static __always_inline int nkc_hr_rpf_ok(struct __sk_buff *skb, const struct nkc_hr_ip *ip)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = ip->src.family;
	fib.ifindex = skb->ingress_ifindex;
	if (ip->src.family == NKC_AF_INET) {
		fib.tos = ip->tos;
		__builtin_memcpy(&fib.ipv4_src, ip->dst.addr, 4);
		__builtin_memcpy(&fib.ipv4_dst, ip->src.addr, 4);
	} else {
		fib.flowinfo = ip->flowinfo;
		__builtin_memcpy(fib.ipv6_src, ip->dst.addr, 16);
		__builtin_memcpy(fib.ipv6_dst, ip->src.addr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	return rc == BPF_FIB_LKUP_RET_SUCCESS && fib.ifindex == nkc_uplink_ifindex;
}

SEC("tcx/ingress")
int nkc_host_ingress(struct __sk_buff *skb)
{
	struct nkc_hr_ip ip = {};
	struct nkc_hr_pod *pod;

	if (nkc_hr_parse(skb, &ip) || nkc_hr_special(&ip.src)) {
		nkc_hr_count(NKC_HR_OTHER);
		return NKC_TCX_NEXT;
	}
	/* eth_type_trans() set it: another host's unicast, a broadcast or multicast frame is not
	 * the node's to route (ip_rcv_core() drops PACKET_OTHERHOST). */
	if (skb->pkt_type != NKC_PACKET_HOST) {
		nkc_hr_count(NKC_HR_IN_NOT_HOST);
		return NKC_TCX_NEXT;
	}
	pod = bpf_map_lookup_elem(&hr_pods, &ip.dst);
	if (!pod) {
		nkc_hr_count(NKC_HR_IN_NOT_POD);
		return NKC_TCX_NEXT;
	}
	if (!nkc_hr_bypassed(&ip.src)) {
		nkc_hr_count(NKC_HR_IN_NOT_BYPASS);
		return NKC_TCX_NEXT;
	}
	if (ip.ttl <= 1) {
		nkc_hr_count(NKC_HR_IN_TTL);
		return NKC_TCX_NEXT;
	}
	if (!nkc_hr_rpf_ok(skb, &ip)) {
		nkc_hr_count(NKC_HR_IN_RPF);
		return NKC_TCX_NEXT;
	}
	/*
	 * A flow the node's conntrack NATs must take the stack: e.g. a pod behind a ClusterIP on
	 * another node answering a client pod here, whose request this node DNATed (the reply's
	 * addresses are both pods', inside `bypass`, but the client expects the ClusterIP).
	 */
	switch (nkc_hr_ct_nat(skb, &ip)) {
	case NKC_HR_CT_NAT:
		nkc_hr_count(NKC_HR_IN_NAT);
		return NKC_TCX_NEXT;
	case NKC_HR_CT_UNCHECKED:
		nkc_hr_count(NKC_HR_OTHER);
		return NKC_TCX_NEXT;
	}
	if (nkc_hr_dec_ttl(skb, &ip)) {
		nkc_hr_count(NKC_HR_OTHER);
		return NKC_TCX_NEXT;
	}
	nkc_hr_count(NKC_HR_IN_REDIRECT);
	/* The ifindex is the pod's netkit primary; BPF_F_PEER resolves its peer (skb_get_peer_dev). */
	return bpf_redirect_peer(pod->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
