"""The fuzz run of the API against a tiny model (the issue's bar): schemathesis' cases of /openapi.json
(whatever the schema allows and a share of what it does not; errors in our JSON shape, 2xx answers that match
their schema), then hand-written hostile bodies (requests over the admission limits, wrong types in every
field, deep JSON nesting, garbage bytes, invalid UTF-8, huge base64 images): >= 2,000 requests, no 5xx, no
request over 30 s, the server's RSS up by less than 1 GB, every request over a limit a 4xx within a second.
Bounded: a few schemathesis examples per operation, valid-but-costly sizes shrunk to 64x64 / 2 steps, the bulk
of the hostile bodies built on a request over a limit (refused at admission instead of run). Plus explicit
bad-input cases that must be 4xx with a message naming the field.

Examples are derandomized (the same cases on every run); to explore, set API_FUZZ_RANDOM=1 and
API_FUZZ_SCALE=<n> (n times the examples)."""
from __future__ import annotations

import base64
import io
import json
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


class Ledger:
    """Every request of the fuzz run: (label, status, seconds); the server's RSS, sampled."""

    def __init__(self):
        import psutil

        self.process = psutil.Process(os.getpid())
        self.rss0 = self.rss_max = self.process.memory_info().rss
        self.rows: list[tuple[str, int, float]] = []
        self.failures: list[str] = []

    def add(self, label: str, status: int, seconds: float) -> None:
        self.rows.append((label, status, seconds))
        if len(self.rows) % 50 == 0:
            self.sample()

    def sample(self) -> None:
        self.rss_max = max(self.rss_max, self.process.memory_info().rss)


