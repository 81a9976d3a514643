"""The work of the Mimi codec, counted exactly from a built csm_cpu.mimi.Mimi: per layer, the
floating-point operations per second of audio (a multiply-add counts 2) of the products and of
attention, and the weight bytes each layer reads. The elementwise passes (ELU, GELU, LayerNorm,
RoPE, codebook sums) are left out: they are under 0.2% of the total at full size.

Products count the model's own multiply-adds (a conv of kernel k, Cin -> Cout, at output rate r:
2·k·Cin·Cout·r; a transposed conv of stride s, kernel nb·s: 2·nb·Cin·Cout·s per input step, i.e.
no zero taps). Attention counts 4·d per (query, key seen) pair: q·k and the weighted sum of v, over
all heads; a query sees min(position + 1, context) keys, so the per-second figure depends on the
clip's length (`seconds`) and a streamed frame is counted at the steady state (context full).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerCost", "encode_cost", "decode_cost", "frame_cost", "total"]


@dataclass(frozen=True)
class LayerCost:
    name: str
    flops: float  # per second of audio (per frame for frame_cost)
    weight_bytes: int  # bytes of packed weight the layer reads once per call


def _conv(name, conv, rate_out) -> LayerCost:
    return LayerCost(name, 2.0 * conv.k * conv.cin * conv.cout * rate_out, conv.mat.nbytes)


def _convtr(name, tr, rate_in) -> LayerCost:
    return LayerCost(name, 2.0 * tr.nb * tr.s * tr.cin * tr.cout * rate_in, tr.mat.nbytes)


def _res(name, res, rate) -> list[LayerCost]:
    return [_conv(f"{name}.conv_k{res.conv1.k}", res.conv1, rate), _conv(f"{name}.conv_k1", res.conv2, rate)]


def _keys_seen(steps: int, context: int) -> int:
    """Σ over queries 0..steps-1 of min(i + 1, context)."""
    full = min(steps, context)
    return full * (full + 1) // 2 + max(0, steps - context) * context


def _transformer(name, tr, rate, seconds) -> list[LayerCost]:
    out = []
    if seconds is None:  # steady state: every query sees a full context
        att = 4.0 * tr.d * tr.context * rate
    else:
        steps = max(1, round(rate * seconds))
        att = 4.0 * tr.d * _keys_seen(steps, tr.context) / seconds
    for i, L in enumerate(tr.layers):
        for part, mat in (("in_proj", L.w_in), ("out_proj", L.w_out), ("linear1", L.w1), ("linear2", L.w2)):
            out.append(LayerCost(f"{name}.{i}.{part}", 2.0 * mat.K * mat.N * rate, mat.nbytes))
        out.append(LayerCost(f"{name}.{i}.attention", att, 0))
    return out


def decode_cost(model, seconds: float | None = 10.0) -> list[LayerCost]:
    """Per layer, FLOPs per second of audio of a whole-clip decode of `seconds` (None: the steady
    state of a long stream, every query over a full attention context)."""
    sr, fr = model.sample_rate, model.sample_rate / model.frame_size
    s = model.upsample.s
    rate = fr * s  # latent steps per second (25 Hz at full size)
    q = model.quantizer
    out = [
        LayerCost("rvq.output_proj", 2.0 * 2 * q.first.output_proj.K * q.first.output_proj.N * fr,
                  q.first.output_proj.nbytes + q.rest.output_proj.nbytes),
        LayerCost("upsample (depthwise)", 2.0 * 2 * s * model.upsample.c * fr, 4 * 2 * s * model.upsample.c),
    ]
    out += _transformer("decoder_transformer", model.decoder_transformer, rate, seconds)
    dec = model.decoder
    out.append(_conv("seanet.conv_in", dec.first, rate))
    for i, (up, res) in enumerate(dec.stages):
        out.append(_convtr(f"seanet.{i}.convtr", up, rate))
        rate *= up.s
        out += _res(f"seanet.{i}.res", res, rate)
    out.append(_conv("seanet.conv_out", dec.last, rate))
    assert abs(rate - sr) < 1e-6 * sr, (rate, sr)
    return out


def encode_cost(model, seconds: float = 10.0) -> list[LayerCost]:
    """Per layer, FLOPs per second of audio of a whole-clip encode (all codebooks) of `seconds`."""
    enc = model.encoder
    rate = float(model.sample_rate)
    out = [_conv("seanet.conv_in", enc.first, rate)]
    for i, (res, down) in enumerate(enc.stages):
        out += _res(f"seanet.{i}.res", res, rate)
        rate /= down.s
        out.append(_conv(f"seanet.{i}.down", down, rate))
    out.append(_conv("seanet.conv_out", enc.last, rate))
    out += _transformer("encoder_transformer", model.encoder_transformer, rate, seconds)
    rate /= model.downsample.s
    out.append(_conv("downsample", model.downsample, rate))
    q = model.quantizer
    for rvq, n in ((q.first, q.n_semantic), (q.rest, model.num_codebooks - q.n_semantic)):
        p = rvq.input_proj
        out.append(LayerCost(f"rvq.{'semantic' if rvq is q.first else 'acoustic'}.input_proj", 2.0 * p.K * p.N * rate,
                             p.nbytes))
        d = rvq.dist[0]
        out.append(LayerCost(f"rvq.{'semantic' if rvq is q.first else 'acoustic'}.distances ({n} books)",
                             2.0 * n * d.K * d.N * rate, sum(m.nbytes for m in rvq.dist[:n])))
    return out


def frame_cost(model) -> list[LayerCost]:
    """Per layer, FLOPs of one streamed frame at the steady state (attention context full) and the
    weight bytes it reads: every weight once (the codebooks' few rows are left out)."""
    fr = model.sample_rate / model.frame_size
    return [LayerCost(c.name, c.flops / fr, c.weight_bytes) for c in decode_cost(model, None)]


def total(costs: list[LayerCost]) -> tuple[float, int]:
    """(FLOPs, weight bytes) summed over layers."""
    return sum(c.flops for c in costs), sum(c.weight_bytes for c in costs)
