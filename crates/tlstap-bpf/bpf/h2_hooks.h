/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Go's own HTTP/2 header fields (--h2-hooks): what the program's HPACK encoder is given and what
 * its framer decoded, so headers are known on connections whose HPACK state tlstap missed
 * (opened before it started). Records are struct tlstap_h2_hdr (events.h). Included by
 * tlstap.bpf.c only, after the emission helpers; loaded only when the hooks are asked for.
 *
 * Must stay true: a field is captured whole or not at all (userspace fills a header only from
 * a field it has entirely); every field entry in a payload starts 8-aligned.
 */
#ifndef TLSTAP_H2_HOOKS_H
#define TLSTAP_H2_HOOKS_H

/* A Go string header (data pointer, length), as in a hpack.HeaderField. */
struct go_string {
	__u64 ptr;
	__u64 len;
};

/* Bytes a captured field takes in a payload: its entry header and strings, 8-aligned. */
static __always_inline __u64 h2_field_span(__u64 name_len, __u64 value_len)
{
	return (sizeof(struct tlstap_h2_field) + name_len + value_len + 7) & ~7ull;
}

/*
 * Writes one field at `at` (8-aligned) of `payload`: its lengths, its name, its value. The
 * caller has checked name_len and value_len <= TLSTAP_H2_STRING_MAX and that `payload` holds
 * at + 8 + 2 * TLSTAP_H2_STRING_MAX bytes. False when user memory could not be read.
 */
static __always_inline bool h2_put_field(__u8 *payload, __u64 at, const struct go_string *name,
					 const struct go_string *value)
{
	struct tlstap_h2_field *f = (void *)(payload + at);
	/* 64-bit and checked behind barriers: the verifier must see each bound on the very
	 * register passed on (a 32-bit copy was checked instead, and the helper call refused). */
	__u64 name_len = name->len, value_len = value->len;

	barrier_var(name_len);
	if (name_len > TLSTAP_H2_STRING_MAX)
		return false;
	barrier_var(value_len);
	if (value_len > TLSTAP_H2_STRING_MAX)
		return false;
	f->name_len = name_len;
	f->value_len = value_len;
	if (bpf_probe_read_user(payload + at + sizeof(*f), name_len, (void *)name->ptr))
		return false;
	if (bpf_probe_read_user(payload + at + sizeof(*f) + name_len, value_len, (void *)value->ptr))
		return false;
	return true;
}

static __always_inline void h2_fill_hdr(struct tlstap_h2_hdr *h, __u32 side, __u64 g, __u64 owner,
					__u64 pid_tgid)
{
	__builtin_memset(h, 0, sizeof(*h));
	h->kind = TLSTAP_RECORD_H2_FIELDS;
	h->side = side;
	h->ts_ns = bpf_ktime_get_ns();
	h->goroutine = g;
	h->owner = owner;
	h->pid = pid_tgid >> 32;
}

/*
 * A SENT record in a size class: most fields are short, so a small record serves them and the
 * ring is not spent on a record sized for the longest value.
 */
#define DEFINE_H2_SENT_CLASS(CAP)                                                              \
	static __noinline void h2_sent_##CAP(__u64 g, __u64 encoder, __u64 pid_tgid,             \
					     struct go_string *name, struct go_string *value)     \
	{                                                                                      \
		struct {                                                                       \
			struct tlstap_h2_hdr h;                                                \
			__u8 payload[sizeof(struct tlstap_h2_field) + 2 * (CAP)];              \
		} *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);                            \
		if (!r) {                                                                      \
			count_loss(TLSTAP_LOSS_RINGBUF_FULL, name->len + value->len);          \
			return;                                                                \
		}                                                                              \
		h2_fill_hdr(&r->h, TLSTAP_H2_SENT, g, encoder, pid_tgid);                      \
		r->h.field_count = 1;                                                          \
		if (name->len <= (CAP) && value->len <= (CAP) &&                               \
		    h2_put_field(r->payload, 0, name, value)) {                                \
			r->h.captured = 1;                                                     \
			r->h.payload_len = h2_field_span(name->len, value->len);               \
		} else if (name->len <= (CAP) && value->len <= (CAP)) {                        \
			r->h.flags = TLSTAP_DATA_READ_FAULT;                                   \
			count_loss(TLSTAP_LOSS_READ_FAULT, name->len + value->len);            \
		}                                                                              \
		bpf_ringbuf_submit(r, 0);                                                      \
	}

DEFINE_H2_SENT_CLASS(120)
DEFINE_H2_SENT_CLASS(4096)
_Static_assert(TLSTAP_H2_STRING_MAX == 4096, "the large SENT class holds the longest field captured");

/* func (e *Encoder) WriteField(f HeaderField) error: words e, Name.ptr, Name.len, Value.ptr,
 * Value.len, Sensitive. One record per field, in the order the program encodes them. */
static __always_inline void on_h2_sent_field(struct pt_regs *ctx, __u64 cookie, __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	struct go_string name = { go_arg(ctx, stack_abi, 1), go_arg(ctx, stack_abi, 2) };
	struct go_string value = { go_arg(ctx, stack_abi, 3), go_arg(ctx, stack_abi, 4) };
	__u64 encoder = go_arg(ctx, stack_abi, 0);
	__u64 g = go_goroutine(ctx, cookie);

	if (name.len <= 120 && value.len <= 120)
		h2_sent_120(g, encoder, pid_tgid, &name, &value);
	else
		h2_sent_4096(g, encoder, pid_tgid, &name, &value);
}

