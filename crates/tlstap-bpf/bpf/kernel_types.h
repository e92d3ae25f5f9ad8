/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types tlstap's BPF programs touch, declared by hand instead of a generated
 * vmlinux.h so that the programs build for x86-64 and arm64 on any machine. Every struct is
 * `preserve_access_index`: libbpf relocates each field access against the running kernel's
 * BTF (CO-RE), so only the fields' names and types must match the kernel, not their offsets.
 */
#ifndef TLSTAP_KERNEL_TYPES_H
#define TLSTAP_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* Tells bpf_tracing.h to use the kernel's names of the pt_regs fields. */
#define __VMLINUX_H__

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));
#elif defined(__TARGET_ARCH_arm64)
/* The uprobe context on arm64 is `struct user_pt_regs` (bpf_user_pt_regs_t). */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
} __attribute__((preserve_access_index));
struct pt_regs {
	union {
		struct user_pt_regs user_regs;
		struct {
			__u64 regs[31];
			__u64 sp;
			__u64 pc;
			__u64 pstate;
		};
	};
} __attribute__((preserve_access_index));
#else
#error "tlstap's BPF programs support x86 and arm64 targets only"
#endif

/* A uprobe's context by the name the kernel gives it: a global function's context argument
 * must be of this type (before 6.8 the kernel matches it by name). */
#if defined(__TARGET_ARCH_x86)
typedef struct pt_regs bpf_user_pt_regs_t;
#else
typedef struct user_pt_regs bpf_user_pt_regs_t;
#endif

#if defined(__TARGET_ARCH_x86)
/* Where the FS base lives: Go < 1.17 on amd64 keeps the current goroutine just below it. */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));
#endif

/* fd -> socket, read inside the uprobe (no kprobes on the machines tlstap must run on). */
struct inode {
	unsigned long i_ino;
} __attribute__((preserve_access_index));
struct file {
	void *private_data;
	struct inode *f_inode;
} __attribute__((preserve_access_index));
/* The executable's inode and where its code was mapped: kernels without uprobe cookies. */
struct mm_struct {
	struct file *exe_file;
	unsigned long start_code;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	struct files_struct *files;
	struct mm_struct *mm;
	__u64 start_boottime; /* boot clock, ns (5.5 on; what /proc/PID/stat's starttime is of) */
#if defined(__TARGET_ARCH_x86)
	struct thread_struct thread;
#endif
} __attribute__((preserve_access_index));

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
} __attribute__((preserve_access_index));

/* The kernel nests these fields in anonymous unions; CO-RE matches them by name. */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct socket {
	struct sock *sk;
} __attribute__((preserve_access_index));

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10

/* Map and flag constants from the UAPI (linux/bpf.h), stable ABI values. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_PROD_POS = 3,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};
enum {
	BPF_F_NO_COMMON_LRU = 1U << 1,
	BPF_F_MMAPABLE = 1U << 10,
};
/* bpf_perf_event_output: the buffer of the CPU the program runs on. */
#define BPF_F_CURRENT_CPU 0xffffffffULL
#endif /* TLSTAP_KERNEL_TYPES_H */
