/* AVX2 + FMA + F16C kernels (x86-64). Each function carries its own target attribute so the
 * rest of the module stays baseline x86-64; they run only after the runtime check. */
#ifndef CSM_AVX2_H
#define CSM_AVX2_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CSM_HAVE_AVX2 1
#include <immintrin.h>
#include "csm_portable.h"

#define CSM_AVX2 __attribute__((target("avx2,fma,f16c")))
/* Software prefetch distance of the repacked block kernels: one sequential stream per call,
 * and the hardware prefetcher alone left single-core Q8_0/Q4_0 streaming ~40% short. */
#ifndef CSM_PF_BYTES
#define CSM_PF_BYTES 2048
#endif

/* Prefetch `lines` (1-3) cache lines CSM_PF_BYTES ahead of p: one block's worth. */
#define CSM_PREFETCH_AHEAD(p, lines)                                      \
    do {                                                                  \
        const char *pf_ = (const char *)(p) + CSM_PF_BYTES;               \
        _mm_prefetch(pf_, _MM_HINT_T0);                                   \
        if ((lines) > 1) _mm_prefetch(pf_ + 64, _MM_HINT_T0);             \
        if ((lines) > 2) _mm_prefetch(pf_ + 128, _MM_HINT_T0);            \
    } while (0)

CSM_AVX2 static inline float csm_hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CSM_AVX2 static inline float csm_dot_f32_avx2(const float *w, const float *x, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = csm_hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

CSM_AVX2 static inline __m256 csm_load_bf16_avx2(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

CSM_AVX2 static inline float csm_dot_bf16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(csm_load_bf16_avx2(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(csm_load_bf16_avx2(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(csm_load_bf16_avx2(w + i), _mm256_loadu_ps(x + i), a0);
    float s = csm_hsum_avx2(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += csm_bf16_to_fp32(w[i]) * x[i];
    return s;
}

/* int8 x int8 over 32 lanes -> 8 int32 partial sums, via |w| * sign(x, w) and maddubs
 * (|w| <= 127 and |x| <= 127, so the int16 pair sums cannot saturate). */
CSM_AVX2 static inline __m256 csm_dot32_i8_avx2(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

CSM_AVX2 static inline float csm_dot_q8_0_avx2(const csm_block_q8_0 *w, const int8_t *xq, const float *xd, int nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)w[b].qs);
        __m256i qx = _mm256_loadu_si256((const __m256i *)(xq + b * CSM_QK));
        __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * xd[b]);
        acc = _mm256_fmadd_ps(d, csm_dot32_i8_avx2(qw, qx), acc);
    }
    return csm_hsum_avx2(acc);
}

/* Q4_0 against int8 x. Byte j of a block holds elements j (low nibble) and j+16 (high), so
 * the low nibbles meet x[0..15] and the high ones x[16..31] in two maddubs whose int16 lanes
 * add up; the nibbles q (0..15) are maddubs' unsigned operand (|lane| <= 4*15*127, no
 * saturation) and sum((q-8)*x) = sum(q*x) - 8*sum(x) exactly. One row gives 4 int32 lanes
 * (lane k: elements 4k..4k+3 and 16+4k..19+4k). EVERY Q4_0 AVX2 kernel below sums in this
 * grouping and order, so plain and repacked layouts give bit-identical products. */
CSM_AVX2 static inline float csm_hsum4_avx2(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Per block of x: both halves broadcast to the two 128-bit lanes, and the correction 8*sum(x)
 * in the lane grouping above. */
typedef struct { __m256i lo, hi, corr; } csm_q4x_avx2;

CSM_AVX2 static inline csm_q4x_avx2 csm_q4_x_avx2(const int8_t *xb) {
    csm_q4x_avx2 r;
    const __m256i ones8 = _mm256_set1_epi8(1);
    r.lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)xb));
    r.hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(xb + 16)));
    __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(ones8, r.lo), _mm256_maddubs_epi16(ones8, r.hi));
    r.corr = _mm256_slli_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), 3);
    return r;
}

/* The corrections of a whole activation vector (nb blocks), computed once per product instead
 * of once per 4-row group: +12% Q4_0 throughput on one core (measured from L3). */
