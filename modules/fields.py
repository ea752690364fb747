"""A1111's generation fields, in one table.

Each :class:`Field` row says everything the web UI, the HTTP API, the command line, the
infotext and the engine need to know about one field of an A1111 txt2img / img2img request:

* ``name``, ``type``, ``default``: the :class:`~modules.engine.request.GenerationRequest`
  attribute, its type and its default (the engine's, which the UI and the CLI share);
* ``api``, ``api_type``, ``api_default``: the field of A1111's ``/sdapi/v1`` request models
  (None: not in the API) where A1111's API differs from the UI (50 steps, sampler ``sampler_index``
  "Euler", ...); ``ignored``: accepted by the API and not acted upon;
* ``infotext``: the key of the generation-parameters text ("Steps", "Size-1", ...);
* ``setting``: the setting that supplies the value (the UI's default where the UI has a control,
  else the engine's value while the request leaves the field None);
* ``minimum``, ``maximum``, ``multiple_of``: the bounds that validation enforces (int fields must
  be whole numbers); ``modes``: the passes the field belongs to (txt2img, img2img, txt2img's hires
  pass), and so when its bounds are checked;
* ``ui``: the UI control's English label (A1111's wording), range, step and start value;
* ``cli``: the command-line flag; ``choices``: the labels of a field whose value is an index.

Three kinds of rows: request fields (``REQUEST``), fields only the API has (``API_ONLY``) and
infotext keys that stand for settings (``SETTING``: pasting them gives override settings).
The API models, the request dataclass's defaults, validation, the UI's controls, the CLI's flags
and pasting an infotext all read this table; nothing here imports the rest of the program.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Optional

TXT2IMG, IMG2IMG, HIRES = "txt2img", "img2img", "hires"   # modes; HIRES: txt2img's hires pass
BOTH = (TXT2IMG, IMG2IMG)
REQUEST, API_ONLY, SETTING = "request", "api", "setting"   # kinds of rows

SEED_MAX = 2**32 - 1   # seeds are 32-bit, as in A1111 (modules.rng uses this one)

# choice lists: the value is the index of the label (A1111's radio buttons)
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
INPAINTING_FILL = ("fill", "original", "latent noise", "latent nothing")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")

SAME = object()  # "as the table's default" / "as the field's name"


@dataclass(frozen=True)
class Control:
    """A UI control: A1111's English label; a slider's range and step; its start value where it is
    not the field's default (a mapping mode -> value where the tabs differ)."""
    label: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    value: Any = SAME


@dataclass(frozen=True)
class Flag:
    """A command-line flag (names as argparse takes them; a name without dashes is positional)."""
    names: tuple[str, ...]
    default: Any = SAME
    help: str | None = None


