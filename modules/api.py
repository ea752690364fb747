"""The HTTP API under ``/sdapi/v1``, compatible with A1111's API for existing clients.

Route names, request fields, their defaults and the response shapes follow
A1111 (v1.10), so scripts, the ``webuiapi`` package and editor plugins work
unchanged.  Generation requests go through the same job queue as the UI
(:meth:`modules.app.App.submit`, ``source="api"``): they wait their turn, show
up in progress, can be interrupted while they still wait (``POST interrupt``
with ``?id=<force_task_id>``), and a full queue answers 503.

Errors are JSON ``{"error": <type>, "detail": <message naming the field>,
"errors": ...}``: bad input (malformed JSON, wrong types, bad base64, unknown
sampler / model / script, out-of-range numbers) is a 4xx, never a 500.

Differences from A1111, on purpose:

* ``init_images`` / ``mask`` / ``image`` must be base64 (optionally as a
  ``data:`` URL); http(s) URLs are refused (422), the server fetches nothing.
* Width/height that are not multiples of 8 are rounded down (A1111's output
  size) with a warning in ``info``; outside 64..2048 they are refused.
* ``restore_faces``, refiner and separate hires checkpoint/sampler fields are
  accepted and ignored with a warning in ``info``.
* ``script_name`` / ``script_args`` and ``alwayson_scripts`` run the scripts of
  :mod:`modules.scripts` (A1111's positional argument lists, or objects by
  argument name); an unknown script or a bad argument is a 422 naming both.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import html
import io
import json
import logging
import math
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules import fields, images, infotext, jobs, samplers, sd_models, upscalers
from modules.upscalers import UpscalerError
from modules.engine.request import GenerationRequest, RequestError

log = logging.getLogger(__name__)

PREFIX = "/sdapi/v1"
MAX_INPUT_SIDE = 16384                 # decoded input images larger than this are refused
MAX_INPUT_PIXELS = 64 * 1024 * 1024
MAX_EXTRAS_SIDE = 8192                 # extra-single-image output limits
MAX_EXTRAS_PIXELS = 8192 * 8192 // 2
TASK_MEMORY = 1000                     # force_task_id -> job id entries kept for POST interrupt?id=


class ApiError(Exception):
    """An error answered as JSON; ``field`` names the request field at fault (if any)."""

    def __init__(self, status: int, detail: str, field: str | None = None, error: str | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.field = field
        self.message = detail
        self.detail = f"{field}: {detail}" if field and not detail.startswith(field + ":") else detail
        self.error = error or ("RequestError" if status == 422 else "ApiError")
        self.headers = headers


# ---------------------------------------------------------------------------
# request / response models (A1111 field names and defaults)


class _Request(BaseModel):
    # unknown fields (newer A1111 or extension parameters) are accepted and reported as ignored
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, protected_namespaces=())


def _api_field(f: fields.Field) -> tuple[Any, Any]:
    """(annotation, pydantic Field) of a table row, with A1111's API name, type and default."""
    default = f.api_default_value
    kw: dict[str, Any] = {"description": f.api_description or None}
    if f.api_bounds:
        kw.update(ge=f.minimum, le=f.maximum)
    if isinstance(default, (list, dict)):
        return f.api_annotation, Field(default_factory=lambda d=default: copy.deepcopy(d), **kw)
    return f.api_annotation, Field(default, **kw)


def _generation_model(name: str, base: type[BaseModel], rows: list[fields.Field]) -> type[BaseModel]:
    return create_model(name, __base__=base, __module__=__name__, **{f.api: _api_field(f) for f in rows})


# the request models, from the table (modules/fields.py): the fields both share, then each one's own
_GenerationFields = _generation_model("_GenerationFields", _Request, fields.api_fields(None))
Txt2ImgRequest = _generation_model("Txt2ImgRequest", _GenerationFields, fields.api_fields(fields.TXT2IMG))
Img2ImgRequest = _generation_model("Img2ImgRequest", _GenerationFields, fields.api_fields(fields.IMG2IMG))


class ErrorResponse(BaseModel):
    error: str = Field(description="the kind of error, e.g. RequestValidationError, RequestError, QueueFull")
    detail: str = Field(description="what is wrong, starting with the field at fault where there is one")
    body: Any = ""
    errors: Any = Field(None, description="per-field details (a list) or the message again")


ERROR_RESPONSES = {
    401: {"model": ErrorResponse, "description": "Missing or wrong HTTP Basic credentials (with --api-auth)"},
    404: {"model": ErrorResponse, "description": "Not found"},
    422: {"model": ErrorResponse, "description": "Invalid request: the detail names the field"},
    500: {"model": ErrorResponse, "description": "Server fault"},
    503: {"model": ErrorResponse, "description": "The queue is full, or no checkpoint is installed"},
}


class GenerationResponse(BaseModel):
    images: Optional[list[str]] = Field(None, description="generated images, base64 PNG (or the samples format)")
    parameters: dict
    info: str = Field(description="JSON text: infotexts, all_seeds, seed, all_prompts, ...")


class TextToImageResponse(GenerationResponse):
    pass


class ImageToImageResponse(GenerationResponse):
    pass


_IMAGE_UPSCALER_NAMES = ", ".join(upscalers.IMAGE_UPSCALERS) + " or an installed model (GET /sdapi/v1/upscalers)"


class ExtrasBaseRequest(_Request):
    resize_mode: int = Field(0, ge=0, le=1, description="0: scale by upscaling_resize, 1: to upscaling_resize_w x _h")
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0, le=16)
    upscaling_resize_w: int = Field(512, ge=1, le=MAX_EXTRAS_SIDE)
    upscaling_resize_h: int = Field(512, ge=1, le=MAX_EXTRAS_SIDE)
    upscaling_crop: bool = True
    upscaler_1: str = Field("None", description=_IMAGE_UPSCALER_NAMES)
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field("", description="base64 image")


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: Optional[str] = None


