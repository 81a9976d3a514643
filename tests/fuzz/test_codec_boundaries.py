"""The Mimi codecs at their boundary: codes and audio of any shape, dtype and value are a
ValueError or a result of the right length (NaN/inf audio is refused, codes out of range too)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csm_core.config import mimi_tiny
from csm_core.testing.mimi import random_mimi_weights

boundary = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
CODE_VALUES = [0, 1, 2047, 2048, -1, 2**31, 2**63 - 1]


def _numpy_mimi():
    from csm_audio.mimi.model import Mimi

    return Mimi(mimi_tiny(), random_mimi_weights(mimi_tiny(), 0))


def _mlx_mimi():
    pytest.importorskip("mlx.core")
    from csm_mlx.mimi.codec import MlxMimi

    return MlxMimi(mimi_tiny(), random_mimi_weights(mimi_tiny(), 0))


@pytest.fixture(scope="module", params=["numpy", "mlx"])
def codec(request):
    return _numpy_mimi() if request.param == "numpy" else _mlx_mimi()


codes_arrays = st.builds(
    lambda shape, dtype, values, seed: np.random.default_rng(seed).choice(values, size=shape).astype(dtype, casting="unsafe"),
    st.sampled_from([(1, 2), (32, 1), (33, 1), (0, 2), (8, 0), (2,), (1, 1, 1), (4, 3)]),
    st.sampled_from([np.int64, np.int16, np.uint16, np.int8, np.float32, np.bool_]),
    st.lists(st.sampled_from(CODE_VALUES), min_size=1, max_size=3),
    st.integers(0, 2**16),
)  # fmt: skip


@boundary
@given(codes_arrays)
def test_decode_any_codes(codec, codes):
    try:
        audio = np.asarray(codec.decode(codes))
    except ValueError as e:
        assert str(e)
        return
    assert audio.shape == (codes.shape[1] * 1920,) and np.isfinite(audio).all()


audio_arrays = st.builds(
    lambda n, dtype, bad, seed: _audio(n, dtype, bad, seed),
    st.sampled_from([0, 1, 1919, 1920, 3841]),
    st.sampled_from([np.float32, np.float64, np.int16, np.float16]),
    st.sampled_from([None, np.nan, np.inf]),
    st.integers(0, 2**16),
)


def _audio(n, dtype, bad, seed):
    a = (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(dtype)
    if bad is not None and n:
        a = a.astype(np.float32)
        a[n // 2] = bad
    return a


@boundary
@given(audio_arrays, st.sampled_from([None, 1, 32, 0, 33, -1]))
def test_encode_any_audio(codec, audio, k):
    try:
        codes = np.asarray(codec.encode(audio, num_codebooks=k))
    except ValueError as e:
        assert str(e)
        return
    assert codes.ndim == 2 and codes.shape[0] == (k or 32) and ((codes >= 0) & (codes < 2048)).all()


def test_streaming_decoder_refuses_bad_codes():
    dec = _numpy_mimi().streaming_decoder()
    with pytest.raises(ValueError, match="out of range"):
        dec.decode(np.full((4, 1), 2048))
    assert dec.decode(np.zeros((4, 1), np.int64)).shape == (1920,)
