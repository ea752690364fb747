"""Schema fuzzing of /openapi.json with schemathesis against the API on a tiny model: whatever the
schema allows (and a share of what it does not) never gets a 500; errors are our JSON shape; 2xx
answers match their documented schema.  Bounded: a few examples per operation, valid-but-costly
sizes are shrunk to 64x64 / 2 steps before sending.  Plus explicit bad-input cases that must be
4xx with a message naming the field.

Examples are derandomized (the same cases on every run); to explore, set API_FUZZ_RANDOM=1 and
API_FUZZ_SCALE=<n> (n times the examples)."""
from __future__ import annotations

import base64
import io
import os
import time

import pytest
from PIL import Image

from modules import cmd_args

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.checks import response_schema_conformance  # noqa: E402

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2}

# examples per operation (positive, negative); operations not named get DEFAULT_EXAMPLES
EXAMPLES = {
    f"POST {API}/txt2img": (10, 6),
    f"POST {API}/img2img": (8, 6),
    f"POST {API}/extra-single-image": (5, 4),
    f"POST {API}/png-info": (3, 3),
    f"POST {API}/options": (4, 3),
    f"POST {API}/interrupt": (2, 2),
    f"GET {API}/progress": (2, 2),
}
DEFAULT_EXAMPLES = (1, 1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("fuzz")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    app = App(cmd_args.parse_args(["--data-dir", str(data)]))
    app.refresh_models()
    server = webui.create_server(app, with_ui=False, with_api=True)
    yield app, server
    app.queue.stop()


def small_png(w=16, h=16) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 90)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _is_int(v):  # JSON 60.0 is a valid integer for pydantic
    return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def shrink(body, generation: bool, img2img: bool = False, extras: bool = False):
    """Valid-but-costly values -> cheap valid ones (invalid values are left alone: they must be refused)."""
    if not isinstance(body, dict):
        return body
    b = dict(body)
    if generation:  # absent fields take A1111's defaults: 512x512, 50 steps - too slow here
        for key, value in SMALL.items():
            b.setdefault(key, value)
    if img2img:
        b.setdefault("init_images", [small_png()])
    if extras:
        b.setdefault("image", small_png())
    for key, lo, hi, cheap in (("width", 64, 2048, 64), ("height", 64, 2048, 64), ("steps", 1, 500, 2),
                               ("batch_size", 1, 64, 1), ("n_iter", 1, 1000, 1), ("hr_second_pass_steps", 0, 500, 2),
                               ("hr_resize_x", 0, 4096, 0), ("hr_resize_y", 0, 4096, 0),
                               ("upscaling_resize_w", 1, 8192, 32), ("upscaling_resize_h", 1, 8192, 32),
                               ("inpaint_full_res_padding", 0, 1024, 8), ("mask_blur", 0, 256, 2),
                               ("mask_blur_x", 0, 256, 2), ("mask_blur_y", 0, 256, 2),
                               ("seed_resize_from_w", 8, 2048, 64), ("seed_resize_from_h", 8, 2048, 64)):
        if key in b and _is_int(b[key]) and lo <= b[key] <= hi:
            b[key] = min(b[key], cheap) if cheap else lo
    for key, lo, hi, cheap in (("hr_scale", 1, 8, 1.5), ("upscaling_resize", 0, 16, 2)):
        if key in b and _is_num(b[key]) and lo <= b[key] <= hi:
            b[key] = min(b[key], cheap)
    # a share of the generated image strings become real images, so success paths are fuzzed too
    for key in ("image", "mask"):
        if isinstance(b.get(key), str) and len(b[key]) % 2 == 0:
            b[key] = small_png()
    if isinstance(b.get("init_images"), list) and b["init_images"] and isinstance(b["init_images"][0], str) \
            and len(b["init_images"][0]) % 2 == 0:
        b["init_images"] = [small_png()] + b["init_images"][1:]
    return b


