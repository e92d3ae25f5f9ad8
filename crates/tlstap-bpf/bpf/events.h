/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The wire contract between tlstap's BPF programs and userspace: the ONLY definition of every
 * record in the ring buffer, of the attach cookie and of the loss counters. Rust types are
 * generated from this file's BTF by libbpf-cargo; nothing on the Rust side restates a layout.
 *
 * Invariants that must stay true:
 * - every record starts with `__u32 kind` (enum tlstap_record_kind);
 * - a data record is `struct tlstap_data_hdr` followed by exactly `chunk_len` payload bytes
 *   (the ring record may be longer: it is reserved in size classes, see tlstap.bpf.c);
 * - all fields are naturally aligned and the structs contain no implicit padding, so the
 *   layout is the same for every compiler and architecture.
 */
#ifndef TLSTAP_EVENTS_H
#define TLSTAP_EVENTS_H

/* Constants are enumerators, not #defines, so that they reach BTF and so the Rust side. */
enum tlstap_limits {
	/* Largest payload of one ring record. A TLS record carries at most 16 KiB of plaintext,
	 * so a `Read` never needs more than one chunk; a large `Write` is split into several. */
	TLSTAP_CHUNK_MAX = 16384,
	TLSTAP_COMM_LEN = 16,
	/* Go's NSS labels are at most 31 bytes; client randoms are 32; secrets at most 48. */
	TLSTAP_LABEL_MAX = 64,
	TLSTAP_SECRET_MAX = 64,
};

enum tlstap_record_kind {
	TLSTAP_RECORD_DATA = 1,
	TLSTAP_RECORD_SECRET = 2,
	TLSTAP_RECORD_EXEC = 3, /* a process exec'd: userspace may hook its binary */
	TLSTAP_RECORD_EXIT = 4, /* a process (thread group) exited */
	TLSTAP_RECORD_H2_FIELDS = 5, /* struct tlstap_h2_hdr: HTTP/2 header fields from Go's own code */
	TLSTAP_RECORD_PACKET = 16, /* struct tlstap_packet_hdr, in packets.bpf.c's own ring */
};

enum tlstap_direction {
	TLSTAP_DIR_WRITE = 0,
	TLSTAP_DIR_READ = 1,
};

/* What an attach point is; the low byte of its BPF cookie. */
enum tlstap_probe_kind {
	TLSTAP_PROBE_WRITE_ENTRY = 1, /* (*tls.Conn).Write, first instruction */
	TLSTAP_PROBE_READ_ENTRY = 2,  /* (*tls.Conn).Read, first instruction */
	TLSTAP_PROBE_READ_RET = 3,    /* (*tls.Conn).Read, each RET instruction */
	TLSTAP_PROBE_KEYLOG = 4,      /* (*tls.Config).writeKeyLog, first instruction */
	TLSTAP_PROBE_H2_SENT_FIELD = 5,     /* hpack (*Encoder).WriteField, first instruction */
	TLSTAP_PROBE_H2_RECEIVED_BLOCK = 6, /* http2 (*Framer).readMetaFrame, each RET */
	/* (*tls.Conn).Read, each RET, alone: c and b.ptr read from the argument words on the
	 * stack, which goelf proved hold them at every RET (goelf/src/spill.rs) */
	TLSTAP_PROBE_READ_RET_ALONE = 7,
	/* (*tls.Conn).Read's one CALL of runtime.memmove, which copies the plaintext into b
	 * (goelf proved its destination is b.ptr, and c saved at SP + read_copy_depth + 8) */
	TLSTAP_PROBE_READ_COPY = 8,
	/* (*tls.Conn).Write's stack-check JBE: as WRITE_ENTRY when the branch is not taken */
	TLSTAP_PROBE_WRITE_CHECK = 9,
};

/* The BPF cookie of an attach point: probe kind in bits 0..7, flags in 8..15, the binary's
 * index in the `binaries` map in 16..31, and the probe's virtual address in the binary (what
 * the instruction pointer is, less the load bias) in 32..63 (0 when it does not fit). */
enum tlstap_cookie_bits {
	TLSTAP_COOKIE_KIND_MASK = 0xff,
	TLSTAP_COOKIE_STACK_ABI = 0x100, /* arguments on the stack (Go ABI0), else registers */
	TLSTAP_COOKIE_BINARY_SHIFT = 16,
	TLSTAP_COOKIE_BINARY_MASK = 0xffff,
	TLSTAP_COOKIE_VADDR_SHIFT = 32,
};

/*
 * Kernels without uprobe cookies (< 5.15): what a probe's cookie would say of its binary,
 * value of the `binary_files` map keyed by the executable's inode number. The probe's address
 * in the file's view is the instruction pointer less the load bias, which is the kernel's
 * mm->start_code less `exec_vaddr`. 16 bytes, no padding.
 */
