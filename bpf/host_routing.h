/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Types and maps shared by bpf/host_ingress.bpf.c (tcx ingress on the uplink NIC) and
 * bpf/host_egress.bpf.c (netkit peer hook of each pod's pair), and by src/hostrouting/, which
 * owns the maps: created by the ingress object on the first ADD of an uplink, pinned in the
 * uplink's bpffs directory, and reused (by fd) by the egress object.
 */
#ifndef NKC_HOST_ROUTING_H
#define NKC_HOST_ROUTING_H

#include <linux/types.h>

/*
 * Return codes the build host's UAPI headers (Debian's linux-libc-dev 6.1) predate; values from
 * include/uapi/linux/bpf.h (enum tcx_action_base) and include/uapi/linux/if_link.h
 * (enum netkit_action) of Linux >= 6.7.
 */
#define NKC_TCX_NEXT (-1)
#define NKC_NETKIT_NEXT (-1)

/* include/linux/socket.h; bpf_fib_lookup() and bpf_redirect_neigh() speak address families. */
#define NKC_AF_INET 2
#define NKC_AF_INET6 10

#define NKC_ETH_P_IP 0x0800
#define NKC_ETH_P_IPV6 0x86DD

/* One pod address: family NKC_AF_INET (first 4 bytes of addr used, rest zero) or NKC_AF_INET6. */
struct nkc_hr_addr {
	__u32 family;
	__u8 addr[16];
};

/* What a pod address maps to: the ifindex of the pod's netkit *primary* (node side). */
struct nkc_hr_pod {
	__u32 ifindex;
	__u32 reserved;
};

/*
 * LPM trie key of a bypass prefix. The trie matches `prefixlen` bits from `family` on, so the
 * family is part of the match: prefixlen = 32 + the CIDR's prefix length. One trie for both
 * families.
 */
struct nkc_hr_prefix {
	__u32 prefixlen;
	__u32 family;
	__u8 addr[16];
};

/* Per-CPU packet counters, indices of the `hr_stats` array (src/hostrouting/mod.rs `counter` mirrors them). */
enum nkc_hr_counter {
	NKC_HR_IN_REDIRECT = 0,   /* uplink -> pod through bpf_redirect_peer() */
	NKC_HR_IN_NOT_POD = 1,    /* destination is no pod of this uplink: TCX_NEXT */
	NKC_HR_IN_NOT_BYPASS = 2, /* to a pod, but its source is not in the bypass set: TCX_NEXT */
	NKC_HR_IN_TTL = 3,        /* TTL/hop limit would expire: TCX_NEXT (the stack answers ICMP) */
	NKC_HR_OUT_REDIRECT = 4,  /* pod -> uplink through bpf_redirect_neigh() */
	NKC_HR_OUT_NOT_BYPASS = 5, /* destination not in the bypass set: NETKIT_NEXT */
	NKC_HR_OUT_NOT_OWN = 6,   /* source is not an address of this pod: NETKIT_NEXT */
	NKC_HR_OUT_FIB = 7,       /* FIB lookup failed or routes elsewhere than the uplink */
	NKC_HR_OUT_TTL = 8,       /* TTL/hop limit would expire: NETKIT_NEXT */
	NKC_HR_OTHER = 9,         /* not IPv4/IPv6, truncated, multicast, link-local, or a packet
				   * conntrack could NAT but the lookup cannot check (fragments,
				   * protocols other than TCP/UDP/ICMP): next */
	/* Appended (existing indices stay): a TCP/UDP flow with a NAT binding in the node's
	 * conntrack (nkc_hr_ct_nat()) takes the stack, which owns the (reverse) translation. */
	NKC_HR_OUT_NAT = 10,      /* pod -> bypass dst, but the flow is NATed: NETKIT_NEXT */
	NKC_HR_IN_NAT = 11,       /* bypass src -> pod, but the flow is NATed: TCX_NEXT */
	/* Appended: ingress refusals of packets whose source the node would not route back
	 * through the uplink, or that were not addressed to the uplink's own MAC. */
	NKC_HR_IN_RPF = 12,       /* reverse path: the source routes out of another device (or
				   * not at all): TCX_NEXT, the stack's rp_filter and netfilter decide */
	NKC_HR_IN_NOT_HOST = 13,  /* pkt_type is not PACKET_HOST (another host's, broadcast or
				   * multicast frame): TCX_NEXT, the stack drops or handles it */
	NKC_HR_COUNTERS = 14,
};

#define NKC_HR_MAX_PODS 16384
#define NKC_HR_MAX_PREFIXES 256

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NKC_HR_MAX_PODS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nkc_hr_addr);
	__type(value, struct nkc_hr_pod);
} hr_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NKC_HR_MAX_PREFIXES);
	/* LPM tries cannot be preallocated (trie_alloc refuses without this flag). */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nkc_hr_prefix);
	__type(value, __u8);
} hr_bypass SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NKC_HR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} hr_stats SEC(".maps");

static __always_inline void nkc_hr_count(__u32 counter)
{
	__u64 *n = bpf_map_lookup_elem(&hr_stats, &counter);

	if (n)
		*n += 1;
}

