"""The CSM forward pass on the C kernels: backbone steps, the depth-decoder loop and sampling.

All state lives in C structs (weights as csm_mat views, buffers, KV caches) so that one frame
runs without the GIL: one OpenMP parallel region per transformer call (the backbone over the
new positions; then each decoder step including its input projection, head and sampling),
with row chunks of every product handed out dynamically inside the region.

Layouts (N = vectors in flight = batch rows x positions of one call):
  x [N, D] residual stream (fp32); q [N, H*hd]; k, v [N, kvd]; g, u [N, F]
  activations quantized once per product for the block formats: aq int8 [N, cols], ad [N, cols/32]
  KV cache kc, vc [B, L, maxpos, kvd] fp32; valid [B, maxpos] (0 = padding, never attended)
"""

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int8_t, uint8_t, uint16_t, int64_t, uint64_t, int32_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from libc.math cimport sqrt

from csm_cpu._cdefs cimport *
from csm_cpu._ops cimport rmsnorm, rope_interleaved, swiglu, attend, sample_logits, splitmix64

import numpy as np

DEF MAX_JOBS = 3


cdef struct Job:
    const csm_mat *W
    float *y
    int64_t ldy
    int acc
    int ch
    int first
    int count


cdef struct Group:
    # Products that share one input, run as one chunk space (fused QKV, fused gate/up).
    Job job[MAX_JOBS]
    int njobs
    int nchunks


cdef struct Layer:
    csm_mat wq, wk, wv, wo, w1, w2, w3
    const float *sa_norm
    const float *mlp_norm
    Group qkv, o, gu, down


cdef struct Stack:
    int L, D, H, KVH, hd, F, maxpos, nmax, B
    float eps
    Layer *layers
    const float *norm
    const float *cos       # [maxpos, hd/2]
    const float *sin
    float *x               # [nmax, D]
    float *xn              # [nmax, D]
    float *q               # [nmax, H*hd]
    float *k               # [nmax, kvd]
    float *v
    float *att             # [nmax, H*hd]
    float *g               # [nmax, F]
    float *u               # [nmax, F]
    int8_t *aq             # [nmax, max cols]
    float *ad              # [nmax, max cols / 32]
    float *kc              # [B, L, maxpos, kvd]
    float *vc
    uint8_t *valid         # [B, maxpos]
    int *pos               # [nmax]
    int *bidx              # [nmax]
    float *scores          # [threads, maxpos]


cdef inline int chunk_rows(const csm_mat *W) noexcept nogil:
    """Rows per work item: about 32 KiB of weights, at least 4 rows."""
    cdef int64_t r = 32768 // W.row_bytes
    if r < 4:
        r = 4
    return <int>r


cdef void group_add(Group *g, const csm_mat *W, float *y, int64_t ldy, int acc) noexcept nogil:
    cdef Job *j = &g.job[g.njobs]
    j.W = W
    j.y = y
    j.ldy = ldy
    j.acc = acc
    j.ch = chunk_rows(W)
    j.count = (W.rows + j.ch - 1) // j.ch
    j.first = g.nchunks
    g.nchunks += j.count
    g.njobs += 1


cdef inline void group_chunk(int isa, const Group *g, int c, const float *x, const int8_t *xq,
                             const float *xd, int n) noexcept nogil:
    cdef int i = 0
    while c >= g.job[i].first + g.job[i].count:
        i += 1
    cdef const Job *j = &g.job[i]
    cdef int r0 = (c - j.first) * j.ch
    cdef int r1 = r0 + j.ch
    if r1 > j.W.rows:
        r1 = j.W.rows
    csm_mat_rows(isa, j.W, r0, r1, x, xq, xd, n, j.y, j.ldy, j.acc)


cdef inline void quantize_if(int need, const float *x, int cols, int8_t *q, float *d) noexcept nogil:
    if need:
        csm_quantize_act(x, cols, q, d)


cdef inline int is_block(const csm_mat *W) noexcept nogil:
    return W.fmt == CSM_Q8_0 or W.fmt == CSM_Q4_0


