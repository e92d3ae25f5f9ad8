// LD_PRELOAD heap-call counter for the benchmark's hot-path allocation check.
//
// Counts every malloc/calloc/realloc/aligned allocation (and free) of the process it is
// preloaded into, in a 4 KiB file named by $TLSTAP_BENCH_MALLOC_COUNTS that the process maps
// MAP_SHARED: the harness reads the counters at any moment (before and after a load run) and
// divides the difference by the events captured in between. Counting is one relaxed atomic add
// per call; the real work is done by glibc's __libc_* entry points (no dlsym, so no recursion).
//
// Build: gcc -O2 -shared -fPIC -o malloc_count.so malloc_count.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

// [0] malloc-like calls (malloc, calloc, aligned), [1] realloc, [2] free (non-NULL),
// [3] bytes requested by the malloc-like calls and reallocs.
static volatile uint64_t *counts;

__attribute__((constructor)) static void init(void) {
    const char *path = getenv("TLSTAP_BENCH_MALLOC_COUNTS");
    if (!path) return;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) counts = p;
}

static inline void bump(int i, uint64_t n) {
    if (counts) __atomic_fetch_add(&counts[i], n, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { bump(0, 1); bump(3, n); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { bump(0, 1); bump(3, a * b); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { bump(1, 1); bump(3, n); return __libc_realloc(p, n); }
void free(void *p) { if (p) bump(2, 1); __libc_free(p); }
void *memalign(size_t al, size_t n) { bump(0, 1); bump(3, n); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { bump(0, 1); bump(3, n); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    bump(0, 1);
    bump(3, n);
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