@dataclass(frozen=True)
class Field:
    """One row of the table (see the module docstring)."""
    name: str
    type: Any
    default: Any
    description: str
    kind: str = REQUEST
    modes: tuple[str, ...] = BOTH
    api: str | None = SAME                # type: ignore[assignment]
    api_type: Any = None                  # None: `type`, Optional where the API default is None
    api_default: Any = SAME
    api_bounds: bool = False              # the API schema states minimum/maximum
    api_note: str = ""                    # what the API does differently (added to its description)
    ignored: bool = False
    infotext: str | None = None
    setting: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    ui: Control | None = None
    cli: Flag | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.api is SAME:
            object.__setattr__(self, "api", None if self.kind == SETTING else self.name)

    # -- types and defaults ------------------------------------------------------------------
    @property
    def base_type(self) -> Any:
        """`type` without None (``int | None`` -> int)."""
        return _without_none(self.type)

    @property
    def whole(self) -> bool:
        """Whether validation wants a whole number."""
        return self.base_type is int

    @property
    def api_default_value(self) -> Any:
        return self.default if self.api_default is SAME else self.api_default

    @property
    def api_annotation(self) -> Any:
        if self.api_type is not None:
            return self.api_type
        return Optional[self.type] if self.api_default_value is None else self.type

    @property
    def api_description(self) -> str:
        return f"{self.description}; {self.api_note}" if self.api_note else self.description

    def ui_default(self, mode: str) -> Any:
        """The value the UI control of `mode`'s tab starts with (and falls back to)."""
        value = self.ui.value if self.ui is not None else SAME
        if isinstance(value, Mapping):
            value = value.get(mode, SAME)
        return self.default if value is SAME else value

    @property
    def cli_default(self) -> Any:
        return self.default if self.cli is None or self.cli.default is SAME else self.cli.default

    # -- validation --------------------------------------------------------------------------
    @property
    def bounded(self) -> bool:
        return self.minimum is not None or self.maximum is not None or self.multiple_of is not None

    def applies(self, mode: str, enable_hr: bool) -> bool:
        """Whether the field takes part in a request of `mode` (so validation checks it)."""
        return mode in self.modes or (HIRES in self.modes and enable_hr)

    # -- choices and infotext values -----------------------------------------------------------
    def label_of(self, value: Any) -> str:
        """A choice field's value (an index, or a bool for two choices) -> its label."""
        return self.choices[int(value)]

    def value_of(self, label: str) -> Any:
        """A choice label -> the field's value (ValueError for an unknown label)."""
        index = self.choices.index(label)
        return bool(index) if self.base_type is bool else index

    def parse(self, text: Any) -> Any:
        """An infotext value (text, or a number the parser filled in) -> the field's value;
        ValueError where it is not one."""
        if self.choices is not None:
            return self.value_of(str(text))
        if self.base_type is int:
            return _whole(text)
        if self.base_type is float:
            return _finite(text)
        return str(text)


def _without_none(t: Any) -> Any:
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        rest = [a for a in typing.get_args(t) if a is not type(None)]
        return rest[0] if len(rest) == 1 else t
    return t


def _finite(text: Any) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _whole(text: Any) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        value = _finite(text)
        if not value.is_integer():
            raise ValueError(f"{text!r} is not a whole number") from None
        return int(value)


def _ignored(name: str, type_: Any, default: Any, description: str, modes=BOTH) -> Field:
    """An API field A1111 clients may send that is accepted and not acted upon."""
    return Field(name, type_, default, description, kind=API_ONLY, modes=modes, ignored=True)


def _setting(infotext: str, setting: str, type_: Any, description: str) -> Field:
    """An infotext key that stands for a setting."""
    return Field(setting, type_, None, description, kind=SETTING, infotext=infotext, setting=setting)


_IMG = (IMG2IMG,)
_TXT = (TXT2IMG,)
_HR = (HIRES,)

