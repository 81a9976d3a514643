"""Kernel entry points for Python and tests: thin memoryview wrappers over the nogil cores.

The model itself runs in _engine; these wrappers exist so each kernel can be checked against
its numpy twin (csm_cpu.twins) and used for quantizing weights at load time.

Every wrapper checks what the C code trusts before it enters nogil code: dtypes, C-contiguity
and dimensions come from the typed memoryviews (a wrong array is a ValueError), shapes, formats,
block multiples, thread counts and index ranges are checked here (ValueError naming them), so
a wrong array from Python is an error, never a read or write outside a buffer. Non-finite
values are data, not layout: they propagate through the arithmetic (NaN in, NaN out) and never
turn into an index (`sample` returns a code in [0, limit) whatever the logits hold); weights
are checked finite where they are loaded (csm_cpu.quant.quantize).
"""

from cython.parallel cimport prange
from libc.stdint cimport int8_t, uint8_t, uint16_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free

from csm_cpu._cdefs cimport *

cdef int _isa = csm_detect_isa()

ISA_NAMES = {CSM_ISA_PORTABLE: "portable", CSM_ISA_AVX2: "avx2", CSM_ISA_NEON: "neon", CSM_ISA_AVX512: "avx512"}
FORMATS = {csm_formats[i].name.decode(): i for i in range(CSM_NFORMATS)}  # include/csm_formats.h
BLOCK = CSM_QK
SUPER_BLOCK = CSM_QK_K
Q4K_MAX_COLS = CSM_Q4K_MAX_COLS


def detected_isa() -> int:
    """Best path this CPU supports (see ISA_NAMES)."""
    return csm_detect_isa()


def compiled_isas() -> int:
    """Bit mask of the paths compiled into this build."""
    return csm_compiled_isas()


def set_isa(int isa) -> None:
    """Select the kernel path for the wrappers (the engine takes its own copy at creation)."""
    global _isa
    if not (csm_compiled_isas() >> isa) & 1:
        raise ValueError(f"kernel path {isa} is not compiled into this build")
    _isa = isa


def current_isa() -> int:
    return _isa


def openmp_enabled() -> bool:
    return bool(csm_openmp_enabled())


def omp_max_threads() -> int:
    return csm_omp_max_threads()


def row_bytes(int fmt, int cols) -> int:
    return csm_row_bytes(fmt, cols)


def format_table() -> dict:
    """The C format table: {name: (code, block, block_bytes, int8_activations, repack_unit)}."""
    return {csm_formats[i].name.decode(): (i, csm_formats[i].block, csm_formats[i].block_bytes,
                                           csm_formats[i].int8_act, csm_formats[i].repack_unit)
            for i in range(CSM_NFORMATS)}  # fmt: skip


cdef _check_rows(str where, int fmt, Py_ssize_t cols):
    """fmt is a known format and cols a positive multiple of its block (Q4_K: at most Q4K_MAX_COLS)."""
    if not csm_format_known(fmt):
        raise ValueError(f"{where}: unknown format code {fmt}; known: {FORMATS}")
    cdef int block = csm_formats[fmt].block
    if cols < 1 or cols % block or cols > 0x7FFFFFFF:
        raise ValueError(f"{where}: rows of {cols} values; format {fmt} needs a positive multiple of {block}")
    if fmt == CSM_Q4_K and cols > CSM_Q4K_MAX_COLS:
        raise ValueError(f"{where}: q4_k rows of {cols} values exceed {CSM_Q4K_MAX_COLS}")


cdef _check_threads(str where, int threads):
    if threads < 1:
        raise ValueError(f"{where}: threads must be >= 1, got {threads}")


