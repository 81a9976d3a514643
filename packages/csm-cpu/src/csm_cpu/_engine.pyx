"""The CSM forward pass on the C kernels: backbone steps, the depth-decoder loop and sampling.

All state lives in C structs (weights as csm_mat views, buffers, KV caches) so a whole frame
runs without the GIL. Threads: ONE OpenMP parallel region per backbone call and ONE for a
whole frame's decode (codebook-0 head + 31 decoder steps, each with its input projection and
output head; thread 0 samples between barriers). Row chunks (32-256 KiB of weights, see
chunk_rows) of every product come from the team's work counter, so a preempted thread takes
fewer. Five barriers per layer (csm_sync: spin, then futex sleep; far cheaper than a passive
OpenMP barrier):

  norm+quantize (every thread, private copy) -> Q,K,V chunks (+RoPE, +KV-cache write) | attention
  | quantize (private) -> O chunks (+residual) | norm+quantize (private) -> gate/up chunks (+SwiGLU,
  +quantize) | down chunks (+residual) |

Rows: B rows of caches, each with its own position (rowpos). The FrameModel path feeds all rows
the same positions; the slot path (continuous batching) feeds any rows at their own positions:
every call flattens its rows into vectors (batch row bidx, position pos), run nmax at a time.
A vector's products never depend on the others in flight, so a row's results are the same bit
for bit alone or next to any others. The decode runs for a chosen subset of rows (m of B), each
with its own temperature, top-k, code limit and random stream.

Layouts (N = vectors in flight, at most nmax):
  x [N, D] residual stream (fp32); q [N, H*hd]; k, v [N, kvd]; att [N, H*hd]; g, u [N, F]
  per-thread pxn [N, wide] fp32, paq int8 [N, wide], pad [N, wide/32]: normed / quantized inputs
  aq int8 [N, F], ad [N, F/32]: the quantized SwiGLU output (written chunk by chunk)
  KV cache kc, vc [B, L, maxpos, kvd] fp32; valid [B, maxpos] (0 = padding, never attended)
"""

from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int8_t, uint8_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset, memcpy
from libc.math cimport sqrt, expf
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from csm_cpu._cdefs cimport *
from csm_cpu._ops cimport rmsnorm, rope_rows, swiglu, attend, sample_logits, splitmix64

import numpy as np

DEF MAX_JOBS = 3

# Profile buckets (Engine.profile): seconds per thread, summed over the frames profiled.
DEF P_WORK = 0      # products (and what rides on their chunks: RoPE, cache writes, SwiGLU)
DEF P_ATTN = 1      # attention
DEF P_PREP = 2      # per-thread norm + activation quantization copies
DEF P_WAIT = 3      # waiting at barriers (imbalance, stragglers, wake-ups)
DEF P_DEC = 4       # the same four for the depth decoder (+ projection, heads, codebook-0 head)
DEF P_SERIAL = 8    # thread 0 alone: sampling and the next decoder step's inputs
DEF P_N = 9         # buckets per thread
PROFILE_BUCKETS = ["backbone_products", "backbone_attention", "backbone_norm_quant", "backbone_barrier_wait",
                   "decoder_products", "decoder_attention", "decoder_norm_quant", "decoder_barrier_wait",
                   "sampling_serial"]
# Per-call wall times (seconds, summed): feed() whole, its backbone regions, decode regions; calls.
PROFILE_CALLS = ["feed_s", "backbone_regions_s", "decode_regions_s", "feeds", "decodes"]


cdef inline double now_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline void mark(double *pt, int k, double *t) noexcept nogil:
    """Profile: the time since the last mark goes to bucket k of this thread (pt NULL: off)."""
    cdef double c
    if pt != NULL:
        c = now_s()
        pt[k] += c - t[0]
        t[0] = c


cdef inline void sync_wait(csm_sync *bar, int nth, double *pt, int k, double *t) noexcept nogil:
    """The barrier, its wait going to bucket k + P_WAIT (work before it already marked)."""
    csm_sync_wait(bar, nth)
    mark(pt, k + P_WAIT, t)


cdef struct Job:
    const csm_mat *W
    float *y
    int64_t ldy
    int acc
    int ch
    int first
    int count


cdef struct Group:
    # Products that share one input, run as one chunk space.
    Job job[MAX_JOBS]
    int njobs
    int nchunks


cdef struct Layer:
    csm_mat wq, wk, wv, wo, w1, w2, w3
    const float *sa_norm
    const float *mlp_norm
    Group qkv, o, down
    int gu_ch, gu_chunks   # gate/up: rows per chunk (a multiple of 32) and chunk count


cdef struct Stack:
    int L, D, H, KVH, hd, F, maxpos, nmax, B, wide
    float eps
    Layer *layers
    const float *norm
    const float *cos       # [maxpos, hd/2]
    const float *sin
    float *x               # [nmax, D]
    float *q               # [nmax, H*hd]
    float *k               # [nmax, kvd]
    float *v
    float *att             # [nmax, H*hd]
    float *g               # [nmax, F]
    float *u               # [nmax, F]
    int8_t *aq             # [nmax, F]
    float *ad              # [nmax, F/32]
    float *pxn             # [threads, nmax, wide]
    int8_t *paq            # [threads, nmax, wide]
    float *pad             # [threads, nmax, wide/32]
    float *kc              # [B, L, maxpos, kvd]
    float *vc
    uint8_t *valid         # [B, maxpos]
    int *pos               # [nmax]
    int *bidx              # [nmax]
    float *scores          # [threads, maxpos]
    double *prof           # [threads, P_N] profile buckets, or NULL (off)
    int pbase              # this stack's first bucket (0 backbone, P_DEC decoder)


