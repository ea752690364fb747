"""A1111's samplers, written here from their published definitions.

* :mod:`.schedules`: the model's discrete noise levels (sigma <-> timestep) and A1111's schedule types.
* :mod:`.kdiffusion`: the k-diffusion family (Euler, DPM++ ..., Restart, LCM): ``fn(model, x, sigmas, ...)``
  where ``model(x, sigma)`` returns the denoised latent.
* :mod:`.timesteps`: A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) over its
  ``1 + k * (1000 // steps)`` timestep grid, where the model returns the predicted noise.
* :mod:`.philox`: A1111's "NV" random source (CUDA's Philox randn computed on any device).

Nothing here knows about prompts, models or the UI: a sampler gets a callable and tensors.
"""