CSM_AVX2 static inline void csm_q4_corr_avx2(const int8_t *xq, int nb, __m256i *corr) {
    for (int b = 0; b < nb; b++) _mm256_storeu_si256(corr + b, csm_q4_x_avx2(xq + b * CSM_QK).corr);
}

/* Two rows' 16 quant bytes [row A | row B] -> their int32 sums (A in lanes 0..3, B in 4..7). */
/* The same with the nibbles already split (lo, hi: 0..15 per byte), to unpack once for several x. */
CSM_AVX2 static inline __m256i csm_q4_pair_unpacked_avx2(__m256i lo, __m256i hi, const csm_q4x_avx2 *x) {
    __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x->lo), _mm256_maddubs_epi16(hi, x->hi));
    return _mm256_sub_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), x->corr);
}

CSM_AVX2 static inline __m256i csm_q4_pair_avx2(__m256i v, const csm_q4x_avx2 *x) {
    const __m256i m = _mm256_set1_epi8(0x0f);
    return csm_q4_pair_unpacked_avx2(_mm256_and_si256(v, m), _mm256_and_si256(_mm256_srli_epi16(v, 4), m), x);
}

CSM_AVX2 static inline float csm_dot_q4_0_avx2(const csm_block_q4_0 *w, const int8_t *xq, const float *xd, int nb) {
    __m128 acc = _mm_setzero_ps();
    for (int b = 0; b < nb; b++) {
        csm_q4x_avx2 x = csm_q4_x_avx2(xq + b * CSM_QK);
        __m128i raw = _mm_loadu_si128((const __m128i *)w[b].qs);
        __m256i p = csm_q4_pair_avx2(_mm256_set_m128i(raw, raw), &x);
        __m128 d = _mm_set1_ps(_cvtsh_ss(w[b].d) * xd[b]);
        acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(_mm256_castsi256_si128(p)), acc);
    }
    return csm_hsum4_avx2(acc);
}

/* Four rows at once (rows are `stride` bytes apart) against one vector: four memory streams
 * in flight instead of one, and each activation load serves four rows. out[0..3]. */
CSM_AVX2 static inline void csm_dot4_f32_avx2(const char *w, int64_t stride, const float *x, int n, float *out) {
    const float *w0 = (const float *)w, *w1 = (const float *)(w + stride);
    const float *w2 = (const float *)(w + 2 * stride), *w3 = (const float *)(w + 3 * stride);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
    }
    out[0] = csm_hsum_avx2(a0);
    out[1] = csm_hsum_avx2(a1);
    out[2] = csm_hsum_avx2(a2);
    out[3] = csm_hsum_avx2(a3);
    for (; i < n; i++) {
        out[0] += w0[i] * x[i];
        out[1] += w1[i] * x[i];
        out[2] += w2[i] * x[i];
        out[3] += w3[i] * x[i];
    }
}

/* Two activation vectors against the same 4 rows (prompt prefill, batches): each weight load
 * serves both, and 8 independent accumulators keep both FMA pipes busy (4 leave them waiting
 * on FMA latency). Per vector the same operations in the same order as csm_dot4_f32_avx2 /
 * csm_dot4il_bf16_avx2, so the results are bit-identical. */
