"""Settings: declared once (key, default, label, section, description, choices), persisted to config.json.

Keys are A1111's where A1111 has the same setting, so `/sdapi/v1/options` clients
and copied config files work.  An :class:`Options` object is created per app and
passed around; job code receives a plain snapshot dict, never this object.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionInfo:
    key: str
    default: Any
    label: str
    section: str
    description: str = ""
    choices: tuple | Callable[[], list] | None = None
    component: str = "auto"          # "auto" | "slider" | "dropdown" | "radio" | "textbox" | "checkbox" | "number"
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    restart: bool = False            # needs a restart to take effect
    hidden: bool = False             # kept in config.json, not shown in the Settings tab


SECTIONS = {
    "saving-images": "Saving images",
    "saving-paths": "Paths for saving",
    "sd": "Stable Diffusion",
    "sampler-params": "Sampler parameters",
    "ui": "User interface",
    "live-preview": "Live previews",
    "upscaling": "Upscaling",
    "limits": "Request limits",
    "control_net": "ControlNet",
}


def _declare() -> list[OptionInfo]:
    o = OptionInfo
    return [
        # saving images
        o("samples_save", True, "Always save all generated images", "saving-images",
          "Write every generated image to the outputs folder."),
        o("samples_format", "png", "File format for images", "saving-images",
          "png keeps the parameters in a PNG text chunk; jpg and webp keep them in EXIF.", choices=("png", "jpg", "webp")),
        o("samples_filename_pattern", "", "Images filename pattern", "saving-images",
          "Tags like [seed], [prompt_spaces], [model_name], [datetime]; empty means [seed]-[prompt_spaces]."),
        o("save_images_add_number", True, "Add number to filename when saving", "saving-images",
          "Prefix each file name with a running 5-digit number."),
        o("grid_save", True, "Always save all generated image grids", "saving-images",
          "Save a grid of the batch when more than one image was generated."),
        o("grid_format", "png", "File format for grids", "saving-images", "", choices=("png", "jpg", "webp")),
        o("enable_pnginfo", True, "Save text information about generation parameters as chunks to png files", "saving-images",
          "Needed for PNG Info and for pasting parameters back."),
        o("save_txt", False, "Create a text file next to every image with generation parameters", "saving-images", ""),
        o("jpeg_quality", 80, "Quality for saved jpeg and webp images", "saving-images", "", minimum=1, maximum=100, step=1),
        # paths
        o("outdir_samples", "", "Output directory for images; if empty, defaults to three directories below", "saving-paths", ""),
        o("outdir_txt2img_samples", "outputs/txt2img-images", "Output directory for txt2img images", "saving-paths",
          "Relative paths are inside the data folder."),
        o("outdir_img2img_samples", "outputs/img2img-images", "Output directory for img2img images", "saving-paths", ""),
        o("outdir_txt2img_grids", "outputs/txt2img-grids", "Output directory for txt2img grids", "saving-paths", ""),
        o("outdir_img2img_grids", "outputs/img2img-grids", "Output directory for img2img grids", "saving-paths", ""),
        o("outdir_save", "log/images", "Directory for saving images using the Save button", "saving-paths", ""),
        o("directories_filename_pattern", "[date]", "Directory name pattern", "saving-paths",
          "Sub-folder of the output directory for each image, e.g. [date]."),
        # stable diffusion
        o("sd_model_checkpoint", "", "Stable Diffusion checkpoint", "sd", "The checkpoint used for new jobs.", hidden=True),
        o("sd_vae", "Automatic", "SD VAE", "sd",
          "Automatic: a VAE named like the checkpoint if present, else the checkpoint's own. None: the checkpoint's own.",
          hidden=True),
        o("CLIP_stop_at_last_layers", 1, "Clip skip", "sd",
          "Use the output of an earlier text encoder layer: 1 = last layer, 2 = the one before it.",
          minimum=1, maximum=12, step=1),
        o("emphasis", "Original", "Emphasis mode", "sd",
          "How (word:1.2) weights are applied. Original: scale and restore the mean. No norm: scale only. "
          "Ignore: treat as plain text.", choices=("Original", "No norm", "Ignore")),
        o("comma_padding_backtrack", 20, "Prompt word wrap length limit", "sd",
          "When a 75-token chunk fills, move the words after the last comma within this many tokens to the next chunk; 0 disables.",
          minimum=0, maximum=74, step=1),
        o("enable_prompt_comments", True, "Enable comments", "sd", "Text after # on a line of a prompt is ignored."),
        o("initial_noise_multiplier", 1.0, "Noise multiplier for img2img", "sd", "", minimum=0.0, maximum=1.5, step=0.001),
        o("img2img_fix_steps", False, "With img2img, do exactly the amount of steps the slider specifies", "sd",
          "Normally img2img does steps x denoising strength steps."),
        o("compile_unet", False, "Compile the UNet with torch.compile", "sd",
          "Faster sampling on CUDA after a slow first generation.", restart=True),
        # sampler params
        o("eta_ddim", 0.0, "Eta for DDIM", "sampler-params", "Noise multiplier for DDIM; 0 is deterministic.",
          minimum=0.0, maximum=1.0, step=0.01),
        o("eta_ancestral", 1.0, "Eta for k-diffusion samplers", "sampler-params",
          "Noise multiplier for the ancestral and SDE samplers (Euler a, DPM2 a, DPM++ 2S a, DPM++ SDE, "
          "DPM++ 2M/3M SDE, DPM fast/adaptive); 0 makes them deterministic.", minimum=0.0, maximum=1.0, step=0.01),
        o("randn_source", "CPU", "Random number generator source", "sampler-params",
          "CPU: a seed gives the same picture on any device. GPU: noise is drawn on the device the job runs on "
          "(no copy from the host at each step of ancestral and SDE samplers; pictures differ between devices). "
          "NV: the numbers an NVIDIA GPU draws (A1111's default source), computed on any device, so recipes made "
          "on NVIDIA cards give the same picture here.",
          choices=("CPU", "GPU", "NV")),
        o("eta_noise_seed_delta", 0, "Eta noise seed delta (ENSD)", "sampler-params",
          "Added to the seed for the noise that ancestral and SDE samplers draw after the initial noise "
          "(A1111's ENSD; 0 = off).", minimum=0, step=1),
        # ui
        o("localization", "None", "Localization", "ui", "Language of the interface (files in localizations/).",
          restart=False),
        o("default_sampler", "DPM++ 2M", "Default sampling method", "ui", "Sampler selected when the page opens."),
        o("default_scheduler", "Automatic", "Default schedule type", "ui", ""),
        o("return_grid", True, "Show grid in gallery", "ui", "Show the grid of a batch in the output gallery."),
        o("send_seed", True, "Send seed when sending prompt or image to other interface", "ui", ""),
        # extensions (A1111's keys; set in the Extensions tab, read at start)
        o("disabled_extensions", [], "Disable these extensions", "ui", "", restart=True, hidden=True),
        o("disable_all_extensions", "none", "Disable all extensions (preserves the list of disabled extensions)", "ui",
          "extra: only the built-in ones load; all: none does.", choices=("none", "extra", "all"), restart=True,
          hidden=True),
        # upscaling (A1111's keys and labels)
        o("ESRGAN_tile", 192, "Tile size for ESRGAN upscalers.", "upscaling",
          "0 = no tiling. Also used by Real-ESRGAN and the compact SRVGGNet models.", minimum=0, maximum=512, step=16),
        o("ESRGAN_tile_overlap", 8, "Tile overlap for ESRGAN upscalers.", "upscaling", "Low values = visible seam",
          minimum=0, maximum=48, step=1),
        o("SWIN_tile", 192, "Tile size for all SwinIR.", "upscaling", "0 = no tiling.", minimum=0, maximum=512,
          step=16),
        o("SWIN_tile_overlap", 8, "Tile overlap, in pixels for SwinIR. Low values = visible seam.", "upscaling", "",
          minimum=0, maximum=48, step=1),
        o("DAT_tile", 192, "Tile size for DAT upscalers.", "upscaling", "0 = no tiling", minimum=0, maximum=512,
          step=16),
        o("DAT_tile_overlap", 8, "Tile overlap for DAT upscalers.", "upscaling", "Low values = visible seam",
          minimum=0, maximum=48, step=1),
        o("upscaler_for_img2img", "None", "Upscaler for img2img", "upscaling",
          "Used when img2img enlarges its init image to the job's size (None: Lanczos).", choices=_upscaler_choices),
        o("outdir_extras_samples", "outputs/extras-images", "Output directory for images from extras tab",
          "saving-paths", ""),
        o("use_original_name_batch", True, "Use original name for output filename during batch process in extras tab",
          "saving-images", ""),
        # ControlNet (sd-webui-controlnet's keys and labels)
        o("control_net_unit_count", 3, "Multi-ControlNet: ControlNet unit number", "control_net",
          "How many ControlNet units a job takes.", minimum=1, maximum=10, step=1, restart=True),
        o("control_net_model_cache_size", 2, "Model cache size", "control_net",
          "ControlNet models kept loaded.", minimum=1, maximum=10, step=1),
        # live previews
        o("live_previews_enable", True, "Show live previews of the created image", "live-preview", ""),
        o("show_progress_every_n_steps", 5, "Live preview display period", "live-preview",
          "In sampling steps; -1 shows only the final image.", minimum=-1, maximum=32, step=1),
        *_limits(),
    ]


def _upscaler_choices() -> list[str]:
    """The built-in image upscalers; the Settings tab adds the installed models (modules.ui.settings)."""
    from modules import upscalers
    return list(upscalers.IMAGE_UPSCALERS)


def _limits() -> list[OptionInfo]:
    """The admission limits (ours; A1111 has none): a request over one is refused before it is queued, scripts'
    jobs too. The defaults here are an 8 GB CPU's; the app replaces them with its device's
    (modules.engine.request.limit_defaults). The table's bounds (modules/fields.py) are their ceilings."""
    from modules.fields import FIELDS

    def top(name):
        return FIELDS[name].maximum

    o = OptionInfo
    return [
        o("max_batch_count", 100, "Largest batch count of a request", "limits", "0: no limit.",
          minimum=0, maximum=top("n_iter"), step=1, component="number"),
        o("max_batch_size", 4, "Largest batch size of a request", "limits", "0: no limit.",
          minimum=0, maximum=top("batch_size"), step=1),
        o("max_pixels", 2048 * 2048, "Largest picture of a request, in pixels", "limits",
          "Width x height of any pass: the first, the hires. fix pass at its upscaled size, img2img. 0: no limit.",
          minimum=0, step=1),
        o("max_steps", 150, "Most sampling steps of a request", "limits", "Also hires steps. 0: no limit.",
          minimum=0, maximum=top("steps"), step=1, component="number"),
        o("max_hr_scale", 4.0, "Largest hires. fix upscale factor", "limits", "0: no limit.",
          minimum=0, maximum=top("hr_scale"), step=0.05),
        o("max_hr_size", 4096, "Longest side of a hires. fix pass, in pixels", "limits", "0: no limit.",
          minimum=0, step=8),
        o("max_prompt_tokens", 1000, "Most tokens in a prompt or negative prompt", "limits",
          "Counted as written (every AND part and both sides of a [from:to:when] edit). A prompt longer than 16 "
          "characters per token is refused without counting. 0: no limit.", minimum=0, step=1),
        o("max_megapixel_steps", 1000, "Most work of a request, in megapixel-steps", "limits",
          "Width x height x steps of each pass x batch size x batch count, in millions: how long the job holds the "
          "queue. 0: no limit.", minimum=0, step=1),
        o("memory_check", True, "Refuse requests that cannot fit in the free memory", "limits",
          "Largest pass's pixels x batch size x about 200 bytes (120 in half precision), a lower bound, against "
          "the free memory of the GPU (or of the RAM on a CPU) when the request comes."),
    ]