class FileData(BaseModel):
    data: str = Field(description="base64 image")
    name: str = Field("", description="the file's name (kept for the saved file's name in a batch)")


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(description="the images, base64")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class PNGInfoRequest(_Request):
    image: str = Field(description="base64 image")


class PNGInfoResponse(BaseModel):
    info: str
    items: dict
    parameters: dict


class JobState(BaseModel):   # [persistent queue] ours, not A1111's: one job by id, also after a restart
    id: str = Field(description="the job id (info.job_id of a generation's answer)")
    task_id: Optional[str] = Field(None, description="the force_task_id it was submitted with")
    status: str = Field(description="queued, running, done, failed or interrupted")
    position: Optional[int] = Field(None, description="its place in the queue while it waits (1: next)")
    source: str = Field(description="ui, api or cli")
    progress: float
    step: int
    total_steps: int
    eta: Optional[float] = None
    error: Optional[str] = None
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    files: list[str] = Field(description="the files it saved")
    infotexts: list[str] = Field(description="the parameters of each picture")
    seeds: list[int]


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict
    current_image: Optional[str] = None
    textinfo: Optional[str] = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    filename: str


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, Any]
    skipped: dict[str, Any]


class MemoryResponse(BaseModel):
    ram: dict
    cuda: dict


class ScriptsList(BaseModel):
    txt2img: Optional[list] = Field(None, description="the scripts of txt2img (names in lower case)")
    img2img: Optional[list] = Field(None, description="the scripts of img2img (names in lower case)")


class ScriptArg(BaseModel):
    label: Optional[str] = Field(None, description="the argument's label in the UI")
    value: Optional[Any] = Field(None, description="its default value")
    minimum: Optional[Any] = Field(None, description="the smallest value")
    maximum: Optional[Any] = Field(None, description="the largest value")
    step: Optional[Any] = Field(None, description="the slider's step")
    choices: Optional[list] = Field(None, description="the choices of a dropdown or radio (labels)")


class ScriptInfo(BaseModel):
    name: Optional[str] = Field(None, description="the script's name (lower case, as script_name takes it)")
    is_alwayson: Optional[bool] = Field(None, description="an always-on script (alwayson_scripts)")
    is_img2img: Optional[bool] = Field(None, description="this entry is the script's img2img one")
    args: list[ScriptArg] = Field(description="its arguments in the order of the positional script_args")


class ExtensionItem(BaseModel):
    name: str = Field(description="the extension's folder name")
    remote: str = Field(description="the git remote it came from ('' when not a git checkout)")
    branch: str = Field(description="its git branch ('' when none)")
    commit_hash: str = Field(description="its git commit ('' when not a git checkout)")
    version: str = Field(description="the first 8 characters of the commit")
    commit_date: Optional[int] = Field(None, description="the commit's time (seconds since 1970)")
    enabled: bool = Field(description="whether it is loaded")


class HistoryItem(BaseModel):
    path: str = Field(description="the file, relative to the data dir (as GET/DELETE history take it)")
    name: str = Field(description="the file name")
    date: str = Field(description="YYYY-MM-DD of the file's modification time")
    mtime: float = Field(description="the file's modification time (seconds since 1970)")
    width: int
    height: int
    infotext: str = Field(description="the generation parameters stored in the picture ('' when none)")
    prompt: str = Field(description="the prompt of the infotext")
    url: str = Field(description="where GET serves the picture")


class HistoryResponse(BaseModel):
    total: int = Field(description="pictures that match search and date")
    page: int
    page_size: int
    items: list[HistoryItem] = Field(description="this page's pictures, newest first")


class HistoryDeleteResponse(BaseModel):
    path: str = Field(description="the picture that was moved")
    trash: str = Field(description="where it is now, relative to the data dir")


class HypernetworkItem(BaseModel):
    name: str
    path: Optional[str] = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = None
    scale: Optional[int] = None


class SDModuleItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    filename: str


class LoraItem(BaseModel):
    name: str
    alias: Optional[str] = None
    path: Optional[str] = None
    metadata: Optional[dict] = None


def _options_model(opts) -> type[BaseModel]:
    """The settings as a model, for the schema of GET/POST options (types from the defaults)."""
    fields = {}
    for key, info in opts.infos.items():
        typ = type(info.default) if info.default is not None else Any
        fields[key] = (Optional[typ], Field(default=info.default, description=info.label))
    return create_model("Options", __config__=ConfigDict(extra="allow", protected_namespaces=()), **fields)


# ---------------------------------------------------------------------------
# images in and out


