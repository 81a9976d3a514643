/* OpenMP facts for Python, valid with or without OpenMP in this build, and the spin-then-yield
 * barrier the frame loops use between dependent phases. */
#ifndef CSM_THREADS_H
#define CSM_THREADS_H
#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#define CSM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CSM_PAUSE() __asm__ __volatile__("yield")
#else
#define CSM_PAUSE() ((void)0)
#endif

#ifdef _OPENMP
#include <omp.h>
static inline int csm_openmp_enabled(void) { return 1; }
static inline int csm_omp_max_threads(void) { return omp_get_max_threads(); }
/* Threads in the enclosing parallel region (1 outside one). */
static inline int csm_team_size(void) { return omp_get_num_threads(); }
#else
static inline int csm_openmp_enabled(void) { return 0; }
static inline int csm_omp_max_threads(void) { return 1; }
static inline int csm_team_size(void) { return 1; }
#endif

#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* What one team of threads shares inside a parallel region: a barrier (`count` arrivals,
 * `gen` bumped by the last one) and a work counter (`next`, reset to 0 at every barrier, so
 * each phase between two barriers hands out its work items 0, 1, ... to whichever thread asks
 * first: a thread the OS preempted simply takes fewer). Zero-initialised.
 * Why not OpenMP's barrier and `schedule(dynamic)`: under OMP_WAIT_POLICY=PASSIVE (our default,
 * for shared machines) GOMP sleeps on a futex at once, and a frame crosses ~700 barriers;
 * here waiters spin briefly (the partner is usually microseconds away), then sleep on a
 * futex (Linux; elsewhere they yield) so a preempted partner can take the core. */
typedef struct {
    int count, sleepers; /* written by every arrival / sleeper */
    char pad0[64 - 2 * sizeof(int)];
    int gen; /* its own cache line: the spinning waiters read it, and arrivals (writes to count)
              * no longer pull it away from them, 16 times per barrier at 16 threads */
    char pad1[64 - sizeof(int)];
    int next;
    char pad2[64 - sizeof(int)];
} csm_sync;

#define CSM_SPIN 2000

static inline int csm_sync_next(csm_sync *b) { return __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED); }

static inline void csm_sync_wait(csm_sync *b, int nth) {
    if (nth <= 1) {
        b->next = 0;
        return;
    }
    int gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nth) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->next, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_SEQ_CST);
#ifdef __linux__
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST))
            syscall(SYS_futex, &b->gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
        return;
    }
    for (int spin = 0; spin < CSM_SPIN; spin++) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != gen) return;
        CSM_PAUSE();
    }
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->gen, __ATOMIC_SEQ_CST) == gen) {
#ifdef __linux__
        syscall(SYS_futex, &b->gen, FUTEX_WAIT_PRIVATE, gen, NULL, NULL, 0);
#else
        sched_yield();
#endif
    }
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_RELAXED);
}
#endif
