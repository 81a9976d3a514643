"""The `csm` command line. Exit codes: 0 success, 2 usage error, 1 runtime error (one line; -v for
the traceback)."""

from __future__ import annotations

import functools
import json
import logging
import sys
import traceback
from pathlib import Path

import click
import numpy as np

from .discovery import DEFAULT_MODEL
from .finetune import cli_options as _finetune_options
from .watermarks import requested as requested_watermark

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


def _check_quant_name(ctx, param, value: str | None) -> str | None:
    from .backends import BackendError, check_quant

    try:
        check_quant(value)
    except BackendError as e:
        raise click.BadParameter(str(e)) from None
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
            click.option("--quant", callback=_check_quant_name,
                         help="Weight format for the backend (cpu: f32, bf16, q8_0, q4_0, q4_k)."),
            click.option("--threads", type=click.IntRange(min=1), help="Compute threads (default: one per physical core this process may use)."),
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
            click.option("--no-watermark", is_flag=True, help="Do not watermark the output (= --watermark none)."),
            click.option("--watermark", "watermark_kind", type=click.Choice(["silentcipher", "csm", "none"]),
                         help="Mark: silentcipher (the official one; default when its weights are found), csm, none."),
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
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), help="LoRA adapter from csm finetune (mlx backend).")
@model_options
@runtime_errors
def say(text, input_file, output, fmt, speaker, context_text, context_audio, context_speaker, context_file,
        temperature, topk, seed, max_audio_ms, no_split, adapter, no_watermark, watermark_kind, model, mimi, tokenizer,
        offline,
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
                   offline=offline, watermark=requested_watermark(watermark_kind, no_watermark), adapter=adapter)
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
@click.argument("requests_file", metavar="REQUESTS", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where the audio files and manifest.jsonl go (created if missing).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="wav", show_default=True,
              help="Format of requests without an 'output' name.")
@click.option("--slots", "-b", "--batch-size", "slots", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests generated together; a finished one's slot is refilled at once.")
@generation_options
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster (csm-app[ray]): 'auto' (the flag alone), an address, or 'local'.")
@click.option("--actors", type=click.IntRange(min=1), default=1, show_default=True, help="Ray: model copies (actors).")
@click.option("--threads-per-actor", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray: CPUs (and kernel threads) per actor.")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Ray: GPUs per actor (MLX CUDA).")
@model_options
@runtime_errors
def batch(requests_file, output_dir, fmt, slots, temperature, topk, seed, max_audio_ms, no_watermark, watermark_kind,
          ray_address,
          actors, threads_per_actor, gpus_per_actor, model, mimi, tokenizer, offline, backend, quant, threads,
          verbose, quiet):
    """Speak every request of REQUESTS (.jsonl, .csv or .parquet) into audio files, exactly once.

    A row: {"text": ..., "id", "speaker", "voice": "voice.jsonl", "context": [{"speaker", "text",
    "audio"}, ...] or a JSONL path, "output": "name.wav", and options: "seed", "temperature", "topk",
    "max_audio_ms", "split_sentences"}; only "text" is required. Every row has an id (given, or from
    its line and content) and a seed (given, or from --seed and its id). Files are written whole
    under a temporary name and renamed; manifest.jsonl records each finished file; running the same
    command again skips what is finished. Prints one JSON line per file written."""
    _setup_logging(verbose, quiet)
    from csm_core import GenerationOptions

    from .corpus import Manifest, Progress, read_rows
    from .inputs import InputError

    base = GenerationOptions(temperature=temperature, topk=topk, max_audio_ms=max_audio_ms)
    try:
        rows = read_rows(requests_file, fmt, FORMATS, base, base_seed=seed or 0)
    except InputError as e:
        raise click.UsageError(str(e)) from e
    out_dir = Path(output_dir)
    manifest = Manifest(out_dir)
    todo = [r for r in rows if not manifest.done(out_dir, r.id)]
    if len(todo) < len(rows):
        logger.warning("%d of %d rows are already done (%s); generating the other %d",
                       len(rows) - len(todo), len(rows), manifest.path, len(todo))
    if not todo:
        return
    load = dict(model=model, backend=backend, quant=quant, threads=threads, mimi=mimi, tokenizer=tokenizer,
                offline=offline, watermark=requested_watermark(watermark_kind, no_watermark))
    progress = Progress(len(rows), len(rows) - len(todo), sys.stderr.write if not quiet and _is_terminal(sys.stderr) else None)
    if ray_address is not None:
        from .corpus_ray import run_ray

        results = run_ray(ray_address, todo, out_dir, load, slots=slots, actors=actors,
                          threads_per_actor=threads_per_actor, gpus_per_actor=gpus_per_actor)
    else:
        results = _batch_local(todo, out_dir, load, slots, quant)
    failed = 0
    for row in results:
        if "error" in row:
            failed += 1
        else:
            manifest.append(row)
        progress.update(row)
        click.echo(json.dumps(row))
    if progress.write is not None:
        sys.stderr.write("\n")
    if failed:
        raise Fail(f"{failed} of {len(todo)} requests produced no audio (see their 'error' lines)")


def _batch_local(todo, out_dir: Path, load: dict, slots: int, quant):
    """Load the model, check every row against it, then generate (a generator of manifest rows)."""
    from .corpus import VoiceCache, check_rows, clean_temporaries, generate_rows, run_meta
    from .facade import CSM

    tts = CSM.load(**load)
    sched = tts.scheduler(slots=slots, chunk_frames=None)
    voices = VoiceCache(tts)
    try:  # every request is checked against the model before the first is generated
        check_rows(sched, todo, voices, out_dir)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    clean_temporaries(out_dir)
    return generate_rows(tts, sched, todo, out_dir, meta=run_meta(tts, quant), voices=voices)


# ---------------------------------------------------------------- serve
def _default_data_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "csm"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--slots", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests generated at once (continuous batching); the KV cache is held for this many.")
@click.option("--max-waiting", type=click.IntRange(min=1), default=16, show_default=True,
              help="Requests that may wait for a slot (every new one waits until the next step); more get 503 "
                   "with Retry-After.")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=5, show_default=True,
              help="Frames (80 ms each) per streamed audio chunk.")