def test_schema_fuzzing_never_answers_500(env):
    app, server = env
    schema = schemathesis.openapi.from_asgi("/openapi.json", server)
    random = bool(os.environ.get("API_FUZZ_RANDOM"))
    scale = max(1, int(os.environ.get("API_FUZZ_SCALE", "1")))
    failures: list[str] = []
    counts = {"requests": 0}
    timings: dict[str, float] = {}
    statuses: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        pos, neg = (n * scale for n in EXAMPLES.get(label, DEFAULT_EXAMPLES))
        for mode, n in ((GenerationMode.POSITIVE, pos), (GenerationMode.NEGATIVE, neg)):
            @settings(max_examples=n, deadline=None, database=None, derandomize=not random,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                if isinstance(case.body, dict):
                    case.body = shrink(case.body, op.path.endswith(("/txt2img", "/img2img")),
                                       op.path.endswith("/img2img"), op.path.endswith("/extra-single-image"))
                counts["requests"] += 1
                checks = [not_a_server_error] + ([response_schema_conformance] if mode is GenerationMode.POSITIVE
                                                 else [])
                try:
                    response = case.call_and_validate(checks=checks)
                except Exception as e:  # noqa: BLE001 - collect every failure, report them together
                    failures.append(f"{label} [{mode.value}] {type(e).__name__}: {str(e)[:600]}")
                    return
                statuses.setdefault(label, []).append(response.status_code)
                if response.status_code >= 400 and op.path.startswith(API):
                    data = response.json()
                    if not (isinstance(data, dict) and {"error", "detail"} <= set(data) and data["detail"]):
                        failures.append(f"{label} [{mode.value}] error without our JSON shape: {response.text[:300]}")

            t0 = time.perf_counter()
            try:
                run()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{label}: no valid request can be generated")
            except Exception as e:  # noqa: BLE001 - hypothesis' own errors
                failures.append(f"{label} [{mode.value}] {type(e).__name__}: {str(e)[:600]}")
            timings[f"{label} [{mode.value}]"] = time.perf_counter() - t0
    print("\n".join(f"{v:6.2f}s {k}" for k, v in sorted(timings.items(), key=lambda kv: -kv[1])[:8]))
    print("\n".join(f"{k}: {sorted(v)}" for k, v in statuses.items() if len(v) > 2))
    assert not failures, "\n\n".join(failures)
    assert 40 * scale <= counts["requests"] <= 160 * scale, counts


# ---------------------------------------------------------------------------
# explicit bad input: 4xx, JSON, a message naming the field

BAD = [
    ("txt2img", b'{"prompt": "x", ', "malformed JSON"),
    ("txt2img", b'{"prompt": "x", "steps": "twenty"}', "steps"),
    ("txt2img", b'{"width": "wide"}', "width"),
    ("txt2img", b'{"seed": 1.5}', "seed"),
    ("txt2img", b'{"cfg_scale": [7]}', "cfg_scale"),
    ("txt2img", b'{"styles": "not a list"}', "styles"),
    ("txt2img", b'{"override_settings": ["x"]}', "override_settings"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "sampler_name": "k_nope"}', "sampler_name"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": "zz9qq"}}',
     "sd_model_checkpoint"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "seed": 99999999999}', "seed"),
    ("img2img", b'{"init_images": ["%%%not base64%%%"]}', "init_images[0]"),
    ("img2img", b'{"init_images": ["aGVsbG8gd29ybGQ="]}', "init_images[0]"),
    ("img2img", b'{"init_images": [42]}', "init_images"),
    ("png-info", b'{"image": "aGVsbG8="}', "image"),
    ("png-info", b'{"image": null}', "image"),
    ("extra-single-image", b'{"image": "###"}', "image"),
    ("extra-single-image", b'{"image": "", "upscaler_1": "SwinIR"}', "upscaler_1"),
    ("options", b'{"jpeg_quality": "high"}', "jpeg_quality"),
    ("options", b'{"sd_model_checkpoint": "no such model anywhere"}', "sd_model_checkpoint"),
    ("options", b'{"x": Infinity}', "x"),
]


@pytest.mark.parametrize("route,raw,field", BAD, ids=[f"{r}-{f}-{i}" for i, (r, _, f) in enumerate(BAD)])
def test_bad_input_is_4xx_naming_the_field(env, route, raw, field):
    _, server = env
    client = TestClient(server)
    r = client.post(f"{API}/{route}", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert body["error"] in ("RequestValidationError", "RequestError", "ModelLoadError"), body
    assert field in body["detail"], body