struct tlstap_binary_file {
	__u32 binary_index; /* index in the `binaries` map */
	__u32 cookie_flags; /* TLSTAP_COOKIE_STACK_ABI or 0 */
	__u64 exec_vaddr;   /* lowest p_vaddr of the executable PT_LOAD segments */
};

/* What userspace learned from a hooked binary; value of the `binaries` array map. 56 bytes. */
struct tlstap_binary_cfg {
	__u64 tcp_conn_type;   /* vaddr of the *net.TCPConn type descriptor; 0 unknown */
	__u64 unix_conn_type;  /* vaddr of the *net.UnixConn type descriptor; 0 unknown */
	__u32 tls_conn_conn;   /* offset of tls.Conn.conn, a net.Conn interface (itab, data) */
	__u32 net_conn_fd;     /* offset of conn.fd (*netFD) in net.TCPConn and net.UnixConn */
	__u32 net_fd_sysfd;    /* offset of netFD.pfd.Sysfd */
	__u32 g_below_fs;      /* stack ABI on amd64: g is at FS base minus this (0: 8) */
	__u32 flags;           /* enum tlstap_binary_flags */
	/* HTTP/2 header hooks, read from the binary's type data (TLSTAP_BINARY_H2_LAYOUT): */
	__u32 h2_meta_fields;  /* offset of MetaHeadersFrame.Fields, a []hpack.HeaderField */
	__u32 h2_meta_headers; /* offset of MetaHeadersFrame's embedded *HeadersFrame */
	__u32 h2_stream_id;    /* offset of StreamID (uint32) in HeadersFrame */
	__u32 h2_field_size;   /* size of hpack.HeaderField, whose Name is at 0 and Value at 16 */
	__u32 read_copy_depth; /* at Read's copy probe: how far SP is below its entry value */
};

enum tlstap_binary_flags {
	TLSTAP_BINARY_CONN_LAYOUT = 1, /* the conn offsets and types above are valid */
	TLSTAP_BINARY_H2_LAYOUT = 2,   /* the h2_* offsets above are valid */
};

/* What a data record's `conn` says about the connection. */
enum tlstap_conn_kind {
	TLSTAP_CONN_UNRESOLVED = 0, /* the binary's struct layout is unknown */
	TLSTAP_CONN_TCP = 1,        /* *net.TCPConn: fd and addresses valid */
	TLSTAP_CONN_UNIX = 2,       /* *net.UnixConn: fd valid */
	TLSTAP_CONN_OTHER = 3,      /* another net.Conn type (a wrapper, a pipe): nothing known */
	TLSTAP_CONN_FAULT = 4,      /* the pointers could not be followed */
};

/* The socket under a tls.Conn, resolved in BPF at each call. 56 bytes, no padding. */
struct tlstap_conn {
	__u64 sock_id;         /* kernel address of the struct sock: identity only, never shown */
	__s32 fd;              /* -1 when unknown */
	__u16 kind;            /* enum tlstap_conn_kind */
	__u16 family;          /* AF_INET 2, AF_INET6 10, AF_UNIX 1; 0 unknown */
	__u16 local_port;      /* host byte order */
	__u16 remote_port;
	__u32 _reserved;
	__u8 local_addr[16];   /* network order; IPv4 in the first 4 bytes */
	__u8 remote_addr[16];
};

/* Flags of a data record. */
enum tlstap_data_flags {
	/* bpf_probe_read_user failed: this chunk's bytes are missing (chunk_len is 0). */
	TLSTAP_DATA_READ_FAULT = 1,
};

/* Why bytes went missing; index of the `loss_calls` and `loss_bytes` per-CPU arrays. */
enum tlstap_loss_cause {
	TLSTAP_LOSS_RINGBUF_FULL = 0, /* no room in the ring buffer for a chunk */
	TLSTAP_LOSS_READ_FAULT = 1,   /* the payload could not be read from user memory */
	TLSTAP_LOSS_NO_ENTRY = 2,     /* a Read returned with no saved entry state */
	TLSTAP_LOSS_MAP_FULL = 3,     /* entry state could not be saved */
	TLSTAP_LOSS_CALL_TOO_LARGE = 4, /* a call beyond the chunks one probe may emit: its end */
	TLSTAP_LOSS__COUNT = 5,
};