def decode_image(value: Any, field: str) -> Image.Image:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) -> a loaded PIL image, or 422 naming ``field``."""
    try:
        return images.decode_base64_image(value, MAX_INPUT_SIDE, MAX_INPUT_PIXELS)
    except images.ImageDecodeError as e:
        raise ApiError(422, str(e), field) from None


def encode_image(im: Image.Image, geninfo: str | None = None, fmt: str = "png", quality: int = 80) -> str:
    """PIL image -> base64 (no data: prefix, as A1111), the infotext embedded as A1111 does for the format."""
    fmt = (fmt or "png").lower()
    if fmt not in ("png", "jpg", "jpeg", "webp"):
        fmt = "png"
    buf = io.BytesIO()
    images.save_image_with_geninfo(im, geninfo, buf, fmt, jpeg_quality=int(quality))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _jsonable_items(items: dict) -> dict:
    out = {}
    for k, v in items.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        elif isinstance(v, tuple):
            v = list(v)
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            v = str(v)
        out[str(k)] = v
    return out


MAX_JSON_DEPTH = 32   # nesting of free-form JSON (override_settings, script_args): deeper is refused


def check_finite(value: Any, field: str, depth: int = 0) -> None:
    """Refuse NaN/Infinity anywhere in free-form JSON (Python's parser accepts them, JSON answers cannot hold
    them), text that is not Unicode (JSON's lone surrogate escapes, e.g. "\\ud800": no encoder takes them) and
    nesting deeper than MAX_JSON_DEPTH (what walks it later would run out of stack)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, f"must be a finite number, got {value!r}", field)
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ApiError(422, f"is not valid Unicode text (a lone surrogate at character {e.start})",
                               field or "body") from None
        return
    if depth > MAX_JSON_DEPTH and isinstance(value, (dict, list, tuple)):
        raise ApiError(422, f"is nested too deeply (more than {MAX_JSON_DEPTH} levels)", field or "body")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(k, field, depth + 1)
            check_finite(v, f"{field}.{k}" if field else str(k), depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{field}[{i}]", depth + 1)


def json_safe(value: Any) -> Any:
    """jsonable_encoder, with NaN/Infinity (e.g. from a hand-edited config.json) as null."""
    value = jsonable_encoder(value)

    def walk(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


# ---------------------------------------------------------------------------
# the API


def parse_credentials(spec: str | None) -> dict[str, str]:
    """``user:pass[,user2:pass2]`` -> {user: pass}; the password may contain ':'."""
    creds: dict[str, str] = {}
    if not spec:
        return creds
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        user, sep, password = part.partition(":")
        if not sep or not user:
            raise ValueError("--api-auth expects user:password[,user2:password2]")
        creds[user] = password
    return creds


def _idle_state() -> dict:
    return {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
            "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0, "queued": 0}


def _request_values(values: dict) -> dict:
    """The request fields an API body gives, by the table: None (and "" for text) is the engine's default."""
    out = {}
    for f in fields.request_fields():
        if f.api not in values:
            continue
        value = values[f.api]
        if value is None or (value == "" and f.base_type is str):
            value = copy.deepcopy(f.default)
        elif f.base_type is bool:
            value = bool(value)
        out[f.name] = value
    return out


def _sizes(values: dict, warns: list[str]) -> dict:
    """Width and height rounded down to the table's multiple (A1111's output size), with a warning;
    422 outside the table's bounds (infotext values skip the model's)."""
    out = {}
    for name in ("width", "height"):
        f = fields.FIELDS[name]
        v = int(values[name])
        if v % f.multiple_of:
            rounded = v // f.multiple_of * f.multiple_of
            warns.append(f"{name} {v} rounded down to {rounded} (a multiple of {f.multiple_of})")
            v = rounded
        if not f.minimum <= v <= f.maximum:
            raise ApiError(422, f"must be between {f.minimum} and {f.maximum}, got {values[name]}", name)
        out[name] = v
    return out


def _ignored_warnings(body: _GenerationFields, values: dict) -> list[str]:
    """Warnings for `info` about what the body asks for and is not done."""
    warns: list[str] = []
    unknown = sorted(k for k in (body.model_extra or {}))
    if unknown:
        warns.append("unknown fields ignored: " + ", ".join(unknown))
    if body.restore_faces:
        warns.append("restore_faces is not supported; ignored")
    if body.refiner_checkpoint and body.refiner_checkpoint not in ("None", ""):
        warns.append("refiner_checkpoint is not supported; ignored")
    if isinstance(body, Txt2ImgRequest):
        warns.extend(_hires_warnings(body, values))
    return warns


def _hires_warnings(body: Txt2ImgRequest, values: dict) -> list[str]:
    warns = []
    if body.firstpass_image:
        warns.append("firstpass_image is not supported; ignored")
    if body.hr_checkpoint_name and body.hr_checkpoint_name not in ("Use same checkpoint", ""):
        warns.append("hr_checkpoint_name is not supported; the hires pass uses the same checkpoint")
    if body.hr_sampler_name and body.hr_sampler_name not in ("Use same sampler", "") \
            and body.hr_sampler_name != (values["sampler_name"] or body.sampler_index):
        warns.append("hr_sampler_name is not supported; the hires pass uses the same sampler")
    if body.hr_scheduler and body.hr_scheduler not in ("Use same scheduler", "") \
            and body.hr_scheduler != values["scheduler"]:
        warns.append("hr_scheduler is not supported; the hires pass uses the same schedule type")
    return warns


class SdApi:
    """The /sdapi/v1 routes for one :class:`modules.app.App`."""

    def __init__(self, app, api_auth: str | None = None):
        self.app = app
        self.credentials = parse_credentials(api_auth)
        self.tasks: dict[str, str] = {}        # force_task_id -> job id
        self._tasks_lock = threading.Lock()
        self.options_model = _options_model(app.opts)
        self.router = self._build_router()

    # -- auth ------------------------------------------------------------------------
    def _auth_dependency(self):
        basic = HTTPBasic(auto_error=False)
        creds = self.credentials

        def check(request: Request, credentials: Optional[HTTPBasicCredentials] = Depends(basic)) -> None:
            if request.scope.get("sdwebui.session"):  # a browser logged in to the page (modules/auth.py)
                return
            ok = False
            if credentials is not None:
                for user, password in creds.items():
                    # compare every entry: the time taken does not tell which user names exist
                    u = secrets.compare_digest(credentials.username.encode("utf-8"), user.encode("utf-8"))
                    p = secrets.compare_digest(credentials.password.encode("utf-8"), password.encode("utf-8"))
                    ok = ok or (u and p)
            if not ok:
                raise ApiError(401, "Incorrect username or password" if credentials else "Not authenticated",
                               error="HTTPException", headers={"WWW-Authenticate": "Basic"})

        return check

    # -- routes -------------------------------------------------------------------------
    def _build_router(self) -> APIRouter:
        deps = [Depends(self._auth_dependency())] if self.credentials else []
        r = APIRouter(prefix=PREFIX, dependencies=deps, tags=["sdapi"], responses=ERROR_RESPONSES)
        add = r.add_api_route
        add("/txt2img", self.txt2img, methods=["POST"], response_model=TextToImageResponse)
        add("/img2img", self.img2img, methods=["POST"], response_model=ImageToImageResponse)
        add("/extra-single-image", self.extra_single_image, methods=["POST"], response_model=ExtrasSingleImageResponse)
        add("/extra-batch-images", self.extra_batch_images, methods=["POST"], response_model=ExtrasBatchImagesResponse)
        add("/png-info", self.png_info, methods=["POST"], response_model=PNGInfoResponse)
        add("/progress", self.progress, methods=["GET"], response_model=ProgressResponse)
        add("/interrupt", self.interrupt, methods=["POST"])
        add("/jobs/{job_id}", self.job_state, methods=["GET"], response_model=JobState)
        add("/skip", self.skip, methods=["POST"])
        add("/options", self.get_options, methods=["GET"], response_model=self.options_model)
        add("/options", self.set_options, methods=["POST"])
        add("/cmd-flags", self.cmd_flags, methods=["GET"], response_model=dict[str, Any])
        add("/samplers", self.get_samplers, methods=["GET"], response_model=list[SamplerItem])
        add("/schedulers", self.get_schedulers, methods=["GET"], response_model=list[SchedulerItem])
        add("/upscalers", self.get_upscalers, methods=["GET"], response_model=list[UpscalerItem])
        add("/latent-upscale-modes", self.get_latent_upscale_modes, methods=["GET"],
            response_model=list[LatentUpscalerModeItem])
        add("/sd-models", self.get_sd_models, methods=["GET"], response_model=list[SDModelItem])
        add("/sd-modules", self.get_sd_modules, methods=["GET"], response_model=list[SDModuleItem])
        add("/sd-vae", self.get_sd_vae, methods=["GET"], response_model=list[SDVaeItem])
        add("/hypernetworks", self.get_empty_list, methods=["GET"], response_model=list[HypernetworkItem])
        add("/face-restorers", self.get_empty_list, methods=["GET"], response_model=list[FaceRestorerItem])
        add("/realesrgan-models", self.get_realesrgan_models, methods=["GET"], response_model=list[RealesrganItem])
        add("/prompt-styles", self.get_prompt_styles, methods=["GET"], response_model=list[PromptStyleItem])
        add("/embeddings", self.get_embeddings, methods=["GET"], response_model=EmbeddingsResponse)
        add("/loras", self.get_loras, methods=["GET"], response_model=list[LoraItem])
        add("/refresh-checkpoints", self.refresh_checkpoints, methods=["POST"])
        add("/refresh-vae", self.refresh_vae, methods=["POST"])
        add("/refresh-loras", self.refresh_loras, methods=["POST"])
        add("/reload-checkpoint", self.reload_checkpoint, methods=["POST"])
        add("/unload-checkpoint", self.unload_checkpoint, methods=["POST"])
        add("/memory", self.memory, methods=["GET"], response_model=MemoryResponse)
        add("/scripts", self.scripts, methods=["GET"], response_model=ScriptsList)
        add("/script-info", self.script_info, methods=["GET"], response_model=list[ScriptInfo])
        add("/extensions", self.extensions, methods=["GET"], response_model=list[ExtensionItem])
        add("/history", self.get_history, methods=["GET"], response_model=HistoryResponse)
        add("/history", self.delete_history, methods=["DELETE"], response_model=HistoryDeleteResponse)
        add("/history/image", self.history_image, methods=["GET"], response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                             "description": "the picture file"}})
        return r

    # -- generation -------------------------------------------------------------------------
    async def txt2img(self, body: Txt2ImgRequest) -> JSONResponse:
        return await self._generate(body, "txt2img")

    async def img2img(self, body: Img2ImgRequest) -> JSONResponse:
        return await self._generate(body, "img2img")

    async def _generate(self, body: _GenerationFields, mode: str) -> JSONResponse:
        # decoding images, listing models (maybe hashing a new file) and validation happen in a worker thread;
        # waiting for the queue does not hold a thread, so progress/interrupt answer while many requests wait
        job, warns, persist = await run_in_threadpool(self._submit, body, mode)
        try:
            delay = 0.005
            while not job.done_event.is_set():
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.1)
        finally:
            if body.force_task_id:
                with self._tasks_lock:
                    if self.tasks.get(body.force_task_id) == job.id:
                        del self.tasks[body.force_task_id]
        payload = await run_in_threadpool(self._respond, body, mode, job, warns, persist)
        return JSONResponse(payload)

    def _submit(self, body: _GenerationFields, mode: str):
        app = self.app
        req, warns, persist = self.build_request(body, mode)
        if not (req.override_settings or {}).get("sd_model_checkpoint") and app.selected_checkpoint() is None:
            raise ApiError(503, "no Stable Diffusion checkpoint is installed (put one in models/Stable-diffusion)",
                           error="NoModel")
        try:
            job = app.submit(req, source="api", task_id=body.force_task_id or None)
        except RequestError as e:
            raise ApiError(422, str(e), e.field) from None
        except sd_models.ModelLoadError as e:
            raise ApiError(422, str(e), "override_settings.sd_model_checkpoint", error="ModelLoadError") from None
        except jobs.QueueFull as e:
            raise ApiError(503, str(e), error="QueueFull") from None
        if body.force_task_id:
            with self._tasks_lock:
                self.tasks.pop(body.force_task_id, None)
                self.tasks[body.force_task_id] = job.id
                while len(self.tasks) > TASK_MEMORY:
                    self.tasks.pop(next(iter(self.tasks)))
        return job, warns, persist

    def build_request(self, body: _GenerationFields, mode: str) -> tuple[GenerationRequest, list[str], dict]:
        """The engine request for an API body: (request, warnings for `info`, settings to keep afterwards)."""
        values = body.model_dump()
        check_finite(values, "")
        if body.infotext:
            self._apply_infotext(body.infotext, values, set(body.model_fields_set))
        warns = _ignored_warnings(body, values)
        kw = _request_values(values)
        kw.update(_sizes(values, warns))
        overrides, persist = self._check_overrides(values.get("override_settings") or {},
                                                   not body.override_settings_restore_afterwards)
        # A1111's API: no sampler_name -> sampler_index, whose default is "Euler" (not the UI's default_sampler)
        sampler = values["sampler_name"] or values["sampler_index"] or fields.FIELDS["sampler_index"].default
        kw.update(sampler_name=sampler, override_settings=overrides, save_images=bool(body.save_images),
                  do_not_save_grid=bool(body.do_not_save_grid or not body.save_images), mode=mode)
        if body.styles:
            missing = [s for s in body.styles if s not in self.app.styles.styles]
            if missing:
                warns.append("unknown styles ignored: " + ", ".join(missing))
        if mode == "img2img":
            kw.update(self._img2img_images(body, values, warns))
        return GenerationRequest(**kw), warns, persist

    def _img2img_images(self, body: Img2ImgRequest, values: dict, warns: list[str]) -> dict:
        """The decoded init images and mask, and the mask blur (mask_blur, else the larger of _x and _y)."""
        if not body.init_images:
            raise ApiError(422, "img2img needs at least one init image", "init_images")
        inits = [decode_image(s, f"init_images[{i}]") for i, s in enumerate(body.init_images)]
        mask = decode_image(body.mask, "mask") if body.mask else None
        if mask is not None and mask.size != inits[0].size:
            warns.append(f"mask {mask.width}x{mask.height} resized to the init image's "
                         f"{inits[0].width}x{inits[0].height}")
            mask = mask.convert("L").resize(inits[0].size, Image.LANCZOS)
        blur = values["mask_blur"]
        if blur is None:
            blur = max(body.mask_blur_x, body.mask_blur_y)
        return dict(init_images=inits, mask=mask, mask_blur=blur)

    def _apply_infotext(self, text: str, values: dict, set_fields: set) -> None:
        """Fill the fields the body did not set from an infotext (the table's paste), and its settings."""
        params = infotext.parse_generation_parameters(text, defaults=False)
        wanted = [f.name for f in fields.request_fields() if f.api in values and f.api not in set_fields]
        try:
            pasted = fields.from_infotext(params, strict=True, names=wanted)
        except fields.InfotextValueError as e:
            raise ApiError(422, str(e), "infotext") from None
        for name, value in pasted.items():
            values[fields.FIELDS[name].api] = value
        ov = dict(values.get("override_settings") or {})
        for setting, value in infotext.settings_from_params(params).items():
            ov.setdefault(setting, value)
        if ov:
            values["override_settings"] = ov

    def _check_overrides(self, ov: dict, keep: bool) -> tuple[dict, dict]:
        """Validate override_settings (422 naming the key); (overrides for the job, settings to keep after it)."""
        app = self.app
        out: dict[str, Any] = {}
        for key, value in ov.items():
            field = f"override_settings.{key}"
            if key == "sd_model_checkpoint":
                if value in (None, ""):
                    continue
                out[key] = self.find_checkpoint(value, field).title
            elif key == "sd_vae":
                if not isinstance(value, str):
                    raise ApiError(422, f"must be a VAE name, got {value!r}", field)
                self._check_vae(value, field)
                out[key] = value
            else:
                try:
                    out[key] = app.opts.validate(key, value)
                except ValueError as e:
                    raise ApiError(422, str(e), field) from None
        return out, (dict(out) if keep else {})

    def find_checkpoint(self, name: Any, field: str) -> sd_models.CheckpointInfo:
        """A listed checkpoint by title, name, hash or close match (never an arbitrary path on disk)."""
        app = self.app
        if not isinstance(name, str) or not name.strip():
            raise ApiError(422, f"must be a checkpoint title, got {name!r}", field)
        app.ensure_listed()
        listed = list(app.models.checkpoints.values())
        if any(name in (i.title, i.name, i.model_name, str(i.filename)) for i in listed):
            return app.models.find(name)
        try:
            is_path = "\x00" not in name and Path(name).exists()
        except (OSError, ValueError):
            is_path = False
        if is_path or "/" in name and Path(name).is_absolute():
            raise ApiError(422, f"checkpoint '{name}' is not in the model folders", field, error="ModelLoadError")
        try:
            info = app.models.find(name)
        except sd_models.ModelLoadError as e:
            raise ApiError(422, str(e), field, error="ModelLoadError") from None
        if info.title not in app.models.checkpoints:
            raise ApiError(422, f"checkpoint '{name}' is not in the model folders", field, error="ModelLoadError")
        return info

    def _check_vae(self, name: str, field: str) -> None:
        app = self.app
        if name in ("Automatic", "None", ""):
            return
        app.ensure_listed()
        for vname, p in app.models.vaes.items():
            if name in (vname, Path(vname).stem, p.name):
                return
        raise ApiError(422, f"VAE '{name}' not found. Available: {', '.join(app.models.vae_choices())}", field,
                       error="ModelLoadError")

    def _respond(self, body: _GenerationFields, mode: str, job: jobs.Job, warns: list[str], persist: dict) -> dict:
        app = self.app
        if job.status == "failed":
            if job.error_field:
                raise ApiError(422, job.error or "invalid request", job.error_field)
            raise ApiError(500, job.error or "the job failed", error="JobFailed")
        opts = app.opts.snapshot()
        res = job.result
        if res is None:  # interrupted while it waited
            req = job.request
            info = {"prompt": req.prompt, "all_prompts": [], "negative_prompt": req.negative_prompt,
                    "all_negative_prompts": [], "seed": req.seed, "all_seeds": [], "subseed": req.subseed,
                    "all_subseeds": [], "width": req.width, "height": req.height, "sampler_name": req.sampler_name,
                    "scheduler": req.scheduler, "steps": req.steps, "cfg_scale": req.cfg_scale,
                    "batch_size": req.batch_size, "infotexts": [], "styles": list(req.styles),
                    "warnings": [*warns, job.error or "interrupted"]}
            images_out: list[str] = []
        else:
            info = dict(res.info)
            info["warnings"] = [*warns, *info.get("warnings", [])]
            fmt = opts.get("samples_format", "png")
            quality = opts.get("jpeg_quality", 80)
            keep_info = opts.get("enable_pnginfo", True)
            pics, texts = list(res.images), list(res.infotexts)
            if res.grid_first:  # "Show grid in gallery" (A1111's return_grid): the grid comes first
                pics, texts = [res.grid, *pics], [texts[0], *texts]
            images_out = [encode_image(im, text if keep_info else None, fmt, quality)
                          for im, text in zip(pics, texts)] if body.send_images else []
            if persist and job.status == "done":
                ckpt = persist.pop("sd_model_checkpoint", None)
                if persist:
                    app.opts.update(persist)
                if ckpt:
                    app.opts.set("sd_model_checkpoint", ckpt)
        info["interrupted"] = job.status == "interrupted"
        info["job_id"] = job.id
        params = body.model_dump()
        if mode == "img2img" and not getattr(body, "include_init_images", False):
            params["init_images"] = None
            params["mask"] = None
        return {"images": images_out, "parameters": json_safe(params),
                "info": json.dumps(json_safe(info), ensure_ascii=False)}

    # -- progress and control -------------------------------------------------------------------
    def progress(self, skip_current_image: bool = Query(False)) -> ProgressResponse:
        app = self.app
        q = app.queue
        job = q.current
        state = _idle_state()
        state["queued"] = len(q.pending())
        if job is None or job.status != "running":
            return ProgressResponse(progress=0.0, eta_relative=0.0, state=state, current_image=None, textinfo=None)
        c = job.control
        job_count = max(int(c.job_count), 1)
        per_image = c.total_steps // job_count if c.total_steps else 0
        state.update(skipped=bool(c.skipped), interrupted=bool(c.interrupted), job=job.id, job_count=job_count,
                     job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
                     job_no=int(c.job_no), sampling_steps=int(per_image),
                     sampling_step=int(c.step - c.job_no * per_image) if per_image else int(c.step))
        eta = c.eta
        current = None
        if not skip_current_image:
            im = app.preview_image(job)
            if im is not None:
                current = encode_image(im)
        return ProgressResponse(progress=float(c.progress), eta_relative=float(eta) if eta is not None else 0.0,
                                state=state, current_image=current, textinfo=c.textinfo or None)

    def interrupt(self, id: Optional[str] = Query(None, description="a force_task_id or job id; "  # noqa: A002
                                                                   "default: the running job")) -> dict:
        q = self.app.queue
        if id is None:
            q.interrupt()
            return {}
        job = self._job(id, "id")
        if job.status in ("queued", "running"):
            q.interrupt(job.id)
        return {}

    def _job(self, key: str, field: str) -> jobs.Job:
        """A job by id or force_task_id: live, or recorded in the job store (also from before a restart)."""
        with self._tasks_lock:
            job_id = self.tasks.get(key, key)
        try:
            return self.app.queue.get(job_id)
        except (jobs.JobNotFound, OSError, ValueError):
            raise ApiError(404, f"no job '{key}'", field, error="JobNotFound") from None

    def job_state(self, job_id: str) -> dict:
        job = self._job(job_id, "job_id")
        res = job.result
        return {**job.summary(self.app.queue.position(job)), "infotexts": list(res.infotexts) if res else [],
                "seeds": [int(s) for s in res.seeds] if res else []}

    def skip(self) -> None:
        self.app.queue.skip()
        return None

    # -- settings -------------------------------------------------------------------------------
    def get_options(self) -> JSONResponse:
        app = self.app
        data = app.opts.snapshot()
        if not data.get("sd_model_checkpoint"):
            data["sd_model_checkpoint"] = app.selected_checkpoint() or ""
        info = app.models.checkpoints.get(data["sd_model_checkpoint"])
        data["sd_checkpoint_hash"] = info.sha256 if info else None
        return JSONResponse(json_safe(data))

    def set_options(self, body: dict[str, Any] = Body(..., examples=[{"CLIP_stop_at_last_layers": 2}])) -> None:
        app = self.app
        values = dict(body)
        check_finite(values, "")
        ckpt = values.pop("sd_model_checkpoint", None)
        values.pop("sd_checkpoint_hash", None)  # read-only, sent back by clients that echo GET options
        checked = {}
        for key, value in values.items():
            if key == "sd_vae":
                if not isinstance(value, str):
                    raise ApiError(422, f"must be a VAE name, got {value!r}", key)
                self._check_vae(value, key)
            try:
                checked[key] = app.opts.validate(key, value)
            except ValueError as e:
                raise ApiError(422, str(e), key) from None
        # "" (what GET answers when no checkpoint exists) changes nothing, so a GET -> POST round trip works
        info = self.find_checkpoint(ckpt, "sd_model_checkpoint") if ckpt not in (None, "") else None
        if info is not None:
            try:
                app.set_checkpoint(info.title)
            except sd_models.ModelLoadError as e:
                raise ApiError(500, str(e), error="ModelLoadError") from None
        if checked:
            app.opts.update(checked)
        return None

    def cmd_flags(self) -> dict:
        flags = dict(vars(self.app.args))
        for secret in ("api_auth", "gradio_auth"):   # passwords are not handed out
            if flags.get(secret):
                flags[secret] = "<hidden>"
        return json_safe(flags)

    # -- lists ----------------------------------------------------------------------------------
    def get_samplers(self) -> list:
        return samplers.api_samplers()

    def get_schedulers(self) -> list:
        return samplers.api_schedulers()

    def get_upscalers(self) -> list:
        self.app.upscalers.ensure_listed()
        builtin = [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
                   for n in upscalers.IMAGE_UPSCALERS]
        return builtin + [self.app.upscalers.models[n].api_dict() for n in self.app.upscalers.model_names()]

    def get_realesrgan_models(self) -> list:
        """A1111 lists its Real-ESRGAN models here; these are the installed ones (RRDBNet in the BasicSR layout
        and the compact SRVGGNet models)."""
        self.app.upscalers.ensure_listed()
        return [{"name": m.name, "path": str(m.path), "scale": m.scale}
                for n in self.app.upscalers.model_names()
                if (m := self.app.upscalers.models[n]).arch in ("RealESRGAN", "SRVGGNetCompact")]

    def get_latent_upscale_modes(self) -> list:
        return [{"name": n} for n in upscalers.LATENT_UPSCALE_MODES]

    def get_sd_models(self) -> list:
        self.app.ensure_listed()
        return [info.api_dict() for info in self.app.models.checkpoints.values()]

    def get_sd_modules(self) -> list:
        return []

    def get_sd_vae(self) -> list:
        self.app.ensure_listed()
        return [{"model_name": name, "filename": str(p)} for name, p in self.app.models.vaes.items()]

    def get_empty_list(self) -> list:
        return []

    def get_prompt_styles(self) -> list:
        return [{"name": s["name"], "prompt": s.get("prompt", ""), "negative_prompt": s.get("negative_prompt", "")}
                for s in self.app.styles.styles.values()]

    def get_embeddings(self) -> dict:
        # [extra networks] loaded/skipped relative to the loaded model (all readable ones without a model)
        loaded = self.app.models.loaded
        ok, skipped = self.app.extra_networks.embedding_status(loaded.components if loaded is not None else None)
        return {"loaded": ok, "skipped": skipped}

    def get_loras(self) -> list:
        return self.app.extra_networks.api_loras()  # [extra networks]

    def scripts(self) -> dict:
        return self.app.scripts.api_list()

    def script_info(self) -> list:
        return self.app.scripts.api_info()

    def extensions(self) -> list:
        return self.app.extensions.api_list()

    # -- history (modules/history.py) ----------------------------------------------------------
    def get_history(self, request: Request, page: int = Query(1, ge=1, le=1_000_000),
                    page_size: int = Query(50, ge=1, le=500),
                    search: str = Query("", max_length=1000, description="text the infotext contains (any case)"),
                    date: str = Query("", pattern=r"^(\d{4}-\d{2}-\d{2})?$", description="YYYY-MM-DD")) -> dict:
        from urllib.parse import quote

        from modules import history

        found = history.for_app(self.app).page(page, page_size, search, date or None)
        root = request.scope.get("root_path", "").rstrip("/")   # behind --subpath the links keep the prefix
        items = [{**i.api(), "url": f"{root}{PREFIX}/history/image?path={quote(i.path, safe='')}"}
                 for i in found.items]
        return {"total": found.total, "page": found.page, "page_size": found.page_size, "items": items}

    def _history_item(self, path: str):
        from modules import history

        try:
            return history.for_app(self.app).find(path)
        except history.NotInHistory as e:
            raise ApiError(404, str(e), "path", error="NotFound") from None

    def history_image(self, path: str = Query(..., max_length=4096, description="an item's path")):
        item = self._history_item(path)
        return FileResponse(item.file, filename=item.name, content_disposition_type="inline")

    def delete_history(self, path: str = Query(..., max_length=4096, description="an item's path")) -> dict:
        from modules import history

        item = self._history_item(path)
        hist = history.for_app(self.app)
        try:
            target = hist.delete(item.path)
        except history.NotInHistory as e:
            raise ApiError(404, str(e), "path", error="NotFound") from None
        return {"path": item.path, "trash": hist.relative(target)}

    def memory(self) -> dict:
        ram: dict[str, Any]
        try:
            import psutil

            vm = psutil.virtual_memory()
            rss = psutil.Process(os.getpid()).memory_info().rss
            ram = {"free": vm.available, "used": vm.total - vm.available, "total": vm.total, "process": rss}
        except Exception as e:  # noqa: BLE001 - memory stats are best effort
            ram = {"error": str(e)}
        cuda: dict[str, Any]
        try:
            import torch

            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info()
                st = torch.cuda.memory_stats()
                cuda = {
                    "system": {"free": free, "used": total - free, "total": total},
                    "active": {"current": st.get("active_bytes.all.current", 0),
                               "peak": st.get("active_bytes.all.peak", 0)},
                    "allocated": {"current": st.get("allocated_bytes.all.current", 0),
                                  "peak": st.get("allocated_bytes.all.peak", 0)},
                    "reserved": {"current": st.get("reserved_bytes.all.current", 0),
                                 "peak": st.get("reserved_bytes.all.peak", 0)},
                    "inactive": {"current": st.get("inactive_split_bytes.all.current", 0),
                                 "peak": st.get("inactive_split_bytes.all.peak", 0)},
                    "events": {"retries": st.get("num_alloc_retries", 0), "oom": st.get("num_ooms", 0)},
                }
            else:
                cuda = {"error": "unavailable"}
        except Exception as e:  # noqa: BLE001
            cuda = {"error": str(e)}
        return {"ram": ram, "cuda": cuda}

    # -- models ---------------------------------------------------------------------------------
    def refresh_checkpoints(self) -> None:
        self.app.refresh_models()

    def refresh_vae(self) -> None:
        self.app.refresh_models()  # lists VAEs too

    def refresh_loras(self) -> None:
        self.app.extra_networks.refresh()  # [extra networks] LoRA and embedding folders

    def reload_checkpoint(self) -> dict:
        try:
            self.app.load_model()
        except sd_models.ModelLoadError as e:
            raise ApiError(500, str(e), error="ModelLoadError") from None
        return {}

    def unload_checkpoint(self) -> dict:
        self.app.models.unload()
        return {}

    # -- images -----------------------------------------------------------------------------------
    def png_info(self, body: PNGInfoRequest) -> dict:
        im = decode_image(body.image, "image")
        geninfo, items = images.read_info_from_image(im)
        geninfo = geninfo or ""
        params = infotext.parse_generation_parameters(geninfo)
        return {"info": geninfo, "items": _jsonable_items(items), "parameters": json_safe(params)}

    def _extras_params(self, body):
        """The request's ExtrasParams, checked (upscaler names, sizes) before any image is decoded."""
        from modules import postprocessing

        params = postprocessing.ExtrasParams.from_dict(body.model_dump())
        try:
            postprocessing.check(self.app.upscalers, params)
        except postprocessing.ExtrasError as e:
            raise ApiError(422, str(e), e.field) from None
        return params

    def _extras(self, params, sources: list) -> list:
        from modules import postprocessing

        try:
            # A1111's API does not save what it returns (the Extras tab does)
            return postprocessing.run(self.app, sources, params, save_output=False)
        except postprocessing.ExtrasError as e:
            raise ApiError(422, str(e), e.field) from None
        except UpscalerError as e:
            raise ApiError(500, str(e), error="UpscalerError") from None

    def _encode_result(self, res) -> str:
        opts = self.app.opts.snapshot()
        return encode_image(res.image, res.geninfo, opts.get("samples_format", "png"), opts.get("jpeg_quality", 80))

    @staticmethod
    def _html_info(results, body) -> str:
        text = "".join("<p>" + html.escape(r.infotext) + "</p>" for r in results[:1])
        if body.gfpgan_visibility or body.codeformer_visibility:
            text += "<p>face restoration (GFPGAN, CodeFormer) is not built in; ignored</p>"
        return text

    def extra_single_image(self, body: ExtrasSingleImageRequest) -> dict:
        params = self._extras_params(body)
        im = decode_image(body.image, "image")
        results = self._extras(params, [(im, None)])
        return {"html_info": self._html_info(results, body),
                "image": self._encode_result(results[0]) if body.show_extras_results else None}

    def extra_batch_images(self, body: ExtrasBatchImagesRequest) -> dict:
        if not body.imageList:
            raise ApiError(422, "imageList is empty: send at least one image", "imageList")
        params = self._extras_params(body)
        sources = [(decode_image(item.data, f"imageList.{i}.data"), item.name or None)
                   for i, item in enumerate(body.imageList)]
        results = self._extras(params, sources)
        return {"html_info": self._html_info(results, body),
                "images": [self._encode_result(r) for r in results] if body.show_extras_results else []}