def schema_cases(server, ledger: Ledger) -> dict[str, list[int]]:
    """Schemathesis' cases of every operation (a few each, derandomized): no 500, our error shape, and 2xx
    answers that match their schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", server)
    random = bool(os.environ.get("API_FUZZ_RANDOM"))
    scale = max(1, int(os.environ.get("API_FUZZ_SCALE", "1")))
    failures = ledger.failures
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
                checks = [not_a_server_error] + ([response_schema_conformance] if mode is GenerationMode.POSITIVE
                                                 else [])
                t0 = time.perf_counter()
                try:
                    response = case.call_and_validate(checks=checks)
                except Exception as e:  # noqa: BLE001 - collect every failure, report them together
                    ledger.add(f"schema {label}", getattr(getattr(e, "response", None), "status_code", 0),
                               time.perf_counter() - t0)
                    failures.append(f"{label} [{mode.value}] {type(e).__name__}: {str(e)[:600]}")
                    return
                ledger.add(f"schema {label}", response.status_code, time.perf_counter() - t0)
                statuses.setdefault(label, []).append(response.status_code)
                if response.status_code >= 400 and op.path.startswith(API):
                    data = response.json()
                    if not (isinstance(data, dict) and {"error", "detail"} <= set(data) and data["detail"]):
                        failures.append(f"{label} [{mode.value}] error without our JSON shape: {response.text[:300]}")

            try:
                run()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{label}: no valid request can be generated")
            except Exception as e:  # noqa: BLE001 - hypothesis' own errors
                failures.append(f"{label} [{mode.value}] {type(e).__name__}: {str(e)[:600]}")
    return statuses


def test_fuzz_run_never_answers_500(env):
    """The issue's bar: >= 2,000 requests (schemathesis' cases, then the hostile bodies below) against the
    tiny model; no 5xx, no request over 30 s, the server's RSS up by less than 1 GB, and every request over an
    admission limit answered 4xx in under a second."""
    app, server = env
    client = TestClient(server, raise_server_exceptions=False)
    assert client.post(f"{API}/txt2img", json={**SMALL, "prompt": "warm up"}).status_code == 200   # the model
    ledger = Ledger()
    t0 = time.perf_counter()
    statuses = schema_cases(server, ledger)
    n_schema, t_schema = len(ledger.rows), time.perf_counter() - t0
    hostile_cases(app, client, ledger)
    ledger.sample()
    print(f"\n{n_schema} schemathesis requests in {t_schema:.1f}s, {len(ledger.rows) - n_schema} hostile ones in "
          f"{time.perf_counter() - t0 - t_schema:.1f}s; RSS +{(ledger.rss_max - ledger.rss0) / 2**20:.0f} MB")
    print("\n".join(f"{k}: {sorted(v)}" for k, v in statuses.items() if len(v) > 2))
    slowest = sorted(ledger.rows, key=lambda r: -r[2])[:5]
    print("\n".join(f"{s:6.2f}s {status} {label}" for label, status, s in slowest))
    assert not ledger.failures, "\n\n".join(ledger.failures[:20])
    assert 40 <= n_schema <= 160 * max(1, int(os.environ.get("API_FUZZ_SCALE", "1"))), n_schema
    assert len(ledger.rows) >= 2000, len(ledger.rows)
    assert [r for r in ledger.rows if r[1] >= 500] == []
    assert slowest[0][2] < 30, slowest
    assert ledger.rss_max - ledger.rss0 < 2**30, (ledger.rss0, ledger.rss_max)


# ---------------------------------------------------------------------------
# hand-written hostile bodies: oversized requests, wrong types, deep nesting, garbage bytes, invalid UTF-8,
# huge base64 images. Bodies that could be valid are built on SMALL (a 64x64, 2-step job of the tiny model);
# the bulk is built on a body over an admission limit, so that what gets past the request model and the
# checks before it is refused at admission instead of run.

TYPE_PROBES = ([], {}, "x", "", True, None, -1, 0, 10**30, -10**30, 1.5, "1e999", [1, "a"], {"a": [1]},
               "\u0000", "\U0001f642" * 8)
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc", b"\xed\xa0\x80",
            b"\xc0\xaf", b"\xf8\x88\x80\x80\x80")
SURROGATES = ("\\ud800", "\\udfff", "a\\udbff b", "\\ud800\\u0041")
MB_PROMPT = "a red circle, " * (2**20 // 14)


def hostile_cases(app, client, ledger: Ledger) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from modules import devices
    from modules.engine import request as admission

    # the limits of an 8 GB CPU, whatever this machine is (and whatever the schema cases set through /options)
    lim = admission.limit_defaults(devices.MemoryInfo("cpu", 8 * 2**30, 6 * 2**30))
    app.opts.update(lim, save=False)
    over = {**SMALL, "n_iter": lim["max_batch_count"] + 1}
    families = {
        "oversized": lambda: [(r, json_bytes(b), "application/json", True) for r, b in oversized_bodies(lim)],
        "wrong types": lambda: [(r, json_bytes(b), "application/json", False) for r, b in
                                type_bodies(over) + type_bodies(SMALL, every=len(TYPE_PROBES) - 1)],
        "deep nesting": nesting_bodies, "garbage bytes": garbage_bodies, "invalid UTF-8": utf8_bodies,
        "huge images": lambda: image_bodies(over),
    }
    families.update({k: (lambda f=f: [(*b, False) for b in f()]) for k, f in families.items()
                     if k not in ("oversized", "wrong types")})
    pool = ThreadPoolExecutor(1, thread_name_prefix="fuzz-client")
    try:
        for family, make in families.items():
            wall, cpu = time.perf_counter(), time.process_time()
            bodies = make()
            for route, raw, ctype, oversized in bodies:
                send(app, client, pool, ledger, route, raw, ctype=ctype, oversized=oversized)
            print(f"{family}: {len(bodies)} requests, {time.perf_counter() - wall:.1f}s "
                  f"({time.process_time() - cpu:.1f}s CPU)")
    finally:
        pool.shutdown(wait=False)
        for key in admission.LIMIT_KEYS:
            app.opts.data.pop(key, None)


def send(app, client, pool, ledger: Ledger, route: str, raw: bytes, ctype: str = "application/json",
         oversized: bool = False) -> None:
    """POST one body; a failure unless the answer is ours (no 5xx, our JSON error shape), within 30 s, and for
    a request over a limit a 4xx within a second."""
    from concurrent.futures import TimeoutError as FutureTimeout

    label = f"{route} {raw[:80]!r}{'...' if len(raw) > 80 else ''} ({len(raw)} bytes)"
    t0 = time.perf_counter()
    future = pool.submit(client.post, f"{API}/{route}", content=raw, headers={"content-type": ctype})
    try:
        r = future.result(timeout=30)
    except FutureTimeout:
        app.queue.interrupt()
        pytest.fail(f"no answer in 30 s: {label}")
    seconds = time.perf_counter() - t0
    ledger.add(label, r.status_code, seconds)
    if r.status_code >= 500:
        ledger.failures.append(f"{r.status_code} for {label}: {r.text[:300]}")
    elif r.status_code >= 400:
        try:
            data = r.json()
        except ValueError:
            data = None
        if not (isinstance(data, dict) and {"error", "detail"} <= set(data) and data["detail"]):
            ledger.failures.append(f"error without our JSON shape for {label}: {r.text[:300]}")
    if oversized and not (400 <= r.status_code < 500 and seconds < 1.0):
        ledger.failures.append(f"over a limit, answered {r.status_code} in {seconds:.2f}s: {label}: {r.text[:200]}")


def json_bytes(body) -> bytes:
    return json.dumps(body).encode()


def oversized_bodies(lim: dict) -> list[tuple[str, dict]]:
    """Requests over each admission limit (the issue's: 2048x2048 x 64, hires 8x, 1000 batches, 500 steps,
    a 1 MB prompt ...), for txt2img and (what applies to it) img2img."""
    big = {"width": 2048, "height": 2048, "steps": 2}
    plain = [{**SMALL, "n_iter": n} for n in range(lim["max_batch_count"] + 1, 1001, 29)]
    plain += [{**big, "batch_size": b} for b in range(lim["max_batch_size"] + 1, 65, 3)]
    plain += [{**SMALL, "steps": s} for s in range(lim["max_steps"] + 1, 501, 17)]
    plain += [{**SMALL, field: text} for field in ("prompt", "negative_prompt") for text in
              (MB_PROMPT, "x" * 2**20, "\u732b" * 2**18, " " * 20000, "a cat, " * 1500)]
    plain += [{"width": 512, "height": 512, "steps": 150, "n_iter": n, "batch_size": 4} for n in (50, 100)]
    plain += [{**SMALL, "override_settings": {key: 0}} for key in lim]
    plain += [{**big, "batch_size": 64, "n_iter": 1000, "steps": 500, "prompt": MB_PROMPT}]
    hr = {**SMALL, "enable_hr": True}
    hires = [{**big, "enable_hr": True, "hr_scale": s} for s in (1.5, 2, 4, 4.05, 6.5, 8)]
    hires += [{**hr, "hr_resize_x": x, "hr_resize_y": y} for x, y in ((4096, 4096), (4096, 2048), (3000, 3000))]
    hires += [{"width": 2048, "height": 64, "steps": 2, "enable_hr": True, "hr_scale": 4}]
    hires += [{**hr, "hr_second_pass_steps": s} for s in (151, 300, 500)]
    hires += [{**hr, field: MB_PROMPT} for field in ("hr_prompt", "hr_negative_prompt")]
    hires += [{**hr, "width": 1024, "height": 1024, "steps": 150, "hr_scale": 2, "n_iter": 20}]
    image = [small_png()]
    return ([("txt2img", b) for b in plain + hires]
            + [("img2img", {**b, "init_images": image}) for b in plain]
            + [("img2img", {**SMALL, "width": 2048, "height": 2048, "batch_size": 64, "init_images": image * 64})])


def api_names(mode: str) -> list[str]:
    from modules.api import Img2ImgRequest, Txt2ImgRequest

    return list((Txt2ImgRequest if mode == "txt2img" else Img2ImgRequest).model_fields)


def type_bodies(base: dict, every: int = 1) -> list[tuple[str, dict]]:
    """Every field of both request models with each value of the wrong type (`every` > 1: a sample)."""
    out = []
    for route in ("txt2img", "img2img"):
        start = {**base, "init_images": [small_png()]} if route == "img2img" else base
        for i, name in enumerate(api_names(route)):
            probes = TYPE_PROBES if every == 1 else TYPE_PROBES[i % len(TYPE_PROBES)::every]
            out += [(route, {**start, name: value}) for value in probes]
    return out


def nesting_bodies() -> list[tuple[str, bytes, str]]:
    """JSON nested from a few levels to far past the parser's and Python's recursion limits, where free-form
    values are taken (override_settings, script_args, always-on scripts, settings) and where they are not."""
    small = json.dumps(SMALL)[1:-1]
    out = []
    for depth in (5, 31, 32, 33, 64, 500, 900, 950, 980, 990, 1000, 5000, 100000):
        obj, arr = '{"a": ' * depth + "1" + "}" * depth, "[" * depth + "]" * depth
        for route, text in (("txt2img", f'{{"override_settings": {obj}, {small}}}'),
                            ("txt2img", f'{{"script_args": {arr}, {small}}}'),
                            ("txt2img", f'{{"alwayson_scripts": {{"x": {{"args": {arr}}}}}, {small}}}'),
                            ("txt2img", f'{{"styles": {arr}, {small}}}'), ("txt2img", arr),
                            ("img2img", f'{{"init_images": {arr}, {small}}}'), ("options", f'{{"x": {obj}}}'),
                            ("png-info", f'{{"image": {arr}}}')):
            out.append((route, text.encode(), "application/json"))
    return out


def garbage_bodies() -> list[tuple[str, bytes, str]]:
    """Random bytes (seeded), truncated bodies and bodies that are not JSON at all, to every POST route."""
    import random

    rng = random.Random(18)
    routes = ("txt2img", "img2img", "png-info", "options", "extra-single-image", "interrupt")
    ctypes = ("application/json", "text/plain", "application/octet-stream", "multipart/form-data",
              "application/x-www-form-urlencoded")
    out = [(routes[i % len(routes)], rng.randbytes(rng.choice((0, 1, 7, 100, 3000))), "application/json")
           for i in range(120)]
    out += [(routes[i % len(routes)], rng.randbytes(64), ctypes[i % len(ctypes)]) for i in range(30)]
    valid = json_bytes({**SMALL, "prompt": "a red circle", "override_settings": {"eta_ddim": 0.5}})
    out += [("txt2img", valid[:k], "application/json") for k in range(0, len(valid), 5)]
    out += [("txt2img", b, "application/json") for b in (b"null", b"[]", b'"x"', b"1e999", b"NaN", b"{}" * 1000,
                                                         b"\x00" * 100, b"\xef\xbb\xbf" + valid,
                                                         valid.decode().encode("utf-16"))]
    return out


def utf8_bodies() -> list[tuple[str, bytes, str]]:
    """Invalid UTF-8 inside JSON strings and keys, and JSON's lone surrogate escapes, in every kind of field."""
    small = json.dumps(SMALL)[1:-1].encode()
    spots = [(r, b'{"%s": "a' % f.encode() + b"%s" + b'b", ' + small + b"}")
             for r, f in (("txt2img", "prompt"), ("txt2img", "negative_prompt"), ("txt2img", "sampler_name"),
                          ("txt2img", "infotext"), ("img2img", "prompt"), ("png-info", "image"), ("options", "sd_vae"))]
    spots += [("txt2img", b'{"styles": ["%s"], ' + small + b"}"), ("txt2img", b'{"override_settings": {"%s": 1}, ' + small + b"}"),
              ("txt2img", b'{"%s": 1, ' + small + b"}"), ("options", b'{"%s": "x"}')]
    out = [(route, template.replace(b"%s", seq), "application/json") for route, template in spots for seq in BAD_UTF8]
    out += [(route, template.replace(b"%s", s.encode()), "application/json") for route, template in spots
            for s in SURROGATES]
    return out


