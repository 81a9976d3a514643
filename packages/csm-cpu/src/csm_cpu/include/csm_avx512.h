/* AVX-512 (F/BW/VL) + VNNI kernels for the decode products (x86-64). Like csm_avx2.h, every
 * function carries its own target attribute, so the module stays baseline x86-64 and these run
 * only after csm_avx512_usable() said yes (CPU bits AND the OS saving the ZMM/opmask state).
 *
 * Every kernel here gives results BIT-IDENTICAL to its csm_avx2.h twin: the int8 products use
 * vpdpbusd where AVX2 uses maddubs+madd, and both produce the same int32 lanes (4 adjacent
 * products each, exact integers), which then meet the same fp32 operations in the same order
 * (one FMA per block and row into the same lane, the same horizontal sums). So the avx512 path
 * can hand whatever it does not cover (f32, plain layouts, tail rows, prefill pairs of Q4_K)
 * to the AVX2 kernels and a row's products never depend on which kernel computed them. What
 * AVX-512 buys: 2-4 rows per instruction (one ZMM = a whole repacked Q4_0 block of 4 rows, half
 * a Q8_0 one) and one vpdpbusd instead of maddubs+madd(+sign). */
#ifndef CSM_AVX512_H
#define CSM_AVX512_H

#include "csm_avx2.h"

#if CSM_HAVE_AVX2 && !defined(CSM_NO_AVX512)
#define CSM_HAVE_AVX512 1
#include <cpuid.h>

#define CSM_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* The CPU has AVX-512 F, BW, VL and VNNI, and the OS saves their state (XCR0: SSE, AVX,
 * opmask, ZMM0-15 upper halves, ZMM16-31). */
static inline int csm_avx512_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0xe6u) != 0xe6u) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    return f && bw && vl && vnni;
}

/* 128-bit lane k of a float vector, and 256-bit halves, as the AVX2 reductions take them. */
CSM_AVX512 static inline __m256 csm_hi256_avx512(__m512 v) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* out[0..3]: the sums of rows 0,1 (the halves of a01) and 2,3 (of a23), each reduced as
 * csm_hsum_avx2 reduces a row's 256-bit accumulator. */
CSM_AVX512 static inline void csm_hsum4_avx512(__m512 a01, __m512 a23, float *out) {
    out[0] = csm_hsum_avx2(_mm512_castps512_ps256(a01));
    out[1] = csm_hsum_avx2(csm_hi256_avx512(a01));
    out[2] = csm_hsum_avx2(_mm512_castps512_ps256(a23));
    out[3] = csm_hsum_avx2(csm_hi256_avx512(a23));
}

/* acc + per 4 bytes sum(w * x) for signed w and x (|x| <= 127): vpdpbusd takes |w| as the
 * unsigned operand and x with w's sign (w = -128 reads as 128 unsigned: still exact). */
CSM_AVX512 static inline __m512i csm_dp_i8_avx512(__m512i acc, __m512i w, __m512i x) {
    __m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
    return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(w), sx);
}

/* Index vectors spreading lanes 0..3 of a float vector: pairs (rows 0,1 / 2,3 over 8 lanes each)
 * and quads (4 lanes each). */
#define CSM_IDX_PAIR(a, b) _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a)
#define CSM_IDX_QUAD _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)

/* Q8_0 over repacked rows (csm_repack4: per block 4 fp16 scales, then 4 x 32 quants): rows 0,1
 * in one ZMM, rows 2,3 in the next; the 8 int32 lanes of a row are csm_dot32_i8_avx2's. */
CSM_AVX512 static inline void csm_dot4il_q8_0_avx512(const char *g, const int8_t *xq, const float *xd, int nb,
                                                    float *out) {
    const __m512i i01 = CSM_IDX_PAIR(0, 1), i23 = CSM_IDX_PAIR(2, 3), z = _mm512_setzero_si512();
    __m512 acc01 = _mm512_setzero_ps(), acc23 = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, g += CSM_Q8IL_BLOCK) {
        CSM_PREFETCH_AHEAD(g, 3);
        __m512i qx = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xq + b * CSM_QK)));
        __m512 d = _mm512_castps128_ps512(_mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)),
                                                     _mm_set1_ps(xd[b])));
        __m512i p01 = csm_dp_i8_avx512(z, _mm512_loadu_si512((const void *)(g + 8)), qx);
        __m512i p23 = csm_dp_i8_avx512(z, _mm512_loadu_si512((const void *)(g + 72)), qx);
        acc01 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i01, d), _mm512_cvtepi32_ps(p01), acc01);
        acc23 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i23, d), _mm512_cvtepi32_ps(p23), acc23);
    }
    csm_hsum4_avx512(acc01, acc23, out);
}