# ---------------------------------------------------------------------------
# errors as JSON


def _error_response(status: int, error: str, detail: str, errors: Any = None, headers: dict | None = None):
    content = {"error": error, "detail": detail, "body": "", "errors": errors if errors is not None else detail}
    return JSONResponse(status_code=status, content=json_safe(content), headers=headers)


def _validation_detail(errors: list[dict]) -> tuple[str, list[dict]]:
    parts, clean = [], []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:] if len(loc) > 1 or e.get("type") != "json_invalid" else loc
        name = ".".join(loc) if loc else "body"
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            name, msg = "body", f"malformed JSON ({(e.get('ctx') or {}).get('error', msg)})"
        elif e.get("type") == "missing" and name == "body":
            msg = "a JSON request body is required"
        parts.append(f"{name}: {msg}")
        clean.append({"loc": list(e.get("loc", ())), "field": name, "msg": msg, "type": e.get("type")})
    return "; ".join(parts) or "invalid request", clean


def _is_api_path(request: Request) -> bool:
    path = request.url.path
    return path.startswith(PREFIX + "/") or path == PREFIX or path.startswith("/controlnet/")


def install_error_handlers(server: FastAPI) -> None:
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler

    async def on_api_error(request: Request, exc: ApiError):
        return _error_response(exc.status, exc.error, exc.detail,
                               errors=[{"field": exc.field, "msg": exc.message}] if exc.field else None,
                               headers=exc.headers)

    async def on_validation(request: Request, exc: RequestValidationError):
        if not _is_api_path(request):
            return await request_validation_exception_handler(request, exc)
        detail, clean = _validation_detail(list(exc.errors()))
        return _error_response(422, "RequestValidationError", detail, errors=clean)

    async def on_http(request: Request, exc: StarletteHTTPException):
        if not _is_api_path(request):
            return await http_exception_handler(request, exc)
        return _error_response(exc.status_code, "HTTPException", str(exc.detail), headers=getattr(exc, "headers", None))

    async def on_any(request: Request, exc: Exception):
        log.error("API error: %s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        return _error_response(500, exc.__class__.__name__, str(exc) or exc.__class__.__name__)

    server.add_exception_handler(ApiError, on_api_error)
    server.add_exception_handler(RequestValidationError, on_validation)
    server.add_exception_handler(StarletteHTTPException, on_http)
    server.add_exception_handler(Exception, on_any)


def register(server: FastAPI, app) -> None:
    """Add the /sdapi/v1 routes for ``app`` (an :class:`modules.app.App`) to ``server``."""
    api = SdApi(app, getattr(app.args, "api_auth", None))
    install_error_handlers(server)
    server.include_router(api.router)
    from modules import api_controlnet
    server.include_router(api_controlnet.build_router(api))   # sd-webui-controlnet's routes
    server.state.sdapi = api


__all__ = ["ApiError", "SdApi", "register", "decode_image", "encode_image", "parse_credentials",
           "Txt2ImgRequest", "Img2ImgRequest"]
