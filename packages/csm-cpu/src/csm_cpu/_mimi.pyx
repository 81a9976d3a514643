"""Mimi kernels for Python: packed weights (Mat) and the nogil products and passes that the Mimi
codec in csm_cpu.mimi runs, each spread over OpenMP threads (one parallel region per call;
items handed out dynamically, so a thread the OS preempts takes fewer).

Layouts: activations time-major [T, C] float32. A product reads A as rows `lda` floats apart,
each K long: a causal conv's input windows (stride s, kernel k, C channels) are the rows of its
padded input buffer with lda = s*C, K = k*C, without a copy. Twins: csm_cpu.mimi.twins.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint16_t, uint32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

from csm_cpu._cdefs cimport csm_detect_isa, csm_base_isa, csm_compiled_isas, csm_row_bytes, CSM_F32, CSM_BF16

cdef extern from "csm_mimi.h" nogil:
    enum:
        MIMI_NR
        MIMI_MR
        MIMI_ACT_NONE
        MIMI_ACT_ELU
        MIMI_ACT_GELU
    ctypedef struct mimi_mat:
        int fmt, K, N, npanels
        const char *panels
        int64_t panel_bytes
        const char *rows
        const float *bias
        const float *scale
    void mimi_gemm(int isa, const mimi_mat *B, const float *A, int64_t lda, int m0, int m1, int p0, int p1,
                   float *C, int64_t ldc, int accumulate, int act)
    void mimi_act(int isa, const float *x, float *y, int64_t n, int act)
    void mimi_layer_norm(const float *x, const float *w, const float *b, float eps, float *y, int n)
    void mimi_attend(int isa, const float *q, const float *kc, const float *vc, int64_t ld, int lo, int hi,
                     int hd, float scale, float *scores, float *out)
    float mimi_fma_probe(int isa, int64_t iters)
    int mimi_fma_probe_flops(int isa)

ACT_NONE, ACT_ELU, ACT_GELU = MIMI_ACT_NONE, MIMI_ACT_ELU, MIMI_ACT_GELU
PANEL = MIMI_NR

cdef int _isa = csm_base_isa(csm_detect_isa())  # avx512: Mimi runs its avx2 kernels
DEF _ROW_BLOCK = 48          # rows per work item of a product (8 register tiles)
DEF _GROUP_BYTES = 131072    # weight bytes per work item: the panels of one item stay in L2
DEF _ACT_BLOCK = 32768       # values per work item of an elementwise pass
DEF _GEMM_PARALLEL = 1 << 20  # multiply-adds below which a product stays on one thread: waking a
                              # sleeping thread (passive wait) costs more than it saves
DEF _ATTEND_PARALLEL = 8192   # (query, head, cached key) triples, likewise


def set_isa(int isa) -> None:
    """Kernel path for this module (csm_cpu.features picks it at import)."""
    global _isa
    if not (csm_compiled_isas() >> isa) & 1:
        raise ValueError(f"kernel path {isa} is not compiled into this build")
    _isa = csm_base_isa(isa)


def bf16_bits(w) -> object:
    """float32 array -> uint16 bf16 bits, round to nearest even (finite input)."""
    u = np.ascontiguousarray(w, np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


cdef class Mat:
    """A weight B [K, N] packed for gemm: 16-column panels [ceil(N/16), K, 16] in f32 or bf16,
    plus B.T rows for N < 8 (dot products), bias and per-column scale (LayerScale) padded to the
    panels. fmt: "f32" or "bf16"."""

    cdef mimi_mat m
    cdef readonly object panels, rows, bias, scale
    cdef readonly str fmt

    def __init__(self, w, str fmt="f32", bias=None, scale=None):
        w = np.ascontiguousarray(w, np.float32)
        if w.ndim != 2 or w.size == 0:
            raise ValueError(f"Mat takes a non-empty 2-D weight [K, N], got shape {w.shape}")
        if fmt not in ("f32", "bf16"):
            raise ValueError(f"Mat fmt must be 'f32' or 'bf16', got {fmt!r}")
        K, N = w.shape
        npan = -(-N // MIMI_NR)
        wide = np.zeros((K, npan * MIMI_NR), np.float32)
        wide[:, :N] = w
        panels = np.ascontiguousarray(wide.reshape(K, npan, MIMI_NR).transpose(1, 0, 2))  # [P, K, 16]
        rows = np.ascontiguousarray(w.T) if N < 8 else None  # [N, K]
        if fmt == "bf16":
            panels = bf16_bits(panels)
            rows = None if rows is None else bf16_bits(rows)
        self.fmt = fmt
        self.panels = panels
        self.rows = rows
        self.bias = self._padded(bias, N, npan, "bias")
        self.scale = self._padded(scale, N, npan, "scale")
        self.m.fmt = CSM_BF16 if fmt == "bf16" else CSM_F32
        self.m.K = <int>K
        self.m.N = <int>N
        self.m.npanels = <int>npan
        self.m.panel_bytes = K * MIMI_NR * (2 if fmt == "bf16" else 4)
        self.m.panels = <const char *><size_t>panels.ctypes.data
        self.m.rows = NULL if rows is None else <const char *><size_t>rows.ctypes.data
        self.m.bias = NULL if self.bias is None else <const float *><size_t>self.bias.ctypes.data
        self.m.scale = NULL if self.scale is None else <const float *><size_t>self.scale.ctypes.data

    @staticmethod
    def _padded(v, N, npan, what):
        if v is None:
            return None
        v = np.asarray(v, np.float32).reshape(-1)
        if v.shape[0] != N:
            raise ValueError(f"Mat {what} has {v.shape[0]} values, expected {N}")
        out = np.zeros(npan * MIMI_NR, np.float32)
        out[:N] = v
        return out

    @property
    def K(self) -> int:
        return self.m.K

    @property
    def N(self) -> int:
        return self.m.N

    @property
    def nbytes(self) -> int:
        return self.panels.nbytes + (0 if self.rows is None else self.rows.nbytes)


def gemm(Mat B, const float[::1] a, Py_ssize_t lda, Py_ssize_t M, float[:, ::1] out, bint accumulate=False,
         int act=MIMI_ACT_NONE, int threads=1) -> None:
    """out[:M] = act(A @ B (+ bias) (* scale) (+ out if accumulate)); row i of A is
    a[i*lda : i*lda + K] (rows may overlap)."""
    cdef int K = B.m.K, N = B.m.N
    if M < 0 or lda < 1:
        raise ValueError(f"gemm: bad M={M} / lda={lda}")
    if M == 0:
        return
    if (M - 1) * lda + K > a.shape[0]:
        raise ValueError(f"gemm: {M} rows of {K} values, {lda} apart, need {(M - 1) * lda + K} inputs, got {a.shape[0]}")
    if out.shape[0] < M or out.shape[1] != N:
        raise ValueError(f"gemm: output {tuple(out.shape)[:2]} does not hold [{M}, {N}]")
    if act != MIMI_ACT_NONE and act != MIMI_ACT_ELU and act != MIMI_ACT_GELU:
        raise ValueError(f"gemm: unknown activation {act}")
    cdef const mimi_mat *W = &B.m
    cdef const float *A = &a[0]
    cdef float *C = &out[0, 0]
    cdef int mb = <int>M if M <= _ROW_BLOCK else _ROW_BLOCK
    cdef int nmb = <int>((M + mb - 1) // mb)
    cdef int group, npg, items, i, m0, m1, p0, p1
    if W.rows != NULL:  # narrow output: dot products, row blocks only
        group = W.npanels
    else:
        group = <int>(_GROUP_BYTES // W.panel_bytes)
        if group < 1:
            group = 1
        if nmb < 4 * threads:  # few rows (streaming): split the weight itself over the threads
            i = (W.npanels * nmb + 4 * threads - 1) // (4 * threads)
            if i < group:
                group = i if i > 0 else 1
        if group > W.npanels:
            group = W.npanels
    npg = (W.npanels + group - 1) // group
    items = npg * nmb
    if threads <= 1 or items == 1 or M * K * <int64_t>N < _GEMM_PARALLEL:
        with nogil:
            mimi_gemm(_isa, W, A, lda, 0, <int>M, 0, W.npanels, C, N, accumulate, act)
        return
    for i in prange(items, nogil=True, schedule="dynamic", num_threads=threads):
        m0 = (i % nmb) * mb
        m1 = m0 + mb
        if m1 > M:
            m1 = <int>M
        p0 = (i // nmb) * group
        p1 = p0 + group
        if p1 > W.npanels:
            p1 = W.npanels
        mimi_gemm(_isa, W, A, lda, m0, m1, p0, p1, C, N, accumulate, act)


def activation(const float[::1] x, float[::1] out, int act, int threads=1) -> None:
    """out = ELU(x) (act=ACT_ELU) or GELU(x) (ACT_GELU), elementwise; out may be x."""
    cdef int64_t n = x.shape[0], i, lo, hi
    cdef int nblk = <int>((n + _ACT_BLOCK - 1) // _ACT_BLOCK), b
    if out.shape[0] != n:
        raise ValueError(f"activation: output has {out.shape[0]} values, input {n}")
    if act != MIMI_ACT_ELU and act != MIMI_ACT_GELU:
        raise ValueError(f"activation: unknown activation {act}")
    if n == 0:
        return
    if threads <= 1 or nblk == 1:
        with nogil:
            mimi_act(_isa, &x[0], &out[0], n, act)
        return
    for b in prange(nblk, nogil=True, schedule="dynamic", num_threads=threads):
        lo = <int64_t>b * _ACT_BLOCK
        hi = lo + _ACT_BLOCK
        if hi > n:
            hi = n
        mimi_act(_isa, &x[lo], &out[lo], hi - lo, act)


def layer_norm(const float[:, ::1] x, const float[::1] w, const float[::1] b, float eps, float[:, ::1] out) -> None:
    """out[i] = LayerNorm(x[i]) * w + b over the last axis."""
    cdef Py_ssize_t i, n = x.shape[1]
    if w.shape[0] != n or b.shape[0] != n or out.shape[0] != x.shape[0] or out.shape[1] != n:
        raise ValueError("layer_norm: shapes differ")
    with nogil:
        for i in range(x.shape[0]):
            mimi_layer_norm(&x[i, 0], &w[0], &b[0], eps, &out[i, 0], <int>n)


def rope(float[:, ::1] x, int cols, const float[:, ::1] cos, const float[:, ::1] sin) -> None:
    """In place, interleaved RoPE on x[i, :cols] (heads of hd = 2*cos.shape[1]): pairs (2m, 2m+1)
    of every head rotate by the angle of row i (cos/sin [rows, hd/2])."""
    cdef Py_ssize_t i, h, j, m, half = cos.shape[1], nh
    cdef float a, c
    if cos.shape[0] < x.shape[0] or sin.shape[0] < x.shape[0] or sin.shape[1] != half or cols % (2 * half) or cols > x.shape[1]:
        raise ValueError("rope: tables do not fit the input")
    nh = cols // (2 * half)
    with nogil:
        for i in range(x.shape[0]):
            for h in range(nh):
                j = h * 2 * half
                for m in range(half):
                    a = x[i, j + 2 * m]
                    c = x[i, j + 2 * m + 1]
                    x[i, j + 2 * m] = a * cos[i, m] - c * sin[i, m]
                    x[i, j + 2 * m + 1] = c * cos[i, m] + a * sin[i, m]


def attention(const float[:, ::1] q, const float[:, ::1] keys, const float[:, ::1] values, int first, int heads,
              int context, float scale, float[:, ::1] out, int threads=1) -> None:
    """Windowed causal attention. q [n, heads*hd] (row stride q.shape[1] >= heads*hd); keys/values
    [>= first+n, heads*hd]; query i sits at key index first + i and sees keys j with
    0 <= first + i - j < context. out [n, heads*hd]."""
    cdef int n = <int>out.shape[0], d = <int>out.shape[1], hd, item, i, h, lo, hi
    cdef int64_t ld = keys.shape[1]
    if heads < 1 or d % heads or q.shape[0] < n or q.shape[1] < d or keys.shape[1] != d or values.shape[1] != d:
        raise ValueError("attention: shapes do not fit")
    if keys.shape[0] < first + n or values.shape[0] < first + n or context < 1:
        raise ValueError("attention: the cache does not hold the queries' keys")
    if n == 0:
        return
    hd = d // heads
    cdef int nth = threads if threads > 1 and n * heads * (first + n) >= _ATTEND_PARALLEL else 1
    cdef float *scores = <float *>malloc(<size_t>nth * context * sizeof(float))
    if scores == NULL:
        raise MemoryError()
    try:
        for item in prange(n * heads, nogil=True, schedule="static", num_threads=nth):
            i = item // heads
            h = item % heads
            hi = first + i + 1
            lo = hi - context
            if lo < 0:
                lo = 0
            mimi_attend(_isa, &q[i, h * hd], &keys[0, h * hd], &values[0, h * hd], ld, lo, hi, hd, scale,
                        scores + <int64_t>threadid() * context, &out[i, h * hd])
    finally:
        free(scores)


def codebook_sum(const float[:, :, ::1] books, const int64_t[:, ::1] codes, float[:, ::1] out,
                 bint accumulate=False) -> None:
    """out[t] (+)= sum over i of books[i, codes[i, t]] (in order i = 0, 1, ...)."""
    cdef Py_ssize_t i, t, c, nq = codes.shape[0], T = codes.shape[1], cd = books.shape[2]
    cdef int64_t code
    if nq > books.shape[0] or out.shape[0] != T or out.shape[1] != cd:
        raise ValueError("codebook_sum: shapes do not fit")
    for i in range(nq):
        for t in range(T):
            if not 0 <= codes[i, t] < books.shape[1]:
                raise ValueError(f"code {codes[i, t]} at codebook {i}, frame {t} is out of range [0, {books.shape[1]})")
    with nogil:
        if T and not accumulate:
            memset(&out[0, 0], 0, T * cd * sizeof(float))
        for t in range(T):
            for i in range(nq):
                code = codes[i, t]
                for c in range(cd):
                    out[t, c] += books[i, code, c]


def rvq_pick(const float[:, ::1] scores, float[:, ::1] r, const float[:, ::1] book, int64_t[::1] codes) -> None:
    """Per row t: codes[t] = first argmax of scores[t] (scores = r.E - |E|^2/2), then r[t] -= E[codes[t]]."""
    cdef Py_ssize_t t, j, c, best, T = scores.shape[0], bins = scores.shape[1], cd = r.shape[1]
    if r.shape[0] != T or codes.shape[0] != T or book.shape[0] != bins or book.shape[1] != cd:
        raise ValueError("rvq_pick: shapes do not fit")
    with nogil:
        for t in range(T):
            best = 0
            for j in range(1, bins):
                if scores[t, j] > scores[t, best]:
                    best = j
            codes[t] = best
            for c in range(cd):
                r[t, c] -= book[best, c]


def fma_peak(int threads=1, int rounds=100) -> float:
    """This machine's f32 FMA throughput in FLOP/s (a multiply-add counts 2) on `threads` threads:
    independent FMA chains in registers, no memory traffic (the compute ceiling of every product).
    Best of `rounds` short rounds (about 2 ms each): on a shared machine a short round often runs
    without being preempted, so the best one measures the cores, not the load."""
    import time
    if threads < 1 or rounds < 1:
        raise ValueError(f"fma_peak: threads and rounds must be >= 1, got {threads}, {rounds}")
    cdef int64_t iters = 1 << 12
    cdef int i
    cdef float sink = 0.0
    cdef double t, best = 0.0
    while True:  # calibrate: one round of `iters` on one thread takes about 2 ms
        t = time.perf_counter()
        with nogil:
            sink += mimi_fma_probe(_isa, iters)
        t = time.perf_counter() - t
        if t >= 0.002 or iters > (1 << 40):
            break
        iters *= 2
    for _ in range(rounds):
        t = time.perf_counter()
        for i in prange(threads, nogil=True, schedule="static", num_threads=threads):
            sink += mimi_fma_probe(_isa, iters)
        t = time.perf_counter() - t
        if t > 0:
            best = max(best, threads * iters * mimi_fma_probe_flops(_isa) / t)
    if sink != sink:  # never: keeps the probe's result alive
        raise RuntimeError("fma_peak: probe produced NaN")
    return best
