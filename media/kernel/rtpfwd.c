// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// rtpfwd forwards the RTP of latched relay legs in the kernel, at TC
// ingress: a packet from a leg's locked source to the leg's port is
// rewritten to come from the other leg's port and go to the other side,
// its checksums fixed, and redirected: out of the interface the route to
// the other side names (userspace looked it up; the kernel resolves the
// next hop's address), or, for a local destination, on up the stack.
// Anything else goes on to the relay's sockets untouched: unknown flows,
// RTCP (also on a muxed port), IPv4 options, fragments and non-RTP.
//
// No bpf_fib_lookup: it refuses to route when forwarding is off on the
// interface, as it is on most media hosts; bpf_redirect_neigh looks the
// route up as the host's own output would.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif
// tcx verdicts (linux/bpf.h of 6.6; Debian 12's headers predate them).
#define TCX_NEXT -1
#define TCX_PASS 0

struct flow_key {
	__be32 src_ip;
	__be32 dst_ip;
	__be16 src_port;
	__be16 dst_port;
};

struct flow_action {
	__be32 new_src_ip;
	__be32 new_dst_ip;
	__be16 new_src_port;
	__be16 new_dst_port;
	__u32 ifindex; // out of which the other side is reached
	__u32 flags;   // FLOW_LOCAL: the other side is this host
	__u32 pad;
	__u64 packets; // forwarded, updated atomically
	__u64 bytes;   // UDP payload bytes forwarded
};

#define FLOW_LOCAL 1
#define LOOPBACK_IFINDEX 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_action);
} flows SEC(".maps");

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define UDP_CSUM_OFF (UDP_OFF + offsetof(struct udphdr, check))
#define UDP_SPORT_OFF (UDP_OFF + offsetof(struct udphdr, source))
#define UDP_DPORT_OFF (UDP_OFF + offsetof(struct udphdr, dest))

static __always_inline int rewrite4(struct __sk_buff *skb, int off, __be32 from, __be32 to, int udp_csum)
{
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, 4))
		return -1;
	if (udp_csum && bpf_l4_csum_replace(skb, UDP_CSUM_OFF, from, to, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 4, 0);
}

static __always_inline int rewrite_port(struct __sk_buff *skb, int off, __be16 from, __be16 to, int udp_csum)
{
	if (udp_csum && bpf_l4_csum_replace(skb, UDP_CSUM_OFF, from, to, BPF_F_MARK_MANGLED_0 | 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 2, 0);
}

SEC("tc")
int rtp_forward(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TCX_NEXT;
	if (ip->frag_off & bpf_htons(0x3fff)) // MF or an offset: a fragment
		return TCX_NEXT;
	struct udphdr *udp = (void *)(ip + 1);
	__u8 *rtp = (void *)(udp + 1);
	if ((void *)(rtp + 2) > end)
		return TCX_NEXT;
	struct flow_key key = {
		.src_ip = ip->saddr,
		.dst_ip = ip->daddr,
		.src_port = udp->source,
		.dst_port = udp->dest,
	};
	struct flow_action *act = bpf_map_lookup_elem(&flows, &key);
	if (!act)
		return TCX_NEXT;
	// RTP version 2 only; RTCP (payload types 192-223, RFC 5761) stays
	// with the relay, which reads it for the call's quality.
	if ((rtp[0] >> 6) != 2 || (rtp[1] >= 192 && rtp[1] <= 223))
		return TCX_NEXT;
	// A local other side is reached in the kernel only from a local
	// sender: on lo the packet keeps the local route it was sent with (a
	// redirect would lose it, and 127/8 is martian to a fresh lookup).
	if ((act->flags & FLOW_LOCAL) && skb->ingress_ifindex != LOOPBACK_IFINDEX)
		return TCX_NEXT;

	__be32 old_src = ip->saddr, old_dst = ip->daddr;
	__be16 old_sport = udp->source, old_dport = udp->dest;
	int udp_csum = udp->check != 0;
	__u64 payload = bpf_ntohs(udp->len) - sizeof(struct udphdr);
	if (rewrite4(skb, IP_SRC_OFF, old_src, act->new_src_ip, udp_csum) ||
	    rewrite4(skb, IP_DST_OFF, old_dst, act->new_dst_ip, udp_csum) ||
	    rewrite_port(skb, UDP_SPORT_OFF, old_sport, act->new_src_port, udp_csum) ||
	    rewrite_port(skb, UDP_DPORT_OFF, old_dport, act->new_dst_port, udp_csum))
		return TC_ACT_SHOT; // half rewritten: never deliver it
	__sync_fetch_and_add(&act->packets, 1);
	__sync_fetch_and_add(&act->bytes, payload);

	if (act->flags & FLOW_LOCAL)
		return TCX_PASS; // on lo, with the route it came with: delivered here
	return bpf_redirect_neigh(act->ifindex, NULL, 0, 0);
}

char __license[] SEC("license") = "Dual BSD/GPL";
