"""The job context: everything one job reads, made once and passed explicitly from stage to stage.

A :class:`JobContext` holds the request, the loaded model, the job's settings (a snapshot with the
request's ``override_settings`` applied), its :class:`~modules.engine.control.JobControl`, the hook
points, the extra-networks library and embeddings, the prompt styles, the app's conditioner cache and
the save function.  What the job works out as it goes (the prepared prompts, the merged networks, the
warnings, per-job tensors) is kept on it too, so that no stage reads a global or an attribute set
behind its back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import torch

from modules import rng, samplers
from modules.engine.control import JobControl
from modules.engine.request import GenerationRequest, RequestError, resolve_sampler_lenient


@dataclass
class JobPrompts:
    """The job's prompts: as written into the infotext (styles applied, comments removed) and as encoded
    (extra-network tags removed), with the tags the prompt named ({kind: [params, ...]})."""
    prompt: str
    negative: str
    prompt_clean: str
    negative_clean: str
    networks: dict = field(default_factory=dict)


@dataclass
class Batch:
    """One batch of a job: its index (0 .. n_iter-1) and the seeds of its images."""
    index: int
    seeds: list[int]
    subseeds: list[int]

    @property
    def size(self) -> int:
        return len(self.seeds)


@dataclass
class JobContext:
    request: GenerationRequest
    model: Any                                   # sd_models.LoadedModel: .components, .info, .vae_name
    opts: dict                                   # settings snapshot with the request's overrides
    control: JobControl = field(default_factory=JobControl)
    hooks: Any = None                            # modules.hooks.Hooks
    networks: Any = None                         # the extra-networks library (LoRA files, VAE hashes), or None
    embeddings: dict | None = None               # textual-inversion vectors by name
    styles: dict | None = None                   # prompt styles by name
    conditioners: dict = field(default_factory=dict)  # TextConditioner cache shared by the app's jobs
    save: Callable | None = None                 # save(image, infotext, seed, prompt, request, opts, grid=False)
    upscalers: Any = None                        # modules.upscalers.UpscalerLibrary (None: the built-in ones only)
    # worked out by the job
    prompts: JobPrompts | None = None
    active_networks: Any = None                  # extra_networks.ActiveNetworks while merged
    warnings: list[str] = field(default_factory=list)
    extra_params: dict = field(default_factory=dict)  # infotext parameters scripts add (always-on ones, X/Y/Z)
    cache: dict = field(default_factory=dict)    # tensors and values made once per job
    state: dict = field(default_factory=dict)    # room for hooks (scripts, extensions): per-job values by name

    @classmethod
    def create(cls, model, request: GenerationRequest | None = None, opts: dict | None = None, *,
               hooks=None, **kw) -> "JobContext":
        """A context for ``request`` (default: an empty one, for stage-level use) with the settings
        ``opts`` and the request's override_settings over them; ``hooks`` default to the built-in ones."""
        from modules import hooks as hooks_mod

        request = request if request is not None else GenerationRequest()
        merged = dict(opts or {})
        merged.update(request.override_settings or {})
        return cls(request=request, model=model, opts=merged,
                   hooks=hooks if hooks is not None else hooks_mod.default_hooks(), **kw)

    # -- the model ------------------------------------------------------------------------------
    @property
    def components(self):
        return self.model.components

    @property
    def spec(self):
        return self.components.spec

    @property
    def family(self):
        return self.spec.model_family

    # read once per job: diffusers' ModelMixin.dtype walks every module of the UNet at each call
    @cached_property
    def device(self) -> torch.device:
        c = self.components
        return getattr(c, "execution_device", None) or c.unet.device

    @cached_property
    def dtype(self) -> torch.dtype:
        return self.components.unet.dtype

    # -- settings -------------------------------------------------------------------------------
    @property
    def clip_skip(self) -> int:
        return int(self.request.clip_skip or self.opts.get("CLIP_stop_at_last_layers", 1))

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def exact_steps(self) -> bool:
        """Whether an img2img pass runs exactly its steps (A1111's img2img_fix_steps setting; a hires pass
        always does, as in A1111)."""
        return bool(self.opts.get("img2img_fix_steps"))

    # -- noise and sampling plans ---------------------------------------------------------------
    def image_rng(self, shape, seeds: list[int], subseeds: list[int]) -> rng.ImageRNG:
        """A batch's noise generators, on the CPU or the job's device as the RNG-source setting says."""
        req = self.request
        source = self.opts.get("randn_source", "CPU")
        device = self.device if source == "GPU" else "cpu"
        return rng.ImageRNG(shape, seeds, subseeds, req.subseed_strength, req.seed_resize_from_h,
                            req.seed_resize_from_w, device=device,
                            ensd=int(self.opts.get("eta_noise_seed_delta", 0)), source=source)

    def plan(self, steps: int, strength: float | None = None, exact: bool = False) -> samplers.SamplingPass:
        """The sampling pass A1111 runs for this request (txt2img, or img2img at ``strength``)."""
        sampler, sched, warning = resolve_sampler_lenient(self.request)
        if warning:
            self.warn(warning)
        try:
            return samplers.plan_pass(sampler, sched, steps, self.model_params(), strength=strength, exact=exact,
                                      eta=self.eta_for(sampler))
        except samplers.SamplerUnavailableError as e:
            raise RequestError("sampler_name", str(e)) from None
        except samplers.ScheduleTooLongError as e:
            raise RequestError("denoising_strength", str(e)) from None

    def eta_for(self, sampler: samplers.SamplerInfo) -> float | None:
        """The request's eta, else A1111's setting for the sampler's kind (eta_ddim, eta_ancestral)."""
        if sampler.eta is None:
            return None
        if self.request.eta is not None:
            return float(self.request.eta)
        key, default, _ = samplers.ETA_SETTINGS[sampler.eta]
        return float(self.opts.get(key, default))

    def model_params(self) -> samplers.ModelParams:
        if "model_params" not in self.cache:
            from modules.sampling.schedules import alphas_cumprod_from_config

            self.cache["model_params"] = samplers.ModelParams(
                alphas_cumprod_from_config(dict(self.spec.scheduler_config)), prediction=self.spec.prediction_type,
                ays_sigmas=self.family.ays_sigmas)
        return self.cache["model_params"]

    def steps_per_image(self) -> int:
        """Sampler steps per image (the progress total)."""
        req = self.request
        if req.is_img2img:
            n = self.plan(req.steps, req.denoising_strength, exact=self.exact_steps()).steps
        else:
            n = self.plan(req.steps).steps
        if req.enable_hr and req.denoising_strength > 0:
            n += self.plan(req.hr_second_pass_steps or req.steps, req.denoising_strength, exact=True).steps
        return max(n, 1)