def quantize_rows(const float[:, ::1] w, int fmt, uint8_t[:, ::1] out, int threads=1) -> None:
    """Quantize fp32 rows w [R, C] into out [R, row_bytes(fmt, C)] (GGML layout for blocks)."""
    cdef Py_ssize_t r, R = w.shape[0]
    _check_rows("quantize_rows", fmt, w.shape[1])
    _check_threads("quantize_rows", threads)
    cdef int C = <int>w.shape[1]
    if out.shape[0] != R or out.shape[1] != csm_row_bytes(fmt, C):
        raise ValueError(f"output buffer has shape {tuple(out.shape)[:2]}, expected ({R}, {csm_row_bytes(fmt, C)})")
    if R == 0:
        return
    for r in prange(R, nogil=True, schedule="static", num_threads=threads):
        csm_formats[fmt].quantize_row(&w[r, 0], &out[r, 0], C)


def dequantize_rows(const uint8_t[:, ::1] data, int fmt, int cols, float[:, ::1] out) -> None:
    """Expand stored rows data [R, row_bytes] to fp32 out [R, cols]."""
    cdef Py_ssize_t r
    _check_rows("dequantize_rows", fmt, cols)
    if out.shape[0] != data.shape[0] or out.shape[1] != cols or data.shape[1] != csm_row_bytes(fmt, cols):
        raise ValueError("dequantize_rows: buffer shapes do not match the format")
    with nogil:
        for r in range(data.shape[0]):
            csm_dequant_row(fmt, <const char *>&data[r, 0], &out[r, 0], cols)


def repack4(const uint8_t[:, ::1] data, int fmt, uint8_t[:, ::1] out) -> None:
    """Row-interleaved copy of a Q8_0/Q4_0/bf16 matrix for the AVX2 4-row kernels."""
    if not csm_format_known(fmt) or csm_formats[fmt].repack_unit == 0:
        raise ValueError(f"repack4: format {fmt} is not interleaved; known: {FORMATS}")
    cdef Py_ssize_t unit = csm_formats[fmt].repack_unit
    if data.shape[1] % unit or data.shape[0] > 0x7FFFFFFF:
        raise ValueError(f"repack4: rows of {data.shape[1]} bytes are not whole blocks of {unit} bytes")
    if out.shape[0] != data.shape[0] or out.shape[1] != data.shape[1]:
        raise ValueError("repack4: output shape differs")
    if data.shape[0] == 0:
        return
    with nogil:
        csm_repack4(fmt, <const char *>&data[0, 0], <char *>&out[0, 0], <int>data.shape[0], data.shape[1])


