/* The kernel API the Cython modules call: ISA detection, row products over every weight
 * format, activation and weight quantizers. The ISA is an explicit argument (no globals), so
 * each extension module can include this header. */
#ifndef CSM_KERNELS_H
#define CSM_KERNELS_H

#include <stddef.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "csm_common.h"
#include "csm_portable.h"
#include "csm_avx2.h"
#include "csm_neon.h"

/* One weight matrix [rows, cols] in one format; rows are row_bytes apart. interleaved: repacked
 * by csm_repack4 (groups of 4 rows keep their byte range; tail rows as is). */
typedef struct {
    int fmt, rows, cols;
    const char *data;
    int64_t row_bytes;
    int interleaved;
    int legacy; /* 1: several vectors on the kernels from before the prefill rework (benchmarks) */
} csm_mat;

#define CSM_Q4_CORR_MAX 256 /* blocks (8192 columns): 8 KiB of stack */

#include "csm_avx512.h"

/* Best kernel path this CPU supports. */
static inline int csm_detect_isa(void) {
#if CSM_HAVE_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return csm_avx512_usable() ? CSM_ISA_AVX512 : CSM_ISA_AVX2;
    return CSM_ISA_PORTABLE;
#elif CSM_HAVE_NEON
    return CSM_ISA_NEON;
#else
    return CSM_ISA_PORTABLE;
#endif
}

/* Which paths this build compiled in (bit i = path i). */
static inline int csm_compiled_isas(void) {
    return 1 | (CSM_HAVE_AVX2 << CSM_ISA_AVX2) | (CSM_HAVE_NEON << CSM_ISA_NEON) | (CSM_HAVE_AVX512 << CSM_ISA_AVX512);
}

/* The path whose kernels run what a path has no kernel of its own for: avx512 covers the decode
 * products and hands the rest to the (bit-identical) avx2 kernels. */
static inline int csm_base_isa(int isa) { return isa == CSM_ISA_AVX512 ? CSM_ISA_AVX2 : isa; }

/* One dot product dispatched on format and path. x is fp32 for F32/BF16; xq/xd are the
 * quantized activation (int8 values, one fp32 scale per 32) for the block formats. */
static inline float csm_dot(int isa, int fmt, const char *row, int cols, const float *x,
                            const int8_t *xq, const float *xd) {
    int nb = cols / CSM_QK;
    isa = csm_base_isa(isa);
    switch (fmt) {
    case CSM_F32:
#if CSM_HAVE_AVX2
        if (isa == CSM_ISA_AVX2) return csm_dot_f32_avx2((const float *)row, x, cols);
#endif
#if CSM_HAVE_NEON
        if (isa == CSM_ISA_NEON) return csm_dot_f32_neon((const float *)row, x, cols);
#endif
        return csm_dot_f32_portable((const float *)row, x, cols);
    case CSM_BF16:
#if CSM_HAVE_AVX2
        if (isa == CSM_ISA_AVX2) return csm_dot_bf16_avx2((const uint16_t *)row, x, cols);
#endif
#if CSM_HAVE_NEON
        if (isa == CSM_ISA_NEON) return csm_dot_bf16_neon((const uint16_t *)row, x, cols);
#endif
        return csm_dot_bf16_portable((const uint16_t *)row, x, cols);
    case CSM_Q8_0:
#if CSM_HAVE_AVX2
        if (isa == CSM_ISA_AVX2) return csm_dot_q8_0_avx2((const csm_block_q8_0 *)row, xq, xd, nb);
#endif
#if CSM_HAVE_NEON
        if (isa == CSM_ISA_NEON) return csm_dot_q8_0_neon((const csm_block_q8_0 *)row, xq, xd, nb);
#endif
        return csm_dot_q8_0_portable((const csm_block_q8_0 *)row, xq, xd, nb);
    case CSM_Q4_0:
#if CSM_HAVE_AVX2
        if (isa == CSM_ISA_AVX2) return csm_dot_q4_0_avx2((const csm_block_q4_0 *)row, xq, xd, nb);
#endif
#if CSM_HAVE_NEON
        if (isa == CSM_ISA_NEON) return csm_dot_q4_0_neon((const csm_block_q4_0 *)row, xq, xd, nb);
#endif
        return csm_dot_q4_0_portable((const csm_block_q4_0 *)row, xq, xd, nb);
    }
    return NAN;
}

