"""The `csm` command line. Exit codes: 0 success, 2 usage error, 1 runtime error (one line; -v for
the traceback)."""

from __future__ import annotations

import functools
import json
import logging
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from .backends import QUANTS
from .discovery import DEFAULT_MODEL

FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "pcm")
logger = logging.getLogger("csm")


class Fail(click.ClickException):
    """A runtime failure: one line, exit code 1."""

    exit_code = 1


def runtime_errors(fn):
    """Turn library exceptions into one-line errors (exit 1); -v shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary
            if kwargs.get("verbose"):
                traceback.print_exc()
            msg = str(e).strip() or type(e).__name__
            raise Fail(f"{type(e).__name__}: {msg}" if not isinstance(e, (ValueError, OSError)) else msg) from e

    return wrapper


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="csm: %(message)s", stream=sys.stderr, force=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="csm-app")
def main() -> None:
    """CSM-1B speech generation without PyTorch."""


def _check_backend(ctx, param, value: str) -> str:
    from .backends import available_backends

    known = sorted(available_backends())
    if value != "auto" and value not in known:
        raise click.BadParameter(f"unknown backend {value!r}; choose auto or one installed: {', '.join(known) or 'none'}")
    return value


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def model_options(fn):
    for opt in reversed(
        [
            click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Directory, file or Hugging Face repo id."),
            click.option("--mimi", type=click.Path(dir_okay=False), help="Mimi checkpoint (original layout)."),
            click.option("--tokenizer", type=click.Path(), help="tokenizer.json or tokenizer.model."),
            click.option("--offline", is_flag=True, help="Never download; use only local files."),
            click.option("--backend", default="auto", show_default=True, callback=_check_backend, help="auto, cpu or mlx."),
            click.option("--quant", type=click.Choice(QUANTS), help="Weight format for the backend."),
            click.option("--threads", type=click.IntRange(min=1), help="Compute threads (default: all cores)."),
            click.option("-v", "--verbose", count=True, help="Debug logging and full tracebacks."),
            click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr."),
        ]
    ):
        fn = opt(fn)
    return fn


def generation_options(fn):
    for opt in reversed(
        [
            click.option("--temperature", type=click.FloatRange(min=0), default=0.9, show_default=True, help="0 = greedy."),
            click.option("--topk", type=click.IntRange(min=1), default=50, show_default=True),
            click.option("--seed", type=int, help="Make sampling reproducible."),
            click.option("--max-audio-ms", type=click.IntRange(min=80), default=90_000, show_default=True,
                         help="Longest audio per prompt."),
            click.option("--no-watermark", is_flag=True, help="Do not watermark the output."),
        ]
    ):
        fn = opt(fn)
    return fn


# ---------------------------------------------------------------- say
@main.command()
@click.argument("text", required=False)
@click.option("-i", "--input", "input_file", type=click.File("r"), help="Read the text from a file.")
@click.option("-o", "--output", default=None, help="Output file, or - for stdout. Default: out.wav")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Audio format (default: from the extension).")
@click.option("-s", "--speaker", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--context-text", multiple=True, help="Text of a context turn (repeat per turn).")
@click.option("--context-audio", multiple=True, type=click.Path(dir_okay=False), help="Audio of that turn.")
@click.option("--context-speaker", multiple=True, type=click.IntRange(min=0), help="Speaker of that turn.")
@click.option("--context", "context_file", type=click.Path(dir_okay=False), help="JSONL: {speaker, text, audio}.")
@generation_options
@click.option("--no-split", is_flag=True, help="Generate the text as one prompt (no sentence splitting).")
@model_options
@runtime_errors
def say(text, input_file, output, fmt, speaker, context_text, context_audio, context_speaker, context_file,
        temperature, topk, seed, max_audio_ms, no_split, no_watermark, model, mimi, tokenizer, offline,
        backend, quant, threads, verbose, quiet):
    """Speak TEXT (or - for stdin, or -i FILE) into an audio file (or - for stdout)."""
    _setup_logging(verbose, quiet)
    if input_file is not None:
        if text is not None:
            raise click.UsageError("give the text as an argument or with -i, not both")
        text = input_file.read()
    elif text == "-" or text is None:
        if text is None and _is_terminal(sys.stdin):
            raise click.UsageError("no text: pass TEXT, - (stdin) or -i FILE")
        text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("the text to say is empty")
    output = output or "out.wav"
    fmt = fmt or _format_from_name(output)
    _refuse_terminal(output)

    from .audio_io import AudioSink, read_context_audio
    from .facade import CSM

    context = _context_segments(context_text, context_audio, context_speaker, context_file, read_context_audio)
    tts = CSM.load(model, backend=backend, quant=quant, threads=threads, mimi=mimi, tokenizer=tokenizer,
                   offline=offline, watermark=not no_watermark)
    sink = AudioSink(output, tts.sample_rate, fmt)
    with _progress(quiet) as progress:
        for chunk in tts.stream(text, speaker=speaker, context=context, temperature=temperature, topk=topk,
                                seed=seed, max_audio_ms=max_audio_ms, split_sentences=not no_split):
            sink.write(chunk)
            progress(chunk.size / tts.sample_rate)
    sink.close()
    logger.info("wrote %.2f s of audio to %s", sink.samples / tts.sample_rate, output)


def _refuse_terminal(output: str) -> None:
    if output == "-" and _is_terminal(sys.stdout):
        raise click.UsageError("refusing to write binary audio to a terminal; use -o FILE or a pipe")


def _format_from_name(output: str) -> str:
    if output == "-":
        return "wav"
    ext = Path(output).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise click.UsageError(f"cannot tell the audio format from {output!r}; use --format ({', '.join(FORMATS)})")
    return ext


def _context_segments(texts, audios, speakers, jsonl, read_audio):
    from .inputs import InputError, Turn, context_segments, read_context

    if audios and len(audios) != len(texts):
        raise click.UsageError(f"{len(texts)} --context-text but {len(audios)} --context-audio: give one audio per turn")
    if speakers and len(speakers) != len(texts):
        raise click.UsageError(f"{len(texts)} --context-text but {len(speakers)} --context-speaker")
    turns = [
        Turn(speakers[i] if speakers else 0, t, Path(audios[i]) if audios else None) for i, t in enumerate(texts)
    ]
    try:
        turns += read_context(jsonl) if jsonl else []
    except InputError as e:
        raise click.UsageError(str(e)) from e
    return context_segments(turns, read_audio)


class _progress:
    """A progress line on stderr, only when stderr is a terminal."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and _is_terminal(sys.stderr)
        self.seconds = 0.0

    def __enter__(self):
        return self

    def __call__(self, seconds: float) -> None:
        self.seconds += seconds
        if self.enabled:
            sys.stderr.write(f"\rcsm: {self.seconds / 0.08:.0f} frames, {self.seconds:.2f} s of audio")
            sys.stderr.flush()

    def __exit__(self, *exc):
        if self.enabled:
            sys.stderr.write("\n")