def quantize_activations(const float[:, ::1] x, int8_t[:, ::1] q, float[:, ::1] d) -> None:
    """x [N, C] -> int8 q [N, C] and per-32 scales d [N, C/32] (the int8 paths' activations)."""
    cdef Py_ssize_t n
    _check_rows("quantize_activations", CSM_Q8_0, x.shape[1])
    if (q.shape[0] != x.shape[0] or q.shape[1] != x.shape[1]
            or d.shape[0] != x.shape[0] or d.shape[1] != x.shape[1] // CSM_QK):
        raise ValueError(f"quantize_activations: q {tuple(q.shape)[:2]} / d {tuple(d.shape)[:2]} "
                         f"do not fit x {tuple(x.shape)[:2]}")
    with nogil:
        for n in range(x.shape[0]):
            csm_quantize_act(&x[n, 0], <int>x.shape[1], &q[n, 0], &d[n, 0])


def matmat(const uint8_t[:, ::1] data, int fmt, int cols, const float[:, ::1] x, float[:, ::1] y,
           int threads=1, int chunk=16, int interleaved=0, int legacy=0) -> None:
    """y [N, R] = x [N, C] @ W.T for W [R, C] stored in format fmt (rows of data).

    Block formats quantize each activation row to int8 first (one scale per 32), as the model does.
    """
    cdef csm_mat W
    cdef Py_ssize_t N = x.shape[0], R = data.shape[0]
    cdef int nchunks = <int>((R + chunk - 1) // chunk), c, r0, r1
    cdef int8_t *xq = NULL
    cdef float *xd = NULL
    cdef int n
    _check_rows("matmat", fmt, cols)
    _check_threads("matmat", threads)
    if chunk < 1:
        raise ValueError(f"matmat: chunk must be >= 1, got {chunk}")
    if interleaved not in (0, 1) or (interleaved and fmt not in (CSM_Q8_0, CSM_Q4_0, CSM_BF16)):
        raise ValueError(f"matmat: interleaved={interleaved} for format {fmt} (only Q8_0, Q4_0, bf16 are repacked)")
    if R > 0x7FFFFFFF or N > 0x7FFFFFFF:
        raise ValueError(f"matmat: {R} rows x {N} vectors exceed the kernels' int range")
    if x.shape[1] != cols or y.shape[0] != N or y.shape[1] != R:
        raise ValueError(f"matmat: x {tuple(x.shape)[:2]} / y {tuple(y.shape)[:2]} do not fit W [{R}, {cols}]")
    if data.shape[1] != csm_row_bytes(fmt, cols):
        raise ValueError(f"matmat: rows hold {data.shape[1]} bytes, format {fmt} needs {csm_row_bytes(fmt, cols)}")
    if N == 0 or R == 0:
        return
    W.fmt, W.rows, W.cols, W.interleaved, W.legacy = fmt, <int>R, cols, interleaved, 1 if legacy else 0
    W.data = <const char *>&data[0, 0]
    W.row_bytes = data.shape[1]
    if fmt == CSM_Q4_K and cols > CSM_Q4K_MAX_COLS:
        raise ValueError(f"matmat: q4_k rows of {cols} values exceed {CSM_Q4K_MAX_COLS}")
    if fmt == CSM_Q8_0 or fmt == CSM_Q4_0 or fmt == CSM_Q4_K:
        xq = <int8_t *>malloc(N * cols)
        xd = <float *>malloc(N * (cols // CSM_QK) * sizeof(float))
        if xq == NULL or xd == NULL:
            free(xq)
            free(xd)
            raise MemoryError()
        for n in range(N):
            csm_quantize_act(&x[n, 0], cols, xq + n * cols, xd + n * (cols // CSM_QK))
    try:
        for c in prange(nchunks, nogil=True, schedule="dynamic", num_threads=threads):
            r0 = c * chunk
            r1 = r0 + chunk
            if r1 > R:
                r1 = <int>R
            csm_mat_rows(_isa, &W, r0, r1, &x[0, 0], xq, xd, <int>N, &y[0, 0], R, 0)
    finally:
        free(xq)
        free(xd)


# ---- small ops (twins in csm_cpu.twins) ----
from csm_cpu._ops cimport rmsnorm as _rmsnorm, rope_interleaved, rope_rows, swiglu as _swiglu, attend, sample_logits


def rmsnorm(const float[:, ::1] x, const float[::1] scale, float eps) -> object:
    import numpy as np
    out = np.empty((x.shape[0], x.shape[1]), np.float32)
    cdef float[:, ::1] o = out
    cdef Py_ssize_t i
    if scale.shape[0] != x.shape[1] or x.shape[1] < 1:
        raise ValueError(f"rmsnorm: scale length {scale.shape[0]} differs from the row length {x.shape[1]} "
                         "(or rows are empty)")
    with nogil:
        for i in range(x.shape[0]):
            _rmsnorm(&x[i, 0], &scale[0], &o[i, 0], <int>x.shape[1], eps)
    return out


def rope(float[:, ::1] v, int head_dim, const float[:, ::1] cos, const float[:, ::1] sin,
         const int[::1] positions, int chunk=0) -> None:
    """In place: v [N, heads*head_dim], vector n rotated by the angles of positions[n]. chunk > 0:
    in row ranges of that many values (even), as the engine does on its Q/K product chunks."""
    cdef Py_ssize_t n
    cdef int p, r0, W = <int>v.shape[1]
    if chunk < 0 or chunk % 2:
        raise ValueError(f"rope: chunk must be an even number of values >= 0, got {chunk}")
    if head_dim < 2 or head_dim % 2 or v.shape[1] % head_dim:
        raise ValueError(f"rope: rows of {v.shape[1]} values are not whole heads of an even head_dim {head_dim}")
    if cos.shape[0] != sin.shape[0] or cos.shape[1] != sin.shape[1] or cos.shape[1] < head_dim // 2:
        raise ValueError(f"rope: cos {tuple(cos.shape)[:2]} / sin {tuple(sin.shape)[:2]} "
                         f"need [positions, >= {head_dim // 2}]")
    if positions.shape[0] != v.shape[0]:
        raise ValueError(f"rope: {positions.shape[0]} positions for {v.shape[0]} vectors")
    for n in range(v.shape[0]):
        p = positions[n]
        if not 0 <= p < cos.shape[0]:
            raise ValueError(f"position {p} outside the rope table of {cos.shape[0]}")
        if chunk == 0:
            rope_interleaved(&v[n, 0], W // head_dim, head_dim, &cos[p, 0], &sin[p, 0])
        else:
            for r0 in range(0, W, chunk):
                rope_rows(&v[n, 0], r0, min(r0 + chunk, W), head_dim, &cos[p, 0], &sin[p, 0])


def swiglu(float[:, ::1] g, const float[:, ::1] u) -> None:
    cdef Py_ssize_t n
    if g.shape[0] != u.shape[0] or g.shape[1] != u.shape[1]:
        raise ValueError(f"swiglu: gate {tuple(g.shape)[:2]} and up {tuple(u.shape)[:2]} differ")
    for n in range(g.shape[0]):
        _swiglu(&g[n, 0], &u[n, 0], <int>g.shape[1])


def attention(const float[::1] q, const float[:, ::1] k, const float[:, ::1] v,
              const uint8_t[::1] valid, float scale) -> object:
    """One head: q [hd], k/v [T, hd], valid [T] -> out [hd]."""
    import numpy as np
    if q.shape[0] < 1 or k.shape[1] != q.shape[0] or v.shape[0] != k.shape[0] or v.shape[1] != k.shape[1] \
            or valid.shape[0] != k.shape[0] or k.shape[0] < 1:
        raise ValueError(f"attention: q [{q.shape[0]}], k {tuple(k.shape)[:2]}, v {tuple(v.shape)[:2]}, "
                         f"valid [{valid.shape[0]}] do not fit (q [hd], k/v [T>=1, hd], valid [T])")
    out = np.empty(q.shape[0], np.float32)
    scores = np.empty(max(1, k.shape[0]), np.float32)
    cdef float[::1] o = out, sc = scores
    attend(_isa, &q[0], &k[0, 0], &v[0, 0], &valid[0], <int>k.shape[0], <int>q.shape[0],
           k.shape[1], scale, &sc[0], &o[0])
    return out


def sample(const float[::1] logits, int limit, float temperature, int topk, const float[::1] q) -> int:
    """One draw with the given Exp(1) variates q [limit] (tests match csm_core.sampling)."""
    import numpy as np
    if not 1 <= limit <= logits.shape[0] or q.shape[0] < limit:
        raise ValueError(f"sample: limit {limit} must be in [1, {logits.shape[0]}] "
                         f"with q of >= limit values (got {q.shape[0]})")
    if topk < 1 or not 0 <= temperature < float("inf"):
        raise ValueError(f"sample: topk {topk} must be >= 1 and temperature {temperature} finite and >= 0")
    scratch = np.empty(logits.shape[0], np.float32)
    cdef float[::1] s = scratch
    cdef uint64_t state = 0
    return sample_logits(&logits[0], limit, temperature, topk, &state, &q[0], &s[0])
