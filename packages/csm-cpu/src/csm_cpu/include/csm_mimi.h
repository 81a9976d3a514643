/* Mimi kernels: products of fp32 activations A [M, K] (rows lda floats apart; rows may
 * overlap, which is how a causal conv reads its input windows without a copy) with a weight
 * B [K, N] packed in 16-column panels (fp32 or bf16), with a fused epilogue; the elementwise
 * passes (ELU, exact-erf GELU), LayerNorm and windowed attention. One function per ISA
 * (AVX2+FMA, portable C; NEON builds use the portable C, which the compiler vectorises).
 * Numpy twins: csm_cpu.mimi.twins; tests: tests/cpu/test_mimi_kernels.py. */
#ifndef CSM_MIMI_H
#define CSM_MIMI_H

#include "csm_kernels.h"

#define MIMI_NR 16 /* columns per panel */
#define MIMI_MR 6  /* rows per register tile */

enum { MIMI_ACT_NONE = 0, MIMI_ACT_ELU = 1, MIMI_ACT_GELU = 2 };

/* Packed weight. panels [npanels][K][16] in fmt (CSM_F32 / CSM_BF16), the last panel's missing
 * columns zero. bias/scale: NULL or npanels*16 floats (zero padded). rows: NULL, or B.T
 * [N][K] in fmt for very narrow outputs (N < 8), which go through dot products instead. */
typedef struct {
    int fmt, K, N, npanels;
    const char *panels;
    int64_t panel_bytes;
    const char *rows;
    const float *bias, *scale;
} mimi_mat;

/* Epilogue of one output value: v = acc (+ bias) (* scale) (+ old c), then the activation. */
static inline float mimi_elu(float x) { return x > 0.f ? x : expf(x) - 1.f; }
static inline float mimi_gelu(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }

static inline float mimi_finish(const mimi_mat *B, int col, float v, const float *c, int accumulate, int act) {
    if (B->bias) v += B->bias[col];
    if (B->scale) v *= B->scale[col];
    if (accumulate) v += *c;
    if (act == MIMI_ACT_ELU) v = mimi_elu(v);
    else if (act == MIMI_ACT_GELU) v = mimi_gelu(v);
    return v;
}

