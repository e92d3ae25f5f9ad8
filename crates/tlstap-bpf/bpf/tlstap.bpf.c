// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tlstap's uprobe programs on a Go binary's crypto/tls functions. One program is attached at
 * every probe point (go_tls_multi, or go_tls_single on kernels without uprobe_multi); its BPF
 * cookie says which point it is and which Go ABI the binary uses (see events.h). It emits the plaintext of `(*tls.Conn).Write` at its entry and of
 * `(*tls.Conn).Read` at each of its RET instructions, using state saved at Read's entry keyed by
 * the goroutine (never uretprobes: Go moves goroutine stacks).
 *
 * Kernel paths: records go to a ring buffer, or to per-CPU perf buffers where the kernel has
 * no ring buffer (< 5.8); each program comes modern (bpf_loop, fetch atomics) or legacy (a
 * bounded loop, per-CPU and plain updates, Reads in the hash map: features.h); the probe's
 * role comes from its cookie, or from the program attached and the executable's inode
 * (< 5.15: go_tls_*_nocookie, legacy).
 *
 * Must stay true: no unbounded loop (chunks go through bpf_loop, or bounded loops, at most
 * CHUNK_LOOP_MAX either way); every user read has a size the verifier can bound by the
 * reserved record; loss is counted.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "loss.h"
#include "features.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Filters, set by userspace before load. 0 / (u32)-1 / "" mean "any". */
const volatile __u32 target_tgid = 0;
const volatile __u32 target_uid = 0xffffffff;
const volatile char target_comm[TLSTAP_COMM_LEN] = {};
/* Report exec/exit of processes (discovery), and stop exec'd processes until userspace has
 * hooked their binary (--catch-exec). */
const volatile bool report_processes = false;
const volatile bool catch_exec = false;
/* Slots for Reads in flight in use, less one (tests set 0: every Read shares one slot). */
const volatile __u32 read_slot_mask = 0xffff;
/* Records go to per-CPU perf buffers (perf_events) instead of the ring buffer (events). */
const volatile bool use_perf_output = false;
/* --h2-hooks: data records carry their goroutine (what ties the h2 records to conns). */
const volatile bool h2_hooks = false;

/* Enough chunks for a 1 GiB write; bpf_loop allows far more iterations than this. */
#define CHUNK_LOOP_MAX (1u << 16)
/* Legacy programs (no bpf_loop): chunks of one call emitted by bounded loops, blocks of
 * CHUNK_BLOCK chunks, at most CHUNK_BLOCKS_MAX blocks: as many chunks as CHUNK_LOOP_MAX. */
#define CHUNK_BLOCK 1024
#define CHUNK_BLOCKS_MAX (CHUNK_LOOP_MAX / CHUNK_BLOCK)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by userspace before load */
} events SEC(".maps");

/* Kernels without a ring buffer: one perf buffer per CPU (not created otherwise), and a
 * per-CPU record being built (perf output copies it; these kernels run uprobe programs with
 * preemption off, so a CPU's record is never shared by two programs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct perf_record {
	struct tlstap_data_hdr h;
	__u8 data[TLSTAP_CHUNK_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct perf_record);
} perf_scratch SEC(".maps");

/*
 * Kernels without uprobe cookies: what a probe's cookie would say of its binary, found by the
 * inode number of the process's executable (the file the probes are in). Filled by userspace.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct tlstap_binary_file);
} binary_files SEC(".maps");

/*
 * A Read in flight: what its entry saw, for its RET to emit. Keyed by goroutine (g) address
 * and process: g addresses repeat across processes of one binary (same heap layout).
 * LRU maps drop what a vanished goroutine or process left behind; per-CPU LRU lists
 * (BPF_F_NO_COMMON_LRU) because the shared list's lock was a measurable part of a probe.
 */
struct read_key {
	__u64 g;
	__u32 tgid;
	__u32 pad;
};

struct read_entry {
	__u64 conn_ptr;
	__u64 buf;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct read_key);
	__type(value, struct read_entry);
} reads_in_flight SEC(".maps");

/*
 * The common case of a Read in flight, kept out of the hash map above: a slot per
 * hash(g, process) (struct tlstap_read_slot in events.h says how a slot is claimed and
 * released). Only the owning goroutine writes a claimed slot, so its RET reads it without a
 * lock. A Read whose slot another goroutine holds goes to reads_in_flight instead, and its
 * RET looks there when the slot is not its own. Slots of processes that died inside a Read
 * only push their neighbours to the hash map until userspace frees them (mmapable for that).
 * Why: three hash-map operations per Read (update, lookup, delete) were the largest share of
 * a probe's time (bench: perf of the server's core).
 */
#define READ_SLOTS (1u << 16)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, READ_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct tlstap_read_slot);
} read_slots SEC(".maps");

/* Per hooked binary: struct layout and TLS facts; indexed by the cookie's binary index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct tlstap_binary_cfg);
} binaries SEC(".maps");

/*
 * Per (process, tls.Conn, direction): the next sequence number, and the connection the last
 * call found (reused while it still holds: see resolve_conn in conn.h).
 */
struct stream_key {
	__u64 conn_ptr;
	__u32 tgid;
	__u32 direction;
};

