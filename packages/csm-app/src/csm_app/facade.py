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

from csm_core import GenerationOptions, Segment
from csm_core.generation import Generation, Generator, Request
from csm_core.scheduler import Scheduler
from csm_core.slots import FrameModelSlots

from .backends import BackendError, check_quant, open_backend, pick_backend
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
        adapter: str | os.PathLike | None = None,
    ) -> "CSM":
        """Find the model (see `discovery.resolve_model`), then load the tokenizer, the backend
        (quant "f32" | "bf16" | "q8_0" | "q4_0" | "q4_k", None = the backend's default), Mimi and the watermarker
        (watermark: True = SilentCipher if its weights are found else csm's mark, "silentcipher", "csm", False/"none";
        see watermarks.choose). adapter: a LoRA adapter directory from `csm finetune`, applied on the MLX
        backend ("auto" picks it)."""
        from csm_tokenizers import load_tokenizer

        check_quant(quant)
        files = resolve_model(model, mimi=mimi, tokenizer=tokenizer, offline=offline)
        if adapter is not None and backend == "auto" and files.layout != "gguf":
            backend = "mlx"
        name = pick_backend(backend, files.layout)
        tok = load_tokenizer(files.tokenizer)
        frame_model = open_backend(name, files, quant=quant, threads=threads)
        if adapter is not None:
            _attach_adapter(frame_model, name, adapter)
        codec = load_codec(files.mimi, files.config, threads=threads)
        marker = choose_watermark(watermark).marker
        logger.info("loaded %s (%s layout) on the %s backend", files.weights, files.layout, name)
        return cls(frame_model, tok, codec, marker, info=LoadedParts(files, name))

    # ---- generation ----
    # Options: a csm_core.GenerationOptions and/or its field names as keywords (temperature, topk,
    # max_audio_ms, seed, split_sentences, mask_undecodable); unknown names raise a TypeError.
    def generate_codes(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (), options: GenerationOptions | None = None,
        **overrides,
    ) -> Generation:  # fmt: skip
        """The whole `Generation`: codes int64 [32, T], audio (not watermarked), per-sentence
        segments to reuse as context, stats."""
        return self._generator.generate(text, speaker, context, options, **overrides)

    def generate(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (), options: GenerationOptions | None = None,
        **overrides,
    ) -> np.ndarray:  # fmt: skip
        """float32 mono audio at 24 kHz, watermarked unless loaded with watermark=False."""
        return self.mark(_audio(self._generator.generate(text, speaker, context, options, **overrides)))

    def stream(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (), options: GenerationOptions | None = None,
        *, chunk_frames: int = 5, **overrides,
    ) -> Iterator[np.ndarray]:  # fmt: skip
        """Audio chunks (float32, 24 kHz) as frames are produced; each chunk is watermarked
        at its position in the utterance, so the joined stream carries one continuous mark
        (SilentCipher marks whole clips only: the utterance comes as one chunk at its end)."""
        chunks = self._generator.stream_audio(text, speaker, context, options, chunk_frames=chunk_frames, **overrides)
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

    def check_requests(self, requests: Sequence[Request | str], options: GenerationOptions | None = None, **overrides) -> None:
        """Raise what `generate_batch` would for these requests, without generating (the error's
        `request_index` names the request at fault)."""
        self._generator.check_requests(requests, options, **overrides)

    def generate_batch_codes(
        self, requests: Sequence[Request | str], options: GenerationOptions | None = None, **overrides
    ) -> list[Generation]:
        """Several utterances generated together, one `Generation` each, in order (audio not
        watermarked). Each text is one prompt. Options as `generate` except split_sentences."""
        return self._generator.generate_batch(requests, options, **overrides)

    def generate_batch(
        self, requests: Sequence[Request | str], options: GenerationOptions | None = None, **overrides
    ) -> list[np.ndarray]:
        """Several utterances generated together (each weight is read once per frame for all of
        them): float32 24 kHz audio per request, in order, watermarked unless loaded with
        watermark=False. A request is a text or `Request(text, speaker, context)`."""
        return [self.mark(_audio(g)) for g in self.generate_batch_codes(requests, options, **overrides)]

    def stream_batch(
        self, requests: Sequence[Request | str], options: GenerationOptions | None = None, *, chunk_frames: int = 5,
        **overrides,
    ) -> Iterator[tuple[int, np.ndarray | None]]:  # fmt: skip
        """Several utterances generated together, streamed: (request index, float32 24 kHz chunk)
        as frames are decoded, then (index, None) once that request has ended. Each request's
        chunks are watermarked at their place in it. Input is checked before this returns."""
        events = self._generator.stream_batch_audio(requests, options, chunk_frames=chunk_frames, **overrides)
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

    def scheduler(
        self, slots: int = 4, *, chunk_frames: int | None = 5, prefill_rows: int = 128, max_waiting: int | None = None
    ) -> Scheduler:
        """A continuous-batching scheduler on this model (csm_core.scheduler): requests join and
        leave `slots` rows as they come, each with its own options and seed. Its audio is not
        watermarked: mark each job's chunks with `mark(chunk, start_sample)`. While it runs, it owns
        the backend: do not call generate() etc. from another thread meanwhile."""
        model = self.model
        if not hasattr(model, "open_slots"):
            if slots != 1:
                logger.warning("the %s backend holds one slot: requests run one at a time", getattr(model, "name", "?"))
                slots = 1
            model = FrameModelSlots(lambda: self.model)
        return Scheduler(model, self.tokenizer, self.codec, slots=slots, chunk_frames=chunk_frames,
                         prefill_rows=prefill_rows, max_waiting=max_waiting)

    def mark(self, audio: np.ndarray, start_sample: int = 0) -> np.ndarray:
        """`audio` watermarked as the samples from `start_sample` on of an utterance (unchanged
        when loaded with watermark=False)."""
        if self.watermarker is None or audio.size == 0:
            return audio
        return self.watermarker.embed(audio, self.sample_rate, start_sample=start_sample)