static inline float mimi_bval(int fmt, const char *p, int64_t i) {
    return fmt == CSM_BF16 ? csm_bf16_to_fp32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* Panels per L2-resident group of a product: the group's weight bytes stay in L2 while every
 * row tile of A passes over them. */
#define MIMI_L2_GROUP_BYTES 131072
static inline int mimi_l2_group(const mimi_mat *B) {
    int64_t g = MIMI_L2_GROUP_BYTES / B->panel_bytes;
    return g < 1 ? 1 : (int)g;
}

/* Rows m0..m1 of C [M, N] (ldc) for panels p0..p1: portable C. */
static inline void mimi_gemm_portable(const mimi_mat *B, const float *A, int64_t lda, int m0, int m1, int p0,
                                      int p1, float *C, int64_t ldc, int accumulate, int act) {
    for (int m = m0; m < m1; m++) {
        const float *a = A + (int64_t)m * lda;
        for (int p = p0; p < p1; p++) {
            const char *panel = B->panels + (int64_t)p * B->panel_bytes;
            float acc[MIMI_NR];
            for (int j = 0; j < MIMI_NR; j++) acc[j] = 0.f;
            if (B->fmt == CSM_BF16) {
                const uint16_t *bp = (const uint16_t *)panel;
                for (int k = 0; k < B->K; k++)
                    for (int j = 0; j < MIMI_NR; j++) acc[j] += a[k] * csm_bf16_to_fp32(bp[k * MIMI_NR + j]);
            } else {
                const float *bp = (const float *)panel;
                for (int k = 0; k < B->K; k++)
                    for (int j = 0; j < MIMI_NR; j++) acc[j] += a[k] * bp[k * MIMI_NR + j];
            }
            int n0 = p * MIMI_NR, n1 = n0 + MIMI_NR < B->N ? n0 + MIMI_NR : B->N;
            for (int n = n0; n < n1; n++) {
                float *c = C + (int64_t)m * ldc + n;
                *c = mimi_finish(B, n, acc[n - n0], c, accumulate, act);
            }
        }
    }
}

/* Very narrow outputs (B->rows set): one dot product per value. */
static inline void mimi_gemm_dots(int isa, const mimi_mat *B, const float *A, int64_t lda, int m0, int m1, float *C,
                                  int64_t ldc, int accumulate, int act) {
    int64_t rb = csm_row_bytes(B->fmt, B->K);
    for (int m = m0; m < m1; m++)
        for (int n = 0; n < B->N; n++) {
            float v = csm_dot(isa, B->fmt, B->rows + n * rb, B->K, A + (int64_t)m * lda, NULL, NULL);
            float *c = C + (int64_t)m * ldc + n;
            *c = mimi_finish(B, n, v, c, accumulate, act);
        }
}

#if CSM_HAVE_AVX2
/* e^x for x in float range (clamped to [-87.3, 88.3]); Cephes expf polynomial, ~1 ulp. */
CSM_AVX2 static inline __m256 mimi_exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* ELU(x) = max(x, e^min(x,0) - 1) (e^x - 1 >= x). */
CSM_AVX2 static inline __m256 mimi_elu_avx2(__m256 x) {
    __m256 e = mimi_exp_avx2(_mm256_min_ps(x, _mm256_setzero_ps()));
    return _mm256_max_ps(x, _mm256_sub_ps(e, _mm256_set1_ps(1.f)));
}

/* GELU(x) = relu(x) - |x| Phi(-|x|), Phi(-a) = erfc(a/sqrt 2)/2 by Abramowitz-Stegun 7.1.26
 * (|error| <= 1e-7 |x|, the numpy codec's form). */
CSM_AVX2 static inline __m256 mimi_gelu_avx2(__m256 x) {
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x);
    __m256 one = _mm256_set1_ps(1.f);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f * 0.70710678118654752f), one));
    __m256 h = _mm256_set1_ps(0.5f * 1.061405429f);
    h = _mm256_fmadd_ps(h, t, _mm256_set1_ps(0.5f * -1.453152027f));
    h = _mm256_fmadd_ps(h, t, _mm256_set1_ps(0.5f * 1.421413741f));
    h = _mm256_fmadd_ps(h, t, _mm256_set1_ps(0.5f * -0.284496736f));
    h = _mm256_fmadd_ps(h, t, _mm256_set1_ps(0.5f * 0.254829592f));
    h = _mm256_mul_ps(h, t);
    __m256 e = mimi_exp_avx2(_mm256_mul_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.5f)));
    return _mm256_fnmadd_ps(_mm256_mul_ps(a, h), e, _mm256_max_ps(x, _mm256_setzero_ps()));
}

/* 8 output columns col..col+7 of one row (ncols of them real): epilogue, then store. */
CSM_AVX2 static inline void mimi_store8_avx2(const mimi_mat *B, int col, int ncols, __m256 v, float *c,
                                            int accumulate, int act) {
    if (B->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(B->bias + col));
    if (B->scale) v = _mm256_mul_ps(v, _mm256_loadu_ps(B->scale + col));
    if (ncols >= 8) {
        if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(c));
        if (act == MIMI_ACT_ELU) v = mimi_elu_avx2(v);
        else if (act == MIMI_ACT_GELU) v = mimi_gelu_avx2(v);
        _mm256_storeu_ps(c, v);
        return;
    }
    if (ncols <= 0) return;
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    if (accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(c, mask));
    if (act == MIMI_ACT_ELU) v = mimi_elu_avx2(v);
    else if (act == MIMI_ACT_GELU) v = mimi_gelu_avx2(v);
    _mm256_maskstore_ps(c, mask, v);
}

/* Panel rows (k steps) ahead that a tile prefetches: a weight read from memory by one tile is one
 * sequential stream, which the hardware prefetchers alone keep too few lines ahead of. */
#define MIMI_PF_ROWS 16

/* One register tile: rows 0..MR-1 of A times one panel, then the epilogue into C. MR and BF16
 * are constants at every call site; the accumulators are named variables (GCC spilled an array
 * of them to the stack on every step), the rows past MR are dead code. */
#define MIMI_ROW_STEP(i, x0, x1)                                                                      \
    if (mr_ > i) {                                                                                     \
        __m256 a = _mm256_broadcast_ss(A + i * lda + k);                                              \
        x0 = _mm256_fmadd_ps(a, b0, x0);                                                              \
        x1 = _mm256_fmadd_ps(a, b1, x1);                                                              \
    }