CSM_AVX2 static inline void csm_dot4x2_f32_avx2(const char *w, int64_t stride, const float *x0, const float *x1,
                                                 int n, float *out0, float *out1) {
    const float *wr[4] = {(const float *)w, (const float *)(w + stride), (const float *)(w + 2 * stride),
                          (const float *)(w + 3 * stride)};
    __m256 a[4], c[4];
    for (int r = 0; r < 4; r++) a[r] = c[r] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 u = _mm256_loadu_ps(x0 + i), v = _mm256_loadu_ps(x1 + i);
        for (int r = 0; r < 4; r++) {
            __m256 wv = _mm256_loadu_ps(wr[r] + i);
            a[r] = _mm256_fmadd_ps(wv, u, a[r]);
            c[r] = _mm256_fmadd_ps(wv, v, c[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        out0[r] = csm_hsum_avx2(a[r]);
        out1[r] = csm_hsum_avx2(c[r]);
    }
    for (; i < n; i++)
        for (int r = 0; r < 4; r++) {
            out0[r] += wr[r][i] * x0[i];
            out1[r] += wr[r][i] * x1[i];
        }
}

CSM_AVX2 static inline void csm_dot4il2_bf16_avx2(const uint16_t *g, const float *x0, const float *x1, int n,
                                                   float *out0, float *out1) {
    __m256 a[4], c[4];
    for (int r = 0; r < 4; r++) a[r] = c[r] = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8, g += 32) {
        __m256 u = _mm256_loadu_ps(x0 + i), v = _mm256_loadu_ps(x1 + i);
        for (int r = 0; r < 4; r++) {
            __m256 wv = csm_load_bf16_avx2(g + 8 * r);
            a[r] = _mm256_fmadd_ps(wv, u, a[r]);
            c[r] = _mm256_fmadd_ps(wv, v, c[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        out0[r] = csm_hsum_avx2(a[r]);
        out1[r] = csm_hsum_avx2(c[r]);
    }
}

CSM_AVX2 static inline void csm_dot4_bf16_avx2(const char *w, int64_t stride, const float *x, int n, float *out) {
    const uint16_t *w0 = (const uint16_t *)w, *w1 = (const uint16_t *)(w + stride);
    const uint16_t *w2 = (const uint16_t *)(w + 2 * stride), *w3 = (const uint16_t *)(w + 3 * stride);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(csm_load_bf16_avx2(w0 + i), xv, a0);
        a1 = _mm256_fmadd_ps(csm_load_bf16_avx2(w1 + i), xv, a1);
        a2 = _mm256_fmadd_ps(csm_load_bf16_avx2(w2 + i), xv, a2);
        a3 = _mm256_fmadd_ps(csm_load_bf16_avx2(w3 + i), xv, a3);
    }
    out[0] = csm_hsum_avx2(a0);
    out[1] = csm_hsum_avx2(a1);
    out[2] = csm_hsum_avx2(a2);
    out[3] = csm_hsum_avx2(a3);
    for (; i < n; i++) {
        out[0] += csm_bf16_to_fp32(w0[i]) * x[i];
        out[1] += csm_bf16_to_fp32(w1[i]) * x[i];
        out[2] += csm_bf16_to_fp32(w2[i]) * x[i];
        out[3] += csm_bf16_to_fp32(w3[i]) * x[i];
    }
}

/* bf16 over row-interleaved storage (csm_repack4): 8 values of each of 4 rows in turn, one
 * sequential stream. Same per-row accumulation order as csm_dot4_bf16_avx2 (bit-identical);
 * n a multiple of 8. */
CSM_AVX2 static inline void csm_dot4il_bf16_avx2(const uint16_t *g, const float *x, int n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8, g += 32) {
        CSM_PREFETCH_AHEAD(g, 1);
        __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(csm_load_bf16_avx2(g), xv, a0);
        a1 = _mm256_fmadd_ps(csm_load_bf16_avx2(g + 8), xv, a1);
        a2 = _mm256_fmadd_ps(csm_load_bf16_avx2(g + 16), xv, a2);
        a3 = _mm256_fmadd_ps(csm_load_bf16_avx2(g + 24), xv, a3);
    }
    out[0] = csm_hsum_avx2(a0);
    out[1] = csm_hsum_avx2(a1);
    out[2] = csm_hsum_avx2(a2);
    out[3] = csm_hsum_avx2(a3);
}

CSM_AVX2 static inline void csm_dot4_q8_0_avx2(const char *w, int64_t stride, const int8_t *xq, const float *xd,
                                                int nb, float *out) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++) {
        __m256i qx = _mm256_loadu_si256((const __m256i *)(xq + b * CSM_QK));
        for (int r = 0; r < 4; r++) {
            const csm_block_q8_0 *blk = (const csm_block_q8_0 *)(w + r * stride) + b;
            __m256i qw = _mm256_loadu_si256((const __m256i *)blk->qs);
            __m256 d = _mm256_set1_ps(_cvtsh_ss(blk->d) * xd[b]);
            acc[r] = _mm256_fmadd_ps(d, csm_dot32_i8_avx2(qw, qx), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] = csm_hsum_avx2(acc[r]);
}

CSM_AVX2 static inline void csm_dot4_q4_0_avx2(const char *w, int64_t stride, const int8_t *xq, const float *xd,
                                                int nb, float *out) {
    __m256 acc01 = _mm256_setzero_ps(), acc23 = _mm256_setzero_ps();
    const csm_block_q4_0 *w0 = (const csm_block_q4_0 *)w, *w1 = (const csm_block_q4_0 *)(w + stride);
    const csm_block_q4_0 *w2 = (const csm_block_q4_0 *)(w + 2 * stride), *w3 = (const csm_block_q4_0 *)(w + 3 * stride);
    for (int b = 0; b < nb; b++) {
        csm_q4x_avx2 x = csm_q4_x_avx2(xq + b * CSM_QK);
        __m256i v01 = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)w1[b].qs), _mm_loadu_si128((const __m128i *)w0[b].qs));
        __m256i v23 = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)w3[b].qs), _mm_loadu_si128((const __m128i *)w2[b].qs));
        __m256 d01 = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(w1[b].d) * xd[b]), _mm_set1_ps(_cvtsh_ss(w0[b].d) * xd[b]));
        __m256 d23 = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(w3[b].d) * xd[b]), _mm_set1_ps(_cvtsh_ss(w2[b].d) * xd[b]));
        acc01 = _mm256_fmadd_ps(d01, _mm256_cvtepi32_ps(csm_q4_pair_avx2(v01, &x)), acc01);
        acc23 = _mm256_fmadd_ps(d23, _mm256_cvtepi32_ps(csm_q4_pair_avx2(v23, &x)), acc23);
    }
    out[0] = csm_hsum4_avx2(_mm256_castps256_ps128(acc01));
    out[1] = csm_hsum4_avx2(_mm256_extractf128_ps(acc01, 1));
    out[2] = csm_hsum4_avx2(_mm256_castps256_ps128(acc23));
    out[3] = csm_hsum4_avx2(_mm256_extractf128_ps(acc23, 1));
}

