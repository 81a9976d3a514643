"""Channel code of the watermark: CRC-16, convolutional code, soft Viterbi, keyed layout."""

import numpy as np
import pytest

from csm_audio.watermark import PatchworkParams
from csm_audio.watermark.ecc import (
    CODED_BITS,
    INFO_BITS,
    conv_encode,
    crc16,
    info_bits_to_payload,
    payload_to_info_bits,
    viterbi_decode,
)
from csm_audio.watermark.layout import CSM_PUBLIC_KEY, cell_layout, default_payload, key_bytes


def test_crc16_ccitt_false_check_value():
    # The catalogue check value of CRC-16/CCITT-FALSE over ASCII "123456789".
    assert crc16(int.from_bytes(b"123456789", "big"), 72) == 0x29B1


def test_info_bits_roundtrip_and_crc_rejects_corruption():
    for payload in (0, 1, 0xD4D39238, 2**32 - 1):
        bits = payload_to_info_bits(payload)
        assert bits.shape == (INFO_BITS,)
        assert info_bits_to_payload(bits) == payload
        for flip in (0, 17, 40):  # any single-bit error fails the CRC
            bad = bits.copy()
            bad[flip] ^= 1
            assert info_bits_to_payload(bad) is None


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "7"])
def test_payload_out_of_range_is_an_error(bad):
    with pytest.raises(ValueError, match="payload"):
        payload_to_info_bits(bad)


def test_viterbi_corrects_hard_errors_and_decodes_noisy_soft_values():
    rng = np.random.default_rng(0)
    for _ in range(20):
        payload = int(rng.integers(0, 2**32))
        coded = conv_encode(payload_to_info_bits(payload))
        assert coded.shape == (CODED_BITS,)
        hard = coded.copy()
        hard[rng.choice(CODED_BITS, 6, replace=False)] *= -1  # free distance of this code is 15
        assert info_bits_to_payload(viterbi_decode(hard)) == payload
        soft = coded + rng.normal(0, 0.7, CODED_BITS)  # Es/N0 = 0 dB: ~8% raw bit errors
        assert info_bits_to_payload(viterbi_decode(soft)) == payload


def test_decoded_word_is_uniform_under_random_signs():
    """The false-positive bound needs: random-sign soft input → the CRC passes ~2^-16 of the
    time. Checked at a coarser level: decoded info bits are fair coins and rarely repeat."""
    rng = np.random.default_rng(1)
    words = np.array([viterbi_decode(rng.standard_normal(CODED_BITS)) for _ in range(400)])
    assert abs(words.mean() - 0.5) < 0.03
    assert len({w.tobytes() for w in words}) == 400


def test_layout_is_keyed_and_covers_every_coded_bit():
    p = PatchworkParams()
    a, b = cell_layout(CSM_PUBLIC_KEY, p), cell_layout(b"another key", p)
    assert a is cell_layout(bytes(CSM_PUBLIC_KEY), p)  # cached, deterministic
    assert a.sign.shape == (p.slots_per_block, p.n_pairs)
    assert abs(a.is_sync.mean() - p.sync_fraction) < 1e-3
    assert np.mean(a.sign == b.sign) < 0.6 and np.mean(a.is_sync == b.is_sync) < 0.7
    counts = np.bincount(a.bit[~a.is_sync], minlength=CODED_BITS)
    assert counts.min() >= 10 and counts.max() - counts.min() <= 1
    # every coded bit is spread over many slots and pairs (time and frequency diversity)
    slots = [len(set(np.nonzero(a.bit == k)[0])) for k in range(CODED_BITS)]
    assert min(slots) >= 6


def test_keys_and_default_payload():
    assert key_bytes([212, 211, 146, 56, 201]) == CSM_PUBLIC_KEY == bytes([212, 211, 146, 56, 201])
    assert key_bytes("abc") == b"abc"
    assert default_payload(CSM_PUBLIC_KEY) == 0xD4D39238
    for bad in ([], [256], None, 3):
        with pytest.raises(ValueError, match="key"):
            key_bytes(bad)
