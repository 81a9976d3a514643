"""Audio files (soundfile) and resampling (soxr)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from csm_audio import AudioFileError, WavStreamWriter, encode_audio, load_audio, read_audio, resample, write_audio


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], 1).astype(np.float32)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "opus", "mp3"])
def test_round_trip_every_format(tmp_path, ext):
    src = tone(48000, 1.0, channels=2)
    path = tmp_path / f"x.{ext}"
    write_audio(path, src, 48000)
    out = load_audio(path)  # 24 kHz mono float32
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 24000) <= 1200  # lossy codecs add a little padding
    # same tone: correlation with the reference mono mix at 24 kHz
    ref = resample(src.mean(1), 48000, 24000)
    n = min(len(out), len(ref)) - 2000
    lag = max(range(-600, 600), key=lambda d: float(np.dot(out[1000 + d : 1000 + d + n // 2], ref[1000 : 1000 + n // 2])))
    seg_o, seg_r = out[1000 + lag : 1000 + lag + n // 2], ref[1000 : 1000 + n // 2]
    assert np.corrcoef(seg_o, seg_r)[0, 1] > 0.95


def test_lossless_is_exact_to_16_bits(tmp_path):
    src = tone(24000, 0.5)[:, 0]
    for ext in ("wav", "flac"):
        write_audio(tmp_path / f"y.{ext}", src, 24000)
        np.testing.assert_allclose(load_audio(tmp_path / f"y.{ext}"), src, atol=1 / 32767)


def test_any_rate_and_channels_to_24k_mono():
    for rate in (8000, 16000, 22050, 44100, 48000):
        data = encode_audio(tone(rate, 0.5, channels=3), rate, "flac")
        out = load_audio(data)
        assert abs(len(out) - 12000) <= 1 and out.dtype == np.float32
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(np.argmax(spectrum) * 24000 / len(out) - 440) < 5


def test_in_memory_buffers():
    src = tone(24000, 0.2)
    data = encode_audio(src, 24000, "wav")
    assert data[:4] == b"RIFF"
    a, rate = read_audio(io.BytesIO(data))
    assert rate == 24000 and a.shape == (4800, 1)
    b, _ = read_audio(data)
    np.testing.assert_array_equal(a, b)


def test_clipping_never_wraps(tmp_path, caplog):
    x = np.array([0.5, 1.5, -3.0, 1.0001, -0.25], np.float32)
    write_audio(tmp_path / "c.wav", x, 24000)
    y, _ = read_audio(tmp_path / "c.wav")
    np.testing.assert_allclose(y[:, 0], [0.5, 1.0, -1.0, 1.0, -0.25], atol=1e-4)
    assert "3 samples beyond [-1, 1] were clipped" in caplog.text
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "n.wav", np.array([0.1, np.nan], np.float32), 24000)


def test_bad_files_and_formats(tmp_path):
    with pytest.raises(AudioFileError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioFileError, match="corrupt.wav: cannot decode"):
        read_audio(corrupt)
    with pytest.raises(AudioFileError, match="cannot decode"):
        load_audio(b"definitely not audio" * 10)
    with pytest.raises(AudioFileError, match=r"unsupported output extension.*x\.xyz"):
        write_audio(tmp_path / "x.xyz", np.zeros(10, np.float32), 24000)
    with pytest.raises(AudioFileError, match="opus supports sample rates"):
        write_audio(tmp_path / "x.opus", np.zeros(100, np.float32), 44100)
    empty = encode_audio(np.zeros(1, np.float32), 24000)[:44]  # header only: no samples
    with pytest.raises(AudioFileError):
        load_audio(empty)


def test_stream_writer_through_a_pipe():
    reader = "import sys,soundfile as sf,io; d,r=sf.read(io.BytesIO(sys.stdin.buffer.read())); print(len(d), r, d[-1])"
    p = subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with WavStreamWriter(p.stdin, 24000) as w:
        for _ in range(3):
            w.write(np.full(1920, 0.25, np.float32))
        w.write(np.full(10, 7.0, np.float32))  # clipped, not wrapped
    p.stdin.close()
    frames, rate, last = p.stdout.read().split()
    p.wait()
    assert (int(frames), int(rate)) == (5770, 24000) and abs(float(last) - 1.0) < 1e-3


def test_stream_writer_patches_sizes_when_seekable():
    buf = io.BytesIO()
    w = WavStreamWriter(buf, 16000, channels=2)
    w.write(np.zeros((100, 2), np.float32))
    w.close()
    info = sf.info(io.BytesIO(buf.getvalue()))
    assert (info.frames, info.samplerate, info.channels) == (100, 16000, 2)
    assert int.from_bytes(buf.getvalue()[40:44], "little") == 400
