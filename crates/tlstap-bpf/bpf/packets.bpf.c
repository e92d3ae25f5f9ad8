// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tlstap's packet capture (pcap mode): a TC program on one interface, at ingress and egress
 * (tcx links, or clsact filters on kernels before 6.6), that copies whole packets into a ring
 * buffer of its own, in chunks of at most TLSTAP_PACKET_CHUNK_MAX bytes (see events.h).
 * Userspace reassembles the chunks, orders packets by time, and decides which to write.
 *
 * Must stay true: the program never changes a packet nor its fate (it always returns
 * TC_ACT_UNSPEC, which is also TCX_NEXT); no unbounded loop (bpf_loop in modern programs, a
 * bounded loop in legacy ones: features.h; at most PACKET_CHUNKS_MAX iterations); every skb
 * load is bounded by the record reserved for it; every lost or cut packet is counted by cause.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "loss.h"
#include "features.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * The fields of the UAPI `struct __sk_buff` used here, at their UAPI offsets. Context accesses
 * are rewritten by the verifier (not CO-RE): the offsets are ABI and never change.
 */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol; /* the ethertype, network order, for every link type */
};

#define TC_ACT_UNSPEC (-1) /* tcx: TCX_NEXT; clsact: go on with the next filter */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6

#define PACKET_CHUNKS_MAX (TLSTAP_PACKET_CAPTURE_MAX / TLSTAP_PACKET_CHUNK_MAX)

/* Set by userspace before load. */
const volatile bool tcp_only = false;  /* copy only TCP over IPv4/IPv6 (the default mode) */
const volatile __u32 l2_len = 14;      /* bytes before the IP header: 14 Ethernet, 0 raw IP */
/* Name the process of a connect()'s SYN (needs bpf_get_current_pid_tgid in TC programs,
 * which userspace probes for: kernels before 6.10 lack it, and this path is then not loaded). */
const volatile bool syn_pids = false;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by userspace before load */
} packets SEC(".maps");

/* Loss counters by cause (enum tlstap_packet_loss_cause): packets affected, bytes missing. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLSTAP_PACKET_LOSS__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} packet_loss_packets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLSTAP_PACKET_LOSS__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} packet_loss_bytes SEC(".maps");

/* Unique packet ids across CPUs (see next_id). */
__u64 next_packet_id = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packet_id_counters SEC(".maps");

/* Keeps every wire type in BTF so that libbpf-cargo generates its Rust twin. Never used. */
struct tlstap_wire_types _wire_types = {};

static __always_inline void count_loss(__u32 cause, __u64 bytes)
{
	add_loss(&packet_loss_packets, &packet_loss_bytes, cause, 1, bytes);
}

/* One packet being copied; lives on the program's stack, read by the bpf_loop callback. */
struct packet_ctx {
	struct __sk_buff *skb;
	__u64 ts_ns;
	__u64 id;
	__u32 len;       /* skb->len */
	__u32 cap;       /* bytes to copy: min(len, TLSTAP_PACKET_CAPTURE_MAX) */
	__u32 direction;
	__u32 failed;    /* 0, or 1 + the enum tlstap_packet_loss_cause that ended the copy */
	__u32 syn_pid;
};

/*
 * Records are reserved in size classes so an ACK does not hold a 16 KiB record; the payload is
 * loaded from the skb straight into the ring. Returns 0, or 1 + the loss cause.
 */
#define DEFINE_PACKET_CLASS(CAP)                                                              \
	static __noinline int emit_packet_##CAP(struct packet_ctx *p, __u64 off, __u64 n)     \
	{                                                                                     \
		struct {                                                                      \
			struct tlstap_packet_hdr h;                                           \
			__u8 data[CAP];                                                       \
		} *r = bpf_ringbuf_reserve(&packets, sizeof(*r), 0);                        \
		if (!r)                                                                       \
			return 1 + TLSTAP_PACKET_LOSS_RINGBUF_FULL;                           \
		/* The caller's bound does not reach the verifier through the call. */        \
		barrier_var(n);                                                               \
		if (n > CAP)                                                                  \
			n = CAP;                                                              \
		/* 1..CAP as the verifier sees it (CAP is a power of two): before 6.7 it */   \
		/* does not learn from n != 0 that n >= 1, and a size of 0 is refused. */     \
		if (n == 0 ||                                                                 \
		    bpf_skb_load_bytes(p->skb, off, r->data, ((n - 1) & (CAP - 1)) + 1)) {    \
			bpf_ringbuf_discard(r, 0);                                            \
			return 1 + TLSTAP_PACKET_LOSS_LOAD_FAULT;                             \
		}                                                                             \
		r->h.kind = TLSTAP_RECORD_PACKET;                                             \
		r->h.direction = p->direction;                                                \
		r->h.ts_ns = p->ts_ns;                                                        \
		r->h.packet_id = p->id;                                                       \
		r->h.packet_len = p->len;                                                     \
		r->h.cap_len = p->cap;                                                        \
		r->h.chunk_off = off;                                                         \
		r->h.chunk_len = n;                                                           \
		r->h.syn_pid = p->syn_pid;                                                    \
		r->h._reserved = 0;                                                           \
		bpf_ringbuf_submit(r, 0);                                                     \
		return 0;                                                                     \
	}

DEFINE_PACKET_CLASS(128)
DEFINE_PACKET_CLASS(512)
DEFINE_PACKET_CLASS(2048)
DEFINE_PACKET_CLASS(16384)

