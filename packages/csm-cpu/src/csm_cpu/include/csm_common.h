/* Shared definitions for the csm-cpu kernels: GGML block layouts, the weight formats, scalar
 * fp16/bf16 conversions. Portable C99; no intrinsics here. */
#ifndef CSM_COMMON_H
#define CSM_COMMON_H

#include <stdint.h>
#include <string.h>
#include <math.h>

/* Kernel paths chosen at import. */
enum { CSM_ISA_PORTABLE = 0, CSM_ISA_AVX2 = 1, CSM_ISA_NEON = 2, CSM_ISA_AVX512 = 3 };

#define CSM_QK 32 /* elements per GGML block (Q8_0, Q4_0) and per Q4_K sub-block */
#define CSM_QK_K 256 /* elements per Q4_K super-block */

/* GGML block layouts, byte-compatible with GGUF tensors.
 * Q8_0: 34 bytes = fp16 scale d, 32 int8 q; x = d*q.
 * Q4_0: 18 bytes = fp16 scale d, 16 bytes; byte j holds element j (low nibble) and element
 *       j+16 (high nibble); x = d*(q-8). */
typedef struct { uint16_t d; int8_t qs[CSM_QK]; } csm_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[CSM_QK / 2]; } csm_block_q4_0;
/* Q4_K: 144 bytes per 256 values = fp16 d, fp16 dmin, 12 bytes of 6-bit scales sc[8] and mins
 *       m[8] (one per 32 values), 128 bytes of nibbles; x = d*sc[j]*q - dmin*m[j] (q 0..15).
 *       Values 64g..64g+31 are the low nibbles of qs[32g..32g+31], 64g+32..64g+63 the high. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[CSM_QK_K / 2]; } csm_block_q4_k;

#include "csm_formats.h" /* the weight formats: enum, layouts, row functions */

/* The 6-bit scale and min of sub-block j (0..7), GGML's get_scale_min_k4 packing. */
static inline void csm_q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The 8 six-bit scales and mins of a Q4_K super-block (csm_q4k_scale_min's packing), as bytes
 * sc[0..7] and m[0..7] of two 64-bit words, with word arithmetic instead of per-byte branches. */
static inline void csm_q4k_unpack8(const uint8_t *s, uint64_t *sc, uint64_t *m) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    uint32_t sc_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
    uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
    *sc = (uint64_t)sc_lo | ((uint64_t)sc_hi << 32);
    *m = (uint64_t)m_lo | ((uint64_t)m_hi << 32);
}

static inline float csm_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        float f = (float)mant * (1.0f / 16777216.0f); /* subnormal: mant * 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, like numpy's float32 -> float16 cast. */
static inline uint16_t csm_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half, exact scaling then rint */
        float v;
        memcpy(&v, &ax, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(v * 16777216.0f));
    }
    uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static inline float csm_bf16_to_fp32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, like ml_dtypes.bfloat16. */
static inline uint16_t csm_fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

#endif