#define MIMI_ROW_STORE(i, x0, x1)                                                                     \
    if (mr_ > i) {                                                                                     \
        mimi_store8_avx2(B, col, nc, x0, C + i * ldc + col, accumulate, act);                         \
        mimi_store8_avx2(B, col + 8, nc - 8, x1, C + i * ldc + col + 8, accumulate, act);             \
    }
#define MIMI_TILE_AVX2(MR, BF16)                                                                      \
    CSM_AVX2 static inline void mimi_tile##MR##_##BF16##_avx2(const mimi_mat *B, const float *A, int64_t lda, \
                                                               const char *panel, int col, float *C,  \
                                                               int64_t ldc, int accumulate, int act) { \
        __m256 z = _mm256_setzero_ps();                                                               \
        __m256 r00 = z, r01 = z, r10 = z, r11 = z, r20 = z, r21 = z;                                  \
        __m256 r30 = z, r31 = z, r40 = z, r41 = z, r50 = z, r51 = z;                                  \
        const int K = B->K, mr_ = MR;                                                                 \
        for (int k = 0; k < K; k++) {                                                                 \
            __m256 b0, b1;                                                                            \
            _mm_prefetch(panel + (int64_t)(k + MIMI_PF_ROWS) * MIMI_NR * (BF16 ? 2 : 4), _MM_HINT_T0); \
            if (BF16) {                                                                               \
                const uint16_t *bp = (const uint16_t *)panel + (int64_t)k * MIMI_NR;                  \
                b0 = csm_load_bf16_avx2(bp);                                                          \
                b1 = csm_load_bf16_avx2(bp + 8);                                                      \
            } else {                                                                                  \
                const float *bp = (const float *)panel + (int64_t)k * MIMI_NR;                        \
                b0 = _mm256_loadu_ps(bp);                                                             \
                b1 = _mm256_loadu_ps(bp + 8);                                                         \
            }                                                                                         \
            MIMI_ROW_STEP(0, r00, r01)                                                                \
            MIMI_ROW_STEP(1, r10, r11)                                                                \
            MIMI_ROW_STEP(2, r20, r21)                                                                \
            MIMI_ROW_STEP(3, r30, r31)                                                                \
            MIMI_ROW_STEP(4, r40, r41)                                                                \
            MIMI_ROW_STEP(5, r50, r51)                                                                \
        }                                                                                             \
        int nc = B->N - col;                                                                          \
        MIMI_ROW_STORE(0, r00, r01)                                                                   \
        MIMI_ROW_STORE(1, r10, r11)                                                                   \
        MIMI_ROW_STORE(2, r20, r21)                                                                   \
        MIMI_ROW_STORE(3, r30, r31)                                                                   \
        MIMI_ROW_STORE(4, r40, r41)                                                                   \
        MIMI_ROW_STORE(5, r50, r51)                                                                   \
    }
MIMI_TILE_AVX2(6, 0)
MIMI_TILE_AVX2(4, 0)
MIMI_TILE_AVX2(2, 0)
MIMI_TILE_AVX2(1, 0)
MIMI_TILE_AVX2(6, 1)
MIMI_TILE_AVX2(4, 1)
MIMI_TILE_AVX2(2, 1)
MIMI_TILE_AVX2(1, 1)

CSM_AVX2 static inline void mimi_tile_avx2(int mr, const mimi_mat *B, const float *A, int64_t lda, const char *panel,
                                           int col, float *C, int64_t ldc, int accumulate, int act) {
    int bf = B->fmt == CSM_BF16;
    switch (mr) {
    case 6: (bf ? mimi_tile6_1_avx2 : mimi_tile6_0_avx2)(B, A, lda, panel, col, C, ldc, accumulate, act); return;
    case 5: (bf ? mimi_tile4_1_avx2 : mimi_tile4_0_avx2)(B, A, lda, panel, col, C, ldc, accumulate, act);
            (bf ? mimi_tile1_1_avx2 : mimi_tile1_0_avx2)(B, A + 4 * lda, lda, panel, col, C + 4 * ldc, ldc, accumulate, act);
            return;
    case 4: (bf ? mimi_tile4_1_avx2 : mimi_tile4_0_avx2)(B, A, lda, panel, col, C, ldc, accumulate, act); return;
    case 3: (bf ? mimi_tile2_1_avx2 : mimi_tile2_0_avx2)(B, A, lda, panel, col, C, ldc, accumulate, act);
            (bf ? mimi_tile1_1_avx2 : mimi_tile1_0_avx2)(B, A + 2 * lda, lda, panel, col, C + 2 * ldc, ldc, accumulate, act);
            return;
    case 2: (bf ? mimi_tile2_1_avx2 : mimi_tile2_0_avx2)(B, A, lda, panel, col, C, ldc, accumulate, act); return;
    case 1: (bf ? mimi_tile1_1_avx2 : mimi_tile1_0_avx2)(B, A, lda, panel, col, C, ldc, accumulate, act); return;
    }
}