/* Q4_K: cs[b] = xd[b] * sum of the 32 int8 values of block b, per activation vector. */
static inline void csm_q4k_block_sums(const int8_t *xq, const float *xd, int nb, float *cs) {
    for (int b = 0; b < nb; b++) {
        int32_t t = 0;
        for (int l = 0; l < CSM_QK; l++) t += xq[b * CSM_QK + l];
        cs[b] = xd[b] * (float)t;
    }
}

static inline float csm_dot_q4_k(int isa, const char *row, const int8_t *xq, const float *xd, const float *cs,
                                 int nsb) {
#if CSM_HAVE_AVX512
    if (isa == CSM_ISA_AVX512) return csm_dot_q4_k_avx512((const csm_block_q4_k *)row, xq, xd, cs, nsb);
#endif
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2) return csm_dot_q4_k_avx2((const csm_block_q4_k *)row, xq, xd, cs, nsb);
#endif
#if CSM_HAVE_NEON
    if (isa == CSM_ISA_NEON) return csm_dot_q4_k_neon((const csm_block_q4_k *)row, xq, xd, cs, nsb);
#endif
    return csm_dot_q4_k_portable((const csm_block_q4_k *)row, xq, xd, cs, nsb);
}

#define CSM_Q4K_SUMS 4096 /* floats of activation block sums on the stack (16 KiB) */
#define CSM_Q4K_MAX_COLS (CSM_Q4K_SUMS * CSM_QK) /* longest Q4_K row: one vector's sums fit */

/* csm_mat_rows for Q4_K (cols <= CSM_Q4K_MAX_COLS, checked where matrices are made): vectors
 * in groups whose block sums fit the stack buffer (computed once per group), each group over
 * all the rows, which stay in cache across a group. */
static inline void csm_mat_rows_q4k(int isa, const csm_mat *W, int r0, int r1, const int8_t *xq,
                                    const float *xd, int nvec, float *y, int64_t ldy, int accumulate) {
    int cols = W->cols, nb = cols / CSM_QK, nsb = cols / CSM_QK_K;
    int group = nb > 0 ? CSM_Q4K_SUMS / nb : 1;
    float cs[CSM_Q4K_SUMS];
    if (group < 1) return; /* unreachable for valid matrices */
    for (int n0 = 0; n0 < nvec; n0 += group) {
        int n1 = n0 + group < nvec ? n0 + group : nvec;
        for (int n = n0; n < n1; n++)
            csm_q4k_block_sums(xq + (int64_t)n * cols, xd + (int64_t)n * nb, nb, cs + (n - n0) * nb);
        for (int r = r0; r < r1; r++) {
            const char *row = W->data + (int64_t)r * W->row_bytes;
            int n = n0;
#if CSM_HAVE_AVX2
            if (csm_base_isa(isa) == CSM_ISA_AVX2) /* two vectors a pass over the row */
                for (; n + 2 <= n1; n += 2) {
                    float d0, d1, *o0 = y + (int64_t)n * ldy + r, *o1 = o0 + ldy;
                    const int8_t *q0 = xq + (int64_t)n * cols;
                    const float *s0 = xd + (int64_t)n * nb, *c0 = cs + (n - n0) * nb;
                    csm_dot2_q4_k_avx2((const csm_block_q4_k *)row, q0, s0, c0, q0 + cols, s0 + nb, c0 + nb, nsb,
                                       &d0, &d1);
                    *o0 = accumulate ? *o0 + d0 : d0;
                    *o1 = accumulate ? *o1 + d1 : d1;
                }
#endif
            for (; n < n1; n++) {
                float d = csm_dot_q4_k(isa, row, xq + (int64_t)n * cols, xd + (int64_t)n * nb, cs + (n - n0) * nb, nsb);
                float *out = y + (int64_t)n * ldy + r;
                *out = accumulate ? *out + d : d;
            }
        }
    }
}