cdef struct Extra:
    # Optional work inside a decoder step's region: input projection and output head.
    const Group *pre       # ebuf [n, pre_cols] -> x
    const float *pre_in
    int pre_cols
    const Group *post      # norm(x[sel[b]]) -> logits
    const int *sel
    int nsel
    const float *post_norm


cdef inline int chunk_rows(const csm_mat *W, int multiple, int64_t cap, int nth) noexcept nogil:
    """Rows per work item: a quarter of the matrix's share per thread, kept between 32 KiB and
    `cap` bytes of weights, a multiple of `multiple` (>= 4, even so RoPE pairs and 4-row
    kernels never straddle two chunks). Each item is one sequential read: with 2 threads,
    256 KiB items streamed Q8_0 ~19% faster than 32 KiB ones (median of 25, 142 MB matrix),
    while a quarter share bounds the idle tail of a phase on the small decoder matrices."""
    cdef int64_t b = W.rows * W.row_bytes // (4 * nth)
    if b > cap:
        b = cap
    if b < 32768:
        b = 32768
    cdef int64_t r = b // W.row_bytes
    r = (r + multiple - 1) // multiple * multiple
    return <int>(r if r > 0 else multiple)


cdef void group_add(Group *g, const csm_mat *W, float *y, int64_t ldy, int acc, int64_t cap, int nth) noexcept nogil:
    cdef Job *j = &g.job[g.njobs]
    j.W = W
    j.y = y
    j.ldy = ldy
    j.acc = acc
    j.ch = chunk_rows(W, 4, cap, nth)
    j.count = (W.rows + j.ch - 1) // j.ch
    j.first = g.nchunks
    g.nchunks += j.count
    g.njobs += 1


cdef inline int group_chunk(int isa, const Group *g, int c, const float *x, const int8_t *xq,
                            const float *xd, int n, int *r0, int *r1) noexcept nogil:
    """Run chunk c of the group; returns its job index and row range."""
    cdef int i = 0
    while c >= g.job[i].first + g.job[i].count:
        i += 1
    cdef const Job *j = &g.job[i]
    r0[0] = (c - j.first) * j.ch
    r1[0] = r0[0] + j.ch
    if r1[0] > j.W.rows:
        r1[0] = j.W.rows
    csm_mat_rows(isa, j.W, r0[0], r1[0], x, xq, xd, n, j.y, j.ldy, j.acc)
    return i


cdef inline int is_block(const csm_mat *W) noexcept nogil:
    return csm_formats[W.fmt].int8_act


cdef inline int group_is_block(const Group *g) noexcept nogil:
    cdef int i
    for i in range(g.njobs):
        if is_block(g.job[i].W):
            return 1
    return 0