cdef void stack_layers(Stack *s, int n, int isa, int nt) noexcept nogil:
    """Run every layer of s over vectors x[0:n] (positions pos, batch rows bidx) in one region."""
    cdef int l, i, c, b, p, h, kvh, grp = s.H // s.KVH
    cdef int qd = s.H * s.hd, kvd = s.KVH * s.hd, D = s.D, F = s.F, half = s.hd // 2
    cdef float scale = 1.0 / sqrt(<double>s.hd)
    cdef Layer *ly
    cdef int64_t cache_off
    cdef int need_q
    with parallel(num_threads=nt):
        for l in range(s.L):
            ly = &s.layers[l]
            need_q = is_block(&ly.wq) or is_block(&ly.wk) or is_block(&ly.wv)
            for i in prange(n, schedule="static"):
                rmsnorm(s.x + i * D, ly.sa_norm, s.xn + i * D, D, s.eps)
                quantize_if(need_q, s.xn + i * D, D, s.aq + i * D, s.ad + i * (D // CSM_QK))
            csm_barrier()
            for c in prange(ly.qkv.nchunks, schedule="dynamic"):
                group_chunk(isa, &ly.qkv, c, s.xn, s.aq, s.ad, n)
            csm_barrier()
            for i in prange(n, schedule="static"):
                p = s.pos[i]
                b = s.bidx[i]
                rope_interleaved(s.q + i * qd, s.H, s.hd, s.cos + p * half, s.sin + p * half)
                rope_interleaved(s.k + i * kvd, s.KVH, s.hd, s.cos + p * half, s.sin + p * half)
                cache_off = ((<int64_t>b * s.L + l) * s.maxpos + p) * kvd
                memcpy(s.kc + cache_off, s.k + i * kvd, kvd * sizeof(float))
                memcpy(s.vc + cache_off, s.v + i * kvd, kvd * sizeof(float))
            csm_barrier()
            for c in prange(n * s.H, schedule="dynamic"):
                i = c // s.H
                h = c % s.H
                kvh = h // grp
                b = s.bidx[i]
                cache_off = (<int64_t>b * s.L + l) * s.maxpos * kvd + kvh * s.hd
                attend(isa, s.q + i * qd + h * s.hd, s.kc + cache_off, s.vc + cache_off,
                       s.valid + b * s.maxpos, s.pos[i] + 1, s.hd, kvd, scale,
                       s.scores + threadid() * s.maxpos, s.att + i * qd + h * s.hd)
            csm_barrier()
            need_q = is_block(&ly.wo)
            if need_q:
                for i in prange(n, schedule="static"):
                    csm_quantize_act(s.att + i * qd, qd, s.aq + i * qd, s.ad + i * (qd // CSM_QK))
                csm_barrier()
            for c in prange(ly.o.nchunks, schedule="dynamic"):
                group_chunk(isa, &ly.o, c, s.att, s.aq, s.ad, n)
            csm_barrier()
            need_q = is_block(&ly.w1) or is_block(&ly.w3)
            for i in prange(n, schedule="static"):
                rmsnorm(s.x + i * D, ly.mlp_norm, s.xn + i * D, D, s.eps)
                quantize_if(need_q, s.xn + i * D, D, s.aq + i * D, s.ad + i * (D // CSM_QK))
            csm_barrier()
            for c in prange(ly.gu.nchunks, schedule="dynamic"):
                group_chunk(isa, &ly.gu, c, s.xn, s.aq, s.ad, n)
            csm_barrier()
            need_q = is_block(&ly.w2)
            for i in prange(n, schedule="static"):
                swiglu(s.g + i * F, s.u + i * F, F)
                quantize_if(need_q, s.g + i * F, F, s.aq + i * F, s.ad + i * (F // CSM_QK))
            csm_barrier()
            for c in prange(ly.down.nchunks, schedule="dynamic"):
                group_chunk(isa, &ly.down, c, s.g, s.aq, s.ad, n)
            csm_barrier()  # the next layer reads x


cdef void run_group(int isa, int nt, const Group *g, const float *x, int n, int cols,
                    int8_t *xq, float *xd) noexcept nogil:
    """One product group over n input vectors x [n, cols], in its own parallel region."""
    cdef int i, c, need_q = 0
    for i in range(g.njobs):
        need_q = need_q or is_block(g.job[i].W)
    with parallel(num_threads=nt):
        if need_q:
            for i in prange(n, schedule="static"):
                csm_quantize_act(x + i * cols, cols, xq + i * cols, xd + i * (cols // CSM_QK))
            csm_barrier()
        for c in prange(g.nchunks, schedule="dynamic"):
            group_chunk(isa, g, c, x, xq, xd, n)


cdef csm_mat as_mat(object t) except *:
    """View of a QTensor (csm_cpu.quant) as a C matrix; the caller keeps t alive."""
    cdef const uint8_t[:, ::1] d = t.data
    cdef csm_mat m
    m.fmt = t.code
    m.rows = t.rows
    m.cols = t.cols
    m.row_bytes = d.shape[1]
    m.data = <const char *>&d[0, 0] if d.shape[0] > 0 else NULL
    return m


cdef float *fptr(object a) except NULL:
    cdef float[::1] v = a.reshape(-1)
    return &v[0]


cdef class Engine:
    """CSM weights + buffers + caches for a fixed batch size; see backend.CpuBackend for the API."""

    cdef Stack bb, dec
    cdef int isa, nt, B, V, K, Db, Dd, bb_chunk
    cdef csm_mat text_emb, audio_emb, proj, c0_head
    cdef csm_mat *heads
    cdef Group g_proj, g_c0
    cdef Group *g_heads
    cdef list refs
    cdef float *hlast      # [B, Db] backbone output at the last position (post-norm)
    cdef float *ebuf       # [2B, Db] decoder inputs before the projection
    cdef float *hn         # [B, Dd] decoder output (post-norm)
    cdef float *logits     # [B, V]
    cdef float *escratch   # [threads, Db] embedding rows being summed
    cdef float *sscratch   # [V] sampling scratch
    cdef int8_t *gq        # [2B, Db] quantized inputs of the head/projection products
    cdef float *gd
    cdef uint64_t *rng     # [B]
    cdef public int position

    def __cinit__(self):
        self.heads = NULL
        self.g_heads = NULL
        self.bb.layers = NULL
        self.dec.layers = NULL

    def __dealloc__(self):
        free(self.heads)
        free(self.g_heads)
        free(self.bb.layers)
        free(self.dec.layers)

    def __init__(self, dict dims, dict w, int batch, int threads, int isa):
        """dims: backbone/decoder LlamaConfig-like dicts + vocab sizes; w: name -> QTensor
        (matrices) or fp32 arrays (norm scales, rope tables)."""
        self.refs = [w]
        self.isa = isa
        self.nt = threads
        self.B = batch
        self.V = dims["audio_vocab"]
        self.K = dims["num_codebooks"]
        self.bb_chunk = max(1, 64 // batch)
        self._init_stack(&self.bb, "backbone", dims["backbone"], w, batch, batch * self.bb_chunk)
        self._init_stack(&self.dec, "decoder", dims["decoder"], w, batch, 2 * batch)
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
        self.hn = self._buf((batch, self.Dd))
        self.logits = self._buf((batch, self.V))
        self.escratch = self._buf((threads, self.Db))
        self.sscratch = self._buf((self.V,))
        self.gd = self._buf((2 * batch, self.Db // CSM_QK + 1))
        gq = np.zeros((2 * batch * self.Db + 1,), np.int8)
        self.refs.append(gq)
        cdef int8_t[::1] gqv = gq
        self.gq = &gqv[0]
        rng = np.zeros((batch,), np.uint64)
        self.refs.append(rng)
        cdef uint64_t[::1] rv = rng
        self.rng = &rv[0]
        group_add(&self.g_proj, &self.proj, self.dec.x, self.Dd, 0)
        group_add(&self.g_c0, &self.c0_head, self.logits, self.V, 0)
        cdef int i
        for i in range(self.K - 1):
            self.heads[i] = as_mat(w[f"audio_head.{i}"])
            group_add(&self.g_heads[i], &self.heads[i], self.logits, self.V, 0)
        memset(self.dec.valid, 1, batch * self.dec.maxpos)
        self.position = 0

    cdef float *_buf(self, shape) except NULL:
        a = np.zeros(shape, np.float32)
        self.refs.append(a)
        return fptr(a)

    cdef _init_stack(self, Stack *s, str prefix, dict d, dict w, int batch, int nmax):
        s.L, s.D, s.H, s.KVH = d["num_layers"], d["embed_dim"], d["num_heads"], d["num_kv_heads"]
        s.hd, s.F, s.maxpos, s.eps = s.D // s.H, d["intermediate_dim"], d["max_seq_len"], d["norm_eps"]
        s.nmax, s.B = nmax, batch
        cdef int qd = s.H * s.hd, kvd = s.KVH * s.hd, wide = max(s.D, qd, s.F)
        s.layers = <Layer *>calloc(s.L, sizeof(Layer))
        if s.layers == NULL:
            raise MemoryError()
        s.norm = fptr(w[f"{prefix}.norm.scale"])
        s.cos = fptr(w[f"{prefix}.rope_cos"])
        s.sin = fptr(w[f"{prefix}.rope_sin"])
        s.x = self._buf((nmax, s.D))
        s.xn = self._buf((nmax, s.D))
        s.q = self._buf((nmax, qd))
        s.k = self._buf((nmax, kvd))
        s.v = self._buf((nmax, kvd))
        s.att = self._buf((nmax, qd))
        s.g = self._buf((nmax, s.F))
        s.u = self._buf((nmax, s.F))
        s.ad = self._buf((nmax, wide // CSM_QK + 1))
        s.kc = self._buf((batch, s.L, s.maxpos, kvd))
        s.vc = self._buf((batch, s.L, s.maxpos, kvd))
        s.scores = self._buf((self.nt, s.maxpos))
        aq = np.zeros((nmax * wide + 1,), np.int8)
        valid = np.zeros((batch * s.maxpos,), np.uint8)
        pos = np.zeros((nmax,), np.intc)
        bidx = np.zeros((nmax,), np.intc)
        self.refs += [aq, valid, pos, bidx]
        cdef int8_t[::1] aqv = aq
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
            group_add(&ly.qkv, &ly.wq, s.q, qd, 0)
            group_add(&ly.qkv, &ly.wk, s.k, kvd, 0)
            group_add(&ly.qkv, &ly.wv, s.v, kvd, 0)
            group_add(&ly.o, &ly.wo, s.x, s.D, 1)
            group_add(&ly.gu, &ly.w1, s.g, s.F, 0)
            group_add(&ly.gu, &ly.w3, s.u, s.F, 0)
            group_add(&ly.down, &ly.w2, s.x, s.D, 1)

    def reset(self, seed):
        """Empty the caches and reseed each batch row's generator."""
        cdef int b
        cdef uint64_t st
        memset(self.bb.valid, 0, self.B * self.bb.maxpos)
        self.position = 0
        seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        for b in range(self.B):
            st = <uint64_t>seed + <uint64_t>b * 0xD1B54A32D192ED03ULL
            splitmix64(&st)
            self.rng[b] = st

    def backbone(self, const int64_t[:, :, ::1] tokens, const uint8_t[:, :, ::1] mask):
        """Embed tokens/mask [B, S, K+1] at the current position, run the backbone, keep the
        last position's normed hidden state. Inputs are validated by the caller."""
        cdef int S = <int>tokens.shape[1], s0, s1, n, b, t, i, c
        cdef int base = self.position
        with nogil:
            for b in range(self.B):
                for t in range(S):
                    c = 0
                    for i in range(self.K + 1):
                        c = c or mask[b, t, i]
                    self.bb.valid[b * self.bb.maxpos + base + t] = c
            s0 = 0
            while s0 < S:
                s1 = min(S, s0 + self.bb_chunk)
                n = 0
                for b in range(self.B):
                    for t in range(s0, s1):
                        self.bb.pos[n] = base + t
                        self.bb.bidx[n] = b
                        n += 1
                self._embed(tokens, mask, s0, s1)
                stack_layers(&self.bb, n, self.isa, self.nt)
                s0 = s1
            # the last chunk covers positions [s0 - T, S): row b's last vector is b*T + T-1
            t = S - ((S - 1) // self.bb_chunk) * self.bb_chunk
            for b in range(self.B):
                i = b * t + t - 1
                rmsnorm(self.bb.x + i * self.Db, self.bb.norm, self.hlast + b * self.Db, self.Db, self.bb.eps)
        self.position = base + S

    cdef void _embed(self, const int64_t[:, :, ::1] tokens, const uint8_t[:, :, ::1] mask,
                     int s0, int s1) noexcept nogil:
        """x[n] = text embedding (column K) + sum of codebook embeddings (columns < K), masked."""
        cdef int n, b, t, col, j, T = s1 - s0, D = self.Db
        cdef float *x
        cdef float *tmp
        cdef const csm_mat *m
        cdef int64_t row
        for n in prange(self.B * T, nogil=True, schedule="static", num_threads=self.nt):
            b = n // T
            t = s0 + n % T
            x = self.bb.x + n * D
            tmp = self.escratch + threadid() * D
            memset(x, 0, D * sizeof(float))
            for col in range(self.K + 1):
                if mask[b, t, col]:
                    if col == self.K:
                        m = &self.text_emb
                        row = tokens[b, t, col]
                    else:
                        m = &self.audio_emb
                        row = tokens[b, t, col] + <int64_t>col * self.V
                    csm_dequant_row(m.fmt, m.data + row * m.row_bytes, tmp, D)
                    for j in range(D):
                        x[j] += tmp[j]

    def decode(self, float temperature, int topk, int limit, forced=None, probe=None):
        """Codebook 0 from the backbone state, then the depth decoder for codebooks 1..K-1.

        limit: codes >= limit are never picked. forced int32 [B, K]: take these codes instead
        of sampling (teacher forcing). probe float32 [B, K, V]: receives every step's logits.
        Returns int32 [B, K].
        """
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
            self._decode(temperature, topk, limit, &cv[0, 0], fp, pp)
        return codes

    cdef void _pick(self, int i, float temperature, int topk, int limit, int *codes,
                    const int *forced, float *probe) noexcept nogil:
        cdef int b
        for b in range(self.B):
            if probe != NULL:
                memcpy(probe + (<int64_t>b * self.K + i) * self.V, self.logits + b * self.V, self.V * sizeof(float))
            if forced != NULL:
                codes[b * self.K + i] = forced[b * self.K + i]
            else:
                codes[b * self.K + i] = sample_logits(self.logits + b * self.V, limit, temperature, topk,
                                                      &self.rng[b], NULL, self.sscratch)

    cdef void _decode(self, float temperature, int topk, int limit, int *codes,
                      const int *forced, float *probe) noexcept nogil:
        cdef int B = self.B, K = self.K, Db = self.Db, Dd = self.Dd, i, b, n, j
        cdef const csm_mat *e = &self.audio_emb
        cdef int64_t row
        run_group(self.isa, self.nt, &self.g_c0, self.hlast, B, Db, self.gq, self.gd)
        self._pick(0, temperature, topk, limit, codes, forced, probe)
        for i in range(1, K):
            # decoder inputs: [backbone state, code 0] at positions 0, 1; then code i-1 at i
            n = 0
            for b in range(B):
                if i == 1:
                    memcpy(self.ebuf + n * Db, self.hlast + b * Db, Db * sizeof(float))
                    self.dec.pos[n] = 0
                    self.dec.bidx[n] = b
                    n += 1
                row = codes[b * K + i - 1] + <int64_t>(i - 1) * self.V
                csm_dequant_row(e.fmt, e.data + row * e.row_bytes, self.ebuf + n * Db, Db)
                self.dec.pos[n] = i
                self.dec.bidx[n] = b
                n += 1
            run_group(self.isa, self.nt, &self.g_proj, self.ebuf, n, Db, self.gq, self.gd)
            stack_layers(&self.dec, n, self.isa, self.nt)
            for b in range(B):
                j = 2 * b + 1 if i == 1 else b
                rmsnorm(self.dec.x + j * Dd, self.dec.norm, self.hn + b * Dd, Dd, self.dec.eps)
            run_group(self.isa, self.nt, &self.g_heads[i - 1], self.hn, B, Dd, self.gq, self.gd)
            self._pick(i, temperature, topk, limit, codes, forced, probe)
