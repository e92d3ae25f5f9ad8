/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Go's calling conventions as a uprobe sees them: arguments and results in registers
 * (ABIInternal: amd64 Go >= 1.17, arm64 >= 1.18) or on the stack (ABI0), and the current
 * goroutine g, which keys a call from its entry to its RET. Included by tlstap.bpf.c only.
 */
#ifndef TLSTAP_GO_ABI_H
#define TLSTAP_GO_ABI_H

/*
 * A register of the probe's context, read directly (a helper call per register cost more than
 * the rest of an empty probe). The barrier keeps each load in its own branch: clang otherwise
 * merges the loads of a switch into one load from a computed context offset, which the
 * verifier refuses ("dereference of modified ctx ptr").
 */
#define ctx_reg(ctx, name) ({ __u64 __v = (ctx)->name; barrier_var(__v); __v; })

/* Integer argument/result register i of Go's register ABI (ABIInternal). */
static __always_inline __u64 go_reg(struct pt_regs *ctx, int i)
{
#if defined(__TARGET_ARCH_x86)
	switch (i) {
	case 0: return ctx_reg(ctx, ax);
	case 1: return ctx_reg(ctx, bx);
	case 2: return ctx_reg(ctx, cx);
	case 3: return ctx_reg(ctx, di);
	case 4: return ctx_reg(ctx, si);
	case 5: return ctx_reg(ctx, r8);
	case 6: return ctx_reg(ctx, r9);
	case 7: return ctx_reg(ctx, r10);
	default: return ctx_reg(ctx, r11);
	}
#else
	return ((struct user_pt_regs *)ctx)->regs[i & 15];
#endif
}

static __always_inline __u64 stack_pointer(struct pt_regs *ctx)
{
	return PT_REGS_SP(ctx);
}

/*
 * Word i of the arguments+results of a Go ABI0 (stack ABI) call. At the first instruction and at
 * a RET, SP points at the return address (amd64) or the saved-LR slot (arm64); words follow.
 */
static __always_inline __u64 go_stack_word(struct pt_regs *ctx, int i)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (void *)(stack_pointer(ctx) + 8 + 8 * i));
	return v;
}

/* Word i of the call: register i in the register ABI, stack word i in ABI0. */
static __always_inline __u64 go_arg(struct pt_regs *ctx, bool stack_abi, int i)
{
	return stack_abi ? go_stack_word(ctx, i) : go_reg(ctx, i);
}

/* The running goroutine's g, which identifies a call from its entry to its RET. */
static __always_inline __u64 go_goroutine(struct pt_regs *ctx, __u64 cookie)
{
#if defined(__TARGET_ARCH_x86)
	bool stack_abi = cookie & TLSTAP_COOKIE_STACK_ABI;
	const struct tlstap_binary_cfg *cfg;
	struct task_struct *task;
	__u64 below_fs = 8, fsbase, g = 0;

	if (!stack_abi)
		return ctx_reg(ctx, r14);
	/* ABI0 on amd64: g lives in thread-local storage just below the FS base. Looked up only
	 * here: the register ABI, the common case, needs no map. */
	cfg = binary_of(cookie);
	if (cfg && cfg->g_below_fs)
		below_fs = cfg->g_below_fs;
	task = (struct task_struct *)bpf_get_current_task();
	fsbase = BPF_CORE_READ(task, thread.fsbase);
	bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase - below_fs));
	return g;
#else
	/* arm64 keeps g in X28 in both ABIs. */
	return ((struct user_pt_regs *)ctx)->regs[28];
#endif
}

#endif /* TLSTAP_GO_ABI_H */
