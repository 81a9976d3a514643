"""The `CSM` facade: load once (tokenizer + backend + Mimi + watermark), generate many times.

    from csm_app import CSM
    tts = CSM.load("sesame/csm-1b", backend="auto", quant="q8_0")
    audio = tts.generate("Hello from Sesame.", speaker=0)          # float32, 24 kHz
    for chunk in tts.stream("A longer sentence, streamed."): play(chunk)
    clips = tts.generate_batch(["One.", Request("Two.", speaker=1)])  # one batch, a clip each
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from csm_core import Segment
from csm_core.generation import DEFAULT_MAX_AUDIO_MS, Generation, Generator, Request

from .backends import check_quant, open_backend, pick_backend
from .discovery import DEFAULT_MODEL, ModelFiles, resolve_model
from .watermarks import choose as choose_watermark
from .watermarks import is_whole_clip, joined, joined_events

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
        self.sample_rate = int(getattr(codec, "sample_rate", self.sample_rate))
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
        watermark: bool | str = True,
    ) -> "CSM":
        """Find the model (see `discovery.resolve_model`), then load the tokenizer, the backend
        (quant "f32" | "bf16" | "q8_0" | "q4_0" | "q4_k", None = the backend's default), Mimi and the watermarker
        (watermark: True = SilentCipher if its weights are found else csm's mark, "silentcipher", "csm", False/"none";
        see watermarks.choose)."""
        from csm_tokenizers import load_tokenizer

        check_quant(quant)
        files = resolve_model(model, mimi=mimi, tokenizer=tokenizer, offline=offline)
        name = pick_backend(backend, files.layout)
        tok = load_tokenizer(files.tokenizer)
        frame_model = open_backend(name, files, quant=quant, threads=threads)
        codec = load_codec(files.mimi, files.config)
        marker = choose_watermark(watermark).marker
        logger.info("loaded %s (%s layout) on the %s backend", files.weights, files.layout, name)
        return cls(frame_model, tok, codec, marker, info=LoadedParts(files, name))

    # ---- generation ----
    def generate_codes(self, text: str, speaker: int = 0, context: Sequence[Segment] = (), **options) -> Generation:
        """The whole `Generation`: codes int64 [32, T], audio (not watermarked), per-sentence
        segments to reuse as context, stats. Options as `generate`."""
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
        return self.mark(_audio(out))

    def stream(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        *,
        chunk_frames: int = 5,
        **options,
    ) -> Iterator[np.ndarray]:
        """Audio chunks (float32, 24 kHz) as frames are produced; each chunk is watermarked
        at its position in the utterance, so the joined stream carries one continuous mark
        (SilentCipher marks whole clips only: the utterance comes as one chunk at its end)."""
        chunks = self._generator.stream_audio(
            text, speaker=speaker, context=context, chunk_frames=chunk_frames, **_options(options)
        )
        if is_whole_clip(self.watermarker):
            chunks = joined(chunks)
        position = 0
        for chunk in chunks:
            yield self.mark(chunk, position)
            position += chunk.size

    def encode_context(self, context: Sequence[Segment]) -> list[Segment]:
        """The segments with their audio encoded into Mimi codes, to pass as context to many
        calls without encoding the same audio again each time (a server's voices, a batch)."""
        K = self.model.config.audio_num_codebooks
        return [
            s if s.audio is None or s.codes is not None
            else Segment(s.speaker, s.text, codes=self.codec.encode(s.audio, num_codebooks=K))
            for s in context
        ]  # fmt: skip

    def check_requests(self, requests: Sequence[Request | str], max_audio_ms: int = DEFAULT_MAX_AUDIO_MS) -> None:
        """Raise what `generate_batch` would for these requests, without generating (the error's
        `request_index` names the request at fault)."""
        self._generator.check_requests(requests, max_audio_ms=max_audio_ms)

    def generate_batch_codes(self, requests: Sequence[Request | str], **options) -> list[Generation]:
        """Several utterances generated together, one `Generation` each, in order (audio not
        watermarked). Each text is one prompt. Options as `generate` except split_sentences."""
        return self._generator.generate_batch(requests, **_options(options, batch=True))

    def generate_batch(self, requests: Sequence[Request | str], **options) -> list[np.ndarray]:
        """Several utterances generated together (each weight is read once per frame for all of
        them): float32 24 kHz audio per request, in order, watermarked unless loaded with
        watermark=False. A request is a text or `Request(text, speaker, context)`."""
        return [self.mark(_audio(g)) for g in self.generate_batch_codes(requests, **options)]

    def stream_batch(
        self, requests: Sequence[Request | str], *, chunk_frames: int = 5, **options
    ) -> Iterator[tuple[int, np.ndarray | None]]:
        """Several utterances generated together, streamed: (request index, float32 24 kHz chunk)
        as frames are decoded, then (index, None) once that request has ended. Each request's
        chunks are watermarked at their place in it. Input is checked before this returns."""
        events = self._generator.stream_batch_audio(requests, chunk_frames=chunk_frames, **_options(options, batch=True))
        return self._marked(events)

    def _marked(self, events) -> Iterator[tuple[int, np.ndarray | None]]:
        position: dict[int, int] = {}
        if is_whole_clip(self.watermarker):
            events = joined_events(events)
        try:
            for i, chunk in events:
                if chunk is not None:
                    start = position.get(i, 0)
                    position[i] = start + chunk.size
                    chunk = self.mark(chunk, start)
                yield i, chunk
        finally:
            events.close()  # a consumer that stops early stops the generation

    def mark(self, audio: np.ndarray, start_sample: int = 0) -> np.ndarray:
        """`audio` watermarked as the samples from `start_sample` on of an utterance (unchanged
        when loaded with watermark=False)."""
        if self.watermarker is None or audio.size == 0:
            return audio
        return self.watermarker.embed(audio, self.sample_rate, start_sample=start_sample)


def _audio(generation: Generation) -> np.ndarray:
    return generation.audio if generation.audio is not None else np.zeros(0, np.float32)


def _options(options: dict, batch: bool = False) -> dict:
    allowed = {"temperature", "topk", "max_audio_ms", "seed"} | (set() if batch else {"split_sentences"})
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
    return options


def load_codec(path, model_config=None):
    """Numpy Mimi from a Kyutai/HF file or an HF CSM checkpoint. Its config: a config.json beside
    the Mimi file (HF Mimi or a CSM codec_config), else the CSM model's codec_config, else the
    released Mimi."""
    from csm_audio import Mimi
    from csm_core.weights import mimi_config_beside

    config = mimi_config_beside(path) or (mimi_config_beside(model_config) if model_config is not None else None)
    return Mimi.from_checkpoint(path, config)
