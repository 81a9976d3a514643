/* The weight formats, in one place: the enum (values are the Python API: csm_cpu.formats, which
 * checks its table against this one at import), each format's block layout and its row
 * functions (quantize, expand to fp32), defined in csm_kernels.h. Per-ISA dot products stay
 * dispatched in csm_dot / csm_mat_rows (csm_kernels.h): their signatures differ by format.
 * Included by csm_common.h after the GGML block structs. */
#ifndef CSM_FORMATS_H
#define CSM_FORMATS_H

enum { CSM_F32 = 0, CSM_BF16 = 1, CSM_Q8_0 = 2, CSM_Q4_0 = 3, CSM_Q4_K = 4, CSM_NFORMATS };

typedef struct {
    const char *name;
    int block; /* values per block: a row holds a multiple of this many */
    int block_bytes; /* bytes per block */
    int int8_act; /* the products read int8-quantized activations (csm_quantize_act) */
    int repack_unit; /* bytes of a row's unit in the AVX2 4-row interleave (csm_repack4); 0: never */
    int repack_head; /* of which the leading bytes are the block's fp16 scale */
    void (*quantize_row)(const float *x, void *y, int n);
    void (*dequant_row)(const char *row, float *out, int cols);
} csm_format;

static inline void csm_quantize_row_f32(const float *x, void *y, int n);
static inline void csm_quantize_row_bf16(const float *x, void *y, int n);
static inline void csm_quantize_row_q8_0(const float *x, void *y, int n);
static inline void csm_quantize_row_q4_0(const float *x, void *y, int n);
static inline void csm_quantize_row_q4_k(const float *x, void *y, int n);
static inline void csm_dequant_row_f32(const char *row, float *out, int cols);
static inline void csm_dequant_row_bf16(const char *row, float *out, int cols);
static inline void csm_dequant_row_q8_0(const char *row, float *out, int cols);
static inline void csm_dequant_row_q4_0(const char *row, float *out, int cols);
static inline void csm_dequant_row_q4_k(const char *row, float *out, int cols);

static const csm_format csm_formats[CSM_NFORMATS] = {
    [CSM_F32] = {"f32", 1, 4, 0, 0, 0, csm_quantize_row_f32, csm_dequant_row_f32},
    [CSM_BF16] = {"bf16", 1, 2, 0, 16, 0, csm_quantize_row_bf16, csm_dequant_row_bf16},
    [CSM_Q8_0] = {"q8_0", CSM_QK, sizeof(csm_block_q8_0), 1, sizeof(csm_block_q8_0), 2, csm_quantize_row_q8_0,
                  csm_dequant_row_q8_0},
    [CSM_Q4_0] = {"q4_0", CSM_QK, sizeof(csm_block_q4_0), 1, sizeof(csm_block_q4_0), 2, csm_quantize_row_q4_0,
                  csm_dequant_row_q4_0},
    [CSM_Q4_K] = {"q4_k", CSM_QK_K, sizeof(csm_block_q4_k), 1, 0, 0, csm_quantize_row_q4_k, csm_dequant_row_q4_k},
};

static inline int csm_format_known(int fmt) { return fmt >= 0 && fmt < CSM_NFORMATS; }

/* Bytes of a row of cols values (cols a multiple of the block); -1 for an unknown format. */
static inline int64_t csm_row_bytes(int fmt, int cols) {
    if (!csm_format_known(fmt)) return -1;
    return (int64_t)(cols / csm_formats[fmt].block) * csm_formats[fmt].block_bytes;
}

/* Expand one stored row to fp32 (embedding lookups, prefill, tests). */
static inline void csm_dequant_row(int fmt, const char *row, float *out, int cols) {
    csm_formats[fmt].dequant_row(row, out, cols);
}

#endif
