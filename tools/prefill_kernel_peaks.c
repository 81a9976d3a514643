/* Per-core multiply-add rate of csm-cpu's AVX2 prefill kernels against an fp32 register-blocked
 * GEMM micro-kernel (6 x 16, the shape sgemm libraries use on AVX2/FMA), all operands in L1/L2,
 * one thread, best of 7 rounds. It tells whether int8 products can beat an fp32 GEMM (what
 * transformers' prefill runs) on this CPU at all: where the int8 kernels reach less than 1.5x the
 * fp32 micro-kernel, a prefill 1.5x faster than transformers fp32 is out of reach for them.
 * Then one whole prefill-sized product, Y[64 positions][2048] = X W^T with W 2048 x 2048 in Q8_0 and
 * Q4_0: csm_mat_rows (the engine's int8 path, repacked rows) against a prototype of an fp32 prefill
 * (each 4-row group expanded to fp32 once, then 4 rows x 3 positions per pass of an fp32 dot
 * micro-kernel), to size what such a path would gain here.
 *
 *   gcc -O3 -fno-strict-aliasing -I packages/csm-cpu/src/csm_cpu/include \
 *       tools/prefill_kernel_peaks.c -lm -o /tmp/prefill_kernel_peaks && /tmp/prefill_kernel_peaks
 */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>

#include "csm_kernels.h"

#define COLS 2048
#define NB (COLS / CSM_QK)
#define ROUNDS 7

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* C[6][16] = A[k][0:6] (x) B[k][0:16] summed over k: 12 accumulators, 2 loads + 6 broadcasts per 12 FMAs. */
CSM_AVX2 static void sgemm6x16(const float *A, const float *B, int K, float *C) {
    __m256 c[6][2];
    for (int i = 0; i < 6; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(B + 16 * k), b1 = _mm256_loadu_ps(B + 16 * k + 8);
        for (int i = 0; i < 6; i++) {
            __m256 a = _mm256_broadcast_ss(A + 6 * k + i);
            c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
        }
    }
    for (int i = 0; i < 6; i++) {
        _mm256_storeu_ps(C + 16 * i, c[i][0]);
        _mm256_storeu_ps(C + 16 * i + 8, c[i][1]);
    }
}

/* Prototype fp32 prefill of rows [0, rows) of a plain (not repacked) block-format matrix: each
 * 4-row group expanded to fp32 once (buf), then 4 rows x 3 vectors per pass (12 accumulators,
 * 7 loads per 12 FMAs), a 4 x 1 pass for the vectors left. */
CSM_AVX2 static void f32_prefill(int fmt, const char *W, int64_t rb, int rows, int cols, const float *x, int n,
                                 float *y, float *buf) {
    for (int r = 0; r < rows; r += 4) {
        for (int k = 0; k < 4; k++) csm_dequant_row(fmt, W + (int64_t)(r + k) * rb, buf + (int64_t)k * cols, cols);
        int v = 0;
        for (; v + 3 <= n; v += 3) {
            __m256 a[4][3];
            for (int k = 0; k < 4; k++) a[k][0] = a[k][1] = a[k][2] = _mm256_setzero_ps();
            const float *x0 = x + (int64_t)v * cols, *x1 = x0 + cols, *x2 = x1 + cols;
            for (int c = 0; c < cols; c += 8) {
                __m256 p = _mm256_loadu_ps(x0 + c), q = _mm256_loadu_ps(x1 + c), t = _mm256_loadu_ps(x2 + c);
                for (int k = 0; k < 4; k++) {
                    __m256 w = _mm256_loadu_ps(buf + (int64_t)k * cols + c);
                    a[k][0] = _mm256_fmadd_ps(w, p, a[k][0]);
                    a[k][1] = _mm256_fmadd_ps(w, q, a[k][1]);
                    a[k][2] = _mm256_fmadd_ps(w, t, a[k][2]);
                }
            }
            for (int k = 0; k < 4; k++)
                for (int j = 0; j < 3; j++) y[(int64_t)(v + j) * rows + r + k] = csm_hsum_avx2(a[k][j]);
        }
        for (; v < n; v++)
            for (int k = 0; k < 4; k++) {
                __m256 a0 = _mm256_setzero_ps();
                for (int c = 0; c < cols; c += 8)
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(buf + (int64_t)k * cols + c), _mm256_loadu_ps(x + (int64_t)v * cols + c), a0);
                y[(int64_t)v * rows + r + k] = csm_hsum_avx2(a0);
            }
    }
}