/* The same over row-interleaved storage (csm_repack4): per block, the 4 rows' fp16 scales
 * (8 bytes) then their 4 x 32 quants, so four rows stream as ONE sequential read (the hardware
 * prefetcher follows one stream far better than four short ones; measured +25% on 2048-wide
 * Q8_0 rows) and one conversion gives all four scales. The scale products d_w * d_x are the
 * plain kernel's, so the results are bit-identical. */
#define CSM_Q8IL_BLOCK 136 /* bytes per block of 4 rows: 4 x 2 scale bytes + 4 x 32 quants */

CSM_AVX2 static inline __m256 csm_lane_avx2(__m256 v, int r) {
    return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(r));
}

CSM_AVX2 static inline void csm_dot4il_q8_0_avx2(const char *g, const int8_t *xq, const float *xd, int nb, float *out) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++, g += CSM_Q8IL_BLOCK) {
        __m256i qx = _mm256_loadu_si256((const __m256i *)(xq + b * CSM_QK));
        CSM_PREFETCH_AHEAD(g, 3);
        __m128 d4 = _mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)), _mm_set1_ps(xd[b]));
        __m256 d = _mm256_castps128_ps256(d4);
        for (int r = 0; r < 4; r++) {
            __m256i qw = _mm256_loadu_si256((const __m256i *)(g + 8 + 32 * r));
            acc[r] = _mm256_fmadd_ps(csm_lane_avx2(d, r), csm_dot32_i8_avx2(qw, qx), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] = csm_hsum_avx2(acc[r]);
}

/* Two activation vectors against the same 4 repacked Q8_0 rows (prompt prefill): each weight
 * block is loaded and made absolute once for both; the 8 scale products dw_r * dx_v of a block
 * come from one multiply into a small table and enter the FMAs as broadcast loads (a lane
 * permute and a multiply per row and vector before: ~20% of the kernel's time). No prefetch
 * (the rows sit in L1/L2 across the vectors of a prefill chunk). The products are the ones
 * csm_dot4il_q8_0_avx2 forms (dw_r * xd_b, then the same FMA per lane): bit-identical.
 * out0/out1: 4 rows each. */