/* bpf_loop callback: copy chunk i of the packet; 1 stops the loop (done, or a chunk lost). */
static long emit_chunk_cb(__u32 i, void *data)
{
	struct packet_ctx *p = data;
	__u64 off = (__u64)i * TLSTAP_PACKET_CHUNK_MAX;
	__u64 left, n;
	int err;

	if (off >= p->cap)
		return 1;
	left = p->cap - off;
	n = left > TLSTAP_PACKET_CHUNK_MAX ? TLSTAP_PACKET_CHUNK_MAX : left;
	if (n <= 128)
		err = emit_packet_128(p, off, n);
	else if (n <= 512)
		err = emit_packet_512(p, off, n);
	else if (n <= 2048)
		err = emit_packet_2048(p, off, n);
	else
		err = emit_packet_16384(p, off, n);
	if (err) {
		p->failed = err;
		return 1;
	}
	return 0;
}

/*
 * A packet's id, unique in this capture: one counter for all CPUs in modern programs, else
 * this CPU's counter under its number (TC programs run with preemption off).
 */
static __always_inline __u64 next_id(bool modern)
{
	__u32 zero = 0;
	__u64 *n;

	if (modern)
		return __sync_fetch_and_add(&next_packet_id, 1);
	n = bpf_map_lookup_elem(&packet_id_counters, &zero);
	if (!n)
		return 0;
	return ((__u64)bpf_get_smp_processor_id() << 48) | fetch_inc(n, false);
}

/* True when the packet is TCP over IPv4 or IPv6 (no extension headers before TCP). */
static __always_inline bool is_tcp(struct __sk_buff *skb)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u8 next = 0;

	if (proto == ETH_P_IP)
		bpf_skb_load_bytes(skb, l2_len + 9, &next, 1);
	else if (proto == ETH_P_IPV6)
		bpf_skb_load_bytes(skb, l2_len + 6, &next, 1);
	return next == IPPROTO_TCP;
}

/*
 * The process that sent this packet, when it is a connect()'s SYN (SYN without ACK) from a
 * local socket: TC egress then runs inside the connect() system call, so the current task is
 * the connecting process. Any other packet may be sent from softirq context: 0.
 */
static __always_inline __u32 syn_owner(struct __sk_buff *skb)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u8 ip0 = 0, next = 0, flags = 0;
	__u32 tcp_off;

	if (proto == ETH_P_IP) {
		bpf_skb_load_bytes(skb, l2_len, &ip0, 1);
		bpf_skb_load_bytes(skb, l2_len + 9, &next, 1);
		tcp_off = l2_len + (ip0 & 0xf) * 4;
	} else if (proto == ETH_P_IPV6) {
		bpf_skb_load_bytes(skb, l2_len + 6, &next, 1);
		tcp_off = l2_len + 40;
	} else {
		return 0;
	}
	if (next != IPPROTO_TCP || bpf_skb_load_bytes(skb, tcp_off + 13, &flags, 1))
		return 0;
	if ((flags & 0x12) != 0x02 || !bpf_get_socket_cookie(skb))
		return 0;
	return bpf_get_current_pid_tgid() >> 32;
}

/* `modern`: a constant per program (features.h); false compiles bpf_loop and fetch atomics
 * out of it. */
static __always_inline int capture(struct __sk_buff *skb, __u32 direction, bool modern)
{
	struct packet_ctx p = {};
	__u32 chunks;

	if (tcp_only && !is_tcp(skb))
		return TC_ACT_UNSPEC;
	p.skb = skb;
	p.ts_ns = bpf_ktime_get_ns();
	p.id = next_id(modern);
	p.len = skb->len;
	p.cap = p.len > TLSTAP_PACKET_CAPTURE_MAX ? TLSTAP_PACKET_CAPTURE_MAX : p.len;
	p.direction = direction;
	if (syn_pids && direction == TLSTAP_PACKET_EGRESS)
		p.syn_pid = syn_owner(skb);
	if (p.cap == 0)
		return TC_ACT_UNSPEC;
	chunks = (p.cap + TLSTAP_PACKET_CHUNK_MAX - 1) / TLSTAP_PACKET_CHUNK_MAX;
	if (chunks > PACKET_CHUNKS_MAX)
		chunks = PACKET_CHUNKS_MAX;
	if (modern) {
		bpf_loop(chunks, emit_chunk_cb, &p, 0);
	} else {
		for (__u32 i = 0; i < PACKET_CHUNKS_MAX; i++)
			if (i >= chunks || emit_chunk_cb(i, &p))
				break;
	}
	if (p.failed)
		count_loss(p.failed - 1, p.len);
	else if (p.cap < p.len)
		count_loss(TLSTAP_PACKET_LOSS_TRUNCATED, p.len - p.cap);
	return TC_ACT_UNSPEC;
}

/* tcx attach types (kernel >= 6.6); the same programs also serve as clsact filters. */
SEC("tc/ingress")
int tlstap_ingress(struct __sk_buff *skb)
{
	return capture(skb, TLSTAP_PACKET_INGRESS, true);
}

SEC("tc/egress")
int tlstap_egress(struct __sk_buff *skb)
{
	return capture(skb, TLSTAP_PACKET_EGRESS, true);
}

/* The same, legacy (features.h); userspace loads one pair. */
SEC("tc/ingress")
int tlstap_ingress_legacy(struct __sk_buff *skb)
{
	return capture(skb, TLSTAP_PACKET_INGRESS, false);
}

SEC("tc/egress")
int tlstap_egress_legacy(struct __sk_buff *skb)
{
	return capture(skb, TLSTAP_PACKET_EGRESS, false);
}
