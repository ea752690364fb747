"""sd-webui-controlnet's routes (``/controlnet/...``, next to ``/sdapi/v1``), answering as the extension does
so that its clients work unchanged: version, model_list, module_list, settings, detect."""
from __future__ import annotations

from typing import List

import numpy as np
from fastapi import APIRouter, Body, Depends
from PIL import Image

from modules.controlnet import preprocessors

PREFIX = "/controlnet"
VERSION = 2   # the extension's API version number (its /controlnet/version answers {"version": 2})


def build_router(sdapi) -> APIRouter:
    """The routes for ``sdapi`` (a modules.api.SdApi: its app, its auth, its errors)."""
    from modules.api import ERROR_RESPONSES, ApiError, decode_image, encode_image

    deps = [Depends(sdapi._auth_dependency())] if sdapi.credentials else []
    r = APIRouter(prefix=PREFIX, dependencies=deps, tags=["controlnet"], responses=ERROR_RESPONSES)
    app = sdapi.app

    @r.get("/version")
    def version() -> dict:
        return {"version": VERSION}

    @r.get("/model_list")
    def model_list(update: bool = True) -> dict:
        if update:
            app.controlnets.refresh()
        return {"model_list": app.controlnets.titles()}

    @r.get("/module_list")
    def module_list(alias_names: bool = False) -> dict:
        return preprocessors.module_list(alias_names)

    @r.get("/settings")
    def settings() -> dict:
        n = int(app.opts.snapshot().get("control_net_unit_count", 3) or 3)
        return {"control_net_unit_count": n, "control_net_max_models_num": n}

    @r.post("/detect")
    def detect(controlnet_module: str = Body("none"), controlnet_input_images: List[str] = Body([]),
               controlnet_processor_res: int = Body(512), controlnet_threshold_a: float = Body(64),
               controlnet_threshold_b: float = Body(64), controlnet_masks: List[str] = Body([])) -> dict:
        pre = preprocessors.get(controlnet_module)
        if pre is None:
            raise ApiError(422, f"Module not available: {controlnet_module!r}", "controlnet_module")
        ok, why = pre.available(preprocessors.annotator_dir(app.paths.models_dir))
        if not ok:
            raise ApiError(422, f"Module not available: {why}", "controlnet_module")
        if not controlnet_input_images:
            raise ApiError(422, "No image selected", "controlnet_input_images")
        if not 64 <= controlnet_processor_res <= 4096:
            raise ApiError(422, "must be between 64 and 4096", "controlnet_processor_res")
        out = []
        for i, text in enumerate(controlnet_input_images):
            im = decode_image(text, f"controlnet_input_images.{i}")
            arr = np.asarray(im.convert("RGB"))
            kw = {}
            if i < len(controlnet_masks) and controlnet_masks[i]:
                kw["mask"] = np.asarray(decode_image(controlnet_masks[i], f"controlnet_masks.{i}").convert("L"))
            try:
                detected = preprocessors.run(controlnet_module, arr, controlnet_processor_res, controlnet_threshold_a,
                                             controlnet_threshold_b, **kw)
            except (ValueError, RuntimeError) as e:
                raise ApiError(422, f"{controlnet_module}: {e}", "controlnet_module") from None
            out.append(encode_image(Image.fromarray(preprocessors.preview(detected))))
        return {"images": out, "info": "Success"}

    return r
