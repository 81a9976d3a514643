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

/* A barrier for one team: `count` arrivals, `gen` bumped by the last one. Zero-initialised;
 * count is back to 0 after every use. Why not `omp barrier`: under OMP_WAIT_POLICY=PASSIVE
 * (our default, for shared machines) GOMP sleeps on a futex at once, and a frame crosses ~700
 * barriers; here waiters spin briefly (phases are balanced, so the partner is microseconds
 * away) and then yield the core to whatever else wants it. */
typedef struct { int count; int gen; char pad[56]; } csm_sync;

#define CSM_SPIN 4000

static inline void csm_sync_wait(csm_sync *b, int nth) {
    if (nth <= 1) return;
    int gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nth) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    for (int spin = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; spin++) {
        if (spin < CSM_SPIN) CSM_PAUSE();
        else sched_yield();
    }
}
#endif
