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

SEC("tcx/ingress")
int nkc_host_ingress(struct __sk_buff *skb)
{
	struct nkc_hr_ip ip = {};
	struct nkc_hr_pod *pod;

	if (nkc_hr_parse(skb, &ip) || nkc_hr_special(&ip.src)) {
		nkc_hr_count(NKC_HR_OTHER);
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
