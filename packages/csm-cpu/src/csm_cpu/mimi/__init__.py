"""Mimi codec on csm-cpu's kernels (spec/mimi.md): csm_core.protocols.AudioCodec, fp32 or bf16 weights."""

from .. import _mimi
from ..features import active_isa

_mimi.set_isa(active_isa())

from .codec import FORMATS, Mimi, MimiBatchDecoder, MimiStreamingDecoder  # noqa: E402

__all__ = ["Mimi", "MimiStreamingDecoder", "MimiBatchDecoder", "FORMATS"]
