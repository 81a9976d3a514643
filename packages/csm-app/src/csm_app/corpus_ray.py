"""`csm batch --ray`: the same corpus synthesis spread over a Ray cluster with Ray Data.

The driver reads and checks the request file (errors name file:line before anything runs) and
skips what the manifest says is done; the remaining rows become a Ray dataset. `map_batches` runs
`CorpusActor`, a callable class: each actor loads the model once, encodes each voice once, runs the
continuous-batching scheduler over its blocks and writes audio straight to the output directory (a
path every node sees: a shared or network filesystem), atomically as on one machine. The manifest
rows stream back to the driver, which appends them (exactly once per id) to `manifest.jsonl`.

Actors that die are restarted and their blocks retried (Ray Data's actor pool, max_restarts=-1):
a retried row rewrites the same file (same id, same seed, same bytes) and is recorded once.
Checks that need the model (a prompt that cannot fit the window) run in the actors: such a row
comes back as an error row and does not stop the others.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator

from .corpus import CorpusRow, VoiceCache, clean_temporaries, generate_rows, run_meta

__all__ = ["run_ray", "CorpusActor"]

# Fault injection for tests: when this file exists as a row finishes, the actor deletes it and
# exits at once (as a crash would), after writing that row's file and before returning its block.
CRASH_ONCE_ENV = "CSM_CORPUS_CRASH_ONCE"


class CorpusActor:
    """One loaded CSM + scheduler per Ray actor; called on blocks of rows (JSON strings)."""

    def __init__(self, load: dict, out_dir: str, slots: int, threads: int | None):
        from .facade import CSM

        load = dict(load)
        if load.get("threads") is None:
            load["threads"] = threads
        self.tts = CSM.load(**load)
        self.sched = self.tts.scheduler(slots=slots, chunk_frames=None)
        self.voices = VoiceCache(self.tts)
        self.meta = run_meta(self.tts, load.get("quant"))
        self.out_dir = Path(out_dir)
        self.ready_at = time.time()  # model loaded: what came before is this actor's start-up

    def __call__(self, batch: dict) -> dict:
        rows = [CorpusRow.from_dict(json.loads(x)) for x in batch["row"]]
        results = []
        for rec in self._generate(rows):
            results.append(json.dumps(rec))
            crash = os.environ.get(CRASH_ONCE_ENV)
            if crash and Path(crash).exists():
                Path(crash).unlink()
                os._exit(1)
        return {"result": results, "ready_at": [self.ready_at] * len(results)}

    def _generate(self, rows: list[CorpusRow]) -> Iterator[dict]:
        good = []
        for row in rows:  # checks that need the model: a bad row is an error row, the rest go on
            try:
                self.sched.check(row.text, row.speaker, self.voices.segments(row.turns), row.options)
                good.append(row)
            except (TypeError, ValueError, OSError) as e:
                yield {"id": row.id, "where": row.where, "output": row.output, "frames": 0, "error": str(e)}
        yield from generate_rows(self.tts, self.sched, good, self.out_dir, meta=self.meta, voices=self.voices)


def run_ray(
    address: str, rows: list[CorpusRow], out_dir: Path, load: dict, *, slots: int = 4, actors: int = 1,
    threads_per_actor: int = 1, gpus_per_actor: float = 0.0, rows_per_block: int | None = None,
    ready_at: set | None = None,
) -> Iterator[dict]:  # fmt: skip
    """Generate `rows` on a Ray cluster; yields each finished row's manifest record (once per id).
    address: "auto" (a running cluster, else a new local one), "local" (always a new one), or a
    cluster address (ray://host:10001, host:6379). ready_at: a set that receives, for each actor
    that returned rows, the time.time() at which it had loaded its model (for benchmarks)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray Data: pip install 'csm-app[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "auto" else address, log_to_driver=False)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out_dir)
    block = rows_per_block or max(1, 2 * slots)
    ds = ray.data.from_items([{"row": json.dumps(r.to_dict())} for r in rows], override_num_blocks=max(1, -(-len(rows) // block)))
    results = ds.map_batches(
        CorpusActor,
        fn_constructor_kwargs=dict(load=load, out_dir=str(out_dir), slots=slots, threads=threads_per_actor),
        batch_size=block,
        concurrency=actors,
        num_cpus=threads_per_actor,
        num_gpus=gpus_per_actor or None,
    )  # Ray Data restarts dead actors and retries their blocks by default (max_restarts=-1)
    seen: set[str] = set()
    for item in results.iter_rows():
        rec = json.loads(item["result"])
        if ready_at is not None:
            ready_at.add(item["ready_at"])
        if rec["id"] in seen:
            continue
        seen.add(rec["id"])
        yield rec
