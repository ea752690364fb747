"""The generation engine: one typed request in, pictures + infotexts out, in stages that can be read one
at a time.  A job's inputs travel in a :class:`JobContext`; the stages are functions of it:

=================  ==========================================================================
``request``        the request, its fields and validation
``context``        the job context (request, model, settings snapshot, RNG, networks, hooks ...)
``prompts``        conditioning: styles, comments, network tags, schedules, AND, text encoding
``denoiser``       the CFG denoiser the sampler calls (hook point ``cfg_denoiser`` can wrap it)
``sampling``       one sampler pass, with the step hook points, interrupt and NaN checks
``txt2img``        a batch of txt2img (then ``hires``: hires. fix)
``img2img``        a batch of img2img (with ``inpaint``: masks and the inpainting conditioning)
``vae``            decoding (and encoding) latents
``outputs``        infotext, info JSON, saving, grids
``tiling``         seamless tiling (a user of the job hook points)
``job``            the whole job: the stages in order, batch by batch
=================  ==========================================================================

    result = engine.generate(loaded_model, GenerationRequest(prompt="a red circle"), opts)

Nothing here reads a global: a job gets its model, a snapshot of the settings, a JobControl for
progress / interrupt / skip, and the app's hook points (:mod:`modules.hooks`).
"""
from modules.engine.control import Interrupted, JobControl  # noqa: F401
from modules.engine.request import (GenerationRequest, RequestError, hires_target,  # noqa: F401
                                    resolve_sampler_lenient, validate)
from modules.engine.result import VERSION, GenerationResult, NansError  # noqa: F401
from modules.engine.context import Batch, JobContext, JobPrompts  # noqa: F401,E402
from modules.engine.job import generate, run  # noqa: F401,E402