#if CSM_HAVE_AVX2
/* Vectors n, n+1 against the 4-row group at row g (F32 or repacked Q8_0/Q4_0/bf16): the pair
 * kernels, results stored (or added) at y[n][g..g+3], y[n+1][g..g+3]. */
static inline void csm_rows4x2_avx2(const csm_mat *W, int g, const float *x, const int8_t *xq, const float *xd,
                                    int n, float *y, int64_t ldy, int accumulate, float *d, float *d1) {
    int cols = W->cols, nb = cols / CSM_QK;
    const char *row = W->data + (int64_t)g * W->row_bytes;
    if (W->fmt == CSM_F32 || W->fmt == CSM_BF16) { /* fp32 activations */
        const float *x0 = x + (int64_t)n * cols, *x1 = x0 + cols;
        if (W->fmt == CSM_F32) csm_dot4x2_f32_avx2(row, W->row_bytes, x0, x1, cols, d, d1);
        else csm_dot4il2_bf16_avx2((const uint16_t *)row, x0, x1, cols, d, d1);
    } else { /* int8 activations */
        const int8_t *q0 = xq + (int64_t)n * cols, *q1 = q0 + cols;
        const float *s0 = xd + (int64_t)n * nb, *s1 = s0 + nb;
        if (W->fmt == CSM_Q8_0 && W->legacy) csm_dot4il2_q8_0_v1_avx2(row, q0, s0, q1, s1, nb, d, d1);
        else if (W->fmt == CSM_Q8_0) csm_dot4il2_q8_0_avx2(row, q0, s0, q1, s1, nb, d, d1);
        else csm_dot4il2_q4_0_avx2((const csm_block_q4_0 *)row, q0, s0, q1, s1, nb, d, d1);
    }
    float *o0 = y + (int64_t)n * ldy + g, *o1 = o0 + ldy;
    for (int k = 0; k < 4; k++) {
        o0[k] = accumulate ? o0[k] + d[k] : d[k];
        o1[k] = accumulate ? o1[k] + d1[k] : d1[k];
    }
}
#endif

/* y[n*ldy + r] (+)= W[r, :] . x_n for rows r0 <= r < r1 and nvec activation vectors.
 * Activations: x [nvec, cols] fp32, or xq [nvec, cols] int8 + xd [nvec, cols/32]. Each weight
 * row is read from memory once and reused for every vector while it sits in L1/L2. */