/* Two vectors against the same 4 repacked Q8_0 rows (prefill, batches): |w| and w's sign mask
 * once for both. Per vector the operations of csm_dot4il_q8_0_avx512 (the scale product
 * d_w * d_x is the same fp32 multiply), so bit-identical to it. */
CSM_AVX512 static inline void csm_dot4il2_q8_0_avx512(const char *g, const int8_t *xq0, const float *xd0,
                                                     const int8_t *xq1, const float *xd1, int nb, float *out0,
                                                     float *out1) {
    const __m512i i01 = CSM_IDX_PAIR(0, 1), i23 = CSM_IDX_PAIR(2, 3), z = _mm512_setzero_si512();
    __m512 a01 = _mm512_setzero_ps(), a23 = a01, c01 = a01, c23 = a01;
    for (int b = 0; b < nb; b++, g += CSM_Q8IL_BLOCK) {
        __m512i x0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xq0 + b * CSM_QK)));
        __m512i x1 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xq1 + b * CSM_QK)));
        __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g));
        __m512 d0 = _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_set1_ps(xd0[b])));
        __m512 d1 = _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_set1_ps(xd1[b])));
        __m512i w01 = _mm512_loadu_si512((const void *)(g + 8)), w23 = _mm512_loadu_si512((const void *)(g + 72));
        __mmask64 n01 = _mm512_movepi8_mask(w01), n23 = _mm512_movepi8_mask(w23);
        __m512i u01 = _mm512_abs_epi8(w01), u23 = _mm512_abs_epi8(w23);
        __m512i p01 = _mm512_dpbusd_epi32(z, u01, _mm512_mask_sub_epi8(x0, n01, z, x0));
        __m512i p23 = _mm512_dpbusd_epi32(z, u23, _mm512_mask_sub_epi8(x0, n23, z, x0));
        __m512i q01 = _mm512_dpbusd_epi32(z, u01, _mm512_mask_sub_epi8(x1, n01, z, x1));
        __m512i q23 = _mm512_dpbusd_epi32(z, u23, _mm512_mask_sub_epi8(x1, n23, z, x1));
        a01 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i01, d0), _mm512_cvtepi32_ps(p01), a01);
        a23 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i23, d0), _mm512_cvtepi32_ps(p23), a23);
        c01 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i01, d1), _mm512_cvtepi32_ps(q01), c01);
        c23 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i23, d1), _mm512_cvtepi32_ps(q23), c23);
    }
    csm_hsum4_avx512(a01, a23, out0);
    csm_hsum4_avx512(c01, c23, out1);
}

/* Q4_0 over repacked rows: per block 4 fp16 scales, then 4 x 16 nibble bytes = ONE ZMM (row r in
 * 128-bit lane r). Low nibbles meet x[0..15], high ones x[16..31], both broadcast to the four
 * lanes; two vpdpbusd (nibbles unsigned, x signed) give csm_q4_pair_avx2's int32 lanes, minus
 * the same correction 8*sum(x) (corr: csm_q4_corr_avx2's, or NULL to compute it here). */
CSM_AVX512 static inline __m512i csm_q4_corr512(const int8_t *xb, const __m256i *corr) {
    __m256i c = corr ? _mm256_loadu_si256(corr) : csm_q4_x_avx2(xb).corr;
    return _mm512_broadcast_i32x4(_mm256_castsi256_si128(c));
}

CSM_AVX512 static inline void csm_q4_store4_avx512(__m512 acc, float *out) {
    out[0] = csm_hsum4_avx2(_mm512_extractf32x4_ps(acc, 0));
    out[1] = csm_hsum4_avx2(_mm512_extractf32x4_ps(acc, 1));
    out[2] = csm_hsum4_avx2(_mm512_extractf32x4_ps(acc, 2));
    out[3] = csm_hsum4_avx2(_mm512_extractf32x4_ps(acc, 3));
}