class Options:
    """Settings with defaults, persisted to a JSON file; thread-safe."""

    def __init__(self, config_file: str | os.PathLike | None = None, overrides: dict | None = None,
                 defaults: dict | None = None):
        self.infos: dict[str, OptionInfo] = {i.key: i for i in _declare()}
        for key, value in (defaults or {}).items():   # defaults that depend on the machine (the limits)
            self.infos[key] = replace(self.infos[key], default=value)
        self.data: dict[str, Any] = {}
        self.config_file = Path(config_file) if config_file else None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, Any], None]] = []
        if self.config_file and self.config_file.is_file():
            self.load()
        if overrides:
            self.data.update(overrides)

    # A1111-style attribute access: opts.samples_format
    def __getattr__(self, key: str):
        if key.startswith("_") or key in ("infos", "data", "config_file"):
            raise AttributeError(key)
        try:
            return self.get(key)
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str):
        if key in self.data:
            return self.data[key]
        if key in self.infos:
            return self.infos[key].default
        raise KeyError(key)

    def validate(self, key: str, value):
        """Return the value converted to the option's type, or raise ValueError naming the key."""
        info = self.infos.get(key)
        if info is None:
            return value  # unknown keys (extensions, A1111 files) are kept as they are
        d = info.default
        try:
            if isinstance(d, bool):
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    value = value.lower() in ("true", "1")
                value = bool(value)
            elif isinstance(d, int) and not isinstance(d, bool):
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = int(value)
            elif isinstance(d, float):
                value = float(value)
                if value != value:
                    raise ValueError
            elif isinstance(d, str):
                if not isinstance(value, str):
                    raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"setting '{key}': {value!r} is not a valid {type(d).__name__}") from None
        if info.minimum is not None and isinstance(value, (int, float)) and value < info.minimum:
            raise ValueError(f"setting '{key}': {value} is below the minimum {info.minimum}")
        if info.maximum is not None and isinstance(value, (int, float)) and value > info.maximum:
            raise ValueError(f"setting '{key}': {value} is above the maximum {info.maximum}")
        if isinstance(info.choices, tuple) and value not in info.choices:
            raise ValueError(f"setting '{key}': {value!r} is not one of {', '.join(map(str, info.choices))}")
        return value

    def set(self, key: str, value, save: bool = True) -> bool:
        value = self.validate(key, value)
        with self._lock:
            changed = self.get(key) != value if (key in self.infos or key in self.data) else True
            self.data[key] = value
        if save:
            self.save()
        if changed:
            for fn in list(self._listeners):
                try:
                    fn(key, value)
                except Exception:  # noqa: BLE001 - a listener must not break settings
                    log.exception("option listener failed for %s", key)
        return changed

    def update(self, values: dict, save: bool = True) -> list[str]:
        """Validate all first, then apply: a bad value changes nothing."""
        checked = {k: self.validate(k, v) for k, v in values.items()}
        changed = [k for k, v in checked.items() if self.set(k, v, save=False)]
        if save:
            self.save()
        return changed

    def on_change(self, fn: Callable[[str, Any], None]) -> None:
        self._listeners.append(fn)

    def info(self, key: str) -> OptionInfo:
        return self.infos[key]

    def snapshot(self) -> dict:
        out = {k: i.default for k, i in self.infos.items()}
        out.update(self.data)
        return out

    def load(self) -> None:
        try:
            data = json.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("settings file %s could not be read (%s); using defaults", self.config_file, e)
            return
        if isinstance(data, dict):
            self.data = data

    def save(self) -> None:
        if not self.config_file:
            return
        with self._lock:
            self.config_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.config_file.with_name(self.config_file.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.data, indent=4, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.config_file)