/* Best seconds of ROUNDS calls of `body` repeated `reps` times. */
#define BEST(reps, body)                                       \
    ({                                                         \
        double best_ = 1e30;                                   \
        for (int r_ = 0; r_ < ROUNDS; r_++) {                  \
            double t_ = now();                                 \
            for (int k_ = 0; k_ < (reps); k_++) { body; }      \
            t_ = now() - t_;                                   \
            if (t_ < best_) best_ = t_;                        \
        }                                                      \
        best_;                                                 \
    })

int main(void) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        fprintf(stderr, "this CPU lacks AVX2/FMA: the kernels measured here do not run on it\n");
        return 2;
    }
    const int reps = 4000;
    volatile float sink = 0;
    srand(1);
    /* activations: 4 vectors of COLS int8 values, one fp32 scale per 32 */
    int8_t *xq = aligned_alloc(64, 4 * COLS);
    float *xd = aligned_alloc(64, 4 * NB * sizeof(float));
    for (int i = 0; i < 4 * COLS; i++) xq[i] = (int8_t)(rand() % 255 - 127);
    for (int i = 0; i < 4 * NB; i++) xd[i] = 0.01f;
    /* one repacked 4-row group per format: per block the 4 fp16 scales (1.0), then the quants */
    char *g8 = aligned_alloc(64, NB * CSM_Q8IL_BLOCK + 4096);
    const int q4blk = 4 * (int)sizeof(csm_block_q4_0);
    char *g4 = aligned_alloc(64, NB * q4blk + 4096);
    for (int i = 0; i < NB * CSM_Q8IL_BLOCK; i++) g8[i] = (char)(rand() % 255 - 127);
    for (int i = 0; i < NB * q4blk; i++) g4[i] = (char)rand();
    for (int b = 0; b < NB; b++)
        for (int r = 0; r < 4; r++) {
            ((uint16_t *)(g8 + b * CSM_Q8IL_BLOCK))[r] = 0x3c00;
            ((uint16_t *)(g4 + b * q4blk))[r] = 0x3c00;
        }
    float o0[4], o1[4], t4[4][4];
    double s8 = BEST(reps, (csm_dot4il2_q8_0_avx2(g8, xq, xd, xq + COLS, xd + NB, NB, o0, o1), sink += o0[0]));
    const int8_t *q4[4] = {xq, xq + COLS, xq + 2 * COLS, xq + 3 * COLS};
    const float *d4[4] = {xd, xd + NB, xd + 2 * NB, xd + 3 * NB};
    double s4 = BEST(reps, (csm_tile4x4_q4_0_avx2(g4, q4, d4, NB, t4), sink += t4[0][0]));
    /* fp32: K = 256 (A 6 KiB, B 16 KiB), as many multiply-adds as the int8 runs */
    const int K = 256, reps32 = reps * 8 * COLS / (96 * K);
    float *A = aligned_alloc(64, 6 * K * sizeof(float)), *B = aligned_alloc(64, 16 * K * sizeof(float)), C[96];
    for (int i = 0; i < 6 * K; i++) A[i] = 1e-3f * (float)(i % 97);
    for (int i = 0; i < 16 * K; i++) B[i] = 1e-3f;
    double s32 = BEST(reps32, (sgemm6x16(A, B, K, C), sink += C[5]));
    double g8r = reps * 8.0 * COLS / s8 / 1e9, g4r = reps * 16.0 * COLS / s4 / 1e9, g32 = reps32 * 96.0 * K / s32 / 1e9;
    printf("per core, G multiply-adds/s (best of %d):\n", ROUNDS);
    printf("  fp32 6x16 micro-kernel               %6.2f\n", g32);
    printf("  Q8_0 pair kernel (4 rows x 2 vectors) %6.2f  (%.2fx fp32)\n", g8r, g8r / g32);
    printf("  Q4_0 tile (4 rows x 4 vectors)        %6.2f  (%.2fx fp32)\n", g4r, g4r / g32);

    /* one prefill-sized product per format: the engine's int8 path against the fp32 prototype */
    const int R = 2048, N = 64;
    float *X = aligned_alloc(64, (size_t)N * COLS * sizeof(float)), *Y = aligned_alloc(64, (size_t)N * R * sizeof(float));
    float *Y2 = aligned_alloc(64, (size_t)N * R * sizeof(float));
    float *Wf = aligned_alloc(64, (size_t)R * COLS * sizeof(float)), *buf = aligned_alloc(64, 4 * COLS * sizeof(float));
    int8_t *XQ = aligned_alloc(64, (size_t)N * COLS);
    float *XD = aligned_alloc(64, (size_t)N * NB * sizeof(float));
    for (int64_t i = 0; i < (int64_t)N * COLS; i++) X[i] = (float)(rand() % 2001 - 1000) * 1e-3f;
    for (int64_t i = 0; i < (int64_t)R * COLS; i++) Wf[i] = (float)(rand() % 2001 - 1000) * 1e-4f;
    for (int i = 0; i < N; i++) csm_quantize_act(X + (int64_t)i * COLS, COLS, XQ + (int64_t)i * COLS, XD + (int64_t)i * NB);
    printf("one product, %d positions x %d x %d, one thread, G multiply-adds/s:\n", N, R, COLS);
    const int fmts[2] = {CSM_Q8_0, CSM_Q4_0};
    for (int f = 0; f < 2; f++) {
        int fmt = fmts[f];
        int64_t rb = csm_row_bytes(fmt, COLS);
        char *plain = aligned_alloc(64, (size_t)(R * rb)), *packed = aligned_alloc(64, (size_t)(R * rb));
        for (int r = 0; r < R; r++) csm_formats[fmt].quantize_row(Wf + (int64_t)r * COLS, plain + r * rb, COLS);
        csm_repack4(fmt, plain, packed, R, rb);
        csm_mat W = {fmt, R, COLS, packed, rb, 1, 0};
        double si = BEST(3, (csm_mat_rows(CSM_ISA_AVX2, &W, 0, R, X, XQ, XD, N, Y, R, 0), sink += Y[7]));
        double sf = BEST(3, (f32_prefill(fmt, plain, rb, R, COLS, X, N, Y, buf), sink += Y[7]));
        /* the two results differ by the int8 rounding of the activations: relative L2 of the difference */
        csm_mat_rows(CSM_ISA_AVX2, &W, 0, R, X, XQ, XD, N, Y2, R, 0);
        f32_prefill(fmt, plain, rb, R, COLS, X, N, Y, buf);
        double dd = 0, yy = 0;
        for (int64_t i = 0; i < (int64_t)N * R; i++) {
            dd += (double)(Y[i] - Y2[i]) * (Y[i] - Y2[i]);
            yy += (double)Y[i] * Y[i];
        }
        double macs = 3.0 * N * R * COLS / 1e9;
        printf("  %s: int8 path (csm_mat_rows) %6.2f   fp32 prototype %6.2f  (%.2fx; results differ by rel-L2 %.1e)\n",
               csm_formats[fmt].name, macs / si, macs / sf, si / sf, sqrt(dd / yy));
        free(plain);
        free(packed);
    }
    return 0;
}