CSM_AVX512 static inline void csm_dot4il_q4_0_avx512(const csm_block_q4_0 *w, const int8_t *xq, const float *xd,
                                                    const __m256i *corr, int nb, float *out) {
    const __m512i iq = CSM_IDX_QUAD, m = _mm512_set1_epi8(0x0f), z = _mm512_setzero_si512();
    __m512 acc = _mm512_setzero_ps();
    const char *g = (const char *)w;
    for (int b = 0; b < nb; b++, g += 4 * sizeof(csm_block_q4_0)) {
        CSM_PREFETCH_AHEAD(g, 2);
        const int8_t *xb = xq + b * CSM_QK;
        __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xb));
        __m512i xhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xb + 16)));
        __m512i v = _mm512_loadu_si512((const void *)(g + 8));
        __m512i p = _mm512_dpbusd_epi32(z, _mm512_and_si512(v, m), xlo);
        p = _mm512_dpbusd_epi32(p, _mm512_and_si512(_mm512_srli_epi16(v, 4), m), xhi);
        p = _mm512_sub_epi32(p, csm_q4_corr512(xb, corr ? corr + b : NULL));
        __m512 d = _mm512_castps128_ps512(_mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)),
                                                     _mm_set1_ps(xd[b])));
        acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(iq, d), _mm512_cvtepi32_ps(p), acc);
    }
    csm_q4_store4_avx512(acc, out);
}

/* Two vectors against the same 4 repacked Q4_0 rows: nibbles unpacked and scales converted once. */
CSM_AVX512 static inline void csm_dot4il2_q4_0_avx512(const csm_block_q4_0 *w, const int8_t *xq0, const float *xd0,
                                                     const int8_t *xq1, const float *xd1, int nb, float *out0,
                                                     float *out1) {
    const __m512i iq = CSM_IDX_QUAD, m = _mm512_set1_epi8(0x0f), z = _mm512_setzero_si512();
    __m512 a = _mm512_setzero_ps(), c = _mm512_setzero_ps();
    const char *g = (const char *)w;
    for (int b = 0; b < nb; b++, g += 4 * sizeof(csm_block_q4_0)) {
        const int8_t *x0 = xq0 + b * CSM_QK, *x1 = xq1 + b * CSM_QK;
        __m512i v = _mm512_loadu_si512((const void *)(g + 8));
        __m512i lo = _mm512_and_si512(v, m), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
        __m512i p = _mm512_dpbusd_epi32(z, lo, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x0)));
        p = _mm512_dpbusd_epi32(p, hi, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(x0 + 16))));
        p = _mm512_sub_epi32(p, csm_q4_corr512(x0, NULL));
        __m512i q = _mm512_dpbusd_epi32(z, lo, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x1)));
        q = _mm512_dpbusd_epi32(q, hi, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(x1 + 16))));
        q = _mm512_sub_epi32(q, csm_q4_corr512(x1, NULL));
        __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g));
        __m512 d0 = _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_set1_ps(xd0[b])));
        __m512 d1 = _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_set1_ps(xd1[b])));
        a = _mm512_fmadd_ps(_mm512_permutexvar_ps(iq, d0), _mm512_cvtepi32_ps(p), a);
        c = _mm512_fmadd_ps(_mm512_permutexvar_ps(iq, d1), _mm512_cvtepi32_ps(q), c);
    }
    csm_q4_store4_avx512(a, out0);
    csm_q4_store4_avx512(c, out1);
}

/* bf16 over repacked rows (per 8 columns the 4 rows' 8 values = one ZMM of 32 bf16): rows 0,1
 * widened into one ZMM, rows 2,3 into another, x broadcast to both halves; per row the FMAs of
 * csm_dot4il_bf16_avx2. n a multiple of 8. */
CSM_AVX512 static inline void csm_dot4il_bf16_avx512(const uint16_t *g, const float *x, int n, float *out) {
    __m512 a01 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 8, g += 32) {
        CSM_PREFETCH_AHEAD(g, 1);
        __m512i raw = _mm512_loadu_si512((const void *)g);
        __m512 w01 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(raw)), 16));
        __m512 w23 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(raw, 1)), 16));
        __m512 xv = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x + i))));
        a01 = _mm512_fmadd_ps(w01, xv, a01);
        a23 = _mm512_fmadd_ps(w23, xv, a23);
    }
    csm_hsum4_avx512(a01, a23, out);
}

/* Q4_K row: per 64 values (group g of a super-block) the 32 quant bytes are loaded into both
 * halves of a ZMM, the upper half shifted to the high nibbles, so one vpdpbusd against the 64
 * contiguous x bytes gives sub-block 2g in lanes 0..7 and 2g+1 in lanes 8..15: exactly
 * csm_dot_q4_k_avx2's pl and ph, its acc and acc2 being this accumulator's halves. */