# The rows, in the order of A1111's API models (the shared fields, then txt2img's, then img2img's).
TABLE: tuple[Field, ...] = (
    # -- prompts ------------------------------------------------------------------------------
    Field("prompt", str, "", "what the image should show", infotext="Prompt", ui=Control("Prompt"),
          cli=Flag(("prompt",))),
    Field("negative_prompt", str, "", "what the image should not show", infotext="Negative prompt",
          ui=Control("Negative prompt"), cli=Flag(("-n", "--negative-prompt"))),
    Field("styles", list[str], [], "names of saved styles merged into the prompts", api_default=None,
          ui=Control("Styles")),
    # -- seeds --------------------------------------------------------------------------------
    Field("seed", int, -1, "the seed; -1 for a random seed", infotext="Seed", minimum=-1, maximum=SEED_MAX,
          ui=Control("Seed"), cli=Flag(("--seed",))),
    Field("subseed", int, -1, "the variation seed; -1 for a random one", infotext="Variation seed",
          minimum=-1, maximum=SEED_MAX, ui=Control("Variation seed")),
    Field("subseed_strength", float, 0.0, "how far the variation seed's noise is mixed in (0..1)",
          infotext="Variation seed strength", minimum=0, maximum=1,
          ui=Control("Variation strength", 0.0, 1.0, 0.01)),
    Field("seed_resize_from_h", int, 0, "height the seed's noise is made for; -1 or 0: off",
          api_default=-1, api_bounds=True, infotext="Seed resize from-2", minimum=-1, maximum=2048,
          ui=Control("Resize seed from height", 0, 2048, 8)),
    Field("seed_resize_from_w", int, 0, "width the seed's noise is made for; -1 or 0: off",
          api_default=-1, api_bounds=True, infotext="Seed resize from-1", minimum=-1, maximum=2048,
          ui=Control("Resize seed from width", 0, 2048, 8)),
    # -- sampling -----------------------------------------------------------------------------
    Field("sampler_name", str, "DPM++ 2M", "A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras'",
          api_default=None, api_note="falls back to sampler_index", infotext="Sampler",
          setting="default_sampler", ui=Control("Sampling method"),
          cli=Flag(("--sampler",))),
    Field("scheduler", str, "Automatic", "schedule type", api_default=None, api_note="None = Automatic",
          infotext="Schedule type", setting="default_scheduler", ui=Control("Schedule type"), cli=Flag(("--schedule-type",))),
    Field("batch_size", int, 1, "images made at once", api_bounds=True, infotext="Batch size", minimum=1,
          maximum=64, ui=Control("Batch size", 1, 8, 1), cli=Flag(("--batch-size",))),
    Field("n_iter", int, 1, "batches made one after another (batch count)", api_bounds=True, minimum=1,
          maximum=1000, ui=Control("Batch count", 1, 100, 1), cli=Flag(("--batch-count",))),
    Field("steps", int, 20, "sampling steps", api_default=50, api_bounds=True, infotext="Steps", minimum=1,
          maximum=500, ui=Control("Sampling steps", 1, 150, 1), cli=Flag(("--steps",))),
    Field("cfg_scale", float, 7.0, "classifier-free guidance scale", api_bounds=True, infotext="CFG scale",
          minimum=0, maximum=100, ui=Control("CFG Scale", 1.0, 30.0, 0.5), cli=Flag(("--cfg-scale",))),
    Field("width", int, 512, "image width in pixels", api_bounds=True, api_note="rounded down to a multiple of 8",
          infotext="Size-1", minimum=64, maximum=2048, multiple_of=8, ui=Control("Width", 64, 2048, 8),
          cli=Flag(("--width",), 0, "0 = the model's native resolution")),
    Field("height", int, 512, "image height in pixels", api_bounds=True,
          api_note="rounded down to a multiple of 8", infotext="Size-2", minimum=64, maximum=2048, multiple_of=8,
          ui=Control("Height", 64, 2048, 8), cli=Flag(("--height",), 0, "0 = the model's native resolution")),
    _ignored("restore_faces", bool, None, "restore faces (GFPGAN/CodeFormer): not supported; ignored"),
    Field("tiling", bool, False, "make an image that tiles seamlessly", api_default=None),
    _ignored("do_not_save_samples", bool, False, "A1111's switch for saving the images; save_images decides here"),
    Field("do_not_save_grid", bool, False, "do not save the grid of a batch"),
    Field("eta", float | None, None, "noise multiplier of ancestral and DDIM samplers; None: the setting "
          "for the sampler's kind (eta_ancestral or eta_ddim)"),
    Field("denoising_strength", float, 0.75, "how much of the image the pass repaints (0..1)",
          modes=(IMG2IMG, HIRES), api_type=Optional[float], infotext="Denoising strength", minimum=0, maximum=1,
          ui=Control("Denoising strength", 0.0, 1.0, 0.01, value={TXT2IMG: 0.7}),
          cli=Flag(("--denoising-strength",))),
    _ignored("s_min_uncond", float, None, "A1111's skip of the negative prompt at low sigmas; ignored"),
    _ignored("s_churn", float, None, "k-diffusion's churn; ignored"),
    _ignored("s_tmax", float, None, "k-diffusion's churn maximum sigma; ignored"),
    _ignored("s_tmin", float, None, "k-diffusion's churn minimum sigma; ignored"),
    _ignored("s_noise", float, None, "k-diffusion's churn noise; ignored"),
    # -- the job ------------------------------------------------------------------------------
    Field("override_settings", dict[str, Any], {}, "settings for this job only (setting key -> value)",
          api_default=None, ui=Control("Override settings")),
    Field("override_settings_restore_afterwards", bool, True, "restore the overridden settings after the job",
          kind=API_ONLY),
    _ignored("refiner_checkpoint", str, None, "the SDXL refiner: not supported; ignored"),
    _ignored("refiner_switch_at", float, None, "when the refiner takes over: not supported; ignored"),
    _ignored("disable_extra_networks", bool, False, "A1111's switch to skip <lora:...> tags; ignored"),
    _ignored("comments", dict[str, Any], None, "comments A1111 keeps with the job; ignored"),
    Field("sampler_index", str, "Euler", "the sampler where sampler_name is not given (A1111's API)",
          kind=API_ONLY),
    Field("script_name", Optional[str], None, "the script to run instead of a plain job (a title of /sdapi/v1/scripts, "
          "any case; None or \"None\": no script)"),
    Field("script_args", Any, [], "the script's arguments: A1111's positional list (the order of "
          "/sdapi/v1/script-info), or an object by argument name"),
    Field("send_images", bool, True, "answer with the images", kind=API_ONLY),
    Field("save_images", bool, True, "save the images to the outputs folder", api_default=False),
    Field("alwayson_scripts", dict[str, Any], {}, "always-on scripts' arguments: {name: {\"args\": [...]}} "
          "(positional, as A1111) or {name: {\"args\": {name: value}}}"),
    Field("force_task_id", str, None, "an id for POST interrupt?id=... while the job waits",
          kind=API_ONLY),
    Field("infotext", str, None, "generation parameters text; fills the fields not given", kind=API_ONLY),
    # -- txt2img: hires. fix ------------------------------------------------------------------
    Field("enable_hr", bool, False, "hires. fix: a second pass at a larger size", modes=_TXT,
          ui=Control("Hires. fix"), cli=Flag(("--hires",), help="enable hires. fix")),
    _ignored("firstphase_width", int, 0, "old hires fix's first pass width; ignored", modes=_TXT),
    _ignored("firstphase_height", int, 0, "old hires fix's first pass height; ignored", modes=_TXT),
    Field("hr_scale", float, 2.0, "hires pass: scale of the first pass's size", modes=_HR, infotext="Hires upscale",
          minimum=1, maximum=8, ui=Control("Upscale by", 1.0, 4.0, 0.05), cli=Flag(("--hr-scale",))),
    Field("hr_upscaler", str, "Latent", "hires pass: the upscaler (a latent mode or an image upscaler)",
          modes=_HR, api_default=None, infotext="Hires upscaler", ui=Control("Upscaler"),
          cli=Flag(("--hr-upscaler",))),
    Field("hr_second_pass_steps", int, 0, "hires pass: steps; 0: as many as the first pass", modes=_HR,
          infotext="Hires steps", minimum=0, maximum=500, ui=Control("Hires steps", 0, 150, 1)),
    Field("hr_resize_x", int, 0, "hires pass: target width; 0: by hr_scale", modes=_HR, infotext="Hires resize-1",
          minimum=0, maximum=4096, ui=Control("Resize width to", 0, 2048, 8)),
    Field("hr_resize_y", int, 0, "hires pass: target height; 0: by hr_scale", modes=_HR,
          infotext="Hires resize-2", minimum=0, maximum=4096, ui=Control("Resize height to", 0, 2048, 8)),
    _ignored("hr_checkpoint_name", str, None, "hires pass checkpoint: not supported; ignored", modes=_HR),
    _ignored("hr_sampler_name", str, None, "hires pass sampler: not supported; ignored", modes=_HR),
    _ignored("hr_scheduler", str, None, "hires pass schedule type: not supported; ignored", modes=_HR),
    Field("hr_prompt", str, "", "hires pass prompt; empty: the prompt", modes=_HR, infotext="Hires prompt"),
    Field("hr_negative_prompt", str, "", "hires pass negative prompt; empty: the negative prompt", modes=_HR,
          infotext="Hires negative prompt"),
    _ignored("firstpass_image", str, None, "a ready first-pass image: not supported; ignored", modes=_TXT),
    # -- img2img and inpainting ---------------------------------------------------------------
    Field("init_images", list[Any], [], "the images to start from", modes=_IMG,
          api_type=Optional[list[str]], api_default=None, api_note="base64 images (a data: URL prefix is allowed)",
          cli=Flag(("--init-image",), None, "img2img: the input image")),
    Field("resize_mode", int, 0, "how the init image is fitted to the size", modes=_IMG, minimum=0,
          maximum=len(RESIZE_MODES) - 1, choices=RESIZE_MODES, ui=Control("Resize mode")),
    _ignored("image_cfg_scale", float, None, "instruct-pix2pix image guidance: not supported; ignored", modes=_IMG),
    Field("mask", Any, None, "the inpainting mask", modes=_IMG, api_type=Optional[str],
          api_note="base64 image; white = repaint", cli=Flag(("--mask",), help="inpainting: white = repaint")),
    Field("mask_blur_x", int, 4, "mask blur across; mask_blur wins", kind=API_ONLY, modes=_IMG),
    Field("mask_blur_y", int, 4, "mask blur down; mask_blur wins", kind=API_ONLY, modes=_IMG),
    Field("mask_blur", int, 4, "blur of the mask's edge in pixels", modes=_IMG, api_default=None,
          api_note="None: the larger of mask_blur_x and mask_blur_y", infotext="Mask blur", minimum=0, maximum=256,
          ui=Control("Mask blur", 0, 64, 1)),
    _ignored("mask_round", bool, True, "A1111's rounding of a blurred mask; ignored", modes=_IMG),
    Field("inpainting_fill", int, 1, "what the masked area starts as", modes=_IMG, api_default=0,
          infotext="Masked content", minimum=0, maximum=len(INPAINTING_FILL) - 1, choices=INPAINTING_FILL,
          ui=Control("Masked content")),
    Field("inpaint_full_res", bool, False, "inpaint only the masked area, at full resolution", modes=_IMG,
          api_default=True, infotext="Inpaint area", choices=INPAINT_AREAS, ui=Control("Inpaint area")),
    Field("inpaint_full_res_padding", int, 32, "pixels around the masked area (Only masked)", modes=_IMG,
          api_default=0, infotext="Masked area padding", minimum=0, maximum=1024,
          ui=Control("Only masked padding, pixels", 0, 256, 4)),
    Field("inpainting_mask_invert", bool, False, "repaint what the mask leaves black", modes=_IMG, api_type=int,
          api_default=0, infotext="Mask mode", choices=MASK_MODES, ui=Control("Mask mode")),
    Field("initial_noise_multiplier", float | None, None, "img2img noise multiplier; None: the setting",
          modes=_IMG, setting="initial_noise_multiplier"),
    _ignored("latent_mask", str, None, "a second mask for the latent: not supported; ignored", modes=_IMG),
    Field("include_init_images", bool, False, "answer with the init images in parameters", kind=API_ONLY,
          modes=_IMG),
    # -- engine only ---------------------------------------------------------------------------
    Field("clip_skip", int | None, None, "CLIP layers to skip; None: the setting",
          api=None, setting="CLIP_stop_at_last_layers", minimum=1, maximum=12, cli=Flag(("--clip-skip",))),
    # -- infotext keys that stand for settings -------------------------------------------------
    _setting("Clip skip", "CLIP_stop_at_last_layers", int, "CLIP layers to skip"),
    _setting("ENSD", "eta_noise_seed_delta", int, "eta noise seed delta"),
    _setting("RNG", "randn_source", str, "where the noise is drawn (GPU, CPU, NV)"),
    _setting("Emphasis", "emphasis", str, "emphasis mode of (words:1.1)"),
    _setting("Eta DDIM", "eta_ddim", float, "eta of DDIM"),
    _setting("Eta", "eta_ancestral", float, "eta of the ancestral samplers"),
)