/* The addresses and TTL of one IP packet, read with every access bounds-checked. */
struct nkc_hr_ip {
	struct nkc_hr_addr src;
	struct nkc_hr_addr dst;
	__u8 ttl;
	__u8 proto;
	__u32 flowinfo; /* IPv6 only, network order */
	__u8 tos;       /* IPv4 only */
	__u8 frag;      /* IPv4: a fragment (MF set or offset != 0) */
	__u32 l3_off;
	__u32 l4_off;   /* IPv4: after the options; IPv6: after the fixed header */
};

/*
 * Parse the Ethernet + IP headers at skb->data. Both hooks see an Ethernet header in both
 * netkit modes: the uplink is an Ethernet NIC, and netkit calls ether_setup() for L3 devices
 * too (drivers/net/netkit.c netkit_setup(); L3 only adds IFF_NOARP), so the pod's stack builds
 * an Ethernet header and netkit_xmit() pulls ETH_HLEN and resets the MAC header to it before
 * running the program. Returns 0 if the packet is IPv4/IPv6 and long enough.
 */
static __always_inline int nkc_hr_parse(struct __sk_buff *skb, struct nkc_hr_ip *ip)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	ip->l3_off = sizeof(*eth);
	if (eth->h_proto == bpf_htons(NKC_ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end || iph->version != 4)
			return -1;
		ip->src.family = NKC_AF_INET;
		ip->dst.family = NKC_AF_INET;
		__builtin_memcpy(ip->src.addr, &iph->saddr, 4);
		__builtin_memcpy(ip->dst.addr, &iph->daddr, 4);
		ip->ttl = iph->ttl;
		ip->proto = iph->protocol;
		ip->tos = iph->tos;
		/* IP_MF | IP_OFFSET (include/net/ip.h) */
		ip->frag = (iph->frag_off & bpf_htons(0x3FFF)) != 0;
		ip->l4_off = sizeof(*eth) + iph->ihl * 4;
		return 0;
	}
	if (eth->h_proto == bpf_htons(NKC_ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end || ip6h->version != 6)
			return -1;
		ip->src.family = NKC_AF_INET6;
		ip->dst.family = NKC_AF_INET6;
		__builtin_memcpy(ip->src.addr, &ip6h->saddr, 16);
		__builtin_memcpy(ip->dst.addr, &ip6h->daddr, 16);
		ip->ttl = ip6h->hop_limit;
		ip->proto = ip6h->nexthdr;
		ip->flowinfo = *(__u32 *)ip6h & bpf_htonl(0x0FFFFFFF);
		ip->l4_off = sizeof(*eth) + sizeof(*ip6h);
		return 0;
	}
	return -1;
}

/*
 * Multicast, broadcast, link-local and unspecified addresses never take the BPF path: they are
 * neighbour discovery, DHCP and the like, which belong to the link and the stack.
 */
static __always_inline int nkc_hr_special(const struct nkc_hr_addr *a)
{
	if (a->family == NKC_AF_INET) {
		__u8 b0 = a->addr[0];

		return b0 == 0 || b0 >= 224 || (b0 == 169 && a->addr[1] == 254) || b0 == 127;
	}
	if (a->addr[0] == 0xff || (a->addr[0] == 0xfe && (a->addr[1] & 0xc0) == 0x80))
		return 1;
	/* :: and ::1 */
	for (int i = 0; i < 15; i++)
		if (a->addr[i])
			return 0;
	return a->addr[15] <= 1;
}

/* Is `a` inside one of the admin's bypass prefixes? */
static __always_inline int nkc_hr_bypassed(const struct nkc_hr_addr *a)
{
	struct nkc_hr_prefix key = {
		.prefixlen = 32 + (a->family == NKC_AF_INET ? 32 : 128),
		.family = a->family,
	};

	__builtin_memcpy(key.addr, a->addr, 16);
	return bpf_map_lookup_elem(&hr_bypass, &key) != NULL;
}

/*
 * Decrement the TTL / hop limit as forwarding does (ip_forward(), ip6_forward()): the BPF path
 * is still a router hop. The caller checked ttl > 1. Direct packet writes: the verifier adds the
 * unclone prologue for tc programs that write (bpf_unclone_prologue, net/core/filter.c).
 */
static __always_inline int nkc_hr_dec_ttl(struct __sk_buff *skb, const struct nkc_hr_ip *ip)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (ip->dst.family == NKC_AF_INET) {
		struct iphdr *iph = data + sizeof(struct ethhdr);
		__u32 check;

		if ((void *)(iph + 1) > data_end)
			return -1;
		/* ip_decrease_ttl() in include/net/ip.h: incremental checksum update. */
		check = iph->check;
		check += bpf_htons(0x0100);
		iph->check = (__u16)(check + (check >= 0xFFFF));
		iph->ttl--;
		return 0;
	}
	{
		struct ipv6hdr *ip6h = data + sizeof(struct ethhdr);

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		ip6h->hop_limit--;
		return 0;
	}
}