# ---------------------------------------------------------------- batch
@main.command()
@click.argument("requests_file", metavar="REQUESTS.jsonl", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where the audio files go (created if missing).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="wav", show_default=True,
              help="Format of requests without an 'output' name.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests generated together (each weight is read once per frame for all of them).")
@generation_options
@model_options
@runtime_errors
def batch(requests_file, output_dir, fmt, batch_size, temperature, topk, seed, max_audio_ms, no_watermark,
          model, mimi, tokenizer, offline, backend, quant, threads, verbose, quiet):
    """Speak every request of a JSONL file into audio files, BATCH_SIZE at a time.

    One JSON object per line: {"text": ..., "speaker": 0, "context": [{"speaker", "text", "audio"},
    ...] or "voice.jsonl", "output": "name.wav"}; only "text" is required. Each text is one prompt.
    Prints one JSON line per file written (line, output, seconds, frames, stop)."""
    _setup_logging(verbose, quiet)
    from .audio_io import read_context_audio, write_output
    from .facade import CSM
    from .inputs import InputError, read_batch

    read_audio = functools.lru_cache(maxsize=None)(read_context_audio)  # a voice file is read once
    try:
        items = read_batch(requests_file, Path(output_dir), fmt, FORMATS, read_audio)
    except InputError as e:
        raise click.UsageError(str(e)) from e
    tts = CSM.load(model, backend=backend, quant=quant, threads=threads, mimi=mimi, tokenizer=tokenizer,
                   offline=offline, watermark=not no_watermark)
    codes: dict[int, object] = {}  # id(audio read once) -> its context segment encoded once

    def encoded(segment):
        if segment.audio is None:
            return segment
        if id(segment.audio) not in codes:
            codes[id(segment.audio)] = tts.encode_context([segment])[0].codes
        return type(segment)(segment.speaker, segment.text, codes=codes[id(segment.audio)])

    requests = [replace(it.request, context=tuple(map(encoded, it.request.context))) for it in items]
    try:  # every request is checked before the first is generated
        tts.check_requests(requests, max_audio_ms=max_audio_ms)
    except (TypeError, ValueError) as e:
        index = getattr(e, "request_index", None)
        raise click.UsageError(f"{requests_file}:{items[index].line}: {e}" if index is not None else str(e)) from e
    empty = 0
    for start in range(0, len(items), batch_size):
        group = items[start : start + batch_size]
        results = tts.generate_batch_codes(requests[start : start + batch_size], temperature=temperature, topk=topk,
                                           seed=seed, max_audio_ms=max_audio_ms)
        for it, result in zip(group, results):
            row = {"line": it.line, "output": str(it.output), "frames": int(result.codes.shape[1]),
                   "stop": result.stats.stop_reasons[0]}
            if result.codes.shape[1] == 0:
                empty += 1
                row["error"] = "no audio was generated (the model stopped at once)"
            else:
                audio = tts.mark(result.audio)
                it.output.parent.mkdir(parents=True, exist_ok=True)
                write_output(str(it.output), audio, tts.sample_rate, it.fmt)
                row["seconds"] = round(audio.size / tts.sample_rate, 3)
            click.echo(json.dumps(row))
    if empty:
        raise Fail(f"{empty} of {len(items)} requests produced no audio (see their 'error' lines)")


