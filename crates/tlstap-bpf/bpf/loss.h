/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Loss accounting shared by tlstap's BPF objects: per cause, a per-CPU count of the calls (or
 * packets) affected and of the bytes missing. Userspace sums the CPUs.
 */
#ifndef TLSTAP_LOSS_H
#define TLSTAP_LOSS_H

/*
 * `calls` and `bytes` are per-CPU arrays indexed by the object's loss-cause enum; `affected`
 * is 0 for a further loss in a call (or packet) already counted.
 */
static __always_inline void add_loss(void *calls, void *bytes, __u32 cause, __u64 affected,
				     __u64 missing)
{
	__u64 *n = bpf_map_lookup_elem(calls, &cause);
	__u64 *b = bpf_map_lookup_elem(bytes, &cause);

	if (n)
		*n += affected;
	if (b)
		*b += missing;
}

#endif /* TLSTAP_LOSS_H */
