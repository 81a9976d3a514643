/* NEON kernels (arm64, where NEON is baseline). */
#ifndef CSM_NEON_H
#define CSM_NEON_H

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define CSM_HAVE_NEON 1
#include <arm_neon.h>
#include "csm_portable.h"

static inline float csm_dot_f32_neon(const float *w, const float *x, int n) {
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = vdupq_n_f32(0.f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static inline float csm_dot_bf16_neon(const uint16_t *w, const float *x, int n) {
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = vdupq_n_f32(0.f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t v = vld1q_u16(w + i);
        float32x4_t w0 = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
        float32x4_t w1 = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(v), 16));
        a0 = vfmaq_f32(a0, w0, vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, w1, vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += csm_bf16_to_fp32(w[i]) * x[i];
    return s;
}

/* 16 int8 x int8 products summed into 4 int32 lanes (baseline NEON, no dotprod extension). */
static inline int32x4_t csm_dot16_i8_neon(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b));
    return vpadalq_s16(acc, p);
}

static inline float csm_dot_q8_0_neon(const csm_block_q8_0 *w, const int8_t *xq, const float *xd, int nb) {
    float acc = 0.f;
    for (int b = 0; b < nb; b++) {
        const int8_t *q = xq + b * CSM_QK;
        int32x4_t s = vdupq_n_s32(0);
        s = csm_dot16_i8_neon(s, vld1q_s8(w[b].qs), vld1q_s8(q));
        s = csm_dot16_i8_neon(s, vld1q_s8(w[b].qs + 16), vld1q_s8(q + 16));
        acc += csm_fp16_to_fp32(w[b].d) * xd[b] * (float)vaddvq_s32(s);
    }
    return acc;
}

static inline float csm_dot_q4_0_neon(const csm_block_q4_0 *w, const int8_t *xq, const float *xd, int nb) {
    float acc = 0.f;
    const int8x16_t eight = vdupq_n_s8(8);
    for (int b = 0; b < nb; b++) {
        const int8_t *q = xq + b * CSM_QK;
        uint8x16_t raw = vld1q_u8(w[b].qs);
        int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f))), eight);
        int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
        int32x4_t s = vdupq_n_s32(0);
        s = csm_dot16_i8_neon(s, lo, vld1q_s8(q));
        s = csm_dot16_i8_neon(s, hi, vld1q_s8(q + 16));
        acc += csm_fp16_to_fp32(w[b].d) * xd[b] * (float)vaddvq_s32(s);
    }
    return acc;
}

/* Q4_K row: per 32-value sub-block an exact int32 dot of the nibbles (0..15, as int8) with x,
 * then the portable kernel's float operations in its order (so the two agree bit for bit). */
static inline float csm_dot_q4_k_neon(const csm_block_q4_k *w, const int8_t *xq, const float *xd, const float *cs,
                                      int nsb) {
    float acc = 0.f, accm = 0.f;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    for (int s = 0; s < nsb; s++) {
        float d = csm_fp16_to_fp32(w[s].d), dmin = csm_fp16_to_fp32(w[s].dmin);
        uint64_t sc8, m8;
        csm_q4k_unpack8(w[s].scales, &sc8, &m8);
        for (int j = 0; j < 8; j++) {
            int b = s * 8 + j, sc = (int)((sc8 >> (8 * j)) & 0xff), m = (int)((m8 >> (8 * j)) & 0xff);
            const uint8_t *q = w[s].qs + 32 * (j / 2);
            const int8_t *x = xq + b * CSM_QK;
            uint8x16_t r0 = vld1q_u8(q), r1 = vld1q_u8(q + 16);
            int8x16_t n0 = vreinterpretq_s8_u8((j & 1) ? vshrq_n_u8(r0, 4) : vandq_u8(r0, m4));
            int8x16_t n1 = vreinterpretq_s8_u8((j & 1) ? vshrq_n_u8(r1, 4) : vandq_u8(r1, m4));
            int32x4_t t = csm_dot16_i8_neon(vdupq_n_s32(0), n0, vld1q_s8(x));
            t = csm_dot16_i8_neon(t, n1, vld1q_s8(x + 16));
            acc += d * (float)sc * xd[b] * (float)vaddvq_s32(t);
            accm += dmin * (float)m * cs[b];
        }
    }
    return acc - accm;
}

#else
#define CSM_HAVE_NEON 0
#endif
#endif