/*
 * Conntrack, through the kfuncs of net/netfilter/nf_conntrack_bpf.c (registered for
 * BPF_PROG_TYPE_XDP and BPF_PROG_TYPE_SCHED_CLS, register_nf_conntrack_bpf(); tcx and netkit
 * programs are SCHED_CLS). `__weak`: where the kernel has no conntrack (nf_conntrack not built
 * in and its module not loaded, or no DEBUG_INFO_BTF) libbpf resolves both to 0, the program
 * still loads, and bpf_ksym_exists() is a constant false the verifier prunes on. Without
 * conntrack nothing can hold a NAT binding, so nothing needs protecting.
 */
/* Only `status` is read; preserve_access_index makes libbpf relocate its offset against the
 * running kernel's BTF (CO-RE), so no vmlinux.h is needed. */
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));

/*
 * struct bpf_ct_opts in its 12-byte form, which every kernel since the kfuncs' introduction
 * (5.18) accepts (__bpf_nf_ct_lookup(): opts__sz 12, or 16 with the zone fields of >= 6.9).
 */
struct nkc_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct nkc_ct_opts *opts,
					 __u32 opts__sz) __ksym __weak;
extern void bpf_ct_release(struct nf_conn *ct) __ksym __weak;

/* include/uapi/linux/netfilter/nf_conntrack_common.h: IPS_SRC_NAT | IPS_DST_NAT */
#define NKC_IPS_NAT_MASK ((1UL << 4) | (1UL << 5))
#define NKC_IPPROTO_ICMP 1
#define NKC_IPPROTO_TCP 6
#define NKC_IPPROTO_UDP 17
#define NKC_IPPROTO_ICMPV6 58

enum nkc_hr_ct {
	NKC_HR_CT_PLAIN = 0,     /* no conntrack entry, or one without NAT: may bypass */
	NKC_HR_CT_NAT = 1,       /* the flow has a NAT binding: the stack must translate it */
	NKC_HR_CT_UNCHECKED = 2, /* conntrack could NAT it but the lookup cannot tell */
};

/*
 * Does the node's conntrack hold a NAT binding for this packet's flow? E.g. a pod's reply to a
 * hostPort client that portmap DNATed (the reply tuple pod:port -> client:port), or a pod
 * backend's reply to a client pod whose node DNATed a ClusterIP. The lookup finds either
 * direction's tuple (both are hashed, nf_conntrack_find_get()), and `netns_id` -1
 * (BPF_F_CURRENT_NETNS) means skb->dev's netns (bpf_skb_ct_lookup()): the uplink on ingress,
 * and on egress the netkit primary, which netkit_xmit() makes skb->dev before running the peer
 * programs (drivers/net/netkit.c) — both in the node's netns, whose conntrack NATs. The kfunc
 * only knows TCP and UDP (-EPROTO otherwise): ICMP/ICMPv6 bypass unchecked (the README says
 * so); fragments and every other protocol (IPv6 extension headers included) go to the stack.
 * Called only once every cheaper check has passed: one hash lookup and a reference get/put.
 */
static __always_inline int nkc_hr_ct_nat(struct __sk_buff *skb, const struct nkc_hr_ip *ip)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct nkc_ct_opts opts = { .netns_id = -1 };
	struct bpf_sock_tuple t = {};
	struct nf_conn *ct;
	__u32 off = ip->l4_off & 0x7f; /* at most 14 + 60: bounds the verifier can follow */
	__u16 *ports;
	int nat;

	if (ip->dst.family == NKC_AF_INET ? ip->proto == NKC_IPPROTO_ICMP
					   : ip->proto == NKC_IPPROTO_ICMPV6)
		return NKC_HR_CT_PLAIN;
	if ((ip->proto != NKC_IPPROTO_TCP && ip->proto != NKC_IPPROTO_UDP) || ip->frag)
		return NKC_HR_CT_UNCHECKED;
	if (!bpf_ksym_exists(bpf_skb_ct_lookup))
		return NKC_HR_CT_PLAIN;
	ports = data + off;
	if ((void *)(ports + 2) > data_end)
		return NKC_HR_CT_UNCHECKED;
	opts.l4proto = ip->proto;
	if (ip->dst.family == NKC_AF_INET) {
		__builtin_memcpy(&t.ipv4.saddr, ip->src.addr, 4);
		__builtin_memcpy(&t.ipv4.daddr, ip->dst.addr, 4);
		t.ipv4.sport = ports[0];
		t.ipv4.dport = ports[1];
		ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
	} else {
		__builtin_memcpy(t.ipv6.saddr, ip->src.addr, 16);
		__builtin_memcpy(t.ipv6.daddr, ip->dst.addr, 16);
		t.ipv6.sport = ports[0];
		t.ipv6.dport = ports[1];
		ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv6), &opts, sizeof(opts));
	}
	if (!ct)
		return NKC_HR_CT_PLAIN;
	nat = (ct->status & NKC_IPS_NAT_MASK) != 0;
	bpf_ct_release(ct);
	return nat ? NKC_HR_CT_NAT : NKC_HR_CT_PLAIN;
}

#endif
