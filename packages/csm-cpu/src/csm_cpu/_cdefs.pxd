# Declarations of the C kernel API (include/csm_kernels.h) for the Cython modules.
from libc.stdint cimport int8_t, uint8_t, uint16_t, int64_t

cdef extern from "csm_kernels.h" nogil:
    enum:
        CSM_F32
        CSM_BF16
        CSM_Q8_0
        CSM_Q4_0
        CSM_Q4_K
        CSM_NFORMATS
        CSM_ISA_PORTABLE
        CSM_ISA_AVX2
        CSM_ISA_NEON
        CSM_ISA_AVX512
        CSM_QK
        CSM_QK_K
        CSM_Q4K_MAX_COLS

    ctypedef struct csm_format:  # include/csm_formats.h: one entry per weight format
        const char *name
        int block
        int block_bytes
        int int8_act
        int repack_unit
        int repack_head
        void (*quantize_row)(const float *x, void *y, int n) noexcept nogil
        void (*dequant_row)(const char *row, float *out, int cols) noexcept nogil

    const csm_format csm_formats[]
    int csm_format_known(int fmt)

    ctypedef struct csm_mat:
        int fmt
        int rows
        int cols
        const char *data
        int64_t row_bytes
        int interleaved
        int legacy

    int csm_detect_isa()
    int csm_compiled_isas()
    int csm_base_isa(int isa)
    int64_t csm_row_bytes(int fmt, int cols)
    float csm_dot(int isa, int fmt, const char *row, int cols, const float *x,
                  const int8_t *xq, const float *xd)
    void csm_mat_rows(int isa, const csm_mat *W, int r0, int r1, const float *x,
                      const int8_t *xq, const float *xd, int nvec, float *y,
                      int64_t ldy, int accumulate)
    void csm_quantize_act(const float *x, int n, int8_t *q, float *d)
    void csm_dequant_row(int fmt, const char *row, float *out, int cols)
    void csm_repack4(int fmt, const char *src, char *dst, int rows, int64_t row_bytes)

cdef extern from "csm_threads.h" nogil:
    int csm_openmp_enabled()
    int csm_omp_max_threads()
    int csm_team_size()
    ctypedef struct csm_sync:
        int count
        int gen
    void csm_sync_wait(csm_sync *b, int nth)
    int csm_sync_next(csm_sync *b)