# ---------------------------------------------------------------- serve
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--voice", "voices", multiple=True, metavar="NAME=CONTEXT.jsonl",
              help="A named voice: context turns as `say --context` reads them; the last turn's speaker speaks. Repeat.")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=5, show_default=True,
              help="Frames (80 ms each) per streamed audio chunk.")
@click.option("--max-waiting", type=click.IntRange(min=0), default=8, show_default=True,
              help="Requests that may wait for the model; more get 503 (Retry-After).")
@click.option("--max-batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Waiting requests generated together (one sentence each, same options, no seed); 1: one at a time.")
@generation_options
@model_options
@runtime_errors
def serve(host, port, voices, chunk_frames, max_waiting, max_batch, temperature, topk, seed, max_audio_ms,
          no_watermark, model, mimi, tokenizer, offline, backend, quant, threads, verbose, quiet):
    """Serve speech over HTTP: POST /v1/audio/speech (OpenAI-compatible), GET /v1/voices, /health.

    The generation options set each request's defaults; a request may override them."""
    _setup_logging(verbose, quiet)
    from .audio_io import read_context_audio
    from .facade import CSM
    from .inputs import InputError, context_segments, read_context
    from .server import SpeechService, Voice, make_server

    voice_turns = {}
    for spec in voices:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(f"--voice {spec!r}: expected NAME=CONTEXT.jsonl")
        if name.isdigit() or name in voice_turns:
            why = "digits name speaker ids" if name.isdigit() else "given twice"
            raise click.UsageError(f"--voice {name!r}: {why}")
        try:
            turns = read_context(path)
        except InputError as e:
            raise click.UsageError(str(e)) from e
        if not turns or any(t.audio is None for t in turns):
            why = "has no turns" if not turns else "has a turn without 'audio'"
            raise click.UsageError(f"--voice {name}: {path} {why}")
        voice_turns[name] = turns
    contexts = {name: context_segments(turns, read_context_audio) for name, turns in voice_turns.items()}
    tts = CSM.load(model, backend=backend, quant=quant, threads=threads, mimi=mimi, tokenizer=tokenizer,
                   offline=offline, watermark=not no_watermark)
    named = [Voice(n, segs[-1].speaker, tuple(tts.encode_context(segs))) for n, segs in contexts.items()]
    defaults = {"temperature": temperature, "topk": topk, "seed": seed, "max_audio_ms": max_audio_ms}
    service = SpeechService(tts, named, defaults=defaults, chunk_frames=chunk_frames, max_waiting=max_waiting,
                            max_batch=max_batch)
    server = make_server(service, host, port)
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"csm: serving on http://{bound_host}:{bound_port} (POST /v1/audio/speech)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()


