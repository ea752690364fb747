"""The generation engine: one typed request in, images + infotexts out.

The loop runs over the diffusers components of the loaded model (CLIP text
encoder(s) -> UNet, sampled by A1111's samplers from modules.sampling -> VAE)
and does what A1111's txt2img and img2img tabs do: per-step prompt schedules,
CFG with the negative prompt, composable `AND` sub-prompts, seeds and variation
seeds, img2img, inpainting (with 4- and 9-channel models), hires fix, tiling,
batches.

Nothing here reads a global: the job gets its model, a snapshot of the
settings and a :class:`JobControl` for progress, interrupt and skip.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from modules import prompt_parser, rng, samplers
from modules.engine.request import (INPAINTING_FILL, RESIZE_MODES, GenerationRequest, RequestError,  # noqa: F401
                                    hires_target, resolve_sampler_lenient, validate)
from modules.upscalers import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES  # noqa: F401

log = logging.getLogger(__name__)

VERSION = "0.1.0"

class Interrupted(Exception):
    pass


class NansError(RuntimeError):
    """The UNet's output overflowed half precision: no picture, and a way out in the message."""


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    saved_files: list[str] = field(default_factory=list)
    grid: Image.Image | None = None
    grid_file: str | None = None
    grid_first: bool = False  # the "Show grid in gallery" setting: results (UI gallery, API images) lead with the grid
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def js(self) -> dict:
        """A1111's `info` JSON object."""
        return self.info


class JobControl:
    """Progress reporting and interrupt/skip flags for one job (thread-safe enough: plain flags)."""

    def __init__(self, on_progress: Callable[["JobControl"], None] | None = None):
        self.interrupted = False
        self.skipped = False
        self.step = 0
        self.total_steps = 0
        self.job_no = 0
        self.job_count = 0
        self.started = time.time()
        self.current_latents: torch.Tensor | None = None
        self.preview_step = -1
        self.on_progress = on_progress
        self.textinfo = ""

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    @property
    def progress(self) -> float:
        if self.total_steps <= 0:
            return 0.0
        return min(1.0, self.step / self.total_steps)

    @property
    def eta(self) -> float | None:
        p = self.progress
        if p <= 0:
            return None
        elapsed = time.time() - self.started
        return elapsed / p - elapsed

    def report(self, latents: torch.Tensor | None = None):
        if latents is not None:
            self.current_latents = latents
        if self.on_progress is not None:
            self.on_progress(self)


# ---------------------------------------------------------------------------
# validation


# ---------------------------------------------------------------------------
# helpers


def apply_styles(prompt: str, negative: str, styles: list[str], style_db: dict | None) -> tuple[str, str]:
    """A style's text replaces `{prompt}` if present, else is appended with ', '."""
    for name in styles or []:
        st = (style_db or {}).get(name)
        if st is None:
            continue
        prompt = _merge_style(prompt, st.get("prompt", ""))
        negative = _merge_style(negative, st.get("negative_prompt", ""))
    return prompt, negative