/* Rows m0..m1 for panels p0..p1, in groups of panels that fit L2 (MIMI_L2_GROUP_BYTES): each
 * 6-row tile of A meets every panel of the group in turn, so a weight larger than the caches is
 * read from memory once per call, not once per 6 rows. */
CSM_AVX2 static inline void mimi_gemm_avx2(const mimi_mat *B, const float *A, int64_t lda, int m0, int m1, int p0,
                                           int p1, float *C, int64_t ldc, int accumulate, int act) {
    int g = mimi_l2_group(B);
    for (int q0 = p0; q0 < p1; q0 += g) {
        int q1 = q0 + g < p1 ? q0 + g : p1;
        for (int m = m0; m < m1; m += MIMI_MR) {
            int mr = m1 - m < MIMI_MR ? m1 - m : MIMI_MR;
            for (int p = q0; p < q1; p++)
                mimi_tile_avx2(mr, B, A + (int64_t)m * lda, lda, B->panels + (int64_t)p * B->panel_bytes, p * MIMI_NR,
                               C + (int64_t)m * ldc, ldc, accumulate, act);
        }
    }
}

CSM_AVX2 static inline void mimi_act_avx2(const float *x, float *y, int64_t n, int act) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(y + i, act == MIMI_ACT_ELU ? mimi_elu_avx2(v) : mimi_gelu_avx2(v));
    }
    for (; i < n; i++) {
        float t[8] = {0.f};
        t[0] = x[i];
        __m256 v = _mm256_loadu_ps(t);
        _mm256_storeu_ps(t, act == MIMI_ACT_ELU ? mimi_elu_avx2(v) : mimi_gelu_avx2(v));
        y[i] = t[0];
    }
}
#endif

/* C[m0:m1] (all columns when B->rows, else panels p0..p1) = epilogue(A[m0:m1] @ B). */
static inline void mimi_gemm(int isa, const mimi_mat *B, const float *A, int64_t lda, int m0, int m1, int p0, int p1,
                             float *C, int64_t ldc, int accumulate, int act) {
    if (B->rows) {
        mimi_gemm_dots(isa, B, A, lda, m0, m1, C, ldc, accumulate, act);
        return;
    }
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2) {
        mimi_gemm_avx2(B, A, lda, m0, m1, p0, p1, C, ldc, accumulate, act);
        return;
    }
#endif
    mimi_gemm_portable(B, A, lda, m0, m1, p0, p1, C, ldc, accumulate, act);
}

/* y = act(x) elementwise over n values (in place allowed). */
static inline void mimi_act(int isa, const float *x, float *y, int64_t n, int act) {
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2) {
        mimi_act_avx2(x, y, n, act);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = act == MIMI_ACT_ELU ? mimi_elu(x[i]) : mimi_gelu(x[i]);
}

/* LayerNorm of one row of n values (statistics in double). */
static inline void mimi_layer_norm(const float *x, const float *w, const float *b, float eps, float *y, int n) {
    double s = 0.0, ss = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    float mean = (float)(s / n);
    for (int i = 0; i < n; i++) {
        double d = (double)x[i] - mean;
        ss += d * d;
    }
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

#if CSM_HAVE_AVX2
/* mimi_attend for hd a multiple of 8 up to 64: the softmax's exponentials 8 keys at a time, the
 * weighted sum of values in registers. */
CSM_AVX2 static inline void mimi_attend_avx2(const float *q, const float *kc, const float *vc, int64_t ld, int lo,
                                             int hi, int hd, float scale, float *scores, float *out) {
    int n = hi - lo, nv = hd / 8;
    float m = -INFINITY;
    for (int t = 0; t < n; t++) {
        const float *k = kc + (int64_t)(lo + t) * ld;
        __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(k), _mm256_loadu_ps(q));
        for (int j = 1; j < nv; j++) acc = _mm256_fmadd_ps(_mm256_loadu_ps(k + 8 * j), _mm256_loadu_ps(q + 8 * j), acc);
        float s = csm_hsum_avx2(acc) * scale;
        scores[t] = s;
        m = s > m ? s : m;
    }
    __m256 vm = _mm256_set1_ps(m), tot = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        __m256 e = mimi_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(scores + t), vm));
        _mm256_storeu_ps(scores + t, e);
        tot = _mm256_add_ps(tot, e);
    }
    float total = csm_hsum_avx2(tot);
    for (; t < n; t++) {
        scores[t] = expf(scores[t] - m);
        total += scores[t];
    }
    __m256 o[8];
    for (int j = 0; j < nv; j++) o[j] = _mm256_setzero_ps();
    for (t = 0; t < n; t++) {
        const float *v = vc + (int64_t)(lo + t) * ld;
        __m256 w = _mm256_set1_ps(scores[t]);
        for (int j = 0; j < nv; j++) o[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * j), o[j]);
    }
    __m256 inv = _mm256_set1_ps(1.f / total);
    for (int j = 0; j < nv; j++) _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(o[j], inv));
}
#endif

