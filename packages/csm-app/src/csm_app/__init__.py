"""csm-app: the `csm` command line, model discovery and the `CSM` facade.

    from csm_app import CSM
    tts = CSM.load("sesame/csm-1b")            # a directory, file or Hugging Face repo id
    audio = tts.generate("Hello from Sesame.")  # float32, 24 kHz
"""

from csm_core import Segment

from .discovery import ModelFiles, ModelNotFound, resolve_model
from .facade import CSM

__version__ = "0.1.0"

__all__ = ["CSM", "Segment", "ModelFiles", "ModelNotFound", "resolve_model"]