@click.option("--voice", "voices", multiple=True, metavar="NAME=CONTEXT.jsonl",
              help="A named voice: context turns as `say --context` reads them; the last turn's speaker speaks. Repeat.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="CSM_DATA_DIR",
              help="Where voices added over the API are kept [default: $XDG_DATA_HOME/csm or ~/.local/share/csm].")
@click.option("--api-key", envvar="CSM_API_KEY", help="Require Authorization: Bearer KEY (also $CSM_API_KEY).")
@click.option("--max-request-audio-ms", type=click.IntRange(min=80), default=None,
              help="The most audio (per sentence) one request may ask for [default: --max-audio-ms].")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              help="Largest speech request body; voice uploads may be 32x that.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="On SIGTERM/SIGINT: seconds running streams may finish before they are cancelled.")
@generation_options
@model_options
@runtime_errors
def serve(host, port, slots, max_waiting, chunk_frames, voices, data_dir, api_key, max_request_audio_ms,
          max_body_bytes, grace, temperature, topk, seed, max_audio_ms, no_watermark, watermark_kind,
          model, mimi, tokenizer,
          offline, backend, quant, threads, verbose, quiet):
    """Serve speech over HTTP (FastAPI on uvicorn): POST /v1/audio/speech (OpenAI-compatible),
    /v1/audio/voices, /health, /metrics and a web page at /.

    The generation options set each request's defaults; a request may override them."""
    _setup_logging(verbose, quiet)
    try:
        from .server import run_server
    except ImportError as e:
        raise Fail(f"csm serve needs the server extra: pip install 'csm-app[server]' ({e})") from e
    from csm_core.options import GenerationOptions

    from .audio_io import read_context_audio
    from .facade import CSM
    from .inputs import InputError, context_segments, read_context
    from .speech_service import SpeechService
    from .voices import Voice, VoiceError, check_name

    voice_turns = {}
    for spec in voices:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(f"--voice {spec!r}: expected NAME=CONTEXT.jsonl")
        if name.isdigit() or name in voice_turns:
            why = "digits name speaker ids" if name.isdigit() else "given twice"
            raise click.UsageError(f"--voice {name!r}: {why}")
        try:
            check_name(name)
            turns = read_context(path)
        except (InputError, VoiceError) as e:
            raise click.UsageError(f"--voice {name!r}: {e}") from e
        if not turns or any(t.audio is None for t in turns):
            why = "has no turns" if not turns else "has a turn without 'audio'"
            raise click.UsageError(f"--voice {name}: {path} {why}")
        voice_turns[name] = turns
    if seed is not None:
        logger.warning("--seed makes every request without a seed of its own sound the same")
    try:
        defaults = GenerationOptions(temperature=temperature, topk=topk, seed=seed, max_audio_ms=max_audio_ms)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    contexts = {name: context_segments(turns, read_context_audio) for name, turns in voice_turns.items()}
    tts = CSM.load(model, backend=backend, quant=quant, threads=threads, mimi=mimi, tokenizer=tokenizer,
                   offline=offline, watermark=requested_watermark(watermark_kind, no_watermark))
    named = [Voice(n, segs[-1].speaker, tuple(tts.encode_context(segs))) for n, segs in contexts.items()]
    service = SpeechService(tts, named, slots=slots, max_waiting=max_waiting, chunk_frames=chunk_frames,
                            defaults=defaults, max_audio_ms_limit=max_request_audio_ms or max_audio_ms,
                            data_dir=Path(data_dir) if data_dir else _default_data_dir())

    def listening(bound_host, bound_port):
        click.echo(f"csm: serving on http://{bound_host}:{bound_port} ({slots} slots; POST /v1/audio/speech, "
                   f"web page at /)", err=True)

    run_server(service, host, port, grace_s=grace, on_listening=listening, api_key=api_key or None,
               max_body_bytes=max_body_bytes, max_upload_bytes=32 * max_body_bytes,
               log_level="info" if verbose else "warning")
    click.echo("csm: stopped", err=True)


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
    """The audio watermarks: csm's own keyed mark and SilentCipher's (the official generator's)."""


