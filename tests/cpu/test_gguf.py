"""A quantized CSM written to GGUF and memory-mapped back gives the same model."""

import numpy as np
import pytest

from csm_core.config import csm_tiny
from csm_core.testing.csm import make_prompt, random_csm_weights

from csm_cpu.backend import CpuBackend
from csm_cpu.gguf_io import read_gguf, release_pages, write_gguf
from csm_cpu.quant import QTensor
from csm_cpu.weights import WeightError


@pytest.mark.parametrize("quant", ["f32", "bf16", "q8_0", "q4_0", "q4_k"])
def test_roundtrip_same_logits(tmp_path, quant):
    config = csm_tiny()
    weights = random_csm_weights(config, 3)
    path = write_gguf(tmp_path / f"tiny-{quant}.gguf", config, weights, quant)
    cfg2, quant2, mapped = read_gguf(path)
    assert cfg2 == config and quant2 == quant
    m = mapped["backbone.layers.0.attn.q_proj.weight"]
    assert isinstance(m, QTensor) and isinstance(m.data.base, np.memmap) or not m.data.flags.owndata
    tokens, mask = make_prompt(config, np.random.default_rng(0))
    codes = np.random.default_rng(1).integers(0, 2048, (1, 32)).astype(np.int32)
    a = CpuBackend(config, weights, quant, threads=1).teacher_forced_logits(tokens, mask, codes)
    b = CpuBackend.from_gguf(path, threads=1).teacher_forced_logits(tokens, mask, codes)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_q4_k_file_holds_q4_k_tensors(tmp_path, k_quant_config):
    """q4_k matrices are written as GGML Q4_K tensors (what llama.cpp's readers know) and the
    memory-mapped model gives the same logits as the one quantized at load."""
    import gguf

    weights = random_csm_weights(k_quant_config, 4)
    path = write_gguf(tmp_path / "k.gguf", k_quant_config, weights, "q4_k")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
    assert types["backbone.layers.0.mlp.w2.weight"] == gguf.GGMLQuantizationType.Q4_K
    assert types["audio_head.0"] == gguf.GGMLQuantizationType.Q4_K
    assert types["text_embeddings.weight"] == gguf.GGMLQuantizationType.Q8_0
    tokens, mask = make_prompt(k_quant_config, np.random.default_rng(0))
    codes = np.random.default_rng(1).integers(0, 2048, (1, 8)).astype(np.int32)
    a = CpuBackend(k_quant_config, weights, "q4_k", threads=2).teacher_forced_logits(tokens, mask, codes)
    b = CpuBackend.from_gguf(path, threads=2).teacher_forced_logits(tokens, mask, codes)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_not_a_csm_file(tmp_path):
    import gguf

    p = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_tensor("x", np.zeros((2, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(WeightError, match="not a CSM GGUF"):
        read_gguf(p)
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "missing.gguf")


def _rss_file_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="Linux /proc")
def test_release_pages_drops_residency_keeps_data(tmp_path):
    """What a GGUF load does after repacking a mapped tensor: its pages leave this process's RSS
    (only those wholly inside the array), and its values are still there when read again."""
    import mmap

    raw = np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8)
    (tmp_path / "w.bin").write_bytes(raw.tobytes())
    m = np.memmap(tmp_path / "w.bin", np.uint8, mode="r")
    lo, hi = 3 * mmap.PAGESIZE + 100, (16 << 20) - 5
    a = m[lo:hi]
    assert int(a.sum(dtype=np.int64)) == int(raw[lo:hi].sum(dtype=np.int64))  # every page resident
    before = _rss_file_kb()
    released = release_pages(a)
    assert released % mmap.PAGESIZE == 0 and hi - lo - 2 * mmap.PAGESIZE < released <= hi - lo
    assert before - _rss_file_kb() >= 0.9 * released / 1024
    np.testing.assert_array_equal(a, raw[lo:hi])  # faulted back in from the file
    assert release_pages(np.zeros(1 << 20, np.uint8)) == 0  # not a map: nothing to do
