"""The `CSM` facade: load once (tokenizer + backend + Mimi + watermark), generate many times.

    from csm_app import CSM
    tts = CSM.load("sesame/csm-1b", backend="auto", quant="q8_0")
    audio = tts.generate("Hello from Sesame.", speaker=0)          # float32, 24 kHz
    for chunk in tts.stream("A longer sentence, streamed."): play(chunk)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from csm_core import Segment
from csm_core.generation import DEFAULT_MAX_AUDIO_MS, Generation, Generator

from .backends import backend_class, pick_backend
from .discovery import DEFAULT_MODEL, ModelFiles, resolve_model

__all__ = ["CSM"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedParts:
    files: ModelFiles
    backend_name: str


class CSM:
    """Text (+ optional voice context) in, 24 kHz speech out."""

    sample_rate = 24_000

    def __init__(self, model, tokenizer, codec, watermarker=None, *, info: LoadedParts | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self.watermarker = watermarker
        self.info = info
        self._generator = Generator(model, tokenizer, codec)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike = DEFAULT_MODEL,
        backend: str = "auto",
        quant: str | None = None,
        threads: int | None = None,
        *,
        mimi: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
        offline: bool = False,
        watermark: bool = True,
    ) -> "CSM":
        from csm_core.weights import load_csm_checkpoint
        from csm_tokenizers import load_tokenizer

        files = resolve_model(model, mimi=mimi, tokenizer=tokenizer, offline=offline)
        name = pick_backend(backend)
        tok = load_tokenizer(files.tokenizer)
        config, weights = load_csm_checkpoint(files.weights)
        frame_model = make_backend(name, config, weights, quant=quant, threads=threads)
        del weights
        codec = load_codec(files.mimi, files.config)
        marker = None
        if watermark:
            from csm_audio.watermark import PatchworkWatermarker

            marker = PatchworkWatermarker()
        logger.info("loaded %s with backend %s", files.weights, name)
        return cls(frame_model, tok, codec, marker, info=LoadedParts(files, name))

    # ---- generation ----
    def generate_codes(self, text: str, speaker: int = 0, context: Sequence[Segment] = (), **options) -> Generation:
        return self._generator.generate(text, speaker=speaker, context=context, **_options(options))

    def generate(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        temperature: float = 0.9,
        topk: int = 50,
        max_audio_ms: int = DEFAULT_MAX_AUDIO_MS,
        seed: int | None = None,
        split_sentences: bool = True,
    ) -> np.ndarray:
        """float32 mono audio at 24 kHz, watermarked unless loaded with watermark=False."""
        out = self._generator.generate(
            text,
            speaker=speaker,
            context=context,
            temperature=temperature,
            topk=topk,
            max_audio_ms=max_audio_ms,
            seed=seed,
            split_sentences=split_sentences,
        )
        audio = out.audio if out.audio is not None else np.zeros(0, np.float32)
        return self._mark(audio)

    def stream(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        *,
        chunk_frames: int = 5,
        **options,
    ) -> Iterator[np.ndarray]:
        """Audio chunks (float32, 24 kHz) as frames are produced.

        With the watermark on, audio is released in whole watermark blocks (1.024 s), each marked
        on the block grid of the whole utterance, so the joined stream carries one continuous
        mark; that adds up to one block of latency. Without it, chunks of `chunk_frames` frames
        come as soon as they are decoded."""
        chunks = self._generator.stream_audio(
            text, speaker=speaker, context=context, chunk_frames=chunk_frames, **_options(options)
        )
        if self.watermarker is None:
            yield from chunks
            return
        block = self.watermarker.params.block_frames * self.watermarker.params.hop
        pending = np.zeros(0, np.float32)
        for chunk in chunks:
            pending = np.concatenate([pending, chunk])
            whole = (pending.size // block) * block
            if whole:
                yield self._mark(pending[:whole])
                pending = pending[whole:]
        if pending.size:
            yield self._mark(pending)

    def _mark(self, audio: np.ndarray) -> np.ndarray:
        if self.watermarker is None or audio.size == 0:
            return audio
        return self.watermarker.embed(audio, self.sample_rate)


def _options(options: dict) -> dict:
    allowed = {"temperature", "topk", "max_audio_ms", "seed", "split_sentences"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
    return options


def load_codec(path, config_json=None):
    """Numpy Mimi from a Kyutai/HF file or an HF CSM checkpoint; its config from the CSM
    config.json's codec_config when there is one, else the released Mimi."""
    import json

    from csm_audio import Mimi
    from csm_core import mimi as mimi_preset
    from csm_core.weights import load_mimi_checkpoint, mimi_config_from_hf

    cfg = mimi_preset()
    if config_json is not None:
        codec_cfg = json.loads(config_json.read_text()).get("codec_config")
        if codec_cfg:
            cfg = mimi_config_from_hf(codec_cfg)
    return Mimi(cfg, load_mimi_checkpoint(path, cfg))


def make_backend(name: str, config, weights, *, quant: str | None = None, threads: int | None = None):
    """Build a backend from canonical weights through its entry point."""
    cls = backend_class(name)
    kwargs = {}
    if quant is not None:
        kwargs["quant"] = quant
    if threads is not None:
        kwargs["threads"] = threads
    return cls.from_weights(config, weights, **kwargs)