static inline void csm_mat_rows(int isa, const csm_mat *W, int r0, int r1, const float *x,
                                const int8_t *xq, const float *xd, int nvec, float *y,
                                int64_t ldy, int accumulate) {
    int cols = W->cols, nb = cols / CSM_QK, r = r0;
    int64_t rb = W->row_bytes;
    if (W->fmt == CSM_Q4_K) {
        csm_mat_rows_q4k(isa, W, r0, r1, xq, xd, nvec, y, ldy, accumulate);
        return;
    }
#if CSM_HAVE_AVX512
    if (isa == CSM_ISA_AVX512) r = csm_mat_rows_avx512(W, r0, r1, x, xq, xd, nvec, y, ldy, accumulate);
#endif
    isa = csm_base_isa(isa); /* what avx512 left (other formats, layouts, tail rows): avx2 */
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2) {
        float d[4], d1[4];
        /* Q4_0 corrections of a single vector (decode), once for all the rows here */
        __m256i corr[CSM_Q4_CORR_MAX];
        const __m256i *c1 = NULL;
        if (W->fmt == CSM_Q4_0 && W->interleaved && nvec == 1 && nb <= CSM_Q4_CORR_MAX && r1 - r >= 8) {
            csm_q4_corr_avx2(xq, nb, corr);
            c1 = corr;
        }
        int rg = r0 + (r1 - r0) / 4 * 4; /* end of the whole 4-row groups */
        for (; r < rg; r += 4) {
            const char *row = W->data + (int64_t)r * rb;
            int m = 0;
            /* prefill, batches: several vectors a pass over the group, whose rows stay in L1
             * while the vectors stream past (vectors outermost instead streamed each work item
             * from L2 once per vector pair: 3x slower in the engine). */
            if (W->fmt == CSM_Q4_0 && W->interleaved && !W->legacy) /* 4 vectors a pass */
                for (; m + 4 <= nvec; m += 4) {
                    const int8_t *q4[4];
                    const float *s4[4];
                    float t[4][4];
                    for (int v = 0; v < 4; v++) {
                        q4[v] = xq + (int64_t)(m + v) * cols;
                        s4[v] = xd + (int64_t)(m + v) * nb;
                    }
                    csm_tile4x4_q4_0_avx2(row, q4, s4, nb, t);
                    for (int v = 0; v < 4; v++) {
                        float *o = y + (int64_t)(m + v) * ldy + r;
                        for (int k = 0; k < 4; k++) o[k] = accumulate ? o[k] + t[v][k] : t[v][k];
                    }
                }
            if (W->fmt == CSM_F32 || W->interleaved) /* 2 vectors a pass */
                for (; m + 2 <= nvec; m += 2) csm_rows4x2_avx2(W, r, x, xq, xd, m, y, ldy, accumulate, d, d1);
            for (; m < nvec; m++) {
                const float *xn = x + (int64_t)m * cols;
                const int8_t *qn = xq + (int64_t)m * cols;
                const float *dn = xd + (int64_t)m * nb;
                switch (W->fmt) {
                case CSM_F32: csm_dot4_f32_avx2(row, rb, xn, cols, d); break;
                case CSM_BF16:
                    if (W->interleaved) csm_dot4il_bf16_avx2((const uint16_t *)row, xn, cols, d);
                    else csm_dot4_bf16_avx2(row, rb, xn, cols, d);
                    break;
                case CSM_Q8_0:
                    if (W->interleaved) csm_dot4il_q8_0_avx2(row, qn, dn, nb, d);
                    else csm_dot4_q8_0_avx2(row, rb, qn, dn, nb, d);
                    break;
                default:
                    if (W->interleaved) csm_dot4il_q4_0_avx2((const csm_block_q4_0 *)row, qn, dn, c1, nb, d);
                    else csm_dot4_q4_0_avx2(row, rb, qn, dn, nb, d);
                    break;
                }
                float *out = y + (int64_t)m * ldy + r;
                for (int k = 0; k < 4; k++) out[k] = accumulate ? out[k] + d[k] : d[k];
            }
        }
    }
#endif
    for (; r < r1; r++) {
        const char *row = W->data + (int64_t)r * rb;
        for (int n = 0; n < nvec; n++) {
            float d = csm_dot(isa, W->fmt, row, cols, x + (int64_t)n * cols, xq + (int64_t)n * cols,
                              xd + (int64_t)n * nb);
            float *out = y + (int64_t)n * ldy + r;
            *out = accumulate ? *out + d : d;
        }
    }
}

/* Repack a matrix for the AVX2 4-row kernels, group by group of 4 rows (each group keeps its
 * byte range; rows past the last full group are copied as is). Block formats, per block b: the 4
 * rows' fp16 scales (8 bytes), then their quant bytes (Q8_0: 4 x 32, Q4_0: 4 x 16): the kernels
 * convert 4 scales at once and stream one sequential range. bf16 (columns a multiple of 8): per 8
 * columns, the 4 rows' 8 values (short rows, e.g. 2 KiB, stream ~40% faster as one range). */
static inline void csm_repack4(int fmt, const char *src, char *dst, int rows, int64_t row_bytes) {
    /* unit: the bytes of one row that sit together (bf16: 8 values; blocks: one block), split
     * into a head (the fp16 scale) and a body; per unit, the 4 heads, then the 4 bodies */
    int64_t unit = csm_formats[fmt].repack_unit, head = csm_formats[fmt].repack_head, body = unit - head;
    int groups = rows / 4;
    for (int g = 0; g < groups; g++) {
        const char *s = src + (int64_t)g * 4 * row_bytes;
        char *d = dst + (int64_t)g * 4 * row_bytes;
        for (int64_t u = 0; u < row_bytes; u += unit) {
            char *o = d + 4 * u;
            for (int j = 0; j < 4; j++) {
                const char *from = s + j * row_bytes + u;
                memcpy(o + head * j, from, (size_t)head);
                memcpy(o + 4 * head + body * j, from + head, (size_t)body);
            }
        }
    }
    memcpy(dst + (int64_t)groups * 4 * row_bytes, src + (int64_t)groups * 4 * row_bytes,
           (size_t)((rows - groups * 4) * row_bytes));
}