def png_header(w: int, h: int) -> bytes:
    """The start of a PNG that claims to be w x h (a decompression bomb's header; no pixel data)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def image_bodies(over: dict) -> list[tuple[str, bytes, str]]:
    """Huge base64 images: megabytes of random base64, headers of giant images, a 64-megapixel image, a
    great many images, URLs; for img2img (on a body over a limit), PNG Info and the extras upscaler."""
    import random

    rng = random.Random(7)
    b64 = base64.b64encode
    noise = b64(rng.randbytes(15 * 2**20)).decode()
    bomb = b64(png_header(100000, 100000)).decode()
    wide = b64(png_header(16385, 1)).decode()
    buf = io.BytesIO()
    Image.new("1", (8192, 8192)).save(buf, "PNG")
    huge = b64(buf.getvalue()).decode()
    big = small_png(4096, 4096)
    values = [noise, bomb, wide, huge, "data:image/png;base64," + noise, "data:,", "data:image/png;base64,",
              "http://127.0.0.1/x.png", "=" * 100000, "A" * (8 * 2**20 + 1)]
    out = [("img2img", {**over, "init_images": [v]}) for v in values]
    out += [("img2img", {**over, "init_images": [small_png()] * 300}), ("img2img", {**over, "init_images": [big] * 4}),
            ("img2img", {**over, "init_images": [small_png()], "mask": huge})]
    out += [("png-info", {"image": v}) for v in values]
    out += [("extra-single-image", {"image": v, "upscaling_resize": 2}) for v in values[:4]]
    out += [("extra-single-image", {"image": big, "upscaling_resize": 16}),
            ("extra-single-image", {"image": big, "resize_mode": 1, "upscaling_resize_w": 8192,
                                    "upscaling_resize_h": 8192})]
    return [(route, json_bytes(body), "application/json") for route, body in out]


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
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "override_settings": ' + b'{"a": ' * 900 + b"1" + b"}" * 901,
     "override_settings.a.a"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "script_args": ' + b"[" * 100 + b"]" * 100 + b"}",
     "nested too deeply"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "prompt": "a\\ud800"}', "prompt"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "styles": ["\\udfff"]}', "styles[0]"),
    ("options", b'{"sd_vae": "\\ud800"}', "sd_vae"),
    ("txt2img", b'{"steps": 2, "width": 64, "height": 64, "n_iter": 1000}', "max_batch_count"),
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