/* What a stream remembers of its connection between calls (see resolve_conn in conn.h). */
struct conn_cache {
	__u64 netfd;             /* the Go *netFD the socket was found through */
	struct tlstap_conn conn; /* valid when kind is TLSTAP_CONN_TCP */
};

struct stream_state {
	__u64 seq;
	struct conn_cache conn;
	/* Tells this count apart from an earlier one of the same key (an LRU eviction restarts
	 * the count at 0): nonzero, set when the entry is made. */
	__u32 epoch;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct stream_key);
	__type(value, struct stream_state);
} streams SEC(".maps");

/* Loss counters by cause (enum tlstap_loss_cause): calls affected and bytes missing. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLSTAP_LOSS__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} loss_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLSTAP_LOSS__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} loss_bytes SEC(".maps");

/*
 * Call ids, unique across CPUs: the CPU number above CALL_ID_CPU_SHIFT, that CPU's counter
 * below. Per CPU, because one shared counter's cache line moved between CPUs on every call.
 */
#define CALL_ID_CPU_SHIFT 48

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} call_counters SEC(".maps");

static __always_inline __u64 next_call_id(bool modern)
{
	__u32 zero = 0;
	__u64 *counter = bpf_map_lookup_elem(&call_counters, &zero);
	/* Atomic where it can be: a preempted program may share this CPU's counter with the next. */
	__u64 n = counter ? fetch_inc(counter, modern) : 0;

	return ((__u64)bpf_get_smp_processor_id() << CALL_ID_CPU_SHIFT) | (n & ((1ull << CALL_ID_CPU_SHIFT) - 1));
}

/* Keeps every wire type in BTF so that libbpf-cargo generates its Rust twin. Never used. */
struct tlstap_wire_types _wire_types = {};

static __always_inline void count_loss(__u32 cause, __u64 bytes)
{
	add_loss(&loss_calls, &loss_bytes, cause, 1, bytes);
}

/*
 * Room for a record of `size` bytes (a constant): in the ring buffer, or in this CPU's perf
 * record. 0 when the ring is full. Give it to submit_record, with the bytes to send.
 */
static __always_inline void *reserve_record(__u64 size)
{
	__u32 zero = 0;

	if (use_perf_output)
		return bpf_map_lookup_elem(&perf_scratch, &zero);
	return bpf_ringbuf_reserve(&events, size, 0);
}

/*
 * Sends what reserve_record gave: `len` bytes of it (bounded by the verifier's view of the
 * record), waking the reader per `wakeup` (ring buffer flags; a perf buffer wakes on each).
 * Returns false when a perf buffer had no room (a ring record was reserved, so it fits).
 */
static __always_inline bool submit_record(void *ctx, void *r, __u64 len, __u64 wakeup)
{
	if (!use_perf_output) {
		bpf_ringbuf_submit(r, wakeup);
		return true;
	}
	if (len > sizeof(struct perf_record))
		len = sizeof(struct perf_record);
	return bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, r, len) == 0;
}

/* The state of this (process, conn, direction), created on its first call; 0 only if the
 * map refused (then the call gets sequence number 0 and nothing is cached). */
static __always_inline struct stream_state *stream_of(__u64 conn_ptr, __u32 tgid, __u32 direction)
{
	struct stream_key key = { .conn_ptr = conn_ptr, .tgid = tgid, .direction = direction };
	struct stream_state *state = bpf_map_lookup_elem(&streams, &key);
	struct stream_state fresh = {};

	if (state)
		return state;
	fresh.epoch = (__u32)bpf_ktime_get_ns() | 1;
	/* First call on this conn (or its entry was evicted): start at 0, unless another CPU
	 * created the entry meanwhile. */
	bpf_map_update_elem(&streams, &key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&streams, &key);
}

static __always_inline struct tlstap_binary_cfg *binary_of(__u64 cookie)
{
	__u32 index = (cookie >> TLSTAP_COOKIE_BINARY_SHIFT) & TLSTAP_COOKIE_BINARY_MASK;

	return bpf_map_lookup_elem(&binaries, &index);
}

#include "go_abi.h"
#include "conn.h"

/* --- Emission ------------------------------------------------------------------------- */

struct emit_ctx {
	__u64 src;        /* user address of the call's bytes */
	__u64 len;        /* bytes to emit */
	__u64 call_id;
	__u64 conn_ptr;
	__u64 ts_ns;
	__u64 pid_tgid;
	__u32 uid;
	__u32 direction;
	char comm[TLSTAP_COMM_LEN];
	__u64 seq;
	struct tlstap_conn conn;
	__u64 goroutine;
	__u32 epoch; /* the stream's (stream_state.epoch; 0 when the map refused it) */
	bool lost; /* a loss of this call is counted already */
};

/* Bytes of a call lost: the call counts once (under its first cause), the bytes every time. */
static __always_inline void count_call_loss(struct emit_ctx *e, __u32 cause, __u64 bytes)
{
	add_loss(&loss_calls, &loss_bytes, cause, e->lost ? 0 : 1, bytes);
	e->lost = true;
}

