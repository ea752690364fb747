"""The application core: one object that owns paths, settings, the model library,
styles and the job queue.  UI, API and command line all talk to an :class:`App`.

It has no web framework in it; `webui.py` wires it to FastAPI and Gradio.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from modules import (devices, engine, hooks, images, jobs, options, paths as paths_mod, scripts, sd_models, styles,
                     upscalers)

log = logging.getLogger(__name__)


class App:
    def __init__(self, args=None, policy: devices.DevicePolicy | None = None):
        from modules import cmd_args

        self.args = args if args is not None else cmd_args.parse_args([])
        self.paths = paths_mod.Paths.from_args(self.args)
        self.policy = policy or devices.policy_from_args(self.args)
        # the request limits' defaults fit the device jobs run on (its kind and memory)
        self.opts = options.Options(self.paths.config_file, defaults=engine.request.limit_defaults(
            devices.memory_info(self.policy.device)))
        if self.opts.get("compile_unet") and not self.policy.compile:  # the setting, as --compile (read at start)
            import dataclasses
            self.policy = dataclasses.replace(self.policy, compile=True)
        self.models = sd_models.ModelManager(self.paths, self.policy)
        self.styles = styles.StyleDatabase(self.paths.styles_file)
        self.queue = jobs.JobQueue(self.run_job, max_size=int(getattr(self.args, "queue_size", 64) or 64),
                                   record_dir=self.paths.data_dir / "log" / "jobs", store=self._job_store())
        self._conditioner_cache: dict = {}
        # [extra networks] LoRA and embedding files (listed lazily; refreshed with the models)
        from modules import extra_networks
        self.extra_networks = extra_networks.Library(self.paths.lora_dirs, self.paths.embeddings_dirs,
                                                     models=self.models)
        self.upscalers = upscalers.UpscalerLibrary.from_paths(self.paths, self.args, device=str(self.policy.device))
        from modules.controlnet.library import ControlNetLibrary
        self.controlnets = ControlNetLibrary.from_paths(self.paths, self.args)
        self.model_error: str | None = None
        self.loader: threading.Thread | None = None   # the background model load started at app start
        self._listed = threading.Event()
        # the hook points of jobs and of the app; the built-in features are handlers there too
        self.hooks = hooks.default_hooks()
        self.hooks.add("app_started", lambda app: app.load_in_background(), "model library")
        # scripts: the built-in ones (scripts/) and the enabled extensions' (modules.extensions)
        self.scripts = scripts.ScriptRegistry(self)
        self.scripts.load_dir(paths_mod.ROOT / "scripts", scripts.BUILT_IN)
        from modules import extensions
        self.extensions = extensions.ExtensionManager(self)
        self.extensions.load()
        self.resume_jobs()   # [persistent queue] the jobs the last run left waiting or running

    # -- models ------------------------------------------------------------
    def refresh_models(self) -> list[sd_models.CheckpointInfo]:
        infos = self.models.refresh()
        self.extra_networks.refresh()  # [extra networks]
        self.upscalers.refresh()
        try:
            self.controlnets.refresh()
        except Exception:  # noqa: BLE001 - the ControlNet folder must never stop the checkpoints' listing
            log.exception("listing the ControlNet models failed")
        self._listed.set()
        return infos

    def ensure_listed(self) -> None:
        if not self._listed.is_set():
            self.refresh_models()

    def selected_checkpoint(self) -> str | None:
        """The checkpoint for new jobs: the setting if it names a known model, else the default."""
        self.ensure_listed()
        want = self.opts.get("sd_model_checkpoint") or getattr(self.args, "ckpt", None)
        if want:
            try:
                return self.models.find(want).title
            except sd_models.ModelLoadError:
                log.warning("checkpoint %r from the settings is not available", want)
        if self.models.loaded is not None:
            return self.models.loaded.info.title
        info = self.models.default_checkpoint()
        return info.title if info else None

    def load_model(self, title: str | None = None, vae: str | None = None) -> sd_models.LoadedModel:
        self.ensure_listed()
        with self.models.lock:
            loaded = self.models.load(title or self.selected_checkpoint(), vae or self.opts.get("sd_vae"))
            if self.opts.get("live_previews_enable"):
                # the preview map is fitted here, where the models are used one at a time (a job loads
                # through here too); the thread that serves previews during sampling only reads it
                from modules import previews
                comps = loaded.components
                previews.fit_linear_map(comps.vae, loaded.spec.scaling_factor,
                                        device=getattr(comps, "execution_device", None))
        self.model_error = None
        return loaded

    def set_checkpoint(self, title: str) -> sd_models.LoadedModel:
        """Load a checkpoint now and make it the one new jobs use (the top bar's dropdown)."""
        loaded = self.load_model(title)
        self.opts.set("sd_model_checkpoint", loaded.info.title)
        return loaded

    def load_in_background(self) -> threading.Thread:
        def work():
            try:
                self.refresh_models()
                if self.selected_checkpoint():
                    self.load_model()
            except sd_models.ModelLoadError as e:
                self.model_error = str(e)
                log.error("%s", e)

        t = threading.Thread(target=work, name="model-loader", daemon=True)
        t.start()
        self.loader = t
        return t

    def native_resolution(self, title: str | None = None) -> int:
        """The default width/height for a checkpoint (from its detected architecture or metadata)."""
        loaded = self.models.loaded
        if loaded is not None and (title is None or loaded.info.title == title):
            return int(loaded.spec.native_resolution)
        try:
            info = self.models.find(title) if title else self.models.default_checkpoint()
        except sd_models.ModelLoadError:
            return 512
        if info is None:
            return 512
        return sd_models.native_resolution_of(info)

    def token_count(self, text: str) -> tuple[int, int]:
        """('used tokens', 'current limit') for the prompt box counter; no model call."""
        from modules import conditioning

        loaded = self.models.loaded
        if loaded is None:
            return conditioning.count_tokens_without_model(text)
        embeddings = self.extra_networks.embedding_vectors(refresh_if_changed=False)  # [extra networks]
        key = ("counter", id(loaded.components), id(embeddings))
        cond = self._conditioner_cache.get(key)
        if cond is None:
            cond = conditioning.TextConditioner(loaded.components,
                                                comma_padding_backtrack=int(self.opts.get("comma_padding_backtrack")),
                                                embeddings=embeddings)
            self._conditioner_cache[key] = cond
        return cond.token_count(text)

    def preview_image(self, job: jobs.Job):
        """The live preview of a running job (computed on request, so sampling never waits for it)."""
        from modules import previews

        loaded = self.models.loaded
        lat = job.control.current_latents
        if loaded is None or lat is None or job.status != "running":
            return None
        if not self.opts.get("live_previews_enable"):
            return None
        try:
            return previews.approx_preview(lat, loaded.components.vae, loaded.spec.scaling_factor)
        except Exception:  # noqa: BLE001 - a preview must never break a job
            log.exception("preview failed")
            return None

    # -- jobs --------------------------------------------------------------------
    def submit(self, request: engine.GenerationRequest, checkpoint: str | None = None, vae: str | None = None,
               source: str = "ui", task_id: str | None = None) -> jobs.Job:
        checkpoint, vae = self.admit(request, checkpoint, vae)
        return self.queue.submit(request, checkpoint, vae, source, task_id=task_id)

    def admit(self, request: engine.GenerationRequest, checkpoint: str | None, vae: str | None):
        """Check and prepare a request for the queue (a job's again after a restart): (checkpoint, vae) it runs on.
        RequestError or ModelLoadError say what is wrong."""
        # the admission limits travel with the request, so its script's inner jobs are held to them too
        request.limits = engine.request.admission_limits(self.opts, self.policy)
        engine.validate(request)  # bad input is refused before it takes a place in the queue
        self.scripts.prepare(request)  # the script's name and arguments (RequestError naming the argument)
        if request.enable_hr:   # a model upscaler by name: installed? (the built-in ones were checked above)
            try:
                self.upscalers.check(request.hr_upscaler)
            except upscalers.UpscalerError as e:
                raise engine.RequestError("hr_upscaler", str(e)) from None
        ov = request.override_settings or {}
        checkpoint = ov.get("sd_model_checkpoint") or checkpoint
        vae = ov.get("sd_vae") or vae
        if checkpoint:
            self.ensure_listed()
            # raises ModelLoadError naming the available models; the job keeps the exact title it found
            checkpoint = self.models.find(checkpoint).title
        return checkpoint, vae

    # [persistent queue]
    def _job_store(self):
        from modules import job_store
        try:
            return job_store.JobStore(self.paths.data_dir / "log")
        except (OSError, job_store.StoreError, job_store.sqlite3.Error) as e:
            log.error("the job store cannot be opened (%s): jobs will not survive a restart", e)
            return None

    def resume_jobs(self) -> list[jobs.Job]:
        """Queue again the jobs the last run left; delete (in the background: the output folders may hold
        many files) the temp files its killed saves left there."""
        from modules import job_store
        keys = [k for k in self.opts.infos if k.startswith("outdir_")]   # every output folder setting
        folders = [self.paths.outputs_dir] + [self._abs(self.opts.get(k)) for k in keys if self.opts.get(k)]

        def sweep():
            for path in job_store.sweep_temp_files(folders):   # this process's own temp files are kept
                log.info("deleted %s, left by a save that did not finish", path)
        self.temp_sweep = threading.Thread(target=sweep, name="temp-file-sweep", daemon=True)
        self.temp_sweep.start()
        return self.queue.resume(self.why_job_cannot_run)

    def why_job_cannot_run(self, job: jobs.Job) -> str | None:
        """Why a job from before a restart cannot run now (None: it can): its checkpoint or VAE is gone (by
        exact name: a close match would make other pictures), or its request is no longer admitted."""
        self.ensure_listed()
        if job.checkpoint and not any(job.checkpoint in (i.title, i.name, i.model_name)
                                      for i in self.models.checkpoints.values()):
            return f"its checkpoint '{job.checkpoint}' is no longer available"
        if not job.checkpoint and self.selected_checkpoint() is None:
            return "no checkpoint is installed"
        if job.vae and job.vae not in ("Automatic", "None") and \
                not any(job.vae in (n, Path(n).stem, p.name) for n, p in self.models.vaes.items()):
            return f"its VAE '{job.vae}' is no longer available"
        try:
            self.admit(job.request, job.checkpoint, job.vae)
        except (engine.RequestError, sd_models.ModelLoadError) as e:
            return f"its request is no longer valid: {e}"
        return None

    def run_job(self, job: jobs.Job) -> engine.GenerationResult:
        req = job.request
        script = self.scripts.selected(req)
        if script is None:
            return self.process(req, job.control, job.checkpoint, job.vae)
        with self.models.lock:  # a script's jobs run back to back, on the models it picks
            t0 = time.perf_counter()
            opts = self.opts.snapshot()
            opts.update(req.override_settings or {})
            run = scripts.ScriptJob(script, req, opts, job.control, self._script_process, self.save_output, app=self)
            run.checkpoint, run.vae = job.checkpoint, job.vae
            result = script.run(run, scripts.Args(req.script_args))
            if result is None:
                raise RuntimeError(f"script '{script.title}' gave no result")
            return scripts.finish_result(run, result, time.perf_counter() - t0)

    def _script_process(self, req, checkpoint, vae, extra_params: dict, run: "scripts.ScriptJob"):
        own = [(run.script, scripts.Args(run.request.script_args))] if run.script.hook_methods() else []
        return self.process(req, run.control, checkpoint or run.checkpoint, vae or run.vae, extra_params, own)

    def process(self, req: engine.GenerationRequest, control: engine.JobControl | None = None,
                checkpoint: str | None = None, vae: str | None = None, extra_params: dict | None = None,
                extra_scripts=()) -> engine.GenerationResult:
        """One engine job of ``req`` on ``checkpoint`` (default: the selected one), with the always-on
        scripts the request enables (and ``extra_scripts``: (script, args) pairs) at its hook points."""
        ov = req.override_settings or {}
        with self.models.lock:
            loaded = self.load_model(checkpoint or ov.get("sd_model_checkpoint") or self.selected_checkpoint(),
                                     vae or ov.get("sd_vae") or self.opts.get("sd_vae"))
            ctx = engine.JobContext.create(
                loaded, req, self.opts.snapshot(), control=control or engine.JobControl(),
                hooks=self.scripts.job_hooks(self.hooks, req, extra_scripts),
                networks=self.extra_networks, embeddings=self.extra_networks.embedding_vectors(),
                styles=self.styles.styles, conditioners=self._conditioner_cache, save=self.save_output,
                upscalers=self.upscalers)
            ctx.extra_params.update(extra_params or {})
            return engine.run(ctx)

    def _abs(self, folder) -> Path:
        folder = Path(folder)
        return folder if folder.is_absolute() else self.paths.data_dir / folder

    def save_output(self, image, infotext: str, seed: int, prompt: str, req: engine.GenerationRequest,
                    opts: dict, grid: bool = False, basename: str = "grid") -> Path:
        """Write a picture (or, with ``grid``, a grid named ``<basename>-NNNN-<seed>``) where the settings say."""
        txt = infotext if opts.get("save_txt") else None  # a .txt of the parameters beside the file
        if grid:
            key = "outdir_img2img_grids" if req.is_img2img else "outdir_txt2img_grids"
            outdir = opts.get(key)
            return images.save_image(
                image, self._abs(outdir), basename, pattern="[seed]", seed=seed, prompt=prompt, infotext=infotext,
                extension=opts.get("grid_format", "png"), dir_pattern=opts.get("directories_filename_pattern") or "[date]",
                jpeg_quality=int(opts.get("jpeg_quality", 80)), number=True, txt=txt)
        key = "outdir_img2img_samples" if req.is_img2img else "outdir_txt2img_samples"
        outdir = self._abs(opts.get("outdir_samples") or opts.get(key))
        return images.save_image(
            image, outdir, txt=txt, pattern=opts.get("samples_filename_pattern") or "[seed]-[prompt_spaces]",
            seed=seed, prompt=prompt, infotext=infotext if opts.get("enable_pnginfo", True) else None,
            extension=opts.get("samples_format", "png"), dir_pattern=opts.get("directories_filename_pattern") or "[date]",
            jpeg_quality=int(opts.get("jpeg_quality", 80)), number=bool(opts.get("save_images_add_number", True)))
