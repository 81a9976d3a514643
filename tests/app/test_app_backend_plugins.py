"""The backend contract: a backend registered through the `csm.backends` entry-point group (here a
test double installed as a distribution on sys.path) is picked by `auto`, its converted files are
found by discovery, opened and written by `convert`, and listed by `csm info` — the app names no
backend."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

FAKE = '''
from pathlib import Path


class FakeBackend:
    name = "fake"
    quants = ("f32", "q3_x")
    default_quant = "f32"
    file_layout = "fakefmt"
    file_patterns = ("*.fake",)
    built = []

    @classmethod
    def preference(cls):
        return 100

    @classmethod
    def build(cls, config, weights, *, quant=None, threads=None):
        cls.built.append((quant, threads, len(weights)))
        return ("built", quant)

    @classmethod
    def recognizes(cls, path):
        return Path(path).suffix == ".fake"

    @classmethod
    def open_file(cls, path, *, threads=None):
        return ("opened", str(path), threads)

    @classmethod
    def convert(cls, config, weights, dst, *, quant=None):
        Path(dst).write_text(f"{quant} {len(weights)}")
        return Path(dst)

    @classmethod
    def describe(cls):
        return "a test double"
'''


@pytest.fixture
def fake_backend(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "fake_csm_backend.py").write_text(textwrap.dedent(FAKE))
    dist = site / "fake_csm_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-csm-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[csm.backends]\nfake = fake_csm_backend:FakeBackend\n")
    monkeypatch.syspath_prepend(str(site))
    import fake_csm_backend

    yield fake_csm_backend.FakeBackend


def test_auto_quants_and_building_come_from_the_registered_class(fake_backend, tiny_model):
    from csm_app.backends import BackendError, available_backends, check_quant, known_quants, make_backend, pick_backend
    from csm_core.weights import load_csm_checkpoint

    assert "fake" in available_backends() and "cpu" in available_backends()
    assert pick_backend("auto") == "fake"  # the highest preference wins
    assert pick_backend("cpu") == "cpu"
    assert "q3_x" in known_quants()
    check_quant("q3_x", "fake")
    with pytest.raises(BackendError, match="unknown quant 'q3_x' for the cpu backend"):
        check_quant("q3_x", "cpu")
    config, weights = load_csm_checkpoint(tiny_model / "model.safetensors")
    assert make_backend("fake", config, weights, quant="q3_x", threads=3) == ("built", "q3_x")
    assert fake_backend.built[-1][:2] == ("q3_x", 3)


def test_discovery_and_loading_find_its_converted_files(fake_backend, tmp_path, tiny_model):
    from csm_app.backends import BackendError, open_backend, pick_backend
    from csm_app.discovery import resolve_model

    model_dir = tmp_path / "converted"
    model_dir.mkdir()
    (model_dir / "csm.fake").write_text("x")
    files = resolve_model(model_dir, mimi=tiny_model / "mimi.safetensors", tokenizer=tiny_model / "tokenizer.model")
    assert (files.weights.name, files.layout) == ("csm.fake", "fakefmt")
    assert pick_backend("auto", "fakefmt") == "fake"
    with pytest.raises(BackendError, match="a fakefmt model file runs on the fake backend only"):
        pick_backend("cpu", "fakefmt")
    assert open_backend("fake", files, threads=2) == ("opened", str(files.weights), 2)


def test_convert_and_info_loop_over_the_registered_backends(fake_backend, tmp_path, tiny_model):
    from csm_app.cli import main

    out = tmp_path / "out.fake"
    result = CliRunner().invoke(main, ["convert", str(tiny_model), str(out), "--to", "fakefmt", "--quant", "q3_x"])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("q3_x ")
    bad = CliRunner().invoke(main, ["convert", str(tiny_model), str(out), "--to", "nosuch"])
    assert bad.exit_code == 2 and "expected one of fakefmt, gguf, mlx, safetensors" in bad.output
    info = CliRunner().invoke(main, ["info", "--model", str(tmp_path / "none")])
    assert info.exit_code == 0, info.output
    assert "auto picks      fake" in info.output
    assert "fake          a test double; formats f32, q3_x; opens and writes fakefmt files" in info.output
    assert "cpu " in info.output and "kernels" in info.output