def _audio(generation: Generation) -> np.ndarray:
    return generation.audio if generation.audio is not None else np.zeros(0, np.float32)


def _attach_adapter(frame_model, backend_name: str, adapter) -> None:
    if backend_name != "mlx":
        raise BackendError(
            f"an adapter runs on the mlx backend only, not {backend_name!r}; for other backends merge it first: "
            "csm convert MODEL OUT --merge-adapter DIR"
        )
    from csm_mlx.training.lora import attach_adapter, load_adapter

    attach_adapter(frame_model.model, load_adapter(adapter, frame_model.config))


CODECS = ("auto", "cpu", "cpu-bf16", "numpy", "mlx")


def load_codec(path, model_config=None, threads: int | None = None):
    """Mimi from a Kyutai/HF file or an HF CSM checkpoint: csm-cpu's (its own kernels) when csm-cpu
    is installed, else the numpy one; $CSM_CODEC picks one of CODECS (cpu-bf16: bf16 weights; mlx: csm-mlx's
    Mimi on MLX's default device, e.g. the GPU beside an mlx backend).
    Its config: a config.json beside the Mimi file (HF Mimi or a CSM codec_config), else the CSM
    model's codec_config, else the released Mimi. threads: csm-cpu's codec threads (None: $CSM_NUM_THREADS,
    else one per physical core), as the backend's: a Ray actor's --threads-per-actor bounds its codec too."""
    from csm_core.weights import mimi_config_beside

    choice = os.environ.get("CSM_CODEC", "").strip().lower() or "auto"
    if choice not in CODECS:
        raise ValueError(f"CSM_CODEC={choice!r}: expected one of {', '.join(CODECS)}")
    config = mimi_config_beside(path) or (mimi_config_beside(model_config) if model_config is not None else None)
    if choice == "mlx":
        from csm_mlx.mimi.codec import MlxMimi

        return MlxMimi.from_checkpoint(path, config)
    if choice != "numpy":
        try:
            from csm_cpu.mimi import Mimi as CpuMimi
        except ImportError:
            if choice != "auto":
                raise
        else:
            return CpuMimi.from_checkpoint(path, config, fmt="bf16" if choice == "cpu-bf16" else "f32", threads=threads)
    from csm_audio import Mimi

    return Mimi.from_checkpoint(path, config)
