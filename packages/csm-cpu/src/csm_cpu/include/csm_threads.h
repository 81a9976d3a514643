/* OpenMP facts for Python, valid with or without OpenMP in this build. */
#ifndef CSM_THREADS_H
#define CSM_THREADS_H
#ifdef _OPENMP
#include <omp.h>
static inline int csm_openmp_enabled(void) { return 1; }
static inline int csm_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int csm_openmp_enabled(void) { return 0; }
static inline int csm_omp_max_threads(void) { return 1; }
#endif
#endif
