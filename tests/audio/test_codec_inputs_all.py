"""Every Mimi codec (numpy csm_audio, csm-cpu, csm-mlx on mlx[cpu]) checks its input through
csm_core.codec_inputs: the same bad audio, codes or num_codebooks give the same ValueError, word for
word, from encode, decode and the streaming decoder. Integer audio is refused by all three (it was
accepted, unscaled, by the MLX codec)."""

from __future__ import annotations

import numpy as np
import pytest

from csm_core.config import mimi_tiny
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights

CFG = mimi_tiny()


# name -> (module, class, keyword arguments); a codec whose package is missing is skipped
CODECS = {
    "numpy": ("csm_audio.mimi.model", "Mimi", {}),
    "cpu": ("csm_cpu.mimi", "Mimi", {"threads": 1}),
    "mlx": ("csm_mlx.mimi.codec", "MlxMimi", {}),
}


@pytest.fixture(scope="module", params=list(CODECS))
def codec(request):
    module, cls, kwargs = CODECS[request.param]
    return getattr(pytest.importorskip(module), cls)(CFG, random_mimi_weights(CFG, 0), **kwargs)


def _nan_at(n: int, i: int) -> np.ndarray:
    a = mimi_test_audio(n, seed=2)
    a[i] = np.nan
    return a


BAD_AUDIO = [
    (np.zeros(1920, np.int16), None, "audio must be float samples in [-1, 1], got dtype int16 (integer PCM? divide by 32768 first)"),
    (np.zeros(1920, np.uint8), None, "audio must be float samples in [-1, 1], got dtype uint8 (integer PCM? divide by 32768 first)"),
    (np.zeros(1920, bool), None, "audio must be float samples in [-1, 1], got dtype bool"),
    (np.zeros((2, 1920), np.float32), None, "audio must be 1-D mono samples at 24000 Hz, got shape (2, 1920)"),
    (np.zeros(0, np.float32), None, "audio is empty (0 samples); nothing to encode"),
    (_nan_at(3000, 17), None, "audio holds 1 NaN/inf samples (first at index 17)"),
    (np.zeros(1920, np.float32), 0, "num_codebooks must be an integer from 1 to 32, got 0"),
    (np.zeros(1920, np.float32), 33, "num_codebooks must be an integer from 1 to 32, got 33"),
    (np.zeros(1920, np.float32), 2.5, "num_codebooks must be an integer from 1 to 32, got 2.5"),
]  # fmt: skip


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


GOOD = np.zeros((32, 3), np.int64)
BAD_CODES = [
    (GOOD[0], "codes must be a 2-D array [num_codebooks, frames], got shape (3,)"),
    (GOOD.astype(np.float32), "codes must be integers, got dtype float32"),
    (np.zeros((33, 3), np.int64), "codes have 33 codebooks (shape (33, 3)); expected 1 to 32"),
    (np.zeros((0, 3), np.int64), "codes have 0 codebooks (shape (0, 3)); expected 1 to 32"),
    (_with(GOOD, (5, 2), 2048), "code 2048 at codebook 5, frame 2 is out of range [0, 2048)"),
    (_with(GOOD, (0, 1), -1), "code -1 at codebook 0, frame 1 is out of range [0, 2048)"),
]


@pytest.mark.parametrize("audio, k, message", BAD_AUDIO)
def test_bad_audio_same_message(codec, audio, k, message):
    with pytest.raises(ValueError) as err:
        codec.encode(audio, num_codebooks=k)
    assert str(err.value) == message


@pytest.mark.parametrize("codes, message", BAD_CODES)
def test_bad_codes_same_message(codec, codes, message):
    with pytest.raises(ValueError) as err:
        codec.decode(codes)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        codec.streaming_decoder().decode(codes)
    assert str(err.value) == message


def test_accepted_inputs_agree_in_shape(codec):
    """What the rules accept: [L], [1, L] and [L, 1] float audio of any float dtype, codes of any
    integer dtype, fewer codebooks than the model has."""
    audio = mimi_test_audio(1920 * 2, seed=3)
    codes = np.asarray(codec.encode(audio))
    assert codes.shape == (32, 2)
    np.testing.assert_array_equal(np.asarray(codec.encode(audio[None].astype(np.float64))), codes)
    np.testing.assert_array_equal(np.asarray(codec.encode(audio[:, None], num_codebooks=4)), codes[:4])
    assert np.asarray(codec.decode(codes.astype(np.uint16)[:8])).shape == (2 * 1920,)
