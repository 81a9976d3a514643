"""Coverage-guided fuzzing of csm's parsers (atheris + libFuzzer). See tools/fuzz/README.md.

    python tools/fuzz/fuzz.py --list
    python tools/fuzz/fuzz.py TARGET [--seconds 600] [--workdir DIR] [--keep-going] [-- LIBFUZZER_ARGS...]
    python tools/fuzz/fuzz.py TARGET --replay FILE...      run saved inputs through the contract

The corpus lives in WORKDIR/corpus/TARGET (seeded on first use with the target's valid inputs),
libFuzzer's crash/timeout/oom artifacts in WORKDIR/artifacts/TARGET-*. Limits per input: 10 s,
at most 512 MiB allocated at peak (tracemalloc: Python objects and numpy arrays; inputs are at
most 64 KiB, so a parser that allocates that much trusted a size it read), and 2 GiB resident
for the process (libFuzzer's RSS watch, which also sees C allocations). With --keep-going a contract violation (an
undocumented exception type) is saved under WORKDIR/findings/TARGET/ and fuzzing goes on;
without it the first violation stops the run, as a crash does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import MAX_INPUT, TARGETS, ContractViolation, bounded_check, check  # noqa: E402

PACKAGES = ["csm_core", "csm_cpu", "csm_tokenizers", "csm_audio", "csm_app"]
LIMITS = ["-timeout=10", "-rss_limit_mb=2048", f"-max_len={MAX_INPUT}"]


def write_seeds(name: str, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = TARGETS[name].seeds(Path(tmp))
    for key, data in seeds.items():
        if len(data) > MAX_INPUT:
            print(f"seed {name}/{key}: {len(data)} bytes > {MAX_INPUT}, left out", file=sys.stderr)
            continue
        (corpus / f"seed-{key}").write_bytes(data)
    return len(seeds)


def _signature(err: BaseException) -> str:
    """Type and innermost csm frame: one finding per place, not per input."""
    cause = err.__cause__ or err
    frames = traceback.extract_tb(cause.__traceback__)
    ours = [f for f in frames if "/csm_" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(cause).__name__}@{where}"


class Findings:
    def __init__(self, folder: Path):
        self.folder, self.seen = folder, {}
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, data: bytes, err: ContractViolation) -> None:
        sig = _signature(err)
        self.seen[sig] = self.seen.get(sig, 0) + 1
        if self.seen[sig] > 1:
            return
        stem = self.folder / hashlib.sha1(sig.encode()).hexdigest()[:12]
        stem.with_suffix(".bin").write_bytes(data)
        text = "".join(traceback.format_exception(err.__cause__ or err))
        stem.with_suffix(".txt").write_text(f"{sig}\n{err}\n\n{text}")
        print(f"\n=== finding {sig}: {stem}.bin\n", file=sys.stderr, flush=True)


def _violation(target, data: bytes, scratch: Path) -> str | None:
    try:
        check(target, data, scratch)
    except ContractViolation as e:
        return _signature(e)
    return None


def minimize(target, data: bytes, scratch: Path) -> bytes:
    """Delta debugging: drop chunks (halving their size) while the same violation remains."""
    sig = _violation(target, data, scratch)
    if sig is None:
        raise SystemExit("the input meets the contract; nothing to minimize")
    chunk = max(1, len(data) // 2)
    while chunk >= 1:
        i, shrunk = 0, False
        while i < len(data):
            candidate = data[:i] + data[i + chunk :]
            if candidate and _violation(target, candidate, scratch) == sig:
                data, shrunk = candidate, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    return data


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("target", nargs="?", choices=sorted(TARGETS))
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("--seconds", type=int, default=600, help="time budget (default 600)")
    p.add_argument("--workdir", type=Path, default=Path("fuzz-work"), help="corpus, artifacts, findings")
    p.add_argument("--keep-going", action="store_true", help="save contract violations and go on")
    p.add_argument("--replay", nargs="+", type=Path, metavar="FILE", help="run these inputs, no fuzzing")
    p.add_argument("--minimize", type=Path, metavar="FILE", help="shrink a violating input (same signature) to FILE.min")
    args = p.parse_args(argv)
    if args.list or not args.target:
        for t in TARGETS.values():
            print(f"{t.name:16} {t.about}")
        return 0
    target = TARGETS[args.target]
    args.workdir = args.workdir.resolve()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # every input is written to a file: keep it in memory
    scratch = Path(tempfile.mkdtemp(prefix=f"csm-fuzz-{target.name}-", dir=shm))

    if args.minimize:
        data = args.minimize.read_bytes()
        small = minimize(target, data, scratch)
        out = args.minimize.with_suffix(".min")
        out.write_bytes(small)
        print(f"{args.minimize}: {len(data)} -> {len(small)} bytes in {out}: {small!r:.2000}")
        return 0

    if args.replay:
        bad = 0
        tracemalloc.start()
        for f in args.replay:
            try:
                print(f"{f}: {bounded_check(target, f.read_bytes(), scratch)}")
            except ContractViolation as e:
                bad += 1
                print(f"{f}: VIOLATION {e}")
                traceback.print_exception(e.__cause__ or e)
        return 1 if bad else 0

    import atheris

    with atheris.instrument_imports(include=PACKAGES):
        import csm_app.audio_io, csm_app.inputs, csm_app.speech_service  # noqa: F401, E401
        import csm_audio.io, csm_audio.mimi.model  # noqa: F401, E401
        import csm_core.config, csm_core.weights  # noqa: F401, E401
        import csm_cpu.gguf_io, csm_cpu.quant, csm_cpu.weights  # noqa: F401, E401
        import csm_tokenizers  # noqa: F401

    corpus = args.workdir / "corpus" / target.name
    if not corpus.is_dir() or not any(corpus.iterdir()):
        print(f"{target.name}: {write_seeds(target.name, corpus)} seeds in {corpus}", file=sys.stderr)
    artifacts = args.workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    findings = Findings(args.workdir / "findings" / target.name) if args.keep_going else None
    stats = {"ok": 0, "refused": 0, "violations": 0}
    start = last = time.time()
    summary_path = args.workdir / f"summary-{target.name}.json"

    def report() -> None:
        summary = {"target": target.name, "seconds": round(time.time() - start), **stats,
                   "findings": sorted(findings.seen) if findings else None}  # fmt: skip
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"\nSUMMARY {json.dumps(summary)}", file=sys.stderr, flush=True)

    def one_input(data: bytes) -> None:
        nonlocal last
        try:
            stats[bounded_check(target, data, scratch)] += 1
        except ContractViolation as e:
            stats["violations"] += 1
            if findings is None:
                raise
            findings.add(data, e)
        if time.time() - last > 20:  # libFuzzer ends the process without running atexit hooks
            last = time.time()
            report()

    tracemalloc.start()  # numpy reports its arrays to tracemalloc: the per-input allocation bound
    os.chdir(scratch)  # relative names in fuzzed inputs resolve in the scratch folder
    lf_args = [sys.argv[0], *LIMITS, f"-max_total_time={args.seconds}", f"-artifact_prefix={artifacts}/{target.name}-",
               "-print_final_stats=1", *extra, str(corpus)]  # fmt: skip
    atheris.Setup(lf_args, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