def _merge_style(text: str, style: str) -> str:
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return style if not text.strip() else f"{text}, {style}"


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    a = np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, 8 bits as A1111 makes them: 255 * x truncated (not rounded)."""
    x = torch.clamp((x.float() + 1.0) / 2.0, min=0.0, max=1.0).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((np.float32(255.0) * a).astype(np.uint8)) for a in x]


def _set_tiling(components, enabled: bool) -> None:
    mode = "circular" if enabled else "zeros"
    for m in (components.unet, components.vae):
        for layer in m.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.padding_mode = mode


# ---------------------------------------------------------------------------
# the engine


class Processor:
    """Runs one request on one loaded model. Created per job."""

    def __init__(self, loaded, opts: dict, control: JobControl | None = None, conditioner_cache: dict | None = None,
                 embeddings: dict | None = None, style_db: dict | None = None):
        from modules import conditioning

        self.loaded = loaded
        self.c = loaded.components
        self.spec = self.c.spec
        self.opts = opts
        self.control = control or JobControl()
        self.style_db = style_db
        self.device = getattr(self.c, "execution_device", None) or self.c.unet.device
        self.dtype = self.c.unet.dtype
        self.embeddings = embeddings
        self._conditioning = conditioning
        self._conditioners: dict = conditioner_cache if conditioner_cache is not None else {}
        self.warnings: list[str] = []

    # -- conditioning -----------------------------------------------------
    def conditioner(self, clip_skip: int):
        key = (id(self.c), clip_skip, self.opts.get("emphasis", "Original"),
               int(self.opts.get("comma_padding_backtrack", 20)), id(self.embeddings))
        cond = self._conditioners.get(key)
        if cond is None:
            self._conditioners.clear()
            cond = self._conditioning.TextConditioner(
                self.c, clip_skip=clip_skip, emphasis=self.opts.get("emphasis", "Original"),
                comma_padding_backtrack=int(self.opts.get("comma_padding_backtrack", 20)),
                embeddings=self.embeddings, device=self.device, dtype=self.dtype)
            self._conditioners[key] = cond
        return cond

    def schedules(self, prompt: str, steps: int, hires_steps: int | None = None):
        """[(weight, [(end_step, text), ...]), ...] for the AND sub-prompts of `prompt`."""
        subs = prompt_parser.split_and(prompt)
        out = []
        for text, weight in subs:
            sched = prompt_parser.get_learned_conditioning_prompt_schedules([text], steps, hires_steps)[0]
            out.append((weight, [(int(end), t) for end, t in sched]))
        return out

    # -- the denoising loop -------------------------------------------------
    def sample(self, *, latents: torch.Tensor, spass: samplers.SamplingPass, cond_sched, uncond_sched,
               cfg_scale: float, image_rng: rng.ImageRNG, size: tuple[int, int], clip_skip: int,
               inpaint: dict | None = None) -> torch.Tensor:
        """Run one sampling pass from `latents`. `cond_sched` = [(weight, [(end_step, text)])] for the AND
        sub-prompts, `uncond_sched` = [(end_step, text)] for the negative prompt."""
        guided = self.guided_model(cond_sched, uncond_sched, cfg_scale, size, clip_skip, inpaint)
        ctl = self.control
        last = {"x": latents}

        def step(i, x, denoised):
            last["x"] = denoised
            ctl.step = min(ctl.step + 1, ctl.total_steps)
            ctl.report(denoised)

        noise = spass.noise(latents, lambda: image_rng.next().to(latents.device), image_rng.seeds)
        blend = inpaint.get("blend") if inpaint is not None else None
        try:
            latents = spass.run(guided, latents, noise, step, blend=blend)
        except Interrupted:
            latents = last["x"]  # A1111: an interrupted pass ends on its last denoised prediction
        if not torch.isfinite(latents).all():
            raise NansError(self._nan_message(spass.info.name))
        return latents

    def _nan_message(self, sampler: str) -> str:
        msg = f"sampler '{sampler}' produced NaN or infinite latents (the picture would be black)"
        if self.dtype != torch.float32:
            msg += "; the UNet runs in half precision: start with --no-half (or --precision full) to run it in float32"
        return msg

    def guided_model(self, cond_sched, uncond_sched, cfg_scale: float, size, clip_skip: int, inpaint):
        """A1111's CFG denoiser core: guided(x_in, t, cfg_mult=1) -> (CFG-combined UNet output, unconditional
        output). Prompt schedules advance with each call (A1111 counts denoiser calls, not sampler steps)."""
        conditioner = self.conditioner(clip_skip)
        # each schedule's texts are encoded together, as A1111 does (one batch per prompt schedule)
        cond_enc = [(w, sched, conditioner.encode([t for _, t in sched], joint=True)) for w, sched in cond_sched]
        uncond_enc = conditioner.encode([t for _, t in uncond_sched], joint=True, is_negative=True)
        image_cond = inpaint.get("image_cond") if inpaint is not None else None
        weights = [w for w, _, _ in cond_enc]
        use_uncond = not (cfg_scale == 1.0 and len(cond_sched) == 1 and cond_sched[0][0] == 1.0)
        ctl = self.control
        calls = [0]

        def pick(sched, encs, step):
            # A1111: the first schedule entry whose end step is >= the current (0-based) step
            for (end, _), enc in zip(sched, encs):
                if step <= end:
                    return enc
            return encs[-1]

        def guided(x, t, cfg_mult: float = 1.0):
            if ctl.interrupted or ctl.skipped:
                raise Interrupted()
            B = x.shape[0]
            conds = [pick(sched, encs, calls[0]) for _, sched, encs in cond_enc]
            need_uncond = use_uncond or cfg_mult != 1.0
            groups = ([pick(uncond_sched, uncond_enc, calls[0])] if need_uncond else []) + conds
            negative_flags = ([True] if need_uncond else []) + [False] * len(conds)
            x_in = x if image_cond is None else torch.cat([x, image_cond], dim=1)
            # one level per batch; a CPU value is copied without waiting for the GPU
            t_in = torch.as_tensor(t).to(x.device, torch.float32, non_blocking=True).reshape(-1)[0]
            outs = self._unet_groups(x_in, t_in, groups, negative_flags, B, size)
            calls[0] += 1
            if not need_uncond:
                return outs[0], outs[0]
            u = outs[0]
            scale = cfg_scale * cfg_mult
            return u + sum(w * scale * (c - u) for w, c in zip(weights, outs[1:])), u

        return guided

    def _unet_groups(self, x, t, conds, negative_flags, B, size) -> list[torch.Tensor]:
        """Run the UNet for each conditioning; those of equal length share one batched call
        (A1111's default: prompts of different lengths are not padded, they run separately)."""
        by_len: dict[int, list[int]] = {}
        for gi, c in enumerate(conds):
            by_len.setdefault(c.context.shape[1], []).append(gi)
        outs: list[torch.Tensor | None] = [None] * len(conds)
        for idxs in by_len.values():
            n = len(idxs)
            ctx = torch.cat([conds[gi].context.expand(B, -1, -1) for gi in idxs]).to(self.device, self.dtype)
            x_in = torch.cat([x] * n).to(self.dtype)
            kwargs = self.spec.model_family.denoiser_inputs(
                self.spec, [conds[gi] for gi in idxs], [negative_flags[gi] for gi in idxs], size, B, self.device,
                self.dtype, self.__dict__.setdefault("_job_cache", {}))
            out = self.c.unet(x_in, t, encoder_hidden_states=ctx, return_dict=False, **kwargs)[0].float()
            for gi, chunk in zip(idxs, out.chunk(n)):
                outs[gi] = chunk
        return outs

    def plan(self, req: GenerationRequest, steps: int, strength: float | None = None,
             exact: bool = False) -> samplers.SamplingPass:
        """The sampling pass A1111 runs for this request (txt2img, or img2img at `strength`)."""
        sampler, sched, warning = resolve_sampler_lenient(req)
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
        eta = self.eta_for(sampler, req)
        try:
            return samplers.plan_pass(sampler, sched, steps, self.model_params(), strength=strength, exact=exact,
                                      eta=eta)
        except samplers.SamplerUnavailableError as e:
            raise RequestError("sampler_name", str(e)) from None

    def eta_for(self, sampler: samplers.SamplerInfo, req: GenerationRequest) -> float | None:
        """The request's eta, else A1111's setting for the sampler's kind (eta_ddim, eta_ancestral)."""
        if sampler.eta is None:
            return None
        if req.eta is not None:
            return float(req.eta)
        key, default, _ = samplers.ETA_SETTINGS[sampler.eta]
        return float(self.opts.get(key, default))

    def model_params(self) -> samplers.ModelParams:
        if "_model_params" not in self.__dict__:
            from modules.sampling.schedules import alphas_cumprod_from_config

            self._model_params = samplers.ModelParams(
                alphas_cumprod_from_config(dict(self.spec.scheduler_config)), prediction=self.spec.prediction_type,
                ays_sigmas=self.spec.model_family.ays_sigmas)
        return self._model_params

    # -- VAE ------------------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        return float(self.spec.scaling_factor)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.c.vae
        x = images.to(self.device, vae.dtype)
        lat = vae.encode(x).latent_dist.mode()
        return lat.float() * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]. Large images decode in tiles; a half-precision VAE that
        overflows (NaN, A1111's black images) is retried in float32 and stays there."""
        vae = self.c.vae
        h, w = latents.shape[-2] * 8, latents.shape[-1] * 8
        use_tiling = h * w > 1536 * 1536 and hasattr(vae, "enable_tiling")
        if use_tiling:
            vae.enable_tiling()
        out = []
        try:
            for i in range(latents.shape[0]):  # one at a time: memory
                z = (latents[i:i + 1] / self.scaling_factor).to(self.device, vae.dtype)
                x = vae.decode(z, return_dict=False)[0].float()
                if vae.dtype != torch.float32 and torch.isnan(x).any():
                    self.warnings.append("the VAE produced NaNs in half precision; it now runs in float32 "
                                         "(use --no-half-vae to start that way)")
                    vae.to(torch.float32)
                    z = (latents[i:i + 1] / self.scaling_factor).to(self.device, torch.float32)
                    x = vae.decode(z, return_dict=False)[0].float()
                if not torch.isfinite(x).all():
                    raise NansError("the VAE produced NaN or infinite values (the picture would be black)")
                out.append(x)
        finally:
            if use_tiling:
                vae.disable_tiling()
        return torch.cat(out)

    # -- one batch of txt2img ---------------------------------------------------
    def run_batch(self, req: GenerationRequest, prompt: str, negative: str, seeds: list[int], subseeds: list[int],
                  clip_skip: int) -> tuple[torch.Tensor, list[Image.Image] | None]:
        B = len(seeds)
        lat_c = self.c.vae.config.latent_channels
        h8, w8 = req.height // 8, req.width // 8
        image_rng = self.image_rng((lat_c, h8, w8), req, seeds, subseeds)
        cond_sched = self.schedules(prompt, req.steps)
        uncond_sched = self.schedules(negative, req.steps)[0][1]
        if req.is_img2img:
            return self._img2img_batch(req, image_rng, cond_sched, uncond_sched, clip_skip, B)
        spass = self.plan(req, req.steps)
        latents = spass.start(image_rng.first().to(self.device))
        inpaint = self._txt2img_inpaint_cond(B, req.height, req.width)
        latents = self.sample(latents=latents, spass=spass, cond_sched=cond_sched, uncond_sched=uncond_sched,
                              cfg_scale=req.cfg_scale, image_rng=image_rng, size=(req.height, req.width),
                              clip_skip=clip_skip, inpaint=inpaint)
        if req.enable_hr and not self.control.interrupted:
            latents = self._hires(req, latents, prompt, negative, seeds, subseeds, clip_skip)
        return latents, None

    def image_rng(self, shape, req: GenerationRequest, seeds: list[int], subseeds: list[int]) -> rng.ImageRNG:
        """The batch's noise generators, on the CPU or the job's device as the RNG-source setting says."""
        source = self.opts.get("randn_source", "CPU")
        device = self.device if source == "GPU" else "cpu"
        return rng.ImageRNG(shape, seeds, subseeds, req.subseed_strength, req.seed_resize_from_h,
                            req.seed_resize_from_w, device=device, ensd=int(self.opts.get("eta_noise_seed_delta", 0)),
                            source=source)

    def _txt2img_inpaint_cond(self, B: int, height: int, width: int):
        """An inpainting (9-channel) model used without a mask: everything is masked, the image is gray."""
        if not self.spec.is_inpaint:
            return None
        gray = torch.zeros(B, 3, height, width)
        mask = torch.ones(B, 1, height // 8, width // 8, device=self.device)
        return {"image_cond": torch.cat([mask, self.encode(gray).to(self.device)], 1).to(self.dtype)}

    def _hires(self, req, latents, prompt, negative, seeds, subseeds, clip_skip):
        tw, th = hires_target(req)
        steps = req.hr_second_pass_steps or req.steps
        if req.hr_upscaler in LATENT_UPSCALE_MODES:
            mode, aa = LATENT_UPSCALE_MODES[req.hr_upscaler]
            kw = {"antialias": aa} if mode in ("bilinear", "bicubic") else {}
            if mode in ("bilinear", "bicubic"):
                kw["align_corners"] = False
            latents = F.interpolate(latents.float(), size=(th // 8, tw // 8), mode=mode, **kw)
        else:
            imgs = tensor_to_pil(self.decode(latents))
            resample = Image.NEAREST if req.hr_upscaler == "Nearest" else Image.LANCZOS
            imgs = [im.resize((tw, th), resample) for im in imgs]
            latents = self.encode(torch.cat([pil_to_tensor(im) for im in imgs]))
        latents = latents.to(self.device)
        image_rng = self.image_rng((latents.shape[1], th // 8, tw // 8), req, seeds, subseeds)
        # a separate hires prompt: its <lora:...> tags are removed (the first pass's networks stay applied)
        hr_prompt = prompt_parser.parse_extra_networks(req.hr_prompt)[0] if req.hr_prompt else prompt
        hr_neg = prompt_parser.parse_extra_networks(req.hr_negative_prompt)[0] if req.hr_negative_prompt else negative
        cond_sched = self.schedules(hr_prompt, req.steps, steps)
        uncond_sched = self.schedules(hr_neg, req.steps, steps)[0][1]
        if req.denoising_strength <= 0:
            return latents
        spass = self.plan(req, steps, req.denoising_strength, exact=True)
        x = spass.start(image_rng.first().to(self.device), x0=latents)
        return self.sample(latents=x, spass=spass, cond_sched=cond_sched, uncond_sched=uncond_sched,
                           cfg_scale=req.cfg_scale, image_rng=image_rng, size=(th, tw), clip_skip=clip_skip,
                           inpaint=self._txt2img_inpaint_cond(latents.shape[0], th, tw))

    # -- img2img / inpaint ------------------------------------------------------
    def _img2img_batch(self, req, image_rng, cond_sched, uncond_sched, clip_skip, B):
        from modules import images as images_mod

        init = [im.convert("RGB") for im in req.init_images]
        mask_img = req.mask.convert("L") if req.mask is not None else None
        crop_box = None
        if mask_img is not None and req.inpainting_mask_invert:
            mask_img = ImageOps.invert(mask_img)
        if mask_img is not None and req.mask_blur > 0:
            mask_blurred = mask_img.filter(ImageFilter.GaussianBlur(req.mask_blur))
        else:
            mask_blurred = mask_img
        originals = [im.copy() for im in init]
        if mask_img is not None and req.inpaint_full_res:
            crop_box = masked_region(mask_img, req.inpaint_full_res_padding, req.width, req.height)
            if crop_box is not None:
                init = [im.crop(crop_box).resize((req.width, req.height), Image.LANCZOS) for im in init]
                mask_for_model = mask_blurred.crop(crop_box).resize((req.width, req.height), Image.LANCZOS)
            else:
                mask_for_model = images_mod.resize_image(req.resize_mode, mask_blurred, req.width, req.height)
        elif mask_img is not None:
            init = [images_mod.resize_image(req.resize_mode, im, req.width, req.height) for im in init]
            mask_for_model = images_mod.resize_image(req.resize_mode, mask_blurred, req.width, req.height)
        else:
            init = [images_mod.resize_image(req.resize_mode, im, req.width, req.height) for im in init]
            mask_for_model = None
        if mask_for_model is not None and req.inpainting_fill == 0:
            init = [fill_masked(im, mask_for_model) for im in init]
        imgs = [init[i % len(init)] for i in range(B)]
        image_t = torch.cat([pil_to_tensor(im) for im in imgs])
        image_latents = self.encode(image_t).to(self.device)
        spass = self.plan(req, req.steps, req.denoising_strength, exact=self.exact_steps())
        noise = image_rng.first().to(self.device)
        h8, w8 = req.height // 8, req.width // 8
        inpaint = None
        latent_mask = None
        if mask_for_model is not None:
            m = torch.from_numpy(np.asarray(mask_for_model, dtype=np.float32) / 255.0)[None, None]
            latent_mask = F.interpolate(m, size=(h8, w8), mode="nearest").to(self.device).expand(B, -1, -1, -1)
            if req.inpainting_fill == 2:  # latent noise
                image_latents = image_latents * (1 - latent_mask) + noise * latent_mask
            elif req.inpainting_fill == 3:  # latent nothing
                image_latents = image_latents * (1 - latent_mask)
        if self.spec.is_inpaint:
            if mask_for_model is not None:
                mbin = (torch.from_numpy(np.asarray(mask_for_model, dtype=np.float32) / 255.0)[None, None] >= 0.5).float()
                masked_image = image_t * (1 - mbin)
                mask_lat = F.interpolate(mbin, size=(h8, w8)).expand(B, -1, -1, -1)
            else:
                # plain img2img with an inpainting model: everything is masked (A1111's default mask weight 1)
                masked_image = torch.zeros_like(image_t)
                mask_lat = torch.ones(B, 1, h8, w8)
            inpaint = {"image_cond": torch.cat([mask_lat.to(self.device), self.encode(masked_image).to(self.device)], 1)
                       .to(self.dtype)}
        elif latent_mask is not None:
            # A1111: the denoised prediction keeps the image outside the mask at every step, and so does the result
            inpaint = {"blend": (image_latents, 1 - latent_mask)}
        mult = self.opts.get("initial_noise_multiplier", 1.0) if req.initial_noise_multiplier is None \
            else req.initial_noise_multiplier
        latents = spass.start(noise * mult, x0=image_latents)
        latents = self.sample(latents=latents, spass=spass, cond_sched=cond_sched, uncond_sched=uncond_sched,
                              cfg_scale=req.cfg_scale, image_rng=image_rng, size=(req.height, req.width),
                              clip_skip=clip_skip, inpaint=inpaint)
        if inpaint is not None and "blend" in inpaint:
            latents = latents * latent_mask + image_latents * (1 - latent_mask)
        overlay = None
        if mask_img is not None:
            overlay = (originals, mask_blurred, crop_box)
        return latents, overlay

    # -- the job ------------------------------------------------------------------
    def run(self, req: GenerationRequest, save: Callable | None = None) -> GenerationResult:
        validate(req)
        t0 = time.perf_counter()
        opts = dict(self.opts)
        opts.update(req.override_settings or {})
        self.opts = opts
        clip_skip = int(req.clip_skip or opts.get("CLIP_stop_at_last_layers", 1))
        prompt, negative = apply_styles(req.prompt, req.negative_prompt, req.styles, self.style_db)
        if opts.get("enable_prompt_comments", True):
            prompt, negative = prompt_parser.strip_comments(prompt), prompt_parser.strip_comments(negative)
        prompt_clean, networks = prompt_parser.parse_extra_networks(prompt)
        negative_clean, negative_networks = prompt_parser.parse_extra_networks(negative)
        # [extra networks] <lora:...> tags: merged into the weights below, restored in the `finally`
        from modules import extra_networks
        if negative_networks:
            self.warnings.append("extra-network tags in the negative prompt have no effect; they were ignored")
        self._active_networks = None
        seed = rng.fix_seed(req.seed)
        subseed = rng.fix_seed(req.subseed)
        n_total = req.n_iter * req.batch_size
        all_seeds = [seed + i for i in range(n_total)]
        all_subseeds = [subseed + i for i in range(n_total)] if req.subseed_strength > 0 else [subseed] * n_total
        ctl = self.control
        steps_per_image = self._steps_for(req)
        ctl.total_steps = steps_per_image * req.n_iter
        ctl.job_count = req.n_iter
        ctl.step = 0
        ctl.started = time.time()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        _set_tiling(self.c, req.tiling)
        images_out, infotexts = [], []
        result = GenerationResult([], [], [], [], [], [])
        try:
            # [extra networks] merge this job's LoRAs; TI hashes count this job's embeddings only
            self._active_networks = extra_networks.activate(getattr(self, "extra_networks", None), self.c, networks,
                                                            self._conditioners)
            self.warnings.extend(self._active_networks.warnings)
            self.conditioner(clip_skip).used_embeddings = set()
            with torch.inference_mode():
                for it in range(req.n_iter):
                    if ctl.interrupted:
                        break
                    ctl.job_no = it
                    ctl.skipped = False
                    s = all_seeds[it * req.batch_size:(it + 1) * req.batch_size]
                    ss = all_subseeds[it * req.batch_size:(it + 1) * req.batch_size]
                    latents, overlay = self.run_batch(req, prompt_clean, negative_clean, s, ss, clip_skip)
                    if ctl.interrupted and ctl.step == 0:
                        break
                    decoded = self.decode(latents)
                    pics = tensor_to_pil(decoded)
                    if overlay is not None:
                        pics = [apply_overlay(p, overlay, j) for j, p in enumerate(pics)]
                    for j, pic in enumerate(pics):
                        idx = it * req.batch_size + j
                        text = self.infotext(req, prompt, negative, all_seeds[idx], all_subseeds[idx], clip_skip,
                                             pic.size)
                        images_out.append(pic)
                        infotexts.append(text)
                        result.seeds.append(all_seeds[idx])
                        result.subseeds.append(all_subseeds[idx])
                        if save is not None and req.save_images and opts.get("samples_save", True):
                            result.saved_files.append(str(save(pic, text, all_seeds[idx], prompt, req, opts)))
                    if not ctl.interrupted:
                        ctl.step = steps_per_image * (it + 1)
        finally:
            _set_tiling(self.c, False)
            if self._active_networks is not None:  # [extra networks] the original weights, bit for bit
                self._active_networks.restore()
        result.images, result.infotexts = images_out, infotexts
        if len(images_out) > 1:
            from modules import images as images_mod

            result.grid = images_mod.image_grid(images_out, batch_size=req.batch_size)
            result.grid_first = bool(opts.get("return_grid", True))
            if save is not None and req.save_images and not req.do_not_save_grid and opts.get("grid_save", True):
                grid_text = infotexts[0] if infotexts else None
                result.grid_file = str(save(result.grid, grid_text, result.seeds[0], prompt, req, opts, grid=True))
        result.prompts = [prompt] * len(images_out)
        result.negative_prompts = [negative] * len(images_out)
        result.interrupted = ctl.interrupted
        result.warnings = list(self.warnings)
        result.seconds = time.perf_counter() - t0
        result.info = self.info_json(req, prompt, negative, result, clip_skip)
        result.info["peak_memory_mb"] = peak_memory_mb(self.device)
        result.info["peak_memory_device"] = self.device.type
        result.info["seconds"] = round(result.seconds, 3)
        if getattr(self.c, "compile_pending", False) and images_out:
            self.c.compile_pending = False  # --compile: this first job paid for compiling the UNet
            result.info["compile_first_run_seconds"] = round(result.seconds, 3)
            log.info("first generation with the compiled UNet took %.1fs (includes the compile)", result.seconds)
        return result

    def _steps_for(self, req: GenerationRequest) -> int:
        """Sampler steps per image (progress total)."""
        if req.is_img2img:
            n = self.plan(req, req.steps, req.denoising_strength, exact=self.exact_steps()).steps
        else:
            n = self.plan(req, req.steps).steps
        if req.enable_hr and req.denoising_strength > 0:
            n += self.plan(req, req.hr_second_pass_steps or req.steps, req.denoising_strength, exact=True).steps
        return max(n, 1)

    def exact_steps(self) -> bool:
        """Whether an img2img pass runs exactly its steps (A1111's img2img_fix_steps setting; a hires pass
        always does, as in A1111)."""
        return bool(self.opts.get("img2img_fix_steps"))

    def infotext(self, req, prompt, negative, seed, subseed, clip_skip, size) -> str:
        from modules import infotext

        info = self.loaded.info
        sampler, sched = resolve_sampler_lenient(req)[:2]
        eff = samplers.effective_schedule_type(sampler, sched)
        hires = {}
        if req.enable_hr:
            tw, th = hires_target(req)
            hires = {"hires_upscale": req.hr_scale, "hires_steps": req.hr_second_pass_steps or None,
                     "hires_upscaler": req.hr_upscaler,
                     "hires_resize": (tw, th) if (req.hr_resize_x or req.hr_resize_y) else None,
                     "hires_prompt": req.hr_prompt if req.hr_prompt and req.hr_prompt != req.prompt else None,
                     "hires_negative_prompt": req.hr_negative_prompt
                     if req.hr_negative_prompt and req.hr_negative_prompt != req.negative_prompt else None}
        # "Emphasis" (a non-default mode that met brackets) and "TI hashes" (embeddings this job used)
        cond_params = self.conditioner(clip_skip).infotext_params([prompt, negative])
        extra = {"Emphasis": cond_params.get("Emphasis")}
        eta = self.eta_for(sampler, req)  # A1111 writes an eta that differs from its sampler kind's default
        if eta is not None and eta != sampler.eta_default:
            extra[samplers.ETA_SETTINGS[sampler.eta][2]] = eta
        if req.is_img2img and req.mask is not None:
            extra["Mask blur"] = req.mask_blur
        # [extra networks] Lora hashes, VAE hash
        active = getattr(self, "_active_networks", None)
        lora_hashes = active.hashes if active is not None else None
        if "_vae_hash" not in self.__dict__:
            library = getattr(self, "extra_networks", None)
            self._vae_hash = library.vae_shorthash(self.loaded.vae_name) if library is not None else None
        params = infotext.generation_params(
            steps=req.steps, sampler=sampler.name, schedule_type=eff.label if eff is not None else None,
            cfg_scale=req.cfg_scale, seed=seed, width=req.width, height=req.height,
            model_hash=info.shorthash, model=info.model_name,
            vae=self.loaded.vae_name if self.loaded.vae_name != "None" else None, vae_hash=self._vae_hash,
            lora_hashes=lora_hashes or None, ti_hashes=cond_params.get("TI hashes"),
            variation_seed=subseed if req.subseed_strength else None,
            variation_seed_strength=req.subseed_strength or None,
            seed_resize_from=(req.seed_resize_from_w, req.seed_resize_from_h)
            if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0 else None,
            denoising_strength=req.denoising_strength if (req.is_img2img or req.enable_hr) else None,
            clip_skip=clip_skip, ensd=int(self.opts.get("eta_noise_seed_delta", 0)) or None,
            rng=self.opts.get("randn_source", "CPU"), tiling=req.tiling, extra=extra, version=VERSION, **hires)
        return infotext.create_infotext(prompt, negative, params)

    def info_json(self, req, prompt, negative, result, clip_skip) -> dict:
        info = self.loaded.info
        return {
            "prompt": prompt,
            "all_prompts": result.prompts,
            "negative_prompt": negative,
            "all_negative_prompts": result.negative_prompts,
            "seed": result.seeds[0] if result.seeds else rng.fix_seed(req.seed),
            "all_seeds": result.seeds,
            "subseed": result.subseeds[0] if result.subseeds else 0,
            "all_subseeds": result.subseeds,
            "subseed_strength": req.subseed_strength,
            "width": req.width,
            "height": req.height,
            "sampler_name": req.sampler_name,
            "scheduler": req.scheduler,
            "cfg_scale": req.cfg_scale,
            "steps": req.steps,
            "batch_size": req.batch_size,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": info.model_name,
            "sd_model_hash": info.shorthash,
            "sd_vae_name": self.loaded.vae_name if self.loaded.vae_name != "None" else None,
            "sd_vae_hash": self.__dict__.get("_vae_hash"),
            "seed_resize_from_w": req.seed_resize_from_w,
            "seed_resize_from_h": req.seed_resize_from_h,
            "denoising_strength": req.denoising_strength if (req.is_img2img or req.enable_hr) else None,
            "extra_generation_params": {},
            "index_of_first_image": 1 if result.grid_first else 0,
            # A1111 lists the grid's infotext (the first image's) first when the grid leads the images
            "infotexts": ([result.infotexts[0]] if result.grid_first else []) + result.infotexts,
            "styles": list(req.styles),
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
            "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": self.spec.is_inpaint,
            "version": VERSION,
            "warnings": result.warnings,
        }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the job: CUDA allocator peak on a GPU, else the process's peak resident size."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def masked_region(mask: Image.Image, pad: int, width: int, height: int):
    """Bounding box of the mask, padded, grown to the target aspect ratio, clipped to the image."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    W, H = mask.size
    x1, y1, x2, y2 = max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, W), min(y2 + pad, H)
    ratio = width / height
    bw, bh = x2 - x1, y2 - y1
    if bw / bh < ratio:
        grow = int(bh * ratio) - bw
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
        if x1 < 0:
            x2 -= x1
            x1 = 0
        if x2 > W:
            x1 -= x2 - W
            x2 = W
        x1 = max(x1, 0)
    else:
        grow = int(bw / ratio) - bh
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
        if y1 < 0:
            y2 -= y1
            y1 = 0
        if y2 > H:
            y1 -= y2 - H
            y2 = H
        y1 = max(y1, 0)
    return (x1, y1, x2, y2)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill': paint the masked area with blurred colours of its surroundings."""
    im = image.convert("RGB")
    m = mask.convert("L").point(lambda v: 255 if v > 127 else 0)
    keep = ImageOps.invert(m)
    base = Image.new("RGB", im.size, (127, 127, 127))
    base.paste(im, mask=keep)
    for radius in (256, 64, 16, 4, 2, 1):
        blurred = base.filter(ImageFilter.GaussianBlur(radius))
        base = Image.composite(base, blurred, keep)
    return Image.composite(base, im, m)


def apply_overlay(pic: Image.Image, overlay, j: int) -> Image.Image:
    """Paste the generated part back over the original image through the (blurred) mask."""
    originals, mask, crop_box = overlay
    orig = originals[j % len(originals)].convert("RGB")
    if crop_box is not None:
        x1, y1, x2, y2 = crop_box
        region = pic.resize((x2 - x1, y2 - y1), Image.LANCZOS)
        canvas = orig.copy()
        canvas.paste(region, (x1, y1))
        return Image.composite(canvas, orig, mask.convert("L"))
    if orig.size != pic.size:
        orig = orig.resize(pic.size, Image.LANCZOS)
        mask = mask.resize(pic.size, Image.LANCZOS)
    return Image.composite(pic, orig, mask.convert("L"))