@watermark.command("detect")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--mark", type=click.Choice(["both", "csm", "silentcipher"]), default="both", show_default=True,
              help="Which mark to look for (SilentCipher's phase-shift search is slow on unmarked audio).")
@click.option("-v", "--verbose", count=True)
@runtime_errors
def watermark_detect(path, mark, verbose):
    """Say whether FILE carries csm's mark and SilentCipher's. Exit 0 when one is found, 3 when not."""
    from csm_audio.io import read_audio
    from csm_audio.resample import to_mono

    from .watermarks import detect_all

    audio, sr = read_audio(path)
    results = detect_all(to_mono(audio), sr, ("csm", "silentcipher") if mark == "both" else (mark,))
    for name, result in results.items():
        if isinstance(result, str):
            click.echo(f"{path}: {name} watermark {result}")
            continue
        status = "found" if result.found else "not found"
        width = 8 if name == "csm" else 10
        payload = f" payload=0x{result.payload:0{width}x}" if result.payload is not None else ""
        reason = f" ({result.reason})" if result.reason else ""
        click.echo(f"{path}: {name} watermark {status}{payload} score={result.score:.2f}{reason}")
    sys.exit(0 if any(not isinstance(r, str) and r.found for r in results.values()) else 3)


# ---------------------------------------------------------------- info
@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
def info(model):
    """Versions, installed backends, CPU features, threads, and whether the model is found."""
    from importlib.metadata import PackageNotFoundError, version

    from .backends import BackendError, available_backends, backend_classes, pick_backend
    from .discovery import ModelNotFound, hub_cache_dir, resolve_model

    for dist in ("csm-core", "csm-tokenizers", "csm-cpu", "csm-mlx", "csm-audio", "csm-app"):
        try:
            click.echo(f"{dist:15} {version(dist)}")
        except PackageNotFoundError:
            click.echo(f"{dist:15} not installed")
    classes = backend_classes()
    broken = sorted(set(available_backends()) - set(classes))
    click.echo(f"backends        {', '.join(classes) or 'none'}" + (f" (not importable: {', '.join(broken)})" if broken else ""))
    try:
        auto = pick_backend("auto")
    except BackendError as e:
        auto = f"none ({e})"
    click.echo(f"auto picks      {auto}")
    for name, cls in classes.items():
        describe = cls.describe() if hasattr(cls, "describe") else ""
        quants = ", ".join(getattr(cls, "quants", ()))
        layout = getattr(cls, "file_layout", None)
        click.echo(f"  {name:13} {describe}; formats {quants}" + (f"; opens and writes {layout} files" if layout else ""))
    import os

    click.echo(f"cores           {os.cpu_count()}")
    click.echo(f"hub cache       {hub_cache_dir()}")
    from .watermarks import describe

    click.echo(f"watermark       {describe()}")
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
@click.option("--to", "target", required=True,
              help="Output layout: a backend's converted files (gguf: cpu, mlx: mlx), or safetensors "
                   "(original layout, f32/bf16, every backend loads it).")
@click.option("--quant", help="Weight format (default: the backend's: q8_0 for gguf, bf16 for mlx).")
@click.option("--group-size", type=click.Choice(["32", "64", "128"]), help="mlx quantization group size (default 64).")
@click.option("--merge-adapter", "adapter", type=click.Path(exists=True, file_okay=False),
              help="Merge a LoRA adapter (csm finetune) into the weights first.")
@click.option("-v", "--verbose", count=True)
@runtime_errors
def convert(source, destination, target, quant, group_size, adapter, verbose):
    """Convert a CSM checkpoint (original, .pt, Hugging Face) for a backend."""
    _setup_logging(verbose, False)
    from .backends import BackendError
    from .convert import convert_checkpoint

    options = {"group_size": int(group_size)} if group_size else {}
    try:
        out = convert_checkpoint(source, destination, target, quant=quant, adapter=adapter, **options)
    except BackendError as e:
        raise click.UsageError(str(e)) from e
    click.echo(f"wrote {out}")


# ---------------------------------------------------------------- finetune
@main.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@_finetune_options
@runtime_errors
def finetune(data, **options):
    """Fine-tune on DATA (JSONL/CSV rows of audio, text, speaker[, context]) with MLX: a LoRA adapter
    (OUT/adapter) or full weights (OUT/model), loss curve OUT/loss.csv, checkpoints to --resume from."""
    _setup_logging(options["verbose"], options["quiet"])
    from .finetune import run_cli
    from .inputs import InputError

    try:
        run_cli(data, **options)
    except InputError as e:
        raise click.UsageError(str(e)) from e


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