# ---------------------------------------------------------------- codec
@main.group()
def codec() -> None:
    """Mimi codec: audio <-> codes."""


def _load_codec(mimi_path, model, offline):
    from .discovery import resolve_model
    from .facade import load_codec

    files = resolve_model(model, mimi=mimi_path, offline=offline, need_tokenizer=False)
    return load_codec(files.mimi, files.config)


@codec.command("encode")
@click.argument("input_path", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="codes.npy")
@click.option("--codebooks", type=click.IntRange(1, 32), default=32, show_default=True)
@click.option("--mimi", type=click.Path(exists=True), help="Mimi checkpoint (default: from --model).")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--offline", is_flag=True)
@click.option("-v", "--verbose", count=True)
@runtime_errors
def codec_encode(input_path, output, codebooks, mimi, model, offline, verbose):
    """Encode an audio file into Mimi codes [K, T] (int16 .npy, 12.5 frames a second)."""
    _setup_logging(verbose, False)
    from .audio_io import read_context_audio

    mimi_codec = _load_codec(mimi, model, offline)
    codes = mimi_codec.encode(read_context_audio(Path(input_path), mimi_codec.sample_rate), num_codebooks=codebooks)
    np.save(output, codes.astype(np.int16))
    click.echo(f"{output}: {codes.shape[0]} codebooks x {codes.shape[1]} frames", err=True)


@codec.command("decode")
@click.argument("codes_path", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, help="Audio file, or - for stdout.")
@click.option("--format", "fmt", type=click.Choice(FORMATS))
@click.option("--mimi", type=click.Path(exists=True))
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--offline", is_flag=True)
@click.option("-v", "--verbose", count=True)
@runtime_errors
def codec_decode(codes_path, output, fmt, mimi, model, offline, verbose):
    """Decode Mimi codes (.npy, [K, T]) into audio."""
    _setup_logging(verbose, False)
    from .audio_io import write_output

    fmt = fmt or _format_from_name(output)
    _refuse_terminal(output)
    from .inputs import InputError, read_codes

    try:
        codes = read_codes(codes_path)
    except InputError as e:
        raise Fail(str(e)) from e
    mimi_codec = _load_codec(mimi, model, offline)
    write_output(output, mimi_codec.decode(codes), mimi_codec.sample_rate, fmt)


# ---------------------------------------------------------------- tokenize
@main.command()
@click.argument("text")
@click.option("--tokenizer", type=click.Path(exists=True), help="tokenizer.json / tokenizer.model (default: from --model).")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--speaker", type=click.IntRange(min=0), help="Wrap as a CSM turn: [speaker]text with bos/eos.")
@click.option("--offline", is_flag=True)
@click.option("-v", "--verbose", count=True)
@runtime_errors
def tokenize(text, tokenizer, model, speaker, offline, verbose):
    """Print the token ids of TEXT."""
    from csm_tokenizers import encode_turn, load_tokenizer

    from .discovery import resolve_model

    path = tokenizer or resolve_model(model, offline=offline, need_codec=False).tokenizer
    tok = load_tokenizer(path)
    ids = encode_turn(tok, speaker, text) if speaker is not None else tok.encode(text)
    click.echo(" ".join(map(str, ids)))