static __always_inline void fill_hdr(struct tlstap_data_hdr *h, struct emit_ctx *e, __u64 off,
				     __u64 n)
{
	h->kind = TLSTAP_RECORD_DATA;
	h->direction = e->direction;
	h->ts_ns = e->ts_ns;
	h->call_id = e->call_id;
	h->conn_ptr = e->conn_ptr;
	h->call_len = e->len;
	h->chunk_off = off;
	h->chunk_len = n;
	h->flags = 0;
	h->pid = e->pid_tgid >> 32;
	h->tid = (__u32)e->pid_tgid;
	h->uid = e->uid;
	h->stream_epoch = e->epoch;
	__builtin_memcpy(h->comm, e->comm, TLSTAP_COMM_LEN);
	h->seq = e->seq;
	__builtin_memcpy(&h->conn, &e->conn, sizeof(h->conn));
	h->goroutine = e->goroutine;
}

/*
 * Waking the reader costs more than the rest of a probe (an IPI per record, measured at over
 * half of the program's time). Data records wake it only once WAKEUP_BYTES wait, and then at
 * most once per WAKEUP_BYTES the producers write: forcing a wakeup on every record while that
 * much waits cost an IPI per record until the reader ran (on a busy machine it waits for a CPU
 * for milliseconds: 28 % of the program's time, measured).
 *
 * What must stay true: a sleeping reader is woken once WAKEUP_BYTES wait. It sleeps only when
 * it has read everything (its poll reports a ring with data as ready), so wake_mark, the
 * producer position of the last forced wakeup, is at most where it stopped reading, and the
 * first record that finds WAKEUP_BYTES waiting is at least that far past wake_mark. Waking
 * only on the record that takes the waiting bytes across the mark is not enough: with
 * producers on two CPUs each can see the other's record already counted and neither call its
 * own the crossing one; the reader then slept while the ring overflowed (measured: 10,000
 * records lost in a throughput run at nice -10 that lost none before).
 * The reader reads anyway at every poll timeout (100 ms), so a quiet connection shows up that
 * late at most. A record submitted without a flag wakes the reader only if the reader had read
 * everything before it, which after a NO_WAKEUP record it has not: records someone waits for
 * (a held process) must force the wakeup.
 */
#define WAKEUP_BYTES (256 * 1024)

/* Producer position of the last forced wakeup of a data record. Written by several CPUs
 * without a lock: a torn or stale value only wakes the reader once more. */
__u64 wake_mark = 0;

static __always_inline __u64 data_wakeup_flag(void)
{
	__u64 prod;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < WAKEUP_BYTES)
		return BPF_RB_NO_WAKEUP;
	prod = bpf_ringbuf_query(&events, BPF_RB_PROD_POS);
	if (prod - wake_mark < WAKEUP_BYTES)
		return BPF_RB_NO_WAKEUP;
	wake_mark = prod;
	return BPF_RB_FORCE_WAKEUP;
}

/*
 * Records are reserved in power-of-two size classes so the payload is read from user memory
 * straight into the ring (no per-CPU scratch, which a preempted uprobe could share) while a
 * small call does not hold a 16 KiB record. Returns 0, or -1 when the ring (or the perf
 * buffer) is full.
 */
#define DEFINE_EMIT_CLASS(CAP)                                                                 \
	static __noinline int emit_class_##CAP(void *ctx, struct emit_ctx *e, __u64 off,       \
					       __u64 n)                                        \
	{                                                                                      \
		struct {                                                                       \
			struct tlstap_data_hdr h;                                              \
			__u8 data[CAP];                                                        \
		} *r = reserve_record(sizeof(*r));                                             \
		__u64 sent;                                                                    \
		if (!r)                                                                        \
			return -1;                                                             \
		/* The caller's bound does not reach the verifier through the call: */        \
		/* clamp again, behind a barrier so clang cannot drop the clamp. */           \
		barrier_var(n);                                                                \
		if (n > CAP)                                                                   \
			n = CAP;                                                               \
		fill_hdr(&r->h, e, off, n);                                                   \
		sent = n;                                                                      \
		if (bpf_probe_read_user(r->data, n, (void *)(e->src + off))) {                 \
			r->h.chunk_len = 0;                                                    \
			r->h.flags = TLSTAP_DATA_READ_FAULT;                                   \
			count_call_loss(e, TLSTAP_LOSS_READ_FAULT, n);                         \
			sent = 0;                                                              \
		}                                                                              \
		if (!submit_record(ctx, r, sizeof(r->h) + sent,                                \
				   use_perf_output ? 0 : data_wakeup_flag()))                  \
			return -1;                                                             \
		return 0;                                                                      \
	}

DEFINE_EMIT_CLASS(64)
DEFINE_EMIT_CLASS(256)
DEFINE_EMIT_CLASS(1024)
DEFINE_EMIT_CLASS(4096)
DEFINE_EMIT_CLASS(16384)

static __always_inline int emit_chunk(void *ctx, struct emit_ctx *e, __u64 off, __u64 n)
{
	if (n <= 64)
		return emit_class_64(ctx, e, off, n);
	if (n <= 256)
		return emit_class_256(ctx, e, off, n);
	if (n <= 1024)
		return emit_class_1024(ctx, e, off, n);
	if (n <= 4096)
		return emit_class_4096(ctx, e, off, n);
	return emit_class_16384(ctx, e, off, n);
}

