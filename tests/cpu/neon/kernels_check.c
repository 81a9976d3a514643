/* Every NEON dot product against the portable C one, on random rows of odd and even lengths.
 * Built for arm64 and run under qemu by tests/cpu/test_neon.py (x86 machines have no NEON).
 * Prints one line per format and exits non-zero on a mismatch. */
#include <stdio.h>
#include <stdlib.h>
#include "csm_kernels.h"

#if !CSM_HAVE_NEON
#error "build this check for arm64"
#endif

static uint32_t rng_state = 12345u;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 8388608.0f - 1.0f;
}

int main(void) {
    static const int sizes[] = {32, 64, 96, 128, 1024, 2048, 33, 7, 100};
    static const char *names[] = {"f32", "bf16", "q8_0", "q4_0"};
    int bad = 0;
    for (int fmt = CSM_F32; fmt <= CSM_Q4_0; fmt++) {
        double worst = 0.0;
        int checked = 0;
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            int n = sizes[s];
            if ((fmt == CSM_Q8_0 || fmt == CSM_Q4_0) && n % CSM_QK) continue; /* block formats: whole blocks */
            float *w = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float));
            char *row = malloc((size_t)n * 4 + 64);
            int8_t *xq = malloc(n + CSM_QK);
            float *xd = malloc((n / CSM_QK + 1) * sizeof(float));
            for (int trial = 0; trial < 20; trial++) {
                for (int j = 0; j < n; j++) { w[j] = frand(); x[j] = frand(); }
                switch (fmt) {
                case CSM_F32: memcpy(row, w, n * sizeof(float)); break;
                case CSM_BF16: csm_quantize_row_bf16(w, (uint16_t *)row, n); break;
                case CSM_Q8_0: csm_quantize_row_q8_0(w, row, n); break;
                default: csm_quantize_row_q4_0(w, row, n); break;
                }
                if (n % CSM_QK == 0) csm_quantize_act(x, n, xq, xd);
                float want = csm_dot(CSM_ISA_PORTABLE, fmt, row, n, x, xq, xd);
                float got = csm_dot(CSM_ISA_NEON, fmt, row, n, x, xq, xd);
                /* same products, other summation order: fp32 rounding of n terms of size <= 1 */
                double err = fabs((double)got - (double)want), tol = 1e-5 * (1.0 + fabs((double)want)) + 2e-6 * n;
                if (err > worst) worst = err;
                if (!(err <= tol)) {
                    printf("MISMATCH %s n=%d trial=%d: neon %.8g portable %.8g\n", names[fmt], n, trial, got, want);
                    bad = 1;
                }
                checked++;
            }
            free(w); free(x); free(row); free(xq); free(xd);
        }
        printf("%s: %d rows, max |neon - portable| %.3g\n", names[fmt], checked, worst);
    }
    { /* Q4_K: rows of whole super-blocks, with the activation block sums the kernels take */
        static const int ksizes[] = {256, 1024, 2048, 8192};
        double worst = 0.0;
        int checked = 0;
        for (size_t s = 0; s < sizeof(ksizes) / sizeof(ksizes[0]); s++) {
            int n = ksizes[s], nb = n / CSM_QK;
            float *w = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float)), *cs = malloc(nb * sizeof(float));
            char *row = malloc((size_t)csm_row_bytes(CSM_Q4_K, n));
            int8_t *xq = malloc(n);
            float *xd = malloc(nb * sizeof(float));
            for (int trial = 0; trial < 20; trial++) {
                for (int j = 0; j < n; j++) { w[j] = frand() * (1 + j % 7); x[j] = frand(); }
                csm_quantize_row_q4_k(w, row, n);
                csm_quantize_act(x, n, xq, xd);
                csm_q4k_block_sums(xq, xd, nb, cs);
                float want = csm_dot_q4_k(CSM_ISA_PORTABLE, row, xq, xd, cs, n / CSM_QK_K);
                float got = csm_dot_q4_k(CSM_ISA_NEON, row, xq, xd, cs, n / CSM_QK_K);
                double err = fabs((double)got - (double)want), tol = 1e-5 * (1.0 + fabs((double)want)) + 2e-6 * n;
                if (err > worst) worst = err;
                if (!(err <= tol)) {
                    printf("MISMATCH q4_k n=%d trial=%d: neon %.8g portable %.8g\n", n, trial, got, want);
                    bad = 1;
                }
                checked++;
            }
            free(w); free(x); free(cs); free(row); free(xq); free(xd);
        }
        printf("q4_k: %d rows, max |neon - portable| %.3g\n", checked, worst);
    }
    printf("detected isa %d, compiled %d\n", csm_detect_isa(), csm_compiled_isas());
    return bad || csm_detect_isa() != CSM_ISA_NEON;
}