CSM_AVX2 static inline void csm_dot4il2_q8_0_avx2(const char *g, const int8_t *xq0, const float *xd0,
                                                   const int8_t *xq1, const float *xd1, int nb, float *out0,
                                                   float *out1) {
    __m256 a[4], c[4];
    float ds[8] __attribute__((aligned(32)));
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < 4; r++) a[r] = c[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, g += CSM_Q8IL_BLOCK) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq0 + b * CSM_QK));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq1 + b * CSM_QK));
        __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g));
        _mm256_store_ps(ds, _mm256_mul_ps(_mm256_set_m128(dw, dw), _mm256_set_m128(_mm_set1_ps(xd1[b]), _mm_set1_ps(xd0[b]))));
        for (int r = 0; r < 4; r++) {
            __m256i qw = _mm256_loadu_si256((const __m256i *)(g + 8 + 32 * r));
            __m256i aw = _mm256_sign_epi8(qw, qw);
            __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x0, qw)), ones);
            __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x1, qw)), ones);
            a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(ds + r), _mm256_cvtepi32_ps(p0), a[r]);
            c[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(ds + 4 + r), _mm256_cvtepi32_ps(p1), c[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        out0[r] = csm_hsum_avx2(a[r]);
        out1[r] = csm_hsum_avx2(c[r]);
    }
}

/* The pair kernel before the scale table (CSM_CPU_PREFILL=legacy, before/after benchmarks). */
CSM_AVX2 static inline void csm_dot4il2_q8_0_v1_avx2(const char *g, const int8_t *xq0, const float *xd0,
                                                   const int8_t *xq1, const float *xd1, int nb, float *out0,
                                                   float *out1) {
    __m256 a[4], c[4];
    for (int r = 0; r < 4; r++) a[r] = c[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, g += CSM_Q8IL_BLOCK) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq0 + b * CSM_QK));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq1 + b * CSM_QK));
        __m256 dw = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)));
        __m256 s0 = _mm256_set1_ps(xd0[b]), s1 = _mm256_set1_ps(xd1[b]);
        for (int r = 0; r < 4; r++) {
            __m256i qw = _mm256_loadu_si256((const __m256i *)(g + 8 + 32 * r));
            __m256i aw = _mm256_sign_epi8(qw, qw);
            __m256 dr = csm_lane_avx2(dw, r);
            __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x0, qw)), _mm256_set1_epi16(1));
            __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x1, qw)), _mm256_set1_epi16(1));
            a[r] = _mm256_fmadd_ps(_mm256_mul_ps(dr, s0), _mm256_cvtepi32_ps(p0), a[r]);
            c[r] = _mm256_fmadd_ps(_mm256_mul_ps(dr, s1), _mm256_cvtepi32_ps(p1), c[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        out0[r] = csm_hsum_avx2(a[r]);
        out1[r] = csm_hsum_avx2(c[r]);
    }
}

/* Q4_0 repacked (csm_repack4): per block, the 4 rows' scales (8 bytes) then their quant bytes
 * (4 x 16): one 8-byte load and one conversion give all four scales, one 32-byte load two rows. */
CSM_AVX2 static inline void csm_dot4il_q4_0_avx2(const csm_block_q4_0 *w, const int8_t *xq, const float *xd,
                                                  const __m256i *corr, int nb, float *out) {
    __m256 acc01 = _mm256_setzero_ps(), acc23 = _mm256_setzero_ps();
    const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    const char *g = (const char *)w;
    for (int b = 0; b < nb; b++, g += 4 * sizeof(csm_block_q4_0)) {
        csm_q4x_avx2 x;
        if (corr) { /* precomputed (csm_q4_corr_avx2) */
            x.lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(xq + b * CSM_QK)));
            x.hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(xq + b * CSM_QK + 16)));
            x.corr = _mm256_loadu_si256(corr + b);
        } else {
            x = csm_q4_x_avx2(xq + b * CSM_QK);
        }
        CSM_PREFETCH_AHEAD(g, 2);
        __m128 d = _mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)), _mm_set1_ps(xd[b]));
        __m256 d8 = _mm256_castps128_ps256(d);
        __m256i p01 = csm_q4_pair_avx2(_mm256_loadu_si256((const __m256i *)(g + 8)), &x);
        __m256i p23 = csm_q4_pair_avx2(_mm256_loadu_si256((const __m256i *)(g + 40)), &x);
        acc01 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d8, i01), _mm256_cvtepi32_ps(p01), acc01);
        acc23 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d8, i23), _mm256_cvtepi32_ps(p23), acc23);
    }
    out[0] = csm_hsum4_avx2(_mm256_castps256_ps128(acc01));
    out[1] = csm_hsum4_avx2(_mm256_extractf128_ps(acc01, 1));
    out[2] = csm_hsum4_avx2(_mm256_castps256_ps128(acc23));
    out[3] = csm_hsum4_avx2(_mm256_extractf128_ps(acc23, 1));
}