/* One chunk of one Read/Write call. 160 bytes, no padding. */
struct tlstap_data_hdr {
	__u32 kind;        /* TLSTAP_RECORD_DATA */
	__u32 direction;   /* enum tlstap_direction */
	__u64 ts_ns;       /* bpf_ktime_get_ns() at the probe: CLOCK_MONOTONIC */
	__u64 call_id;     /* unique per call in this capture; all chunks of a call share it */
	__u64 conn_ptr;    /* the *tls.Conn, as an address in the traced process */
	__u64 call_len;    /* bytes the call moved */
	__u64 chunk_off;   /* offset of this chunk's payload within the call */
	__u32 chunk_len;   /* payload bytes following this header */
	__u32 flags;       /* enum tlstap_data_flags */
	__u32 pid;         /* tgid */
	__u32 tid;
	__u32 uid;
	__u32 stream_epoch; /* which count `seq` belongs to: a new one starts at 0 when BPF forgot
			     * the stream (LRU eviction); nonzero, 0 when uncounted */
	char comm[TLSTAP_COMM_LEN];
	__u64 seq;         /* per (process, tls.Conn, direction), from 0, in call order */
	struct tlstap_conn conn;
	__u64 goroutine;   /* g of the calling goroutine (ties --h2-hooks records to conns) */
};

/* One `writeKeyLog(label, clientRandom, secret)` call. 224 bytes, no padding. The *_len fields
 * are the lengths the program passed; bytes beyond the array sizes are not captured (flag). */
struct tlstap_secret_rec {
	__u32 kind;          /* TLSTAP_RECORD_SECRET */
	__u32 pid;           /* tgid */
	__u64 ts_ns;         /* bpf_ktime_get_ns() */
	__u32 label_len;
	__u32 client_random_len;
	__u32 secret_len;
	__u32 flags;         /* enum tlstap_data_flags */
	char label[TLSTAP_LABEL_MAX];
	__u8 client_random[TLSTAP_SECRET_MAX];
	__u8 secret[TLSTAP_SECRET_MAX];
};

/*
 * HTTP/2 header fields as a Go program has them, decoded, whatever HPACK state tlstap saw on
 * the wire (--h2-hooks). `side` says which way: SENT is one field the program's HPACK encoder
 * was given (one record per field, in encoding order, `owner` the *hpack.Encoder); RECEIVED is
 * every field of one header block the program decoded (`owner` the *MetaHeadersFrame,
 * `stream_id` its stream). The payload is `captured` fields, each a struct tlstap_h2_field and
 * then its name and value bytes; a field that did not fit ends the capture, so fields are
 * never cut: `captured < field_count` means the rest is missing. 56 bytes, no padding.
 */
enum tlstap_h2_limits {
	/* Longest name or value captured; a longer field ends the record's capture. */
	TLSTAP_H2_STRING_MAX = 4096,
	/* Payload bytes of a RECEIVED record at most (a SENT record holds one field). */
	TLSTAP_H2_BLOCK_MAX = 8192,
	/* Fields of one RECEIVED block captured at most. */
	TLSTAP_H2_FIELDS_MAX = 64,
};

enum tlstap_h2_side {
	TLSTAP_H2_SENT = 0,
	TLSTAP_H2_RECEIVED = 1,
};

struct tlstap_h2_hdr {
	__u32 kind;        /* TLSTAP_RECORD_H2_FIELDS */
	__u32 side;        /* enum tlstap_h2_side */
	__u64 ts_ns;       /* bpf_ktime_get_ns() */
	__u64 goroutine;   /* g of the calling goroutine */
	__u64 owner;       /* SENT: the *hpack.Encoder; RECEIVED: the *MetaHeadersFrame */
	__u32 pid;         /* tgid */
	__u32 stream_id;   /* RECEIVED: the block's stream; SENT: 0 */
	__u32 field_count; /* fields the program had (SENT: 1) */
	__u32 captured;    /* whole fields in the payload */
	__u32 payload_len; /* bytes following this header */
	__u32 flags;       /* enum tlstap_data_flags */
};

/* One captured field: this, then name_len bytes of name and value_len bytes of value. */
struct tlstap_h2_field {
	__u32 name_len;
	__u32 value_len;
};

/* A process stopped at exec for --catch-exec: value of the `held_processes` map (keyed by its
 * pid), which userspace pins and watches (see tlstap.bpf.c). 16 bytes, no padding. */
struct tlstap_held_proc {
	__u64 start_boottime; /* the task's start (boot clock, ns; 0 unknown): tells a reused pid apart */
	__u64 held_ns;        /* bpf_ktime_get_ns() when it was stopped */
};

/* A process event from the sched tracepoints. 40 bytes, no padding. */
struct tlstap_proc_rec {
	__u32 kind;      /* TLSTAP_RECORD_EXEC or TLSTAP_RECORD_EXIT */
	__u32 pid;       /* tgid */
	__u64 ts_ns;     /* bpf_ktime_get_ns() */
	__u32 uid;
	__u32 held;      /* 1: stopped with SIGSTOP for --catch-exec; userspace sends SIGCONT */
	char comm[TLSTAP_COMM_LEN];
};

