"""The libraries a model needs (diffusers' model classes, transformers' CLIP), imported once, by one thread.

The model loads in a background thread while the server answers requests, and a request (the
prompt box's token counter) may reach the same libraries at the same moment.  transformers and
diffusers import their submodules lazily; two threads doing that at once can trip Python's import
deadlock detection, which they report as "cannot import name 'AutoModel' from 'transformers'" and
the model then fails to load.  :func:`ensure` takes those imports under one lock; the second thread
waits and then finds them complete.
"""
from __future__ import annotations

import threading

_LOCK = threading.Lock()
_done = False


def ensure() -> None:
    global _done
    if _done:
        return
    with _LOCK:
        if _done:
            return
        import transformers  # noqa: F401
        from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (imports diffusers.loaders.peft)
        from transformers import (AutoModel, CLIPTextConfig, CLIPTextModel,  # noqa: F401
                                  CLIPTextModelWithProjection, CLIPTokenizer)
        _done = True