FIELDS: dict[str, Field] = {f.name: f for f in TABLE}


# ---------------------------------------------------------------------------
# views of the table


def request_fields() -> list[Field]:
    """The rows that are GenerationRequest attributes, in table order."""
    return [f for f in TABLE if f.kind == REQUEST]


def api_fields(mode: str | None) -> list[Field]:
    """The API's fields: mode None -> the ones txt2img and img2img share, else the ones only `mode` has."""
    def shared(f):
        return IMG2IMG in f.modes and (TXT2IMG in f.modes or HIRES in f.modes)
    rows = [f for f in TABLE if f.api is not None]
    if mode is None:
        return [f for f in rows if shared(f)]
    own = (TXT2IMG, HIRES) if mode == TXT2IMG else (IMG2IMG,)
    return [f for f in rows if not shared(f) and any(m in f.modes for m in own)]


def setting_keys() -> dict[str, str]:
    """Infotext key -> setting key, for the keys that stand for settings."""
    return {f.infotext: f.setting for f in TABLE if f.kind == SETTING}


def cli_fields() -> list[Field]:
    return [f for f in TABLE if f.cli is not None]


def dataclass_default(name: str) -> dataclasses.Field:
    """The table's default of request field `name`, as a dataclass field (a fresh copy of a list or dict)."""
    value = FIELDS[name].default
    if isinstance(value, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value))
    return dataclasses.field(default=value)


