/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel features and the programs' two variants. Every program that copies data is built
 * twice, by a constant argument `modern` the compiler folds away: modern programs use bpf_loop
 * (5.17) and atomics that return a value (fetch-add, compare-and-swap, exchange: 5.12);
 * legacy ones use neither (a bounded loop; per-CPU and plain updates). Userspace loads one
 * variant, by what it probed (crates/tlstap-bpf/src/features.rs). Read-only flags the
 * verifier prunes by would not do: kernels before 5.13 refuse a program that names bpf_loop's
 * callback anywhere, and before 5.12 one that holds an atomic they do not know, checked on
 * every instruction, reachable or not.
 *
 * Must stay true: every use of bpf_loop or of a value-returning atomic depends on `modern`.
 */
#ifndef TLSTAP_FEATURES_H
#define TLSTAP_FEATURES_H

/* One load, not merged with or split from others: the value is shared between CPUs. */
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

/*
 * n, then n + 1: atomically in modern programs, else a plain increment. The plain form is
 * exact for per-CPU values on kernels that run these programs with preemption off (all the
 * kernels without fetch atomics do); on shared values two CPUs may both read the same n.
 */
static __always_inline __u64 fetch_inc(__u64 *value, bool modern)
{
	__u64 n;

	if (modern)
		return __sync_fetch_and_add(value, 1);
	n = READ_ONCE(*value);
	*value = n + 1;
	return n;
}

#endif /* TLSTAP_FEATURES_H */
