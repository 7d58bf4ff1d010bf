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

/* Per-CPU packet counters, indices of the `hr_stats` array (src/hostrouting/maps.rs mirrors them). */
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
	NKC_HR_OTHER = 9,         /* not IPv4/IPv6, truncated, multicast or link-local: next */
	NKC_HR_COUNTERS = 10,
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
	__u32 l3_off;
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

#endif
