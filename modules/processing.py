"""Where the engine's names were before it was split into stages (modules/engine/); kept while the UI,
the API and the command line move to ``modules.engine``."""
from modules.engine import (INPAINTING_FILL, RESIZE_MODES, VERSION, GenerationRequest, GenerationResult,  # noqa: F401
                            Interrupted, JobControl, NansError, RequestError, hires_target, resolve_sampler_lenient,
                            validate)
from modules.engine.vae import pil_to_tensor, tensor_to_pil  # noqa: F401
from modules.upscalers import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES  # noqa: F401
