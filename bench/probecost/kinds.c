// Per-hit cost of a uprobe by the kind of instruction it replaces (issue 16): each k_* function
// starts with the instruction named, which bench's probe_cost example probes (a null BPF
// program). `kinds KIND N` calls k_KIND N times and prints the nanoseconds per call.
//
// The kernel runs a probed instruction either by emulating it or by single-stepping a copy of it
// out of line (a second trap): which one decides most of a hit's cost. A function is probed at
// its first instruction, or at its p_KIND label where it has one. The kinds are the ones
// tlstap probes in Go code (push rbp: the body start of Go >= 1.21; ret: Read's RETs; cmp/sub/mov:
// other body starts and epilogues; call: Read's call of runtime.memmove) and other cheap
// candidates (nops, a jump).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// k_cmp compares SP with +0x10 of this, as Go's stack check does with g (in R14 there; any base
// register makes the same kind of instruction).
static unsigned long fake_g[4];

__asm__(
    ".text\n"
    ".globl k_push, k_ret, k_nop, k_nop3, k_nop5, k_mov, k_cmp, k_sub, k_jmp, k_call, k_jbe, p_jbe\n"
    "k_push: push %rbp\n pop %rbp\n ret\n"
    "k_ret: ret\n"
    "k_nop: nop\n ret\n"
    "k_nop3: nopl 0(%rax)\n ret\n"
    "k_nop5: nopl 0(%rax,%rax,1)\n ret\n"
    "k_mov: mov %rax, -8(%rsp)\n ret\n"
    "k_cmp: cmp 0x10(%rdi), %rsp\n ret\n"
    "k_sub: sub $0x60, %rsp\n add $0x60, %rsp\n ret\n"
    "k_jmp: jmp 1f\n 1: ret\n"
    "k_call: call k_leaf\n ret\n"
    "k_leaf: ret\n"
    // Go's stack check: the probe (p_jbe) on its conditional branch, not taken here.
    "k_jbe: cmp 0x10(%rdi), %rsp\n p_jbe: jbe 1f\n ret\n 1: ret\n");

void k_push(void *), k_ret(void *), k_nop(void *), k_nop3(void *), k_nop5(void *), k_mov(void *), k_cmp(void *),
    k_sub(void *), k_jmp(void *), k_call(void *), k_jbe(void *);

static const struct {
    const char *name;
    void (*fn)(void *);
} kinds[] = {
    {"push", k_push}, {"ret", k_ret}, {"nop", k_nop}, {"nop3", k_nop3}, {"nop5", k_nop5},
    {"mov", k_mov},   {"cmp", k_cmp}, {"sub", k_sub}, {"jmp", k_jmp}, {"call", k_call}, {"jbe", k_jbe},
};

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: kinds KIND N\n");
        return 2;
    }
    long n = atol(argv[2]);
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(kinds[i].name, argv[1]) != 0)
            continue;
        void (*volatile fn)(void *) = kinds[i].fn;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long j = 0; j < n; j++)
            fn(fake_g);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
        printf("%.1f\n", ns / (double)n);
        return 0;
    }
    fprintf(stderr, "kinds: unknown kind %s\n", argv[1]);
    return 2;
}