/* Emits chunk i of the call; 1 when the call has no chunk i. */
static __always_inline long emit_chunk_at(void *ctx, struct emit_ctx *e, __u32 i)
{
	__u64 off = (__u64)i * TLSTAP_CHUNK_MAX;
	__u64 left, n;

	if (off >= e->len)
		return 1;
	left = e->len - off;
	n = left > TLSTAP_CHUNK_MAX ? TLSTAP_CHUNK_MAX : left;
	if (emit_chunk(ctx, e, off, n) < 0)
		count_call_loss(e, TLSTAP_LOSS_RINGBUF_FULL, n);
	return 0;
}

/* What bpf_loop's callback gets: the probe's context (perf output needs it) and the call. */
struct loop_arg {
	void *ctx;
	struct emit_ctx *e;
};

/* bpf_loop callback: emit chunk i of the call; 1 stops the loop. */
static long emit_chunk_cb(__u32 i, void *data)
{
	struct loop_arg *arg = data;

	return emit_chunk_at(arg->ctx, arg->e, i);
}

/*
 * Without bpf_loop, bounded loops emit the chunks. The verifier walks every iteration of a
 * loop, and every path through an iteration: with the chunk's work inline, paths multiplied (a
 * loss, a fault) until 256 iterations exceeded its million instructions. So the work is done
 * by global functions, which the verifier checks once each: one emits a chunk, one a block of
 * CHUNK_BLOCK chunks (a loop of that many iterations, two branches each, within the 8192
 * branches the verifier may hold), and the program loops over blocks. The call they work on
 * is kept in this CPU's slot rather than on the stack (a global function takes no pointer to
 * it before 5.12). `owner` is the thread that filled the slot: kernels without bpf_loop run
 * uprobe programs with preemption off, so none other can take it meanwhile; where one could
 * (a fallback forced on a new kernel), the chunks left are counted lost, never mixed up.
 */
struct bounded_call {
	__u64 owner;
	__u64 chunks;
	struct emit_ctx e;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bounded_call);
} bounded_calls SEC(".maps");

/* Status of the global functions below: go on, the call's end was reached, or the slot is
 * not this thread's call any more. */
#define BOUNDED_GO_ON 0
#define BOUNDED_DONE 1
#define BOUNDED_LOST 2

/* This CPU's bounded call, if this thread's. */
static __always_inline struct bounded_call *own_bounded_call(void)
{
	__u32 zero = 0;
	struct bounded_call *call = bpf_map_lookup_elem(&bounded_calls, &zero);

	return call && call->owner == bpf_get_current_pid_tgid() ? call : 0;
}

/* Emits chunk i of this CPU's bounded call. */
__noinline int emit_bounded_chunk(bpf_user_pt_regs_t *ctx, __u32 i)
{
	struct bounded_call *call = own_bounded_call();

	if (!call)
		return BOUNDED_LOST;
	if (i >= call->chunks)
		return BOUNDED_DONE;
	return emit_chunk_at(ctx, &call->e, i) ? BOUNDED_DONE : BOUNDED_GO_ON;
}

/* Emits block b (chunks b * CHUNK_BLOCK onwards) of this CPU's bounded call. */
__noinline int emit_bounded_block(bpf_user_pt_regs_t *ctx, __u32 block)
{
	__u32 i;

	for (i = 0; i < CHUNK_BLOCK; i++) {
		int status = emit_bounded_chunk(ctx, block * CHUNK_BLOCK + i);

		if (status != BOUNDED_GO_ON)
			return status;
	}
	return BOUNDED_GO_ON;
}

static __always_inline void emit_chunks_bounded(void *ctx, struct emit_ctx *e, __u64 chunks)
{
	__u32 zero = 0, block;
	struct bounded_call *call = bpf_map_lookup_elem(&bounded_calls, &zero);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!call) {
		count_call_loss(e, TLSTAP_LOSS_RINGBUF_FULL, e->len);
		return;
	}
	call->owner = pid_tgid;
	call->chunks = chunks;
	__builtin_memcpy(&call->e, e, sizeof(*e));
	for (block = 0; block < CHUNK_BLOCKS_MAX; block++) {
		int status = emit_bounded_block(ctx, block);

		if (status == BOUNDED_LOST) {
			/* Which chunks went is not known here: the whole call is counted. */
			count_call_loss(e, TLSTAP_LOSS_RINGBUF_FULL, e->len);
			return;
		}
		if (status == BOUNDED_DONE)
			break;
	}
	if (call->owner == pid_tgid)
		call->owner = 0;
}