/* Two vectors against the same 4 repacked Q4_0 rows (prompt prefill): the nibbles are unpacked
 * and the scales converted once for both. Same products and order as csm_dot4il_q4_0_avx2
 * (bit-identical). out0/out1: 4 rows each. */
CSM_AVX2 static inline void csm_dot4il2_q4_0_avx2(const csm_block_q4_0 *w, const int8_t *xq0, const float *xd0,
                                                   const int8_t *xq1, const float *xd1, int nb, float *out0,
                                                   float *out1) {
    __m256 a01 = _mm256_setzero_ps(), a23 = a01, c01 = a01, c23 = a01;
    const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    const __m256i m = _mm256_set1_epi8(0x0f);
    const char *g = (const char *)w;
    for (int b = 0; b < nb; b++, g += 4 * sizeof(csm_block_q4_0)) {
        csm_q4x_avx2 x0 = csm_q4_x_avx2(xq0 + b * CSM_QK), x1 = csm_q4_x_avx2(xq1 + b * CSM_QK);
        __m256 dw = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)));
        __m256 dw01 = _mm256_permutevar8x32_ps(dw, i01), dw23 = _mm256_permutevar8x32_ps(dw, i23);
        __m256 s0 = _mm256_set1_ps(xd0[b]), s1 = _mm256_set1_ps(xd1[b]);
        __m256i v01 = _mm256_loadu_si256((const __m256i *)(g + 8)), v23 = _mm256_loadu_si256((const __m256i *)(g + 40));
        __m256i lo01 = _mm256_and_si256(v01, m), hi01 = _mm256_and_si256(_mm256_srli_epi16(v01, 4), m);
        __m256i lo23 = _mm256_and_si256(v23, m), hi23 = _mm256_and_si256(_mm256_srli_epi16(v23, 4), m);
        __m256 p01 = _mm256_cvtepi32_ps(csm_q4_pair_unpacked_avx2(lo01, hi01, &x0));
        __m256 p23 = _mm256_cvtepi32_ps(csm_q4_pair_unpacked_avx2(lo23, hi23, &x0));
        __m256 q01 = _mm256_cvtepi32_ps(csm_q4_pair_unpacked_avx2(lo01, hi01, &x1));
        __m256 q23 = _mm256_cvtepi32_ps(csm_q4_pair_unpacked_avx2(lo23, hi23, &x1));
        a01 = _mm256_fmadd_ps(_mm256_mul_ps(dw01, s0), p01, a01);
        a23 = _mm256_fmadd_ps(_mm256_mul_ps(dw23, s0), p23, a23);
        c01 = _mm256_fmadd_ps(_mm256_mul_ps(dw01, s1), q01, c01);
        c23 = _mm256_fmadd_ps(_mm256_mul_ps(dw23, s1), q23, c23);
    }
    out0[0] = csm_hsum4_avx2(_mm256_castps256_ps128(a01));
    out0[1] = csm_hsum4_avx2(_mm256_extractf128_ps(a01, 1));
    out0[2] = csm_hsum4_avx2(_mm256_castps256_ps128(a23));
    out0[3] = csm_hsum4_avx2(_mm256_extractf128_ps(a23, 1));
    out1[0] = csm_hsum4_avx2(_mm256_castps256_ps128(c01));
    out1[1] = csm_hsum4_avx2(_mm256_extractf128_ps(c01, 1));
    out1[2] = csm_hsum4_avx2(_mm256_castps256_ps128(c23));
    out1[3] = csm_hsum4_avx2(_mm256_extractf128_ps(c23, 1));
}

