/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel features a BPF object may take a path for, as userspace probed them before load
 * (crates/tlstap-bpf/src/features.rs). They are read-only data: the verifier knows their values,
 * so a path for a feature the kernel lacks is never explored and its instructions (a helper or
 * an atomic the kernel does not know) are never checked.
 *
 * Must stay true: every use of bpf_loop, of an atomic that returns a value (fetch-add,
 * compare-and-swap, exchange: Linux 5.12) or of the attach cookie sits behind its flag.
 */
#ifndef TLSTAP_FEATURES_H
#define TLSTAP_FEATURES_H

/* bpf_loop (5.17); else bounded loops (5.3). */
const volatile bool have_bpf_loop = true;
/* BPF_FETCH / BPF_CMPXCHG / BPF_XCHG atomics (5.12); else per-CPU or plain updates. */
const volatile bool have_fetch_atomics = true;

/* One load, not merged with or split from others: the value is shared between CPUs. */
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

/*
 * n, then n + 1: atomically where the kernel allows, else a plain increment. The plain form is
 * exact for per-CPU values on kernels that run these programs with preemption off (all the
 * kernels without fetch atomics do); on shared values two CPUs may both read the same n.
 */
static __always_inline __u64 fetch_inc(__u64 *value)
{
	__u64 n;

	if (have_fetch_atomics)
		return __sync_fetch_and_add(value, 1);
	n = READ_ONCE(*value);
	*value = n + 1;
	return n;
}

#endif /* TLSTAP_FEATURES_H */
