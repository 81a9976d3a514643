"""`csm batch --ray` on a local Ray cluster started by the test (2 CPUs, 2 actors): the same files
and manifest as the local path, and each output exactly once when an actor dies mid-run.

Audio is compared within 1 LSB of 16 bits: Ray gives each actor one BLAS thread (OMP_NUM_THREADS =
its CPUs), which moves the codec's float sums' last bit (the README's reproducibility note); the
codes, frame counts and seeds are the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (csm-app[ray])")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from csm_app.corpus_ray import CRASH_ONCE_ENV

    crash = tmp_path_factory.mktemp("crash") / "crash-once"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {CRASH_ONCE_ENV: str(crash), "CSM_AUDIO_PAIR": "0",
                                           "CSM_NUM_THREADS": "1"}})  # fmt: skip
    except Exception as e:  # noqa: BLE001 - any reason Ray cannot start here
        pytest.skip(f"Ray cannot start a local cluster here: {e}")
    yield crash
    ray.shutdown()


def _rows(tmp_path: Path, n: int = 6):
    from csm_app.audio_io import FORMATS
    from csm_app.corpus import read_rows
    from csm_core import GenerationOptions

    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps({"text": f"Corpus row {i}.", "id": f"r{i}"}) for i in range(n)))
    return read_rows(requests, "wav", FORMATS, GenerationOptions(max_audio_ms=480), base_seed=3)


def _same_audio(a: Path, b: Path) -> None:
    import numpy as np
    import soundfile as sf

    x, sx = sf.read(str(a), dtype="int16")
    y, sy = sf.read(str(b), dtype="int16")
    assert sx == sy and x.shape == y.shape
    assert np.abs(x.astype(int) - y).max() <= 1


def _local(tiny_model, rows, out):
    from csm_app import CSM
    from csm_app.corpus import generate_rows, run_meta

    tts = CSM.load(tiny_model, watermark=False, threads=1)
    return {r["id"]: r for r in generate_rows(tts, tts.scheduler(slots=2, chunk_frames=None), rows, out,
                                               meta=run_meta(tts, None))}  # fmt: skip


def _load(tiny_model):
    return dict(model=str(tiny_model), backend="auto", quant=None, threads=1, mimi=None, tokenizer=None,
                offline=True, watermark=False)  # fmt: skip


def test_ray_outputs_equal_the_local_path(cluster, tiny_model, tmp_path, monkeypatch):
    from csm_app.corpus_ray import run_ray

    monkeypatch.setenv("CSM_AUDIO_PAIR", "0")
    rows = _rows(tmp_path)
    want = _local(tiny_model, rows, tmp_path / "local")
    got = {r["id"]: r for r in run_ray("auto", rows, tmp_path / "ray", _load(tiny_model), slots=2, actors=2,
                                       rows_per_block=2)}  # fmt: skip
    assert set(got) == set(want)
    for rid in want:
        assert (got[rid]["seed"], got[rid]["frames"]) == (want[rid]["seed"], want[rid]["frames"])
        _same_audio(tmp_path / "ray" / got[rid]["output"], tmp_path / "local" / want[rid]["output"])


def test_an_actor_dying_mid_run_still_gives_each_output_once(cluster, tiny_model, tmp_path, monkeypatch):
    from csm_app.corpus_ray import run_ray

    monkeypatch.setenv("CSM_AUDIO_PAIR", "0")
    rows = _rows(tmp_path)
    want = _local(tiny_model, rows, tmp_path / "local")
    cluster.write_text("die after the first row")  # the first actor to finish a row exits at once
    records = list(run_ray("auto", rows, tmp_path / "ray", _load(tiny_model), slots=2, actors=2, rows_per_block=3))
    assert not cluster.exists()  # the crash happened
    assert sorted(r["id"] for r in records) == sorted(want)  # each row exactly once
    for r in records:
        assert r["frames"] == want[r["id"]]["frames"]
        _same_audio(tmp_path / "ray" / r["output"], tmp_path / "local" / want[r["id"]]["output"])
    assert not list((tmp_path / "ray").rglob(".*.tmp"))