def label(name: str) -> str:
    """A1111's English label of the UI control of field `name`."""
    return FIELDS[name].ui.label


def infotext_defaults(*keys: str) -> list[tuple[str, Any]]:
    """(infotext key, the field's default as the text writes it) for a parser's defaults."""
    out = []
    for key in keys:
        f = next(r for r in TABLE if r.infotext == key)
        out.append((key, f.label_of(f.default) if f.choices else f.default))
    return out


# ---------------------------------------------------------------------------
# pasting an infotext


class InfotextValueError(ValueError):
    """An infotext value that is not a value of its field; `key` names the infotext key."""

    def __init__(self, key: str, value: Any, f: Field):
        kind = "choice" if f.choices else f.base_type.__name__
        super().__init__(f"'{key}: {value}' is not a valid {kind}")
        self.key = key
        self.field = f.name


HIRES_KEYS = ("Hires upscale", "Hires upscaler", "Hires steps")


def _hires(params: Mapping[str, Any]) -> bool:
    """A1111 writes these keys only for a hires pass (an explicit target size replaces Hires upscale)."""
    if any(k in params for k in HIRES_KEYS):
        return True
    for key in ("Hires resize-1", "Hires resize-2"):
        try:
            if _whole(params.get(key, 0)):
                return True
        except ValueError:
            pass
    return False


def from_infotext(params: Mapping[str, Any], *, strict: bool = False,
                  names: Collection[str] | None = None) -> dict[str, Any]:
    """Parsed infotext params (:func:`modules.infotext.parse_generation_parameters`) -> request field values.

    Every request field (of `names`, where given) whose infotext key is there, converted to the field's
    type (a choice label to its value), and ``enable_hr``; the hires pass's fields only where the text
    has a hires pass. A value that is not one of its field: InfotextValueError with `strict`, else left
    out. The keys that stand for settings are :func:`modules.infotext.settings_from_params`'s."""
    hires = _hires(params)
    values: dict[str, Any] = {}
    for f in request_fields():
        if f.infotext is None or f.infotext not in params or (names is not None and f.name not in names):
            continue
        if f.modes == (HIRES,) and not hires:
            continue
        try:
            values[f.name] = f.parse(params[f.infotext])
        except (TypeError, ValueError):
            if strict:
                raise InfotextValueError(f.infotext, params[f.infotext], f) from None
    if names is None or "enable_hr" in names:
        values["enable_hr"] = hires
    return values