CSM_AVX512 static inline float csm_dot_q4_k_avx512(const csm_block_q4_k *w, const int8_t *xq, const float *xd,
                                                  const float *cs, int nsb) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), z = _mm512_setzero_si512();
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    const __m512i ig[4] = {CSM_IDX_PAIR(0, 1), CSM_IDX_PAIR(2, 3), CSM_IDX_PAIR(4, 5), CSM_IDX_PAIR(6, 7)};
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int s = 0; s < nsb; s++) {
        const csm_block_q4_k *blk = w + s;
        CSM_PREFETCH_AHEAD(blk, 3);
        __m256 dsc, mf;
        csm_q4k_scales_avx2(blk, &dsc, &mf);
        __m512 scale = _mm512_castps256_ps512(_mm256_mul_ps(dsc, _mm256_loadu_ps(xd + s * 8)));
        accm = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(blk->dmin)), _mm256_mul_ps(mf, _mm256_loadu_ps(cs + s * 8)), accm);
        const int8_t *x = xq + s * CSM_QK_K;
        for (int g = 0; g < 4; g++) {
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk->qs + 32 * g)));
            q = _mm512_and_si512(_mm512_srlv_epi64(q, shift), m4);
            __m512i p = _mm512_dpbusd_epi32(z, q, _mm512_loadu_si512((const void *)(x + 64 * g)));
            acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(ig[g], scale), _mm512_cvtepi32_ps(p), acc);
        }
    }
    return csm_hsum_avx2(_mm256_add_ps(_mm512_castps512_ps256(acc), csm_hi256_avx512(acc))) - csm_hsum_avx2(accm);
}

/* Rows [r0, r1) of a repacked Q8_0/Q4_0/bf16 matrix in whole groups of 4, every vector (pairs,
 * then one at a time); returns the first row NOT done (the caller's AVX2 code does the rest:
 * tail rows, other formats and layouts, with bit-identical results). */
CSM_AVX512 static inline int csm_mat_rows_avx512(const csm_mat *W, int r0, int r1, const float *x,
                                                 const int8_t *xq, const float *xd, int nvec, float *y,
                                                 int64_t ldy, int accumulate) {
    int fmt = W->fmt, cols = W->cols, nb = cols / CSM_QK, r = r0;
    int64_t rb = W->row_bytes;
    if (!W->interleaved || !(fmt == CSM_Q8_0 || fmt == CSM_Q4_0 || fmt == CSM_BF16)) return r0;
    __m256i corr[CSM_Q4_CORR_MAX];
    const __m256i *c1 = NULL;
    if (fmt == CSM_Q4_0 && nvec == 1 && nb <= CSM_Q4_CORR_MAX && r1 - r0 >= 8) {
        csm_q4_corr_avx2(xq, nb, corr);
        c1 = corr;
    }
    float d[4], d1[4];
    for (; r + 4 <= r1; r += 4) {
        const char *row = W->data + (int64_t)r * rb;
        int n = 0;
        for (; fmt != CSM_BF16 && n + 2 <= nvec; n += 2) {
            const int8_t *q0 = xq + (int64_t)n * cols, *q1 = q0 + cols;
            const float *s0 = xd + (int64_t)n * nb, *s1 = s0 + nb;
            if (fmt == CSM_Q8_0) csm_dot4il2_q8_0_avx512(row, q0, s0, q1, s1, nb, d, d1);
            else csm_dot4il2_q4_0_avx512((const csm_block_q4_0 *)row, q0, s0, q1, s1, nb, d, d1);
            float *o0 = y + (int64_t)n * ldy + r, *o1 = o0 + ldy;
            for (int k = 0; k < 4; k++) {
                o0[k] = accumulate ? o0[k] + d[k] : d[k];
                o1[k] = accumulate ? o1[k] + d1[k] : d1[k];
            }
        }
        for (; n < nvec; n++) {
            const int8_t *qn = xq + (int64_t)n * cols;
            const float *dn = xd + (int64_t)n * nb;
            if (fmt == CSM_Q8_0) csm_dot4il_q8_0_avx512(row, qn, dn, nb, d);
            else if (fmt == CSM_Q4_0) csm_dot4il_q4_0_avx512((const csm_block_q4_0 *)row, qn, dn, c1, nb, d);
            else csm_dot4il_bf16_avx512((const uint16_t *)row, x + (int64_t)n * cols, cols, d);
            float *out = y + (int64_t)n * ldy + r;
            for (int k = 0; k < 4; k++) out[k] = accumulate ? out[k] + d[k] : d[k];
        }
    }
    return r;
}

#else
#define CSM_HAVE_AVX512 0
static inline int csm_avx512_usable(void) { return 0; }
#endif
#endif