/* A RECEIVED record: the header and room for TLSTAP_H2_BLOCK_MAX bytes of fields, with slack
 * past it so that a field starting below the limit is provably inside the record. */
struct h2_block_rec {
	struct tlstap_h2_hdr h;
	__u8 payload[TLSTAP_H2_BLOCK_MAX + sizeof(struct tlstap_h2_field) + 2 * TLSTAP_H2_STRING_MAX];
};

/*
 * The *MetaHeadersFrame a RET of readMetaFrame returns, or 0 when it returns an error. Older
 * copies (Go <= 1.20's bundle, and every stack-ABI binary) return (*MetaHeadersFrame, error):
 * words 0, 1-2 (stack words 2, 3-4). Newer ones return (Frame, error), the frame in the
 * interface's data word: registers 0-1, 2-3. Told apart by the registers themselves: on
 * success the old shape has register 1 (the error's itab) nil, and the new one register 1 (the
 * frame) set and register 2 (the error's itab) nil; an error sets, in the old shape, both 1 and
 * 2 (a non-nil error always has a data word: Go boxes even small integers in static memory),
 * and in the new shape register 2. The only non-nil Frame it returns is the *MetaHeadersFrame.
 */
static __always_inline __u64 h2_returned_frame(struct pt_regs *ctx, bool stack_abi)
{
	__u64 r1;

	if (stack_abi)
		return go_stack_word(ctx, 3) ? 0 : go_stack_word(ctx, 2);
	r1 = go_reg(ctx, 1);
	if (!r1)
		return go_reg(ctx, 0);
	return go_reg(ctx, 2) ? 0 : r1;
}

/* func (fr *Framer) readMetaFrame(hf *HeadersFrame) (..., error), at a RET. The frame's Fields
 * are what Go decoded from the block, in order (fewer when Go stopped on an invalid or
 * oversized field). */
static __always_inline void on_h2_received_block(struct pt_regs *ctx, __u64 cookie, __u64 pid_tgid)
{
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	__u64 meta = h2_returned_frame(ctx, stack_abi);
	const struct tlstap_binary_cfg *cfg = binary_of(cookie);
	struct go_string fields = {};
	struct h2_block_rec *r;
	__u64 headers = 0, at = 0;
	__u32 stream_id = 0, i;

	if (!meta || !cfg || !(cfg->flags & TLSTAP_BINARY_H2_LAYOUT))
		return;
	if (bpf_probe_read_user(&fields, sizeof(fields), (void *)(meta + cfg->h2_meta_fields)) ||
	    bpf_probe_read_user(&headers, sizeof(headers), (void *)(meta + cfg->h2_meta_headers)) ||
	    bpf_probe_read_user(&stream_id, sizeof(stream_id), (void *)(headers + cfg->h2_stream_id))) {
		count_loss(TLSTAP_LOSS_READ_FAULT, 0);
		return;
	}
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(TLSTAP_LOSS_RINGBUF_FULL, 0);
		return;
	}
	h2_fill_hdr(&r->h, TLSTAP_H2_RECEIVED, go_goroutine(ctx, cookie), meta, pid_tgid);
	r->h.stream_id = stream_id & 0x7fffffff;
	r->h.field_count = fields.len;
	for (i = 0; i < TLSTAP_H2_FIELDS_MAX; i++) {
		struct go_string field[2];
		__u64 span;

		if (i >= fields.len)
			break;
		if (bpf_probe_read_user(field, sizeof(field), (void *)(fields.ptr + (__u64)i * cfg->h2_field_size))) {
			r->h.flags = TLSTAP_DATA_READ_FAULT;
			break;
		}
		if (field[0].len > TLSTAP_H2_STRING_MAX || field[1].len > TLSTAP_H2_STRING_MAX)
			break;
		span = h2_field_span(field[0].len, field[1].len);
		if (at + span > TLSTAP_H2_BLOCK_MAX)
			break;
		barrier_var(at);
		if (at > TLSTAP_H2_BLOCK_MAX)
			break;
		if (!h2_put_field(r->payload, at, &field[0], &field[1])) {
			r->h.flags = TLSTAP_DATA_READ_FAULT;
			break;
		}
		at += span;
		r->h.captured = i + 1;
	}
	r->h.payload_len = at;
	if (r->h.flags & TLSTAP_DATA_READ_FAULT)
		count_loss(TLSTAP_LOSS_READ_FAULT, 0);
	bpf_ringbuf_submit(r, 0);
}

static __always_inline int go_h2_probe(struct pt_regs *ctx, __u64 cookie)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!wanted(pid_tgid))
		return 0;
	switch (cookie & TLSTAP_COOKIE_KIND_MASK) {
	case TLSTAP_PROBE_H2_SENT_FIELD:
		on_h2_sent_field(ctx, cookie, pid_tgid);
		break;
	case TLSTAP_PROBE_H2_RECEIVED_BLOCK:
		on_h2_received_block(ctx, cookie, pid_tgid);
		break;
	}
	return 0;
}

/* The hooks need cookies (their role and binary) and the ring buffer: kernels >= 5.15 with one
 * link per binary (>= 6.6) or per offset. */
SEC("uprobe.multi")
int go_h2_multi(struct pt_regs *ctx)
{
	return go_h2_probe(ctx, bpf_get_attach_cookie(ctx));
}

SEC("uprobe")
int go_h2_single(struct pt_regs *ctx)
{
	return go_h2_probe(ctx, bpf_get_attach_cookie(ctx));
}

#endif /* TLSTAP_H2_HOOKS_H */