/* One head of one query: keys/values rows lo..hi-1 (row stride ld floats), softmax(q.k * scale) v
 * into out [hd]. scores holds hi - lo floats. */
static inline void mimi_attend(int isa, const float *q, const float *kc, const float *vc, int64_t ld, int lo, int hi,
                               int hd, float scale, float *scores, float *out) {
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2 && hd % 8 == 0 && hd <= 64) {
        mimi_attend_avx2(q, kc, vc, ld, lo, hi, hd, scale, scores, out);
        return;
    }
#endif
    float m = -INFINITY;
    for (int t = lo; t < hi; t++) {
        float s = csm_dot(isa, CSM_F32, (const char *)(kc + (int64_t)t * ld), hd, q, NULL, NULL) * scale;
        scores[t - lo] = s;
        m = s > m ? s : m;
    }
    for (int i = 0; i < hd; i++) out[i] = 0.f;
    double total = 0.0;
    for (int t = lo; t < hi; t++) {
        float w = expf(scores[t - lo] - m);
        total += w;
        const float *v = vc + (int64_t)t * ld;
        for (int i = 0; i < hd; i++) out[i] += w * v[i];
    }
    float inv = (float)(1.0 / total);
    for (int i = 0; i < hd; i++) out[i] *= inv;
}

/* The f32 FMA peak probe: `iters` rounds of 12 independent 8-wide FMA chains (AVX2) or 8
 * independent scalar chains (portable), 192 resp. 16 FLOPs a round; returns a value that depends
 * on every chain so that the compiler keeps them. Used by tools/bench_mimi.py as the machine's
 * compute ceiling. */
#if CSM_HAVE_AVX2
CSM_AVX2 static inline float mimi_fma_probe_avx2(int64_t iters) {
    /* distinct starting values: chains that start equal would be merged into one by the compiler */
    __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f), d = _mm256_set1_ps(1.f / 64);
    __m256 a0 = _mm256_set1_ps(1.f), a1 = _mm256_add_ps(a0, d), a2 = _mm256_add_ps(a1, d);
    __m256 a3 = _mm256_add_ps(a2, d), a4 = _mm256_add_ps(a3, d), a5 = _mm256_add_ps(a4, d);
    __m256 a6 = _mm256_add_ps(a5, d), a7 = _mm256_add_ps(a6, d), a8 = _mm256_add_ps(a7, d);
    __m256 a9 = _mm256_add_ps(a8, d), a10 = _mm256_add_ps(a9, d), a11 = _mm256_add_ps(a10, d);
    for (int64_t i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c); a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c); a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c); a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c); a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    return csm_hsum_avx2(s);
}
#endif

/* FLOPs per round of mimi_fma_probe on this ISA. */
static inline int mimi_fma_probe_flops(int isa) {
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2) return 12 * 8 * 2;
#endif
    (void)isa;
    return 8 * 2;
}

static inline float mimi_fma_probe(int isa, int64_t iters) {
#if CSM_HAVE_AVX2
    if (isa == CSM_ISA_AVX2) return mimi_fma_probe_avx2(iters);
#endif
    float a[8] = {1.f, 1.01f, 1.02f, 1.03f, 1.04f, 1.05f, 1.06f, 1.07f};
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++) a[j] = fmaf(a[j], 0.999999f, 1e-7f);
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

#endif