static __always_inline bool comm_matches(void)
{
	char comm[TLSTAP_COMM_LEN];

	if (!target_comm[0])
		return true;
	bpf_get_current_comm(comm, sizeof(comm));
	for (int i = 0; i < TLSTAP_COMM_LEN; i++) {
		if (comm[i] != target_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline bool wanted(__u64 pid_tgid)
{
	if (target_tgid && (pid_tgid >> 32) != target_tgid)
		return false;
	if (target_uid != 0xffffffff && (__u32)bpf_get_current_uid_gid() != target_uid)
		return false;
	return comm_matches();
}

/*
 * `modern` is a constant of each program (features.h): false compiles bpf_loop and fetch
 * atomics out of it. A program that names bpf_loop's callback, even on a path never taken, is
 * refused before 5.13 ("number of funcs in func_info doesn't match").
 */
static __always_inline void emit_call(struct pt_regs *ctx, bool modern, __u64 cookie, __u32 direction,
				      __u64 conn_ptr, __u64 src, __u64 len, __u64 pid_tgid, __u64 g)
{
	struct emit_ctx e = {};
	struct stream_state *stream;
	__u64 chunks;

	if (len == 0)
		return;
	e.src = src;
	e.len = len;
	e.call_id = next_call_id(modern);
	e.conn_ptr = conn_ptr;
	e.ts_ns = bpf_ktime_get_ns();
	e.pid_tgid = pid_tgid;
	e.uid = (__u32)bpf_get_current_uid_gid();
	e.direction = direction;
	e.goroutine = g;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	stream = stream_of(conn_ptr, pid_tgid >> 32, direction);
	/* Atomic where it can be: calls on one stream may run on several CPUs at once (Go itself
	 * serialises a tls.Conn's Writes, and its Reads, just after these probes). */
	e.seq = stream ? fetch_inc(&stream->seq, modern) : 0;
	e.epoch = stream ? stream->epoch : 0;
	resolve_conn(ctx, cookie, binary_of(cookie), conn_ptr, stream ? &stream->conn : 0, &e.conn);
	chunks = (len + TLSTAP_CHUNK_MAX - 1) / TLSTAP_CHUNK_MAX;
	if (chunks > CHUNK_LOOP_MAX) {
		count_call_loss(&e, TLSTAP_LOSS_CALL_TOO_LARGE, len - (__u64)CHUNK_LOOP_MAX * TLSTAP_CHUNK_MAX);
		/* call_len stays the call's size: userspace shows the call cut (truncated). */
		chunks = CHUNK_LOOP_MAX;
	}
	/* Most calls are one chunk: skip bpf_loop's indirect calls for them. */
	if (chunks == 1) {
		emit_chunk_at(ctx, &e, 0);
	} else if (modern) {
		struct loop_arg arg = { .ctx = ctx, .e = &e };

		bpf_loop(chunks, emit_chunk_cb, &arg, 0);
	} else {
		emit_chunks_bounded(ctx, &e, chunks);
	}
}

/* --- Probe points ---------------------------------------------------------------------- */

/* Copies min(len, max) bytes of user memory; returns false when the read faulted. */
static __always_inline bool read_bounded(void *dst, __u32 max, __u64 src, __u64 len)
{
	__u32 n = len > max ? max : (__u32)len;

	return bpf_probe_read_user(dst, n, (void *)src) == 0;
}

/*
 * func (c *Config) writeKeyLog(label string, clientRandom, secret []byte) error:
 * words c, label.ptr, label.len, cr.ptr, cr.len, cr.cap, secret.ptr, secret.len, secret.cap.
 * Go calls it for every secret even when no KeyLogWriter is set.
 */
static __always_inline void on_keylog(struct pt_regs *ctx, bool stack_abi, __u64 pid_tgid)
{
	__u64 label = go_arg(ctx, stack_abi, 1), label_len = go_arg(ctx, stack_abi, 2);
	__u64 cr = go_arg(ctx, stack_abi, 3), cr_len = go_arg(ctx, stack_abi, 4);
	__u64 secret = go_arg(ctx, stack_abi, 6), secret_len = go_arg(ctx, stack_abi, 7);
	struct tlstap_secret_rec *r;
	bool ok;

	r = reserve_record(sizeof(*r));
	if (!r) {
		count_loss(TLSTAP_LOSS_RINGBUF_FULL, label_len + cr_len + secret_len);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = TLSTAP_RECORD_SECRET;
	r->pid = pid_tgid >> 32;
	r->ts_ns = bpf_ktime_get_ns();
	r->label_len = label_len;
	r->client_random_len = cr_len;
	r->secret_len = secret_len;
	ok = read_bounded(r->label, TLSTAP_LABEL_MAX, label, label_len);
	ok = read_bounded(r->client_random, TLSTAP_SECRET_MAX, cr, cr_len) && ok;
	ok = read_bounded(r->secret, TLSTAP_SECRET_MAX, secret, secret_len) && ok;
	if (!ok) {
		r->flags = TLSTAP_DATA_READ_FAULT;
		count_loss(TLSTAP_LOSS_READ_FAULT, label_len + cr_len + secret_len);
	}
	if (!submit_record(ctx, r, sizeof(*r), 0))
		count_loss(TLSTAP_LOSS_RINGBUF_FULL, label_len + cr_len + secret_len);
}

/* func (c *Conn) Write(b []byte) (int, error): words c, b.ptr, b.len, b.cap. */
static __always_inline void on_write_entry(struct pt_regs *ctx, bool modern, __u64 cookie,
					   __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	__u64 conn = go_arg(ctx, stack_abi, 0);
	__u64 buf = go_arg(ctx, stack_abi, 1);
	__u64 len = go_arg(ctx, stack_abi, 2);
	__u64 g = h2_hooks ? go_goroutine(ctx, cookie) : 0;

	emit_call(ctx, modern, cookie, TLSTAP_DIR_WRITE, conn, buf, len, pid_tgid, g);
}

/*
 * At the JBE of Write's stack check (amd64): the kernel emulates a conditional branch, where
 * the body's first instruction it may single-step out of line. A call whose stack must grow
 * takes the branch (CF or ZF set by the compare), grows it and runs the check again: only the
 * run that falls through into the body is the call's.
 */
#define X86_FLAGS_CF 0x1
#define X86_FLAGS_ZF 0x40

static __always_inline void on_write_check(struct pt_regs *ctx, bool modern, __u64 cookie, __u64 pid_tgid)
{
#if defined(__TARGET_ARCH_x86)
	if (ctx_reg(ctx, flags) & (X86_FLAGS_CF | X86_FLAGS_ZF))
		return;
	on_write_entry(ctx, modern, cookie, pid_tgid);
#endif
}

/* The key of this goroutine's Read in flight. */
static __always_inline struct read_key read_key_of(struct pt_regs *ctx, __u64 cookie, __u64 pid_tgid)
{
	struct read_key key = {
		.g = go_goroutine(ctx, cookie),
		.tgid = pid_tgid >> 32,
	};

	return key;
}

static __always_inline struct tlstap_read_slot *read_slot_of(const struct read_key *key)
{
	/* Fibonacci hashing of g and the process: g addresses are spaced by their size class. */
	__u64 h = (key->g ^ ((__u64)key->tgid << 40)) * 0x9E3779B97F4A7C15ull;
	__u32 index = (h >> 48) & read_slot_mask;

	return bpf_map_lookup_elem(&read_slots, &index);
}

/* func (c *Conn) Read(b []byte) (int, error): save c and b.ptr for the RET. */
static __always_inline void on_read_entry(struct pt_regs *ctx, bool modern, __u64 cookie, __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	struct read_key g = read_key_of(ctx, cookie, pid_tgid);
	struct read_entry entry = {
		.conn_ptr = go_arg(ctx, stack_abi, 0),
		.buf = go_arg(ctx, stack_abi, 1),
	};
	/* Slots are claimed by compare-and-swap: legacy programs keep Reads in the hash map. */
	struct tlstap_read_slot *slot = modern ? read_slot_of(&g) : 0;

	if (slot && g.g) {
		__u64 owner = __sync_val_compare_and_swap(&slot->g, 0, g.g);

		/* Free, or this goroutine's own (its last RET was not seen): take it. */
		if (owner == 0 || (owner == g.g && READ_ONCE(slot->tgid) == g.tgid)) {
			slot->tgid = g.tgid;
			slot->conn_ptr = entry.conn_ptr;
			slot->buf = entry.buf;
			return;
		}
	}
	if (bpf_map_update_elem(&reads_in_flight, &g, &entry, BPF_ANY))
		count_loss(TLSTAP_LOSS_MAP_FULL, 0);
}

/* This goroutine's saved Read entry, taken out of its slot or the hash map. */
static __always_inline bool take_read_entry(struct read_key *g, struct read_entry *saved, bool modern)
{
	struct tlstap_read_slot *slot = modern ? read_slot_of(g) : 0;
	struct read_entry *entry;

	if (slot && g->g && READ_ONCE(slot->g) == g->g && READ_ONCE(slot->tgid) == g->tgid) {
		saved->conn_ptr = slot->conn_ptr;
		saved->buf = slot->buf;
		/* Release: tgid first, so that whoever claims the slot next never sees ours. */
		slot->tgid = 0;
		__sync_lock_test_and_set(&slot->g, 0);
		return true;
	}
	entry = bpf_map_lookup_elem(&reads_in_flight, g);
	if (!entry)
		return false;
	*saved = *entry;
	bpf_map_delete_elem(&reads_in_flight, g);
	return true;
}

/* At a RET of Read: n is result word 0 (register ABI) or stack word 4 (after c and b). */
static __always_inline void on_read_return(struct pt_regs *ctx, bool modern, __u64 cookie,
					   __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	struct read_key g = read_key_of(ctx, cookie, pid_tgid);
	__s64 n = (__s64)(stack_abi ? go_stack_word(ctx, 4) : go_reg(ctx, 0));
	struct read_entry saved;

	if (!take_read_entry(&g, &saved, modern)) {
		if (n > 0)
			count_loss(TLSTAP_LOSS_NO_ENTRY, n);
		return;
	}
	if (n > 0)
		emit_call(ctx, modern, cookie, TLSTAP_DIR_READ, saved.conn_ptr, saved.buf, n, pid_tgid,
			  h2_hooks ? g.g : 0);
}

/*
 * At a RET of a Read whose argument words goelf proved to be on the stack at every RET: the
 * whole capture of the call, one probe hit instead of two. Words 0 and 1 are c and b.ptr; n is
 * result register 0, or stack word 4 in ABI0. A Read begun before the probes were attached is
 * captured whole too: nothing was needed from its entry.
 */
static __always_inline void on_read_return_alone(struct pt_regs *ctx, bool modern, __u64 cookie,
						 __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	__u64 words[5] = {};
	__s64 n = stack_abi ? 0 : (__s64)go_reg(ctx, 0);

	/* Most RETs of a busy server return data; the rest (errors, EOF) cost one branch. */
	if (!stack_abi && n <= 0)
		return;
	if (bpf_probe_read_user(words, stack_abi ? sizeof(words) : 2 * sizeof(words[0]),
				(void *)(stack_pointer(ctx) + 8))) {
		/* The stack is mapped while its goroutine runs: not expected, but never silent. */
		if (n > 0)
			count_loss(TLSTAP_LOSS_READ_FAULT, n);
		return;
	}
	if (stack_abi)
		n = (__s64)words[4];
	if (n > 0)
		emit_call(ctx, modern, cookie, TLSTAP_DIR_READ, words[0], words[1], n, pid_tgid,
			  h2_hooks ? go_goroutine(ctx, cookie) : 0);
}

/*
 * At Read's one call of runtime.memmove(dst, src, n), whose destination goelf proved to be
 * b.ptr: the plaintext the Read returns is at src, n bytes, and c is in its stack word at
 * SP + read_copy_depth + 8. One probe hit per Read, on a CALL, which the kernel emulates (a RET
 * it single-steps out of line: about 15 times the cost, bench/run --only fast). memmove's
 * arguments are registers 0..2 (register ABI) or the outgoing stack words 0..2 (ABI0).
 */
static __always_inline void on_read_copy(struct pt_regs *ctx, bool modern, __u64 cookie, __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	struct tlstap_binary_cfg *cfg = binary_of(cookie);
	__u64 sp = stack_pointer(ctx), conn = 0, src, n;
	__u64 out[3] = {};

	if (stack_abi) {
		/* Its own stack is mapped while the goroutine runs; a failure would be counted, though
		 * the bytes it would have told are unknown. */
		if (bpf_probe_read_user(out, sizeof(out), (void *)sp)) {
			count_loss(TLSTAP_LOSS_READ_FAULT, 0);
			return;
		}
		src = out[1];
		n = out[2];
	} else {
		src = go_reg(ctx, 1);
		n = go_reg(ctx, 2);
	}
	if ((__s64)n <= 0)
		return;
	if (!cfg || bpf_probe_read_user(&conn, sizeof(conn), (void *)(sp + cfg->read_copy_depth + 8))) {
		/* Not expected (the stack is mapped while its goroutine runs), but never silent. */
		count_loss(TLSTAP_LOSS_READ_FAULT, n);
		return;
	}
	emit_call(ctx, modern, cookie, TLSTAP_DIR_READ, conn, src, n, pid_tgid,
		  h2_hooks ? go_goroutine(ctx, cookie) : 0);
}

/* The whole probe, shared by the attach flavours below; `cookie` as events.h defines it;
 * `modern` a constant: whether this program may use bpf_loop (see emit_call). `kind` is the
 * probe's role; a constant in programs of one role, so that each holds only its role's path
 * (the verifier's work, on slow old kernels, is then a quarter). */
static __always_inline int go_tls_probe_kind(struct pt_regs *ctx, bool modern, __u64 cookie, __u32 kind)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!wanted(pid_tgid))
		return 0;
	switch (kind) {
	case TLSTAP_PROBE_WRITE_ENTRY:
		on_write_entry(ctx, modern, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_READ_ENTRY:
		on_read_entry(ctx, modern, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_READ_RET:
		on_read_return(ctx, modern, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_READ_RET_ALONE:
		on_read_return_alone(ctx, modern, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_READ_COPY:
		on_read_copy(ctx, modern, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_WRITE_CHECK:
		on_write_check(ctx, modern, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_KEYLOG:
		on_keylog(ctx, stack_abi, pid_tgid);
		break;
	}
	return 0;
}

/* The probe whose role its cookie says (every program but the per-role ones). */
static __always_inline int go_tls_probe(struct pt_regs *ctx, bool modern, __u64 cookie)
{
	return go_tls_probe_kind(ctx, modern, cookie, cookie & TLSTAP_COOKIE_KIND_MASK);
}

/* One link for every offset of a binary (kernel >= 6.6, which has bpf_loop). */
SEC("uprobe.multi")
int go_tls_multi(struct pt_regs *ctx)
{
	return go_tls_probe(ctx, true, bpf_get_attach_cookie(ctx));
}

/* One perf-event link per offset, for older kernels: with bpf_loop (5.17) or without (5.15,
 * 5.16). Userspace loads only the program of the path it takes. */
SEC("uprobe")
int go_tls_single(struct pt_regs *ctx)
{
	return go_tls_probe(ctx, true, bpf_get_attach_cookie(ctx));
}

SEC("uprobe")
int go_tls_single_legacy(struct pt_regs *ctx)
{
	return go_tls_probe(ctx, false, bpf_get_attach_cookie(ctx));
}

/*
 * Kernels without cookies (< 5.15, so without bpf_loop: these programs never use it): the
 * cookie this probe would have, rebuilt from its role
 * (the program attached there) and its binary, found by the executable's inode. 0 (no role)
 * when the executable is not a hooked binary (a binary mapped some other way).
 */
static __always_inline __u64 cookie_of_file(struct pt_regs *ctx, __u32 kind)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct tlstap_binary_file *file;
	__u64 ino = BPF_CORE_READ(task, mm, exe_file, f_inode, i_ino);
	__u64 start_code = BPF_CORE_READ(task, mm, start_code);
	__u64 vaddr;

	file = bpf_map_lookup_elem(&binary_files, &ino);
	if (!file)
		return 0;
	vaddr = PT_REGS_IP(ctx) - (start_code - file->exec_vaddr);
	if (vaddr >> 32)
		vaddr = 0; /* as a cookie says it: connections are then not resolved */
	return kind | file->cookie_flags |
	       ((__u64)(file->binary_index & TLSTAP_COOKIE_BINARY_MASK) << TLSTAP_COOKIE_BINARY_SHIFT) |
	       (vaddr << TLSTAP_COOKIE_VADDR_SHIFT);
}

#define DEFINE_NOCOOKIE_PROBE(NAME, KIND)                                                      \
	SEC("uprobe")                                                                          \
	int go_tls_##NAME##_nocookie(struct pt_regs *ctx)                                      \
	{                                                                                      \
		__u64 cookie = cookie_of_file(ctx, KIND);                                      \
		return cookie ? go_tls_probe_kind(ctx, false, cookie, KIND) : 0;               \
	}

DEFINE_NOCOOKIE_PROBE(write, TLSTAP_PROBE_WRITE_ENTRY)
DEFINE_NOCOOKIE_PROBE(read_entry, TLSTAP_PROBE_READ_ENTRY)
DEFINE_NOCOOKIE_PROBE(read_ret, TLSTAP_PROBE_READ_RET)
DEFINE_NOCOOKIE_PROBE(read_ret_alone, TLSTAP_PROBE_READ_RET_ALONE)
DEFINE_NOCOOKIE_PROBE(read_copy, TLSTAP_PROBE_READ_COPY)
DEFINE_NOCOOKIE_PROBE(write_check, TLSTAP_PROBE_WRITE_CHECK)
DEFINE_NOCOOKIE_PROBE(keylog, TLSTAP_PROBE_KEYLOG)

#include "h2_hooks.h"

/* --- Processes (discovery) -------------------------------------------------------------- */

#define SIGSTOP 19
#define SIGCONT 18

/*
 * Processes stopped at exec for --catch-exec and not continued yet (struct tlstap_held_proc).
 * Userspace deletes an entry when it continues the process; a watchdog thread continues any
 * left past a deadline, whatever blocks the capture loop; and the map is pinned, so that what
 * a tlstap killed with SIGKILL left stopped is continued by the next one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct tlstap_held_proc);
} held_processes SEC(".maps");

static __always_inline void remember_held(__u64 pid_tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct tlstap_held_proc held = { .held_ns = bpf_ktime_get_ns() };
	__u32 pid = pid_tgid >> 32;

	if (bpf_core_field_exists(task->start_boottime))
		held.start_boottime = BPF_CORE_READ(task, start_boottime);
	bpf_map_update_elem(&held_processes, &pid, &held, BPF_ANY);
}

static __always_inline void emit_proc(void *ctx, __u32 kind, __u64 pid_tgid, bool hold)
{
	struct tlstap_proc_rec *r = reserve_record(sizeof(*r));

	if (!r) {
		count_loss(TLSTAP_LOSS_RINGBUF_FULL, 0);
		/* Never leave a process stopped that userspace will not hear of. */
		return;
	}
	r->kind = kind;
	r->pid = pid_tgid >> 32;
	r->ts_ns = bpf_ktime_get_ns();
	r->uid = (__u32)bpf_get_current_uid_gid();
	r->held = hold;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	/*
	 * SIGSTOP before the record goes: userspace may read it and send SIGCONT at once, and a
	 * SIGCONT queued after the SIGSTOP cancels it, while one sent before it would be lost
	 * and leave the process stopped (seen on 6.1 under qemu).
	 */
	if (hold) {
		remember_held(pid_tgid);
		bpf_send_signal(SIGSTOP);
	}
	/* A held process waits for this record: wake the reader now (see WAKEUP_BYTES). */
	if (!submit_record(ctx, r, sizeof(*r), hold ? BPF_RB_FORCE_WAKEUP : 0)) {
		/* Only a perf buffer can refuse here: never leave a process userspace will not
		 * hear of stopped. */
		if (hold)
			bpf_send_signal(SIGCONT);
		count_loss(TLSTAP_LOSS_RINGBUF_FULL, 0);
	}
}

/* Raw tracepoints: attached by name, no tracefs mount needed. */
SEC("raw_tp/sched_process_exec")
int on_exec(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!report_processes || !wanted(pid_tgid))
		return 0;
	emit_proc(ctx, TLSTAP_RECORD_EXEC, pid_tgid, catch_exec);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int on_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	/* Only the thread-group leader's exit ends the process. */
	if (!report_processes || (__u32)pid_tgid != (pid_tgid >> 32))
		return 0;
	emit_proc(ctx, TLSTAP_RECORD_EXIT, pid_tgid, false);
	return 0;
}

/*
 * Empty programs at the same attach points, for the benchmark's "null probe" floor: the cost
 * of the uprobe traps alone (tlstap gotls --null-probes).
 */
SEC("uprobe.multi")
int go_tls_null_multi(struct pt_regs *ctx)
{
	return 0;
}

SEC("uprobe")
int go_tls_null_single(struct pt_regs *ctx)
{
	return 0;
}
