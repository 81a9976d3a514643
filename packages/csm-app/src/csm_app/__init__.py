"""csm-app: the `csm` command line, model discovery and the `CSM` facade.

    from csm_app import CSM
    tts = CSM.load("sesame/csm-1b")            # a directory, file or Hugging Face repo id
    audio = tts.generate("Hello from Sesame.")  # float32, 24 kHz
    clips = tts.generate_batch(["One.", Request("Two.", speaker=1)])  # one batch
"""

from csm_core import Segment
from csm_core.generation import Request

from .discovery import ModelFiles, ModelNotFound, resolve_model
from .facade import CSM

__version__ = "0.1.0"

__all__ = ["CSM", "Request", "Segment", "ModelFiles", "ModelNotFound", "resolve_model"]
