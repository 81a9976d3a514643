"""`csm bench WHICH [ARGS...]`: run a benchmark script from the repository's tools/ folder.

The benchmarks live in the source checkout (they build random weights of the real shapes and print
tables with a peer measured in the same run); an installed wheel does not carry them, so outside
a checkout this fails with a message saying where they were looked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["BENCHES", "find_tools_dir", "run_bench"]

BENCHES = {
    "cpu": "bench_cpu.py",
    "mimi": "bench_mimi.py",
    "mlx": "bench_mlx.py",
    "tokenizers": "bench_tokenizers.py",
    "watermark": "watermark_report.py",
}


class BenchError(RuntimeError):
    pass


def _candidates() -> list[Path]:
    """CSM_REPO, then the checkout this package is installed from (editable), then the working directory."""
    roots = []
    if os.environ.get("CSM_REPO"):
        roots.append(Path(os.environ["CSM_REPO"]).expanduser())
    roots += list(Path(__file__).resolve().parents) + [Path.cwd(), *Path.cwd().parents]
    return roots


def find_tools_dir() -> tuple[Path | None, list[Path]]:
    """(the repository's tools/ folder or None, every folder looked at)."""
    looked = []
    for root in _candidates():
        tools = root / "tools"
        looked.append(tools)
        if tools.is_dir() and (root / "packages").is_dir():
            return tools, looked
    return None, looked


def run_bench(which: str, args: list[str] | tuple[str, ...] = ()) -> int:
    """Run tools/<bench script> with `args` under this interpreter; returns its exit code."""
    if which not in BENCHES:
        raise BenchError(f"unknown benchmark {which!r}; expected one of {', '.join(BENCHES)}")
    tools, looked = find_tools_dir()
    if tools is None:
        raise BenchError(
            "the benchmarks live in the csm source checkout's tools/ folder, which was not found "
            f"(looked in {', '.join(map(str, looked[:4]))}, ...); run from a checkout or set CSM_REPO=DIR"
        )
    script = tools / BENCHES[which]
    if not script.is_file():
        raise BenchError(f"{script} does not exist in this checkout (its owner has not written it yet?)")
    return subprocess.call([sys.executable, str(script), *args])