/* --- Packets: packets.bpf.c (pcap mode), a TC program with a ring buffer of its own --------- */

enum tlstap_packet_limits {
	/* Largest payload of one packet record; a longer packet (GSO/GRO) spans several. */
	TLSTAP_PACKET_CHUNK_MAX = 16384,
	/* Bytes captured of one packet at most (64 chunks); the rest is cut and counted. */
	TLSTAP_PACKET_CAPTURE_MAX = 1048576,
};

enum tlstap_packet_dir {
	TLSTAP_PACKET_INGRESS = 0,
	TLSTAP_PACKET_EGRESS = 1,
};

/* Why packets went missing; index of packets.bpf.c's `packet_loss_packets`/`_bytes`. */
enum tlstap_packet_loss_cause {
	TLSTAP_PACKET_LOSS_RINGBUF_FULL = 0, /* no room for a chunk: the packet is lost whole */
	TLSTAP_PACKET_LOSS_LOAD_FAULT = 1,   /* bpf_skb_load_bytes failed: the packet is lost */
	TLSTAP_PACKET_LOSS_TRUNCATED = 2,    /* longer than TLSTAP_PACKET_CAPTURE_MAX: its end is cut */
	TLSTAP_PACKET_LOSS__COUNT = 3,
};

/* One chunk of one packet. 48 bytes, no padding; `chunk_len` payload bytes follow (the ring
 * record may be longer: size classes). A packet's chunks are submitted in order by one
 * program run, so they arrive in order; a lost chunk ends the packet (no later chunk). */
struct tlstap_packet_hdr {
	__u32 kind;        /* TLSTAP_RECORD_PACKET */
	__u32 direction;   /* enum tlstap_packet_dir */
	__u64 ts_ns;       /* bpf_ktime_get_ns() at the TC hook: CLOCK_MONOTONIC */
	__u64 packet_id;   /* unique per packet in this capture; its chunks share it */
	__u32 packet_len;  /* skb->len: the whole packet, link-layer header included */
	__u32 cap_len;     /* bytes captured: packet_len, unless longer than the capture max */
	__u32 chunk_off;   /* offset of this chunk's payload within the packet */
	__u32 chunk_len;
	__u32 syn_pid;     /* a connect()'s first SYN, sent from a local socket in the process's
			    * own context: that process (tgid); else 0 (unknown) */
	__u32 _reserved;
};

/*
 * A Read in flight, in the `read_slots` array (tlstap.bpf.c), which userspace maps to clear
 * the slots of processes that died inside a Read. A slot is free when g is 0. BPF claims it
 * by compare-and-swap of g (0 -> g), then writes tgid; it is released by writing tgid 0, then
 * g 0. Userspace frees a dead process's slot the same way: tgid (dead -> 0), then g (-> 0),
 * each by compare-and-swap. 32 bytes, no padding.
 */
struct tlstap_read_slot {
	__u64 g;        /* owner goroutine; 0: free */
	__u32 tgid;     /* owner process; 0 while free or being claimed */
	__u32 _reserved;
	__u64 conn_ptr; /* the Read's *tls.Conn */
	__u64 buf;      /* the Read's buffer */
};

/* Every type above, gathered so one global puts them all in BTF (see tlstap.bpf.c). */
struct tlstap_wire_types {
	enum tlstap_limits limits;
	enum tlstap_record_kind record_kind;
	enum tlstap_direction direction;
	enum tlstap_probe_kind probe_kind;
	enum tlstap_cookie_bits cookie_bits;
	enum tlstap_data_flags data_flags;
	enum tlstap_loss_cause loss_cause;
	enum tlstap_binary_flags binary_flags;
	enum tlstap_conn_kind conn_kind;
	struct tlstap_binary_cfg binary_cfg;
	struct tlstap_binary_file binary_file;
	struct tlstap_conn conn;
	struct tlstap_data_hdr data_hdr;
	struct tlstap_secret_rec secret_rec;
	struct tlstap_proc_rec proc_rec;
	struct tlstap_held_proc held_proc;
	enum tlstap_h2_limits h2_limits;
	enum tlstap_h2_side h2_side;
	struct tlstap_h2_hdr h2_hdr;
	struct tlstap_h2_field h2_field;
	struct tlstap_read_slot read_slot;
	enum tlstap_packet_limits packet_limits;
	enum tlstap_packet_dir packet_dir;
	enum tlstap_packet_loss_cause packet_loss_cause;
	struct tlstap_packet_hdr packet_hdr;
};

#endif /* TLSTAP_EVENTS_H */