/* Prefill tile: 4 repacked Q4_0 rows against 4 activation vectors (xq[v] / xd[v], corrections
 * corr[v] from csm_q4_corr4_avx2) in one pass over the rows: the nibbles are unpacked and the
 * scales converted once for 4 vectors, and each vector's block enters once for 4 rows (the pair
 * kernel unpacked per 2 vectors and rebuilt each vector's block per 4 rows). Per (row, vector)
 * the operations and their order are csm_dot4il_q4_0_avx2's: bit-identical to decode.
 * out[v][0..3]. */
CSM_AVX2 static inline void csm_tile4x4_q4_0_avx2(const char *g, const int8_t *const *xq, const float *const *xd,
                                                   int nb, float out[4][4]) {
    __m256 a01[4], a23[4];
    const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    const __m256i m = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    for (int v = 0; v < 4; v++) a01[v] = a23[v] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, g += 4 * sizeof(csm_block_q4_0)) {
        __m256 dw = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)));
        __m256 dw01 = _mm256_permutevar8x32_ps(dw, i01), dw23 = _mm256_permutevar8x32_ps(dw, i23);
        __m256i v01 = _mm256_loadu_si256((const __m256i *)(g + 8)), v23 = _mm256_loadu_si256((const __m256i *)(g + 40));
        __m256i lo01 = _mm256_and_si256(v01, m), hi01 = _mm256_and_si256(_mm256_srli_epi16(v01, 4), m);
        __m256i lo23 = _mm256_and_si256(v23, m), hi23 = _mm256_and_si256(_mm256_srli_epi16(v23, 4), m);
        for (int v = 0; v < 4; v++) {
            csm_q4x_avx2 x = csm_q4_x_avx2(xq[v] + b * CSM_QK);
            __m256i xlo = x.lo, xhi = x.hi, c = x.corr;
            __m256 s = _mm256_set1_ps(xd[v][b]);
            __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(lo01, xlo), _mm256_maddubs_epi16(hi01, xhi));
            __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(lo23, xlo), _mm256_maddubs_epi16(hi23, xhi));
            p01 = _mm256_sub_epi32(_mm256_madd_epi16(p01, ones), c);
            p23 = _mm256_sub_epi32(_mm256_madd_epi16(p23, ones), c);
            a01[v] = _mm256_fmadd_ps(_mm256_mul_ps(dw01, s), _mm256_cvtepi32_ps(p01), a01[v]);
            a23[v] = _mm256_fmadd_ps(_mm256_mul_ps(dw23, s), _mm256_cvtepi32_ps(p23), a23[v]);
        }
    }
    for (int v = 0; v < 4; v++) {
        out[v][0] = csm_hsum4_avx2(_mm256_castps256_ps128(a01[v]));
        out[v][1] = csm_hsum4_avx2(_mm256_extractf128_ps(a01[v], 1));
        out[v][2] = csm_hsum4_avx2(_mm256_castps256_ps128(a23[v]));
        out[v][3] = csm_hsum4_avx2(_mm256_extractf128_ps(a23[v], 1));
    }
}

/* A Q4_K super-block's d*sc[j] and m[j] for its 8 sub-blocks, as float lanes. */
CSM_AVX2 static inline void csm_q4k_scales_avx2(const csm_block_q4_k *blk, __m256 *dsc, __m256 *mins) {
    uint64_t sc8, m8;
    csm_q4k_unpack8(blk->scales, &sc8, &m8);
    __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc8)));
    *dsc = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(blk->d)), scf);
    *mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m8)));
}

/* Q4_K row against int8 activations: per 32-value sub-block j, maddubs of the nibbles (0..15,
 * unsigned) with x, scaled by (d*sc[j])*xd[j] (all 8 in one vector, one lane broadcast each);
 * the mins term is dmin * sum_j m[j]*cs[j] over the precomputed activation block sums
 * (csm_q4k_block_sums), 8 sub-blocks in one vector. */
