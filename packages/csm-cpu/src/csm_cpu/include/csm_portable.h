/* Portable C kernels: the reference path on every CPU and the tail of the SIMD paths.
 * dot products of one weight row with one activation vector. */
#ifndef CSM_PORTABLE_H
#define CSM_PORTABLE_H

#include "csm_common.h"

static inline float csm_dot_f32_portable(const float *w, const float *x, int n) {
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += w[i] * x[i];
        a1 += w[i + 1] * x[i + 1];
        a2 += w[i + 2] * x[i + 2];
        a3 += w[i + 3] * x[i + 3];
    }
    for (; i < n; i++) a0 += w[i] * x[i];
    return (a0 + a1) + (a2 + a3);
}

static inline float csm_dot_bf16_portable(const uint16_t *w, const float *x, int n) {
    float a0 = 0.f, a1 = 0.f;
    int i = 0;
    for (; i + 2 <= n; i += 2) {
        a0 += csm_bf16_to_fp32(w[i]) * x[i];
        a1 += csm_bf16_to_fp32(w[i + 1]) * x[i + 1];
    }
    for (; i < n; i++) a0 += csm_bf16_to_fp32(w[i]) * x[i];
    return a0 + a1;
}

/* Q8_0 row (nb blocks) with activations quantized to int8 xq and per-block scales xd. */
static inline float csm_dot_q8_0_portable(const csm_block_q8_0 *w, const int8_t *xq, const float *xd, int nb) {
    float acc = 0.f;
    for (int b = 0; b < nb; b++) {
        int32_t s = 0;
        const int8_t *q = xq + b * CSM_QK;
        for (int j = 0; j < CSM_QK; j++) s += (int32_t)w[b].qs[j] * (int32_t)q[j];
        acc += csm_fp16_to_fp32(w[b].d) * xd[b] * (float)s;
    }
    return acc;
}

static inline float csm_dot_q4_0_portable(const csm_block_q4_0 *w, const int8_t *xq, const float *xd, int nb) {
    float acc = 0.f;
    for (int b = 0; b < nb; b++) {
        int32_t s = 0;
        const int8_t *q = xq + b * CSM_QK;
        for (int j = 0; j < CSM_QK / 2; j++) {
            s += ((int32_t)(w[b].qs[j] & 0x0f) - 8) * (int32_t)q[j];
            s += ((int32_t)(w[b].qs[j] >> 4) - 8) * (int32_t)q[j + CSM_QK / 2];
        }
        acc += csm_fp16_to_fp32(w[b].d) * xd[b] * (float)s;
    }
    return acc;
}

/* Q4_K row (nsb super-blocks); cs[b] = xd[b] * sum(xq of block b), the activation block sums
 * the mins multiply (computed once per product by csm_q4k_block_sums). */
static inline float csm_dot_q4_k_portable(const csm_block_q4_k *w, const int8_t *xq, const float *xd,
                                          const float *cs, int nsb) {
    float acc = 0.f, accm = 0.f;
    for (int s = 0; s < nsb; s++) {
        float d = csm_fp16_to_fp32(w[s].d), dmin = csm_fp16_to_fp32(w[s].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m, b = s * 8 + j;
            csm_q4k_scale_min(w[s].scales, j, &sc, &m);
            const uint8_t *q = w[s].qs + 32 * (j / 2);
            const int8_t *x = xq + b * CSM_QK;
            int32_t t = 0;
            for (int l = 0; l < 32; l++) t += (int32_t)((j & 1) ? q[l] >> 4 : q[l] & 0xf) * (int32_t)x[l];
            acc += d * (float)sc * xd[b] * (float)t;
            accm += dmin * (float)m * cs[b];
        }
    }
    return acc - accm;
}

#endif
