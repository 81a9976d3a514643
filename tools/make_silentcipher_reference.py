"""SilentCipher oracle: random networks of the exact architecture saved as released-style
checkpoint files, and the official embed / verify paths run with the `silentcipher` package.

    python tools/make_silentcipher_reference.py OUT_DIR [--seed 0] [--small]

writes OUT_DIR/{hparams.yaml, enc_c.ckpt, dec_c.ckpt, dec_m_0.ckpt}: the package's own Encoder,
CarrierDecoder and MsgDecoder, seeded, with randomised BatchNorm affines, saved with
torch.save(state_dict) as the released files are. --small writes the same architecture over a
small STFT (n_fft 64, hop 32, band 16: 4 phase shifts) for fast phase-shift decoding tests.

The official paths (Sesame's csm `watermarking.py`, SesameAILabs/silentcipher at 44.1 kHz):
- watermark: torchaudio resample to 44.1 kHz -> encode_wav(key, calc_sdr=False, message_sdr=36)
  -> resample to min(44100, sr);
- verify: resample to 44.1 kHz -> decode_wav(phase_shift_decoding=True) -> status and
  messages[0] == key.
The reference is PyPI silentcipher 1.0.5 (Sony), installed with --no-deps (it pins torch<=2.0).
At the model's own rate it computes what Sesame's fork computes; the fork resamples with
torchaudio where Sony's calls librosa, and neither is reached when the input is already at
44.1 kHz. librosa is only imported, never called on that path: where it is not installed a stub
module stands in for it. pydub is likewise only imported (file loading).
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path

import numpy as np

FULL = dict(SR=44100, N_FFT=4096, HOP_LENGTH=2048, message_dim=5, message_len=21, message_band_size=1024,
            message_sdr=47, n_messages=1, enc_n_layers=3, dec_c_n_layers=4, ensure_negative_message=True,
            ensure_constrained_message=False, frame_level_normalization=False, utterance_level_normalization=True,
            no_normalization=False, model_type="44.1k")
SMALL = dict(FULL, N_FFT=64, HOP_LENGTH=32, message_band_size=16)
CSM_1B_KEY = [212, 211, 146, 56, 201]


def import_silentcipher():
    """The silentcipher package, with stubs for the import-only modules that are missing. The
    stubs leave sys.modules once it is imported: other packages (transformers) probe for librosa
    and must not find a module without a spec."""
    stubbed = []
    for name in ("librosa", "pydub"):
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            if name == "pydub":
                stub.AudioSegment = None
            sys.modules[name] = stub
            stubbed.append(name)
    try:
        import silentcipher
        import silentcipher.server
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)
    return silentcipher


def build_reference(out_dir: str | Path, seed: int = 0, small: bool = False) -> Path:
    """Write hparams.yaml and the three checkpoints of a random model; returns out_dir."""
    import torch
    import yaml

    sc = import_silentcipher()
    from silentcipher.model import CarrierDecoder, Encoder, MsgDecoder

    cfg = dict(SMALL if small else FULL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ns = argparse.Namespace(**cfg)
    enc = Encoder(n_layers=cfg["enc_n_layers"], message_dim=cfg["message_dim"], out_dim=32,
                  message_band_size=cfg["message_band_size"], n_fft=cfg["N_FFT"])
    dec_c = CarrierDecoder(config=ns, conv_dim=96, n_layers=cfg["dec_c_n_layers"], message_band_size=cfg["message_band_size"])
    dec_m = MsgDecoder(message_dim=cfg["message_dim"], message_band_size=cfg["message_band_size"])
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for net in (enc, dec_c, dec_m):
            for name, p in net.named_parameters():
                if name.endswith("bn.weight"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))
                elif name.endswith("bn.bias"):
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
    torch.save(enc.state_dict(), out / "enc_c.ckpt")
    torch.save(dec_c.state_dict(), out / "dec_c.ckpt")
    torch.save(dec_m.state_dict(), out / "dec_m_0.ckpt")
    (out / "hparams.yaml").write_text(yaml.safe_dump(cfg))
    del sc
    return out


def load_official(ckpt_dir: str | Path):
    """silentcipher's Model for ckpt_dir. Its STFT is a process-wide singleton built on first
    use, so it is reset here: models with different n_fft can live in one process."""
    sc = import_silentcipher()
    from silentcipher.stft import Singleton

    Singleton._instances.clear()
    d = Path(ckpt_dir)
    return sc.get_model(model_type="44.1k", ckpt_path=str(d), config_path=str(d / "hparams.yaml"), device="cpu")


def torch_resample(x, orig: int, new: int):
    """torchaudio.functional.resample where torchaudio is installed, else the same algorithm in
    torch (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99)."""
    import torch

    x = torch.as_tensor(np.asarray(x, np.float32))
    if orig == new:
        return x.clone()
    try:
        import torchaudio.functional as taf

        return taf.resample(x, orig, new)
    except Exception:  # noqa: BLE001 - torchaudio missing or not loadable with this torch
        pass
    gcd = math.gcd(orig, new)
    o, n = orig // gcd, new // gcd
    base = min(o, n) * 0.99
    width = math.ceil(6 * o / base)
    idx = torch.arange(-width, width + o, dtype=torch.float32)[None, None] / o
    t = torch.arange(0, -n, -1, dtype=torch.float32)[:, None, None] / n + idx
    t = (t * base).clamp(-6, 6)
    window = torch.cos(t * math.pi / 6 / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t) * window * (base / o)
    length = x.shape[-1]
    y = torch.nn.functional.pad(x.view(1, 1, -1), (width, width + o))
    y = torch.nn.functional.conv1d(y, kernel, stride=o).transpose(1, 2).reshape(-1)
    return y[: math.ceil(n * length / o)]


def official_watermark(model, audio: np.ndarray, sr: int, key=CSM_1B_KEY, sdr: float = 36) -> np.ndarray:
    """Sesame's watermark(): float32 audio at min(44100, sr)."""
    import torch

    with torch.inference_mode():
        y = torch_resample(audio, sr, 44100).numpy()
        enc, _ = model.encode_wav(y, 44100, list(key), calc_sdr=False, message_sdr=sdr)
        return torch_resample(np.asarray(enc, np.float32), 44100, min(44100, sr)).numpy()


def official_decode(model, audio: np.ndarray, sr: int) -> dict:
    import torch

    with torch.inference_mode():
        y = torch_resample(audio, sr, 44100).numpy()
        return model.decode_wav(y, 44100, phase_shift_decoding=True)


def official_verify(model, audio: np.ndarray, sr: int, key=CSM_1B_KEY) -> bool:
    r = official_decode(model, audio, sr)
    return bool(r["status"]) and r["messages"][0] == list(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="n_fft 64 / hop 32 / band 16 instead of the 44.1k model's STFT")
    a = ap.parse_args()
    print(build_reference(a.out_dir, a.seed, a.small))


if __name__ == "__main__":
    main()