CSM_AVX2 static inline float csm_dot_q4_k_avx2(const csm_block_q4_k *w, const int8_t *xq, const float *xd,
                                               const float *cs, int nsb) {
    __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    for (int s = 0; s < nsb; s++) {
        const csm_block_q4_k *blk = w + s;
        CSM_PREFETCH_AHEAD(blk, 3);
        __m256 dsc, mf;
        csm_q4k_scales_avx2(blk, &dsc, &mf);
        __m256 scale = _mm256_mul_ps(dsc, _mm256_loadu_ps(xd + s * 8));
        accm = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(blk->dmin)), _mm256_mul_ps(mf, _mm256_loadu_ps(cs + s * 8)), accm);
        const int8_t *x = xq + s * CSM_QK_K;
        for (int g = 0; g < 4; g++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(blk->qs + 32 * g));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * g))), ones);
            __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * g + 32))), ones);
            acc = _mm256_fmadd_ps(csm_lane_avx2(scale, 2 * g), _mm256_cvtepi32_ps(pl), acc);
            acc2 = _mm256_fmadd_ps(csm_lane_avx2(scale, 2 * g + 1), _mm256_cvtepi32_ps(ph), acc2);
        }
    }
    return csm_hsum_avx2(_mm256_add_ps(acc, acc2)) - csm_hsum_avx2(accm);
}

/* Two activation vectors against one Q4_K row (prompt prefill, batches): the scales, mins and
 * nibbles are unpacked once for both; per vector the operations and their order are
 * csm_dot_q4_k_avx2's, so each result is bit-identical to it. */
CSM_AVX2 static inline void csm_dot2_q4_k_avx2(const csm_block_q4_k *w, const int8_t *xq0, const float *xd0,
                                               const float *cs0, const int8_t *xq1, const float *xd1,
                                               const float *cs1, int nsb, float *out0, float *out1) {
    __m256 a0 = _mm256_setzero_ps(), a0h = _mm256_setzero_ps(), m0 = _mm256_setzero_ps();
    __m256 a1 = _mm256_setzero_ps(), a1h = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    for (int s = 0; s < nsb; s++) {
        const csm_block_q4_k *blk = w + s;
        __m256 dsc, mf, dmin = _mm256_set1_ps(_cvtsh_ss(blk->dmin));
        csm_q4k_scales_avx2(blk, &dsc, &mf);
        __m256 s0 = _mm256_mul_ps(dsc, _mm256_loadu_ps(xd0 + s * 8)), s1 = _mm256_mul_ps(dsc, _mm256_loadu_ps(xd1 + s * 8));
        m0 = _mm256_fmadd_ps(dmin, _mm256_mul_ps(mf, _mm256_loadu_ps(cs0 + s * 8)), m0);
        m1 = _mm256_fmadd_ps(dmin, _mm256_mul_ps(mf, _mm256_loadu_ps(cs1 + s * 8)), m1);
        const int8_t *x0 = xq0 + s * CSM_QK_K, *x1 = xq1 + s * CSM_QK_K;
        for (int g = 0; g < 4; g++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(blk->qs + 32 * g));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x0 + 64 * g))), ones);
            __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x0 + 64 * g + 32))), ones);
            __m256i ql = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x1 + 64 * g))), ones);
            __m256i qh = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x1 + 64 * g + 32))), ones);
            a0 = _mm256_fmadd_ps(csm_lane_avx2(s0, 2 * g), _mm256_cvtepi32_ps(pl), a0);
            a0h = _mm256_fmadd_ps(csm_lane_avx2(s0, 2 * g + 1), _mm256_cvtepi32_ps(ph), a0h);
            a1 = _mm256_fmadd_ps(csm_lane_avx2(s1, 2 * g), _mm256_cvtepi32_ps(ql), a1);
            a1h = _mm256_fmadd_ps(csm_lane_avx2(s1, 2 * g + 1), _mm256_cvtepi32_ps(qh), a1h);
        }
    }
    *out0 = csm_hsum_avx2(_mm256_add_ps(a0, a0h)) - csm_hsum_avx2(m0);
    *out1 = csm_hsum_avx2(_mm256_add_ps(a1, a1h)) - csm_hsum_avx2(m1);
}

#else
#define CSM_HAVE_AVX2 0
#endif
#endif
