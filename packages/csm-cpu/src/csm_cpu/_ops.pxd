# Small nogil ops shared by the Cython modules (inline, so each module gets its own copy):
# RMSNorm, interleaved RoPE, SwiGLU, attention over a KV cache, softmax, top-k sampling.
# Numpy twins: csm_cpu.twins; tests: tests/cpu/test_ops.py.
from libc.math cimport sqrt, exp, expf, log, INFINITY
from libc.stdint cimport uint64_t, int64_t, uint8_t

from csm_cpu._cdefs cimport csm_dot, CSM_F32


cdef inline void rmsnorm(const float *x, const float *scale, float *out, int n, float eps) noexcept nogil:
    """out = x * rsqrt(mean(x^2) + eps) * scale (sum in double)."""
    cdef double ss = 0.0
    cdef int i
    for i in range(n):
        ss += <double>x[i] * x[i]
    cdef float r = <float>(1.0 / sqrt(ss / n + eps))
    for i in range(n):
        out[i] = (x[i] * r) * scale[i]


cdef inline void rope_rows(float *v, int r0, int r1, int hd, const float *cos, const float *sin) noexcept nogil:
    """Interleaved RoPE on rows [r0, r1) of one vector of heads (r0 even): pair (r, r+1) rotates by
    angle (r % hd) / 2 of one position (cos/sin [hd/2]). The engine runs it on the row chunks of
    its Q/K products."""
    cdef int r, j
    cdef float a, b
    for r in range(r0, r1, 2):
        j = (r % hd) // 2
        a = v[r]
        b = v[r + 1]
        v[r] = a * cos[j] - b * sin[j]
        v[r + 1] = b * cos[j] + a * sin[j]


cdef inline void rope_interleaved(float *v, int nheads, int hd, const float *cos, const float *sin) noexcept nogil:
    """Rotate pairs (2i, 2i+1) of every head by the angles of one position (cos/sin [hd/2])."""
    rope_rows(v, 0, nheads * hd, hd, cos, sin)


cdef inline void swiglu(float *g, const float *u, int n) noexcept nogil:
    """g = silu(g) * u in place (expf: the float exponential the engine has always used)."""
    cdef int i
    for i in range(n):
        g[i] = g[i] / (1.0 + expf(-g[i])) * u[i]


cdef inline void attend(int isa, const float *q, const float *kc, const float *vc, const uint8_t *valid,
                        int npos, int hd, int64_t stride, float scale, float *scores,
                        float *out) noexcept nogil:
    """One query head over cached positions 0..npos-1 (rows stride floats apart), attending only
    where valid[t] != 0; out [hd] = softmax(q.K^T * scale) V; zeros if nothing is valid."""
    cdef int t, i
    cdef float m = -INFINITY, s, w
    cdef double total = 0.0
    cdef const float *vr
    for t in range(npos):
        if valid[t]:
            s = csm_dot(isa, CSM_F32, <const char *>(kc + t * stride), hd, q, NULL, NULL) * scale
            scores[t] = s
            if s > m:
                m = s
    for i in range(hd):
        out[i] = 0.0
    if m == -INFINITY:
        return
    for t in range(npos):
        if valid[t]:
            w = exp(scores[t] - m)
            total += w
            vr = vc + t * stride
            for i in range(hd):
                out[i] += w * vr[i]
    w = <float>(1.0 / total)
    for i in range(hd):
        out[i] *= w


cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline float exp1(uint64_t *state) noexcept nogil:
    """One Exp(1) draw, always > 0."""
    cdef double u = ((splitmix64(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0)
    return <float>(-log(u))


cdef inline float kth_largest(float *a, int n, int k) noexcept nogil:
    """k-th largest (1-based) of a[0:n] by quickselect; reorders a."""
    cdef int lo = 0, hi = n - 1, i, j, want = k - 1
    cdef float pivot, tmp
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if want <= j:
            hi = j
        elif want >= i:
            lo = i
        else:
            return a[want]
    return a[want]


cdef inline int sample_logits(const float *logits, int limit, float temperature, int topk,
                              uint64_t *rng, const float *q_given, float *scratch) noexcept nogil:
    """Pick a code from logits[0:limit] (spec/csm.md sample_topk; twin: csm_core.sampling.sample).

    temperature 0: first argmax. Otherwise logits/T, drop values strictly below the k-th
    largest, softmax, argmax(p/q) with q ~ Exp(1) (from rng, drawn for the kept codes only, or
    q_given for tests).
    scratch holds limit floats.
    """
    cdef int i, best = 0
    cdef float m, thr, s, r, rbest
    cdef double total = 0.0
    if temperature == 0:
        for i in range(1, limit):
            if logits[i] > logits[best]:
                best = i
        return best
    for i in range(limit):
        scratch[i] = logits[i] / temperature
    thr = -INFINITY
    if topk < limit:
        thr = kth_largest(scratch, limit, topk)
    m = -INFINITY
    for i in range(limit):
        s = logits[i] / temperature
        if s >= thr and s > m:
            m = s
    for i in range(limit):
        s = logits[i] / temperature
        scratch[i] = <float>exp(s - m) if s >= thr else 0.0
        total += scratch[i]
    rbest = -1.0
    for i in range(limit):
        if scratch[i] > 0:  # a zero-probability code cannot win: no draw for it (~50 logs, not ~2048)
            s = exp1(rng) if q_given == NULL else q_given[i]
            r = (scratch[i] / <float>total) / s
            if r > rbest:
                rbest = r
                best = i
    return best
