/* OpenMP facts for Python, valid with or without OpenMP in this build. */
#ifndef CSM_THREADS_H
#define CSM_THREADS_H
#ifdef _OPENMP
#include <omp.h>
static inline int csm_openmp_enabled(void) { return 1; }
static inline int csm_omp_max_threads(void) { return omp_get_max_threads(); }
/* Cython's prange inside `with parallel()` is `omp for nowait`: phases that read what the
 * previous one wrote need this (an orphaned barrier binds to the enclosing region). */
static inline void csm_barrier(void) { _Pragma("omp barrier") }
#else
static inline void csm_barrier(void) {}
static inline int csm_openmp_enabled(void) { return 0; }
static inline int csm_omp_max_threads(void) { return 1; }
#endif
#endif
