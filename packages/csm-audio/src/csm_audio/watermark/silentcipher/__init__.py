"""SilentCipher (Sony's neural audio watermark, the 44.1 kHz model) without PyTorch: the mark
Sesame's official CSM-1B generator embeds and verifies, bit-compatible with it.

    model = load(path)                       # enc_c/dec_c/dec_m_0.ckpt + hparams.yaml
    marked = embed(audio, 24000, CSM_1B_KEY, model)
    verify(marked, 24000, CSM_1B_KEY, model).found   # -> True

The weights are not shipped: they are the released checkpoints of the Hugging Face repo
sony/silentcipher (44_1_khz/73999_iteration), read with csm-core's torch-free .pt reader.
Nothing is downloaded here.
"""

from .api import CSM_1B_KEY, EMBED_SDR_DB, SilentCipherNotFound, SilentCipherWatermarker, decode, embed, load, verify
from . import checkpoint, model
from .checkpoint import REPO_ID, SUBDIR, SilentCipherConfig, find_checkpoint_dir
from .model import Decoded, SilentCipher
from .sinc_resample import sinc_resample

__all__ = ["checkpoint", "model", "CSM_1B_KEY", "EMBED_SDR_DB", "SilentCipher", "SilentCipherConfig", "SilentCipherNotFound",
           "SilentCipherWatermarker", "Decoded", "REPO_ID", "SUBDIR", "decode", "embed", "find_checkpoint_dir",
           "load", "sinc_resample", "verify"]