cdef inline void prepare_input(const float *x, int n, int cols, const float *scale, float eps,
                               int quantize, float *xn, int8_t *aq, float *ad) noexcept nogil:
    """This thread's copy of the product input: optional RMSNorm, optional int8 quantization."""
    cdef int i
    for i in range(n):
        if scale != NULL:
            rmsnorm(x + i * cols, scale, xn + i * cols, cols, eps)
        elif xn != x:
            memcpy(xn + i * cols, x + i * cols, cols * sizeof(float))
        if quantize:
            csm_quantize_act(xn + i * cols, cols, aq + i * cols, ad + i * (cols // CSM_QK))


cdef void qkv_post(Stack *s, int l, int job, int r0, int r1, int n) noexcept nogil:
    """After rows [r0, r1) of Q, K or V: RoPE (Q, K) and the K/V cache write, per vector."""
    cdef int i, p, b, half = s.hd // 2, kvd = s.KVH * s.hd, qd = s.H * s.hd
    cdef int64_t off
    for i in range(n):
        p = s.pos[i]
        b = s.bidx[i]
        off = ((<int64_t>b * s.L + l) * s.maxpos + p) * kvd
        if job == 0:
            rope_rows(s.q + i * qd, r0, r1, s.hd, s.cos + p * half, s.sin + p * half)
        elif job == 1:
            rope_rows(s.k + i * kvd, r0, r1, s.hd, s.cos + p * half, s.sin + p * half)
            memcpy(s.kc + off + r0, s.k + i * kvd + r0, (r1 - r0) * sizeof(float))
        else:
            memcpy(s.vc + off + r0, s.v + i * kvd + r0, (r1 - r0) * sizeof(float))


cdef void gate_up_chunk(int isa, Stack *s, Layer *ly, int c, int n, const float *xn, const int8_t *xq,
                        const float *xd, int quantize) noexcept nogil:
    """Rows [r0, r1) of gate and up together, then h = silu(g) * u there (and its int8 blocks)."""
    cdef int r0 = c * ly.gu_ch, r1 = r0 + ly.gu_ch, i, F = s.F
    if r1 > F:
        r1 = F
    csm_mat_rows(isa, &ly.w1, r0, r1, xn, xq, xd, n, s.g, F, 0)
    csm_mat_rows(isa, &ly.w3, r0, r1, xn, xq, xd, n, s.u, F, 0)
    for i in range(n):
        swiglu(s.g + i * F + r0, s.u + i * F + r0, r1 - r0)
        if quantize:
            csm_quantize_act(s.g + i * F + r0, r1 - r0, s.aq + i * F + r0, s.ad + (i * F + r0) // CSM_QK)


cdef void group_part(int isa, const Group *g, csm_sync *bar, const float *x, const int8_t *xq,
                     const float *xd, int n) noexcept nogil:
    """This thread's chunks of a product group (taken from the team's work counter)."""
    cdef int c = csm_sync_next(bar), r0 = 0, r1 = 0
    while c < g.nchunks:
        group_chunk(isa, g, c, x, xq, xd, n, &r0, &r1)
        c = csm_sync_next(bar)


cdef void stack_layers(Stack *s, int n, int isa, int tid, int nth, csm_sync *bar, const Extra *ex) noexcept nogil:
    """Every layer of s over vectors x[0:n] (positions pos, batch rows bidx), run by EVERY
    thread of the enclosing parallel region (tid of nth) with barriers between dependent
    phases; work items come from the team's counter (bar). With ex: the input projection
    first and the output head last. Ends without a barrier after the last phase (the caller
    syncs before reading its output, and every region ends on a barrier so the counter
    starts at 0)."""
    cdef int l, i, j, c, b, h, kvh, job, r0 = 0, r1 = 0
    cdef int grp = s.H // s.KVH, qd = s.H * s.hd, kvd = s.KVH * s.hd, D = s.D
    cdef float scale = 1.0 / sqrt(<double>s.hd)
    cdef Layer *ly
    cdef int64_t off, tstride = <int64_t>s.nmax * s.wide
    cdef float *xn = s.pxn + tid * tstride
    cdef int8_t *aq = s.paq + tid * tstride
    cdef float *ad = s.pad + tid * (tstride // CSM_QK)
    cdef double *pt = s.prof + tid * P_N if s.prof != NULL else NULL
    cdef int pb = s.pbase
    cdef double t = now_s() if pt != NULL else 0.0
    if ex != NULL and ex.pre != NULL:
        prepare_input(ex.pre_in, n, ex.pre_cols, NULL, 0, group_is_block(ex.pre), xn, aq, ad)
        mark(pt, pb + P_PREP, &t)
        group_part(isa, ex.pre, bar, xn, aq, ad, n)
        mark(pt, pb + P_WORK, &t)
        sync_wait(bar, nth, pt, pb, &t)
    for l in range(s.L):
        ly = &s.layers[l]
        prepare_input(s.x, n, D, ly.sa_norm, s.eps, group_is_block(&ly.qkv), xn, aq, ad)
        mark(pt, pb + P_PREP, &t)
        c = csm_sync_next(bar)
        while c < ly.qkv.nchunks:
            job = group_chunk(isa, &ly.qkv, c, xn, aq, ad, n, &r0, &r1)
            qkv_post(s, l, job, r0, r1, n)
            c = csm_sync_next(bar)
        mark(pt, pb + P_WORK, &t)
        sync_wait(bar, nth, pt, pb, &t)
        c = csm_sync_next(bar)
        while c < n * s.H:
            i = c // s.H
            h = c % s.H
            kvh = h // grp
            b = s.bidx[i]
            off = (<int64_t>b * s.L + l) * s.maxpos * kvd + kvh * s.hd
            attend(isa, s.q + i * qd + h * s.hd, s.kc + off, s.vc + off, s.valid + b * s.maxpos,
                   s.pos[i] + 1, s.hd, kvd, scale, s.scores + tid * s.maxpos,
                   s.att + i * qd + h * s.hd)
            c = csm_sync_next(bar)
        mark(pt, pb + P_ATTN, &t)
        sync_wait(bar, nth, pt, pb, &t)
        if group_is_block(&ly.o):
            prepare_input(s.att, n, qd, NULL, 0, 1, s.att, aq, ad)
            mark(pt, pb + P_PREP, &t)
        group_part(isa, &ly.o, bar, s.att, aq, ad, n)
        mark(pt, pb + P_WORK, &t)
        sync_wait(bar, nth, pt, pb, &t)
        prepare_input(s.x, n, D, ly.mlp_norm, s.eps, is_block(&ly.w1) or is_block(&ly.w3), xn, aq, ad)
        mark(pt, pb + P_PREP, &t)
        c = csm_sync_next(bar)
        while c < ly.gu_chunks:
            gate_up_chunk(isa, s, ly, c, n, xn, aq, ad, group_is_block(&ly.down))
            c = csm_sync_next(bar)
        mark(pt, pb + P_WORK, &t)
        sync_wait(bar, nth, pt, pb, &t)
        group_part(isa, &ly.down, bar, s.g, s.aq, s.ad, n)
        mark(pt, pb + P_WORK, &t)
        sync_wait(bar, nth, pt, pb, &t)  # the next layer reads x
    if ex != NULL and ex.post != NULL:
        for j in range(ex.nsel):
            rmsnorm(s.x + ex.sel[j] * D, ex.post_norm, xn + j * D, D, s.eps)
        prepare_input(xn, ex.nsel, D, NULL, 0, group_is_block(ex.post), xn, aq, ad)
        mark(pt, pb + P_PREP, &t)
        group_part(isa, ex.post, bar, xn, aq, ad, ex.nsel)
        mark(pt, pb + P_WORK, &t)


cdef void stack_run(Stack *s, int n, int isa, int nt, csm_sync *bar) noexcept nogil:
    """Every layer of s over vectors x[0:n] in one parallel region."""
    cdef int tid = 0
    with parallel(num_threads=nt):
        tid = threadid()
        stack_layers(s, n, isa, tid, csm_team_size(), bar, NULL)


cdef void stack_legacy(Stack *s, int legacy) noexcept nogil:
    cdef int l
    cdef Layer *ly
    for l in range(s.L):
        ly = &s.layers[l]
        ly.wq.legacy = legacy
        ly.wk.legacy = legacy
        ly.wv.legacy = legacy
        ly.wo.legacy = legacy
        ly.w1.legacy = legacy
        ly.w2.legacy = legacy
        ly.w3.legacy = legacy


cdef csm_mat as_mat(object t) except *:
    """View of a QTensor (csm_cpu.quant) as a C matrix; the caller keeps t alive."""
    cdef const uint8_t[:, ::1] d = t.data
    cdef csm_mat m
    m.fmt = t.code
    m.rows = t.rows
    m.cols = t.cols
    m.row_bytes = d.shape[1]
    m.interleaved = t.interleaved
    m.legacy = 0
    m.data = <const char *>&d[0, 0] if d.shape[0] > 0 else NULL
    return m


cdef float *fptr(object a) except NULL:
    """Data pointer of a float32 array (weights may be read-only maps: never written)."""
    cdef const float[::1] v = a.reshape(-1)
    return <float *>&v[0]


cdef class Engine:
    """CSM weights + buffers + caches for B rows; see backend.CpuBackend for the API."""

    cdef Stack bb, dec
    cdef int isa, nt, B, V, K, Db, Dd
    cdef int64_t cap       # largest work item in bytes of weights (see chunk_rows)
    cdef csm_mat text_emb, audio_emb, proj, c0_head
    cdef csm_mat *heads
    cdef Group g_proj, g_c0
    cdef Group *g_heads
    cdef list refs
    cdef int *rowpos       # [B] positions each row's cache holds
    cdef float *hlast      # [B, Db] backbone output (post-norm) of each decoded row's last vector
    cdef float *ebuf       # [2B, Db] decoder inputs before the projection
    cdef int *sel          # [B] which decoder vector feeds the head
    cdef float *logits     # [B, V]
    cdef float *escratch   # [threads, Db] embedding rows being summed
    cdef float *sscratch   # [V] sampling scratch
    cdef uint64_t *rng     # [B] one random stream per row
    cdef int m             # rows the next decode runs for; decoded row j is batch row drow[j]
    cdef int *drow         # [B]
    cdef float *dtemp      # [B] per decoded row: temperature, top-k, codes >= limit never picked
    cdef int *dtopk        # [B]
    cdef int *dlimit       # [B]
    cdef csm_sync bar      # the frame loops' barrier (zeroed with the object)
    cdef double *prof      # [threads, P_N] profile buckets or NULL (profile(True) turns them on)
    cdef double pcalls[5]  # PROFILE_CALLS

    def __cinit__(self):
        self.prof = NULL
        self.heads = NULL
        self.g_heads = NULL
        self.bb.layers = NULL
        self.dec.layers = NULL

    def __dealloc__(self):
        free(self.prof)
        free(self.heads)
        free(self.g_heads)
        free(self.bb.layers)
        free(self.dec.layers)

    def __init__(self, dict dims, dict w, int batch, int threads, int isa, int chunk_kib=256, int legacy=0):
        """dims: backbone/decoder LlamaConfig-like dicts + vocab sizes; w: name -> QTensor
        (matrices) or fp32 arrays (norm scales, rope tables); chunk_kib: largest work item."""
        if chunk_kib < 32:
            raise ValueError(f"chunk_kib must be >= 32, got {chunk_kib}")
        self.cap = <int64_t>chunk_kib * 1024
        self.refs = [w]
        self.isa = isa
        self.nt = threads
        self.B = batch
        self.V = dims["audio_vocab"]
        self.K = dims["num_codebooks"]
        # backbone vectors per parallel region: 64 positions at B=1, at least one per row
        self._init_stack(&self.bb, "backbone", dims["backbone"], w, batch, batch * max(1, 64 // batch), 0)
        self._init_stack(&self.dec, "decoder", dims["decoder"], w, batch, 2 * batch,
                         dims["backbone"]["embed_dim"])
        self.Db = self.bb.D
        self.Dd = self.dec.D
        self.text_emb = as_mat(w["text_embeddings.weight"])
        self.audio_emb = as_mat(w["audio_embeddings.weight"])
        self.proj = as_mat(w["projection.weight"])
        self.c0_head = as_mat(w["codebook0_head.weight"])
        self.heads = <csm_mat *>calloc(self.K - 1, sizeof(csm_mat))
        self.g_heads = <Group *>calloc(self.K - 1, sizeof(Group))
        if self.heads == NULL or self.g_heads == NULL:
            raise MemoryError()
        self.hlast = self._buf((batch, self.Db))
        self.ebuf = self._buf((2 * batch, self.Db))
        self.sel = self._ibuf(batch)
        self.rowpos = self._ibuf(batch)
        self.drow = self._ibuf(batch)
        self.dtopk = self._ibuf(batch)
        self.dlimit = self._ibuf(batch)
        self.dtemp = self._buf((batch,))
        self.logits = self._buf((batch, self.V))
        self.escratch = self._buf((threads, self.Db))
        self.sscratch = self._buf((self.V,))
        rng = np.zeros((batch,), np.uint64)
        self.refs.append(rng)
        cdef uint64_t[::1] rv = rng
        self.rng = &rv[0]
        group_add(&self.g_proj, &self.proj, self.dec.x, self.Dd, 0, self.cap, threads)
        group_add(&self.g_c0, &self.c0_head, self.logits, self.V, 0, self.cap, threads)
        cdef int i
        for i in range(self.K - 1):
            self.heads[i] = as_mat(w[f"audio_head.{i}"])
            group_add(&self.g_heads[i], &self.heads[i], self.logits, self.V, 0, self.cap, threads)
        memset(self.dec.valid, 1, batch * self.dec.maxpos)
        self.set_legacy(legacy)

    def set_legacy(self, int legacy):
        """1: run several vectors on the kernels from before the prefill rework (same results
        bit for bit; for before/after benchmarks, $CSM_CPU_PREFILL=legacy)."""
        cdef int i
        stack_legacy(&self.bb, legacy)
        stack_legacy(&self.dec, legacy)
        self.proj.legacy = self.c0_head.legacy = legacy
        for i in range(self.K - 1):
            self.heads[i].legacy = legacy

    cdef float *_buf(self, shape) except NULL:
        a = np.zeros(shape, np.float32)
        self.refs.append(a)
        return fptr(a)

    cdef int *_ibuf(self, int n) except NULL:
        a = np.zeros((n,), np.intc)
        self.refs.append(a)
        cdef int[::1] v = a
        return &v[0]

    cdef _init_stack(self, Stack *s, str prefix, dict d, dict w, int batch, int nmax, int in_cols):
        s.L, s.D, s.H, s.KVH = d["num_layers"], d["embed_dim"], d["num_heads"], d["num_kv_heads"]
        s.hd, s.F, s.maxpos, s.eps = s.D // s.H, d["intermediate_dim"], d["max_seq_len"], d["norm_eps"]
        s.nmax, s.B = nmax, batch
        s.prof = NULL
        s.pbase = P_DEC if prefix == "decoder" else 0
        cdef int qd = s.H * s.hd, kvd = s.KVH * s.hd, wide = max(s.D, qd, s.F, in_cols)
        s.wide = wide
        s.layers = <Layer *>calloc(s.L, sizeof(Layer))
        if s.layers == NULL:
            raise MemoryError()
        s.norm = fptr(w[f"{prefix}.norm.scale"])
        s.cos = fptr(w[f"{prefix}.rope_cos"])
        s.sin = fptr(w[f"{prefix}.rope_sin"])
        s.x = self._buf((nmax, s.D))
        s.pxn = self._buf((self.nt, nmax, wide))
        s.pad = self._buf((self.nt, nmax, wide // CSM_QK + 1))
        s.q = self._buf((nmax, qd))
        s.k = self._buf((nmax, kvd))
        s.v = self._buf((nmax, kvd))
        s.att = self._buf((nmax, qd))
        s.g = self._buf((nmax, s.F))
        s.u = self._buf((nmax, s.F))
        s.ad = self._buf((nmax, s.F // CSM_QK + 1))
        s.kc = self._buf((batch, s.L, s.maxpos, kvd))
        s.vc = self._buf((batch, s.L, s.maxpos, kvd))
        s.scores = self._buf((self.nt, s.maxpos))
        aq = np.zeros((nmax * s.F + 1,), np.int8)
        paq = np.zeros((self.nt * nmax * wide + 1,), np.int8)
        valid = np.zeros((batch * s.maxpos,), np.uint8)
        pos = np.zeros((nmax,), np.intc)
        bidx = np.zeros((nmax,), np.intc)
        self.refs += [aq, paq, valid, pos, bidx]
        cdef int8_t[::1] aqv = aq, paqv = paq
        s.paq = &paqv[0]
        cdef uint8_t[::1] vv = valid
        cdef int[::1] pv = pos, bv = bidx
        s.aq, s.valid, s.pos, s.bidx = &aqv[0], &vv[0], &pv[0], &bv[0]
        cdef Layer *ly
        cdef int l
        for l in range(s.L):
            ly = &s.layers[l]
            p = f"{prefix}.layers.{l}."
            ly.wq = as_mat(w[p + "attn.q_proj.weight"])
            ly.wk = as_mat(w[p + "attn.k_proj.weight"])
            ly.wv = as_mat(w[p + "attn.v_proj.weight"])
            ly.wo = as_mat(w[p + "attn.output_proj.weight"])
            ly.w1 = as_mat(w[p + "mlp.w1.weight"])
            ly.w2 = as_mat(w[p + "mlp.w2.weight"])
            ly.w3 = as_mat(w[p + "mlp.w3.weight"])
            ly.sa_norm = fptr(w[p + "sa_norm.scale"])
            ly.mlp_norm = fptr(w[p + "mlp_norm.scale"])
            group_add(&ly.qkv, &ly.wq, s.q, qd, 0, self.cap, self.nt)
            group_add(&ly.qkv, &ly.wk, s.k, kvd, 0, self.cap, self.nt)
            group_add(&ly.qkv, &ly.wv, s.v, kvd, 0, self.cap, self.nt)
            group_add(&ly.o, &ly.wo, s.x, s.D, 1, self.cap, self.nt)
            ly.gu_ch = max(CSM_QK, chunk_rows(&ly.w1, CSM_QK, self.cap, self.nt) // 2 // CSM_QK * CSM_QK)  # gate+up
            ly.gu_chunks = (s.F + ly.gu_ch - 1) // ly.gu_ch
            group_add(&ly.down, &ly.w2, s.x, s.D, 1, self.cap, self.nt)

    def profile(self, bint on):
        """Start (zeroed) or stop collecting per-thread phase times (see PROFILE_BUCKETS); off by
        default: then each phase costs one NULL test."""
        free(self.prof)
        self.prof = NULL
        memset(self.pcalls, 0, 5 * sizeof(double))
        if on:
            self.prof = <double *>calloc(self.nt * P_N, sizeof(double))
            if self.prof == NULL:
                raise MemoryError()
        self.bb.prof = self.prof
        self.dec.prof = self.prof

    def profile_read(self):
        """(per-thread seconds [threads, buckets] as a dict of bucket -> list, per-call totals)."""
        if self.prof == NULL:
            return None
        per = {name: [self.prof[i * P_N + k] for i in range(self.nt)] for k, name in enumerate(PROFILE_BUCKETS)}
        return {"threads": self.nt, "buckets": per,
                "calls": {name: self.pcalls[k] for k, name in enumerate(PROFILE_CALLS)}}

    @property
    def batch(self):
        return self.B

    @property
    def position(self):
        """Positions every row's cache holds (the FrameModel path keeps the rows together)."""
        cdef int b, p = self.rowpos[0]
        for b in range(1, self.B):
            p = min(p, self.rowpos[b])
        return p

    def row_position(self, int row):
        if row < 0 or row >= self.B:
            raise ValueError(f"row {row} outside the {self.B} rows")
        return self.rowpos[row]

    def reset(self, seed, int keep=0):
        """Empty every row's cache from position `keep` on (the first `keep` positions stay: the
        caller knows they hold the prompt it is about to run) and reseed each row's generator:
        row b from seed + b * 0xD1B54A32D192ED03 (row 0 from the seed itself, as reset_row)."""
        cdef int b
        cdef uint64_t st
        if keep < 0 or keep > self.position:
            raise ValueError(f"keep={keep} outside the {self.position} cached positions")
        seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        for b in range(self.B):
            memset(self.bb.valid + b * self.bb.maxpos + keep, 0, self.bb.maxpos - keep)
            self.rowpos[b] = keep
            st = <uint64_t>seed + <uint64_t>b * 0xD1B54A32D192ED03ULL
            splitmix64(&st)
            self.rng[b] = st

    def reset_row(self, int row, seed, int keep=0):
        """Empty row `row`'s cache from position `keep` on and give it the random stream of `seed`
        (the stream reset(seed) gives row 0, whichever row this is); other rows are untouched."""
        cdef uint64_t st
        if row < 0 or row >= self.B:
            raise ValueError(f"row {row} outside the {self.B} rows")
        if keep < 0 or keep > self.rowpos[row]:
            raise ValueError(f"keep={keep} outside row {row}'s {self.rowpos[row]} cached positions")
        memset(self.bb.valid + row * self.bb.maxpos + keep, 0, self.bb.maxpos - keep)
        self.rowpos[row] = keep
        st = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        splitmix64(&st)
        self.rng[row] = st

    def backbone(self, tokens, mask):
        """Embed tokens int64 / mask uint8 [B, S, K+1] at the rows' common position, run the
        backbone, keep each row's last normed hidden state for decode(). Inputs are validated by
        the caller."""
        B, S = self.B, tokens.shape[1]
        rows = np.arange(B, dtype=np.intc)
        self.feed(rows, np.full(B, S, np.intc), rows, tokens.reshape(B * S, -1), mask.reshape(B * S, -1))

    def feed(self, const int[::1] rows, const int[::1] counts, const int[::1] out,
             const int64_t[:, ::1] tokens, const uint8_t[:, ::1] mask):
        """Feed i: counts[i] consecutive rows of tokens/mask [N, K+1] into batch row rows[i] at its
        own position (rows distinct); when out[i] >= 0 its last vector's normed state becomes
        decoded row out[i]'s input. Runs ceil(N / nmax) backbone regions of equal size. Inputs
        (distinct rows, fit in the window, token ranges) are validated by the caller."""
        cdef int nf = rows.shape[0], N = tokens.shape[0], i, r, v = 0, c0, c1, per, j, seen, K1 = self.K + 1
        if counts.shape[0] != nf or out.shape[0] != nf or mask.shape[0] != N or tokens.shape[1] != K1:
            raise ValueError("feed: rows/counts/out lengths or tokens/mask shapes disagree")
        vrow = np.empty(N, np.intc)
        vpos = np.empty(N, np.intc)
        vout = np.full(N, -1, np.intc)
        cdef int[::1] vr = vrow, vp = vpos, vo = vout
        for i in range(nf):
            if rows[i] < 0 or rows[i] >= self.B or counts[i] < 1 or out[i] >= self.B:
                raise ValueError(f"feed {i}: row {rows[i]} / count {counts[i]} / out {out[i]} out of range")
            if self.rowpos[rows[i]] + counts[i] > self.bb.maxpos:
                raise ValueError(f"feed {i}: row {rows[i]} would pass the {self.bb.maxpos}-position window")
            v += counts[i]
        if v != N:
            raise ValueError(f"feed: counts add up to {v}, tokens has {N} rows")
        if N == 0:
            return
        cdef double t0 = now_s(), t1
        v = 0
        for i in range(nf):
            for r in range(counts[i]):
                vr[v] = rows[i]
                vp[v] = self.rowpos[rows[i]] + r
                v += 1
            vo[v - 1] = out[i]
        with nogil:
            for v in range(N):  # a position with no mask bit is padding: never attended
                seen = 0
                for i in range(K1):
                    seen = seen or mask[v, i]
                self.bb.valid[vr[v] * self.bb.maxpos + vp[v]] = seen
            per = (N + self.bb.nmax - 1) // self.bb.nmax
            per = (N + per - 1) // per
            c0 = 0
            while c0 < N:
                c1 = min(N, c0 + per)
                for j in range(c1 - c0):
                    self.bb.pos[j] = vp[c0 + j]
                    self.bb.bidx[j] = vr[c0 + j]
                self._embed(tokens, mask, c0, c1)
                t1 = now_s()
                stack_run(&self.bb, c1 - c0, self.isa, self.nt, &self.bar)
                self.pcalls[1] += now_s() - t1
                for j in range(c1 - c0):
                    if vo[c0 + j] >= 0:
                        rmsnorm(self.bb.x + j * self.Db, self.bb.norm, self.hlast + vo[c0 + j] * self.Db,
                                self.Db, self.bb.eps)
                c0 = c1
            for i in range(nf):
                self.rowpos[rows[i]] += counts[i]
            self.pcalls[0] += now_s() - t0
            self.pcalls[3] += 1

    cdef void _embed(self, const int64_t[:, ::1] tokens, const uint8_t[:, ::1] mask,
                     int v0, int v1) noexcept nogil:
        """x[v - v0] = text embedding (column K) + sum of codebook embeddings (columns < K), masked,
        for the vectors v0 .. v1 of tokens/mask."""
        cdef int n, v, col, j, D = self.Db
        cdef float *x
        cdef float *tmp
        cdef const csm_mat *m
        cdef int64_t row
        for n in prange(v1 - v0, nogil=True, schedule="static", num_threads=self.nt):
            v = v0 + n
            x = self.bb.x + n * D
            tmp = self.escratch + threadid() * D
            memset(x, 0, D * sizeof(float))
            for col in range(self.K + 1):
                if mask[v, col]:
                    if col == self.K:
                        m = &self.text_emb
                        row = tokens[v, col]
                    else:
                        m = &self.audio_emb
                        row = tokens[v, col] + <int64_t>col * self.V
                    csm_dequant_row(m.fmt, m.data + row * m.row_bytes, tmp, D)
                    for j in range(D):
                        x[j] += tmp[j]

    def decode(self, float temperature, int topk, int limit, forced=None, probe=None):
        """Codebook 0 from every row's backbone state, then the depth decoder for codebooks 1..K-1,
        all rows with the same parameters.

        limit: codes >= limit are never picked. forced int32 [B, K]: take these codes instead
        of sampling (teacher forcing). probe float32 [B, K, V]: receives every step's logits.
        Returns int32 [B, K].
        """
        cdef int b
        self.m = self.B
        for b in range(self.B):
            self.drow[b] = b
            self.dtemp[b] = temperature
            self.dtopk[b] = topk
            self.dlimit[b] = limit
        codes = np.zeros((self.B, self.K), np.int32)
        cdef int[:, ::1] cv = codes
        cdef const int[:, ::1] fv
        cdef float[:, :, ::1] pv
        cdef const int *fp = NULL
        cdef float *pp = NULL
        if forced is not None:
            fv = forced
            fp = &fv[0, 0]
        if probe is not None:
            pv = probe
            pp = &pv[0, 0, 0]
        with nogil:
            self._decode(&cv[0, 0], fp, pp)
        return codes

    def decode_rows(self, const int[::1] rows, const float[::1] temperature, const int[::1] topk,
                    const int[::1] limit):
        """The frame of decoded rows 0..m-1 (fed with out = j), row j drawing from batch row
        rows[j]'s random stream with its own temperature / top-k / limit. Returns int32 [m, K]."""
        cdef int m = rows.shape[0], j
        if m < 1 or m > self.B or temperature.shape[0] != m or topk.shape[0] != m or limit.shape[0] != m:
            raise ValueError(f"decode_rows: 1..{self.B} rows with one temperature, topk and limit each, got {m}")
        for j in range(m):
            if rows[j] < 0 or rows[j] >= self.B or topk[j] < 1 or limit[j] < 1 or limit[j] > self.V:
                raise ValueError(f"decode_rows: row {j} (batch row {rows[j]}, topk {topk[j]}, limit {limit[j]}) out of range")
            self.drow[j] = rows[j]
            self.dtemp[j] = temperature[j]
            self.dtopk[j] = topk[j]
            self.dlimit[j] = limit[j]
        self.m = m
        codes = np.zeros((m, self.K), np.int32)
        cdef int[:, ::1] cv = codes
        with nogil:
            self._decode(&cv[0, 0], NULL, NULL)
        return codes

    cdef void _pick(self, int i, int *codes, const int *forced, float *probe) noexcept nogil:
        cdef int j
        for j in range(self.m):
            if probe != NULL:
                memcpy(probe + (<int64_t>j * self.K + i) * self.V, self.logits + j * self.V, self.V * sizeof(float))
            if forced != NULL:
                codes[j * self.K + i] = forced[j * self.K + i]
            else:
                codes[j * self.K + i] = sample_logits(self.logits + j * self.V, self.dlimit[j], self.dtemp[j],
                                                      self.dtopk[j], &self.rng[self.drow[j]], NULL, self.sscratch)

    cdef void _inputs(self, int i, const int *codes) noexcept nogil:
        """Decoder inputs of step i: [backbone state, code 0] at positions 0, 1 (i == 1); then
        code i-1 at position i. Also which vector feeds the head (sel)."""
        cdef int m = self.m, K = self.K, Db = self.Db, j, n = 0
        cdef const csm_mat *e = &self.audio_emb
        cdef int64_t row
        for j in range(m):
            if i == 1:
                memcpy(self.ebuf + n * Db, self.hlast + j * Db, Db * sizeof(float))
                self.dec.pos[n] = 0
                self.dec.bidx[n] = j
                n += 1
            row = codes[j * K + i - 1] + <int64_t>(i - 1) * self.V
            csm_dequant_row(e.fmt, e.data + row * e.row_bytes, self.ebuf + n * Db, Db)
            self.dec.pos[n] = i
            self.dec.bidx[n] = j
            n += 1
        for j in range(m):
            self.sel[j] = 2 * j + 1 if i == 1 else j

    cdef void _decode_thread(self, int tid, int nth, int *codes, const int *forced, float *probe) noexcept nogil:
        """One thread's part of a whole frame's decode (codebook-0 head, then the K-1 decoder
        steps) for the m decoded rows: every thread runs this in ONE parallel region; thread 0
        samples and builds the next step's inputs between barriers."""
        cdef int m = self.m, K = self.K, i
        cdef Extra ex
        cdef int64_t tstride = <int64_t>self.dec.nmax * self.dec.wide
        cdef int8_t *aq = self.dec.paq + tid * tstride
        cdef float *ad = self.dec.pad + tid * (tstride // CSM_QK)
        cdef double *pt = self.prof + tid * P_N if self.prof != NULL else NULL
        cdef double t = now_s() if pt != NULL else 0.0
        # codebook 0 from the backbone state (this thread's quantized copy of it)
        prepare_input(self.hlast, m, self.Db, NULL, 0, group_is_block(&self.g_c0), self.hlast, aq, ad)
        mark(pt, P_DEC + P_PREP, &t)
        group_part(self.isa, &self.g_c0, &self.bar, self.hlast, aq, ad, m)
        mark(pt, P_DEC + P_WORK, &t)
        sync_wait(&self.bar, nth, pt, P_DEC, &t)
        if tid == 0:
            self._pick(0, codes, forced, probe)
            self._inputs(1, codes)
            mark(pt, P_SERIAL, &t)
        sync_wait(&self.bar, nth, pt, P_DEC, &t)
        ex.pre = &self.g_proj
        ex.pre_in = self.ebuf
        ex.pre_cols = self.Db
        ex.sel = self.sel
        ex.nsel = m
        ex.post_norm = self.dec.norm
        for i in range(1, K):
            ex.post = &self.g_heads[i - 1]
            stack_layers(&self.dec, 2 * m if i == 1 else m, self.isa, tid, nth, &self.bar, &ex)
            if pt != NULL:
                t = now_s()
            sync_wait(&self.bar, nth, pt, P_DEC, &t)
            if tid == 0:
                self._pick(i, codes, forced, probe)
                if i + 1 < K:
                    self._inputs(i + 1, codes)
                mark(pt, P_SERIAL, &t)
            sync_wait(&self.bar, nth, pt, P_DEC, &t)

    cdef void _decode(self, int *codes, const int *forced, float *probe) noexcept nogil:
        cdef int tid = 0
        cdef double t0 = now_s()
        with parallel(num_threads=self.nt):
            tid = threadid()
            self._decode_thread(tid, csm_team_size(), codes, forced, probe)
        self.pcalls[2] += now_s() - t0
        self.pcalls[4] += 1