/* Quantize an activation vector (n a multiple of 32) to int8 with one fp32 scale per block. */
static inline void csm_quantize_act(const float *x, int n, int8_t *q, float *d) {
    for (int b = 0; b < n / CSM_QK; b++) {
        const float *xb = x + b * CSM_QK;
        float amax = 0.f;
        for (int j = 0; j < CSM_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float s = amax / 127.f, id = s != 0.f ? 1.f / s : 0.f;
        for (int j = 0; j < CSM_QK; j++) q[b * CSM_QK + j] = (int8_t)roundf(xb[j] * id);
        d[b] = s;
    }
}

/* Weight quantizers, bit-identical to GGML's reference quantize_row_*_ref (and gguf-py). */
static inline void csm_quantize_row_q8_0(const float *x, void *out, int n) {
    csm_block_q8_0 *y = (csm_block_q8_0 *)out;
    for (int b = 0; b < n / CSM_QK; b++) {
        const float *xb = x + b * CSM_QK;
        float amax = 0.f;
        for (int j = 0; j < CSM_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        y[b].d = csm_fp32_to_fp16(d);
        for (int j = 0; j < CSM_QK; j++) y[b].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

static inline void csm_quantize_row_q4_0(const float *x, void *out, int n) {
    csm_block_q4_0 *y = (csm_block_q4_0 *)out;
    for (int b = 0; b < n / CSM_QK; b++) {
        const float *xb = x + b * CSM_QK;
        float amax = 0.f, max = 0.f; /* the value of largest magnitude, sign kept */
        for (int j = 0; j < CSM_QK; j++)
            if (fabsf(xb[j]) > amax) { amax = fabsf(xb[j]); max = xb[j]; }
        float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
        y[b].d = csm_fp32_to_fp16(d);
        for (int j = 0; j < CSM_QK / 2; j++) {
            int q0 = (int)(xb[j] * id + 8.5f), q1 = (int)(xb[j + CSM_QK / 2] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* Q4_K super-blocks of 256. Per sub-block of 32 values, an affine map x ~ scale*q - min over
 * q = 0..15 (min >= 0, i.e. the range always covers 0): the min/max range first, then 5 trial
 * grids around it (15 +- 0.4 steps over the range), each refitted by least squares, keeping the
 * lowest squared error (in closed form from the sums; relative RMS error on Gaussian weights
 * 0.0723, vs 0.0754 for one grid, 0.0715 for 9, and Q4_0's 0.086). The scales and mins are then stored as
 * 6-bit multiples of the super-block's d = max scale / 63 and dmin = max min / 63 (fp16), and
 * the nibbles re-rounded against those stored values. GGML's reference quantizer also searches
 * grids (with weighted errors); the layout is the same and any GGML reader decodes these. */
/* Nearest integer of v >= 0 (half up); negatives give 0. Inline, unlike lrintf. */
static inline int csm_round_pos(float v) { return v > 0.f ? (int)(v + 0.5f) : 0; }

#define CSM_Q4K_TRIALS 5

/* Sums over the 32 values of q = min(15, round-half-up(iscale * (x - lo))) (x >= lo): sum q,
 * sum q^2, sum q*x. SSE2 (baseline on x86-64; GCC leaves the scalar loop unvectorised). */
static inline void csm_q4k_grid_sums(const float *x, float lo, float iscale, float *fq, float *fqq, float *sqx) {
#if defined(__SSE2__)
    const __m128 vlo = _mm_set1_ps(lo), vis = _mm_set1_ps(iscale), half = _mm_set1_ps(0.5f), top = _mm_set1_ps(15.f);
    __m128 a = _mm_setzero_ps(), b = _mm_setzero_ps(), c = _mm_setzero_ps();
    for (int l = 0; l < 32; l += 4) {
        __m128 xv = _mm_loadu_ps(x + l);
        __m128 v = _mm_add_ps(_mm_mul_ps(vis, _mm_sub_ps(xv, vlo)), half);
        __m128 q = _mm_min_ps(_mm_cvtepi32_ps(_mm_cvttps_epi32(v)), top);
        a = _mm_add_ps(a, q);
        b = _mm_add_ps(b, _mm_mul_ps(q, q));
        c = _mm_add_ps(c, _mm_mul_ps(q, xv));
    }
    float o[4];
    _mm_storeu_ps(o, a);
    *fq = (o[0] + o[1]) + (o[2] + o[3]);
    _mm_storeu_ps(o, b);
    *fqq = (o[0] + o[1]) + (o[2] + o[3]);
    _mm_storeu_ps(o, c);
    *sqx = (o[0] + o[1]) + (o[2] + o[3]);
#else
    float a[4] = {0.f, 0.f, 0.f, 0.f}, b[4] = {0.f, 0.f, 0.f, 0.f}, c[4] = {0.f, 0.f, 0.f, 0.f};
    for (int l = 0; l < 32; l++) { /* same lanes and order as the SSE2 path */
        float q = (float)(int)(iscale * (x[l] - lo) + 0.5f);
        q = q < 15.f ? q : 15.f;
        a[l % 4] += q;
        b[l % 4] += q * q;
        c[l % 4] += q * x[l];
    }
    *fq = (a[0] + a[1]) + (a[2] + a[3]);
    *fqq = (b[0] + b[1]) + (b[2] + b[3]);
    *sqx = (c[0] + c[1]) + (c[2] + c[3]);
#endif
}

/* Best (scale, min) for 32 values x: x ~ scale*q - min, q in 0..15. */
static inline void csm_q4k_fit(const float *x, float *scale, float *min) {
    float lo = x[0], hi = x[0], sx = 0.f, sxx = 0.f;
    for (int l = 0; l < 32; l++) { /* finite values (checked by the callers): plain compares */
        lo = x[l] < lo ? x[l] : lo;
        hi = x[l] > hi ? x[l] : hi;
        sx += x[l];
        sxx += x[l] * x[l];
    }
    if (lo > 0.f) lo = 0.f;
    *scale = (hi - lo) / 15.f;
    *min = -lo;
    if (hi == lo) return;
    float best = INFINITY;
    for (int t = 0; t < CSM_Q4K_TRIALS; t++) {
        float iscale = (14.6f + 0.2f * (float)t) / (hi - lo), fq, fqq, sqx;
        csm_q4k_grid_sums(x, lo, iscale, &fq, &fqq, &sqx);
        /* least squares for x ~ a*q + b, then b <= 0 (b = -min); squared error from the sums */
        float det = 32.f * fqq - fq * fq, a, b;
        if (det <= 0.f) continue;
        a = (32.f * sqx - fq * sx) / det;
        b = (fqq * sx - fq * sqx) / det;
        if (b > 0.f) {
            b = 0.f;
            a = sqx / fqq;
        }
        if (a <= 0.f) continue;
        float err = sxx - 2.f * a * sqx - 2.f * b * sx + a * a * fqq + 2.f * a * b * fq + 32.f * b * b;
        if (err < best) {
            best = err;
            *scale = a;
            *min = -b;
        }
    }
}

static inline void csm_quantize_row_q4_k(const float *x, void *out, int n) {
    csm_block_q4_k *y = (csm_block_q4_k *)out;
    for (int s = 0; s < n / CSM_QK_K; s++) {
        const float *xs = x + s * CSM_QK_K;
        float scale[8], mins[8], max_scale = 0.f, max_min = 0.f;
        for (int j = 0; j < 8; j++) {
            csm_q4k_fit(xs + 32 * j, scale + j, mins + j);
            max_scale = fmaxf(max_scale, scale[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        float inv_scale = max_scale > 0.f ? 63.f / max_scale : 0.f, inv_min = max_min > 0.f ? 63.f / max_min : 0.f;
        int ls[8], lm[8];
        for (int j = 0; j < 8; j++) {
            ls[j] = csm_round_pos(inv_scale * scale[j]);
            lm[j] = csm_round_pos(inv_min * mins[j]);
            ls[j] = ls[j] > 63 ? 63 : ls[j];
            lm[j] = lm[j] > 63 ? 63 : lm[j];
        }
        y[s].d = csm_fp32_to_fp16(max_scale / 63.f);
        y[s].dmin = csm_fp32_to_fp16(max_min / 63.f);
        for (int j = 0; j < 4; j++) {
            y[s].scales[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
            y[s].scales[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
            y[s].scales[j + 8] = (uint8_t)((ls[j + 4] & 0xf) | ((lm[j + 4] & 0xf) << 4));
        }
        float d = csm_fp16_to_fp32(y[s].d), dmin = csm_fp16_to_fp32(y[s].dmin);
        uint8_t q[CSM_QK_K];
        for (int j = 0; j < 8; j++) {
            int sc, m;
            csm_q4k_scale_min(y[s].scales, j, &sc, &m);
            float dd = d * (float)sc, dm = dmin * (float)m, id = dd != 0.f ? 1.f / dd : 0.f;
            for (int l = 0; l < 32; l++) {
                int v = csm_round_pos((xs[32 * j + l] + dm) * id);
                q[32 * j + l] = (uint8_t)(v > 15 ? 15 : v);
            }
        }
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) y[s].qs[32 * g + l] = (uint8_t)(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
    }
}

static inline void csm_quantize_row_bf16(const float *x, void *y, int n) {
    for (int j = 0; j < n; j++) ((uint16_t *)y)[j] = csm_fp32_to_bf16(x[j]);
}

static inline void csm_quantize_row_f32(const float *x, void *y, int n) { memcpy(y, x, (size_t)n * 4); }

/* Each format's row expanded to fp32 (csm_dequant_row in csm_formats.h picks one). */
static inline void csm_dequant_row_f32(const char *row, float *out, int cols) { memcpy(out, row, (size_t)cols * 4); }

static inline void csm_dequant_row_bf16(const char *row, float *out, int cols) {
    for (int j = 0; j < cols; j++) out[j] = csm_bf16_to_fp32(((const uint16_t *)row)[j]);
}

static inline void csm_dequant_row_q8_0(const char *row, float *out, int cols) {
    const csm_block_q8_0 *b = (const csm_block_q8_0 *)row;
    for (int i = 0; i < cols / CSM_QK; i++) {
        float d = csm_fp16_to_fp32(b[i].d);
        for (int j = 0; j < CSM_QK; j++) out[i * CSM_QK + j] = d * (float)b[i].qs[j];
    }
}

static inline void csm_dequant_row_q4_k(const char *row, float *out, int cols) {
    const csm_block_q4_k *b = (const csm_block_q4_k *)row;
    for (int s = 0; s < cols / CSM_QK_K; s++) {
        float d = csm_fp16_to_fp32(b[s].d), dmin = csm_fp16_to_fp32(b[s].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            csm_q4k_scale_min(b[s].scales, j, &sc, &m);
            const uint8_t *q = b[s].qs + 32 * (j / 2);
            float *o = out + s * CSM_QK_K + 32 * j;
            for (int l = 0; l < 32; l++) o[l] = d * (float)sc * (float)((j & 1) ? q[l] >> 4 : q[l] & 0xf) - dmin * (float)m;
        }
    }
}

static inline void csm_dequant_row_q4_0(const char *row, float *out, int cols) {
    const csm_block_q4_0 *b = (const csm_block_q4_0 *)row;
    for (int i = 0; i < cols / CSM_QK; i++) {
        float d = csm_fp16_to_fp32(b[i].d);
        for (int j = 0; j < CSM_QK / 2; j++) {
            out[i * CSM_QK + j] = d * (float)((int)(b[i].qs[j] & 0x0f) - 8);
            out[i * CSM_QK + j + CSM_QK / 2] = d * (float)((int)(b[i].qs[j] >> 4) - 8);
        }
    }
}

#endif