# ---------------------------------------------------------------- watermark
@main.group()
def watermark() -> None:
    """The csm audio watermark (not SilentCipher's)."""


@watermark.command("detect")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("-v", "--verbose", count=True)
@runtime_errors
def watermark_detect(path, verbose):
    """Say whether FILE carries the csm watermark. Exit 0 when found, 3 when not."""
    from csm_audio.io import read_audio
    from csm_audio.resample import to_mono
    from csm_audio.watermark import PatchworkWatermarker

    audio, sr = read_audio(path)
    result = PatchworkWatermarker().detect(to_mono(audio), sr)
    status = "found" if result.found else "not found"
    payload = f" payload=0x{result.payload:08x}" if result.payload is not None else ""
    reason = f" ({result.reason})" if result.reason else ""
    click.echo(f"{path}: watermark {status}{payload} score={result.score:.2f}{reason}")
    sys.exit(0 if result.found else 3)


# ---------------------------------------------------------------- info
@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
def info(model):
    """Versions, installed backends, CPU features, threads, and whether the model is found."""
    from importlib.metadata import PackageNotFoundError, version

    from .backends import available_backends
    from .discovery import ModelNotFound, hub_cache_dir, resolve_model

    for dist in ("csm-core", "csm-tokenizers", "csm-cpu", "csm-mlx", "csm-audio", "csm-app"):
        try:
            click.echo(f"{dist:15} {version(dist)}")
        except PackageNotFoundError:
            click.echo(f"{dist:15} not installed")
    click.echo(f"backends        {', '.join(sorted(available_backends())) or 'none'}")
    try:
        import csm_cpu

        feats = csm_cpu.cpu_features()
        click.echo(f"cpu features    {feats}")
    except ImportError:
        pass
    import os

    click.echo(f"cores           {os.cpu_count()}")
    click.echo(f"hub cache       {hub_cache_dir()}")
    try:
        files = resolve_model(model, offline=True)
        click.echo(f"model           {files.weights} ({files.layout} layout)")
        click.echo(f"mimi            {files.mimi}")
        click.echo(f"tokenizer       {files.tokenizer}")
    except (ModelNotFound, OSError) as e:
        click.echo(f"model           not found: {str(e).splitlines()[0]}")


# ---------------------------------------------------------------- convert / bench
@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.argument("destination", type=click.Path())
@click.option("--to", "target", type=click.Choice(["gguf", "mlx"]), required=True, help="Output format.")
@click.option("--quant", type=click.Choice(QUANTS), help="Weight format (default: q8_0 for gguf, bf16 for mlx).")
@click.option("--group-size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
              help="mlx quantization group size.")
@click.option("-v", "--verbose", count=True)
@runtime_errors
def convert(source, destination, target, quant, group_size, verbose):
    """Convert a CSM checkpoint (original, .pt, Hugging Face) for a backend."""
    _setup_logging(verbose, False)
    from .convert import convert_checkpoint

    out = convert_checkpoint(source, destination, target, quant=quant, group_size=int(group_size))
    click.echo(f"wrote {out}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("which", type=click.Choice(["cpu", "mimi", "mlx", "tokenizers", "watermark"]))
@click.pass_context
def bench(ctx, which):
    """Run a benchmark from the checkout's tools/ (random weights of the real shapes); extra args pass through."""
    from .bench import BenchError, run_bench

    try:
        code = run_bench(which, ctx.args)
    except BenchError as e:
        raise Fail(str(e)) from e
    sys.exit(code)


if __name__ == "__main__":
    main()
