"""Command-line flags, parsed in one place.

Flag names follow the A1111 WebUI so that existing launch scripts and
`COMMANDLINE_ARGS` settings keep working. `launch.py` and `webui.py` both use
this parser; nothing else reads `sys.argv`.
"""
from __future__ import annotations

import argparse
import os
import shlex


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="Stable Diffusion web UI: txt2img / img2img in the browser, A1111-compatible API.",
    )
    g = p.add_argument_group("setup")
    g.add_argument("--skip-install", action="store_true", help="do not install or check any packages at start")
    g.add_argument("--skip-torch-install", action="store_true", help="do not install torch even if it is missing")
    g.add_argument("--skip-venv", action="store_true", help="run with the current interpreter instead of creating venv/")
    g.add_argument("--data-dir", default=None, help="base folder for user data: models/, outputs/, config.json, styles.csv, extensions/")
    g.add_argument("--models-dir", default=None, help="base folder for models (default: <data-dir>/models)")
    g.add_argument("--ckpt-dir", default=None, help="an extra folder scanned for Stable Diffusion checkpoints")
    g.add_argument("--vae-dir", default=None, help="an extra folder scanned for VAE files")
    g.add_argument("--lora-dir", default=None, help="an extra folder scanned for LoRA files")
    g.add_argument("--embeddings-dir", default=None, help="an extra folder scanned for textual-inversion embeddings")
    g.add_argument("--esrgan-models-path", default=None, help="an extra folder scanned for ESRGAN upscaler models")
    g.add_argument("--realesrgan-models-path", default=None, help="an extra folder scanned for Real-ESRGAN upscaler models")
    g.add_argument("--swinir-models-path", default=None, help="an extra folder scanned for SwinIR upscaler models")
    g.add_argument("--dat-models-path", default=None, help="an extra folder scanned for DAT upscaler models")
    g.add_argument("--controlnet-dir", default=None, help="an extra folder scanned for ControlNet models")
    g.add_argument("--ckpt", default=None, help="checkpoint to load at start (title, name, short hash or path)")
    g.add_argument("--ui-settings-file", default=None, help="settings file (default: <data-dir>/config.json)")
    g.add_argument("--styles-file", default=None, help="prompt styles file (default: <data-dir>/styles.csv)")
    g.add_argument("--localizations-dir", default=None, help="folder with localization .json files")

    g = p.add_argument_group("server")
    g.add_argument("--listen", action="store_true", help="listen on 0.0.0.0 instead of 127.0.0.1 (reachable from the network)")
    g.add_argument("--server-name", default=None, help="host name or address to listen on (overrides --listen)")
    g.add_argument("--port", type=int, default=None, help="port to listen on (default 7860)")
    g.add_argument("--api", action="store_true", help="serve the /sdapi/v1 HTTP API next to the UI")
    g.add_argument("--nowebui", action="store_true", help="serve only the HTTP API, no UI")
    g.add_argument("--api-auth", default=None, help="HTTP Basic credentials for the API: user:pass[,user2:pass2]")
    g.add_argument("--gradio-auth", default=None,
                   help="a login for the UI (and for the API unless --api-auth is given): user:pass[,user2:pass2]")
    g.add_argument("--gradio-auth-path", default=None,
                   help="a file with UI logins: user:pass entries, comma separated, one or more per line")
    g.add_argument("--tls-keyfile", default=None, help="private key file (PEM) to serve over HTTPS (with --tls-certfile)")
    g.add_argument("--tls-certfile", default=None, help="certificate file (PEM) to serve over HTTPS (with --tls-keyfile)")
    g.add_argument("--subpath", default=None,
                   help="serve the UI and the API under this URL path, e.g. /sd (behind a reverse proxy)")
    g.add_argument("--queue-size", type=int, default=64, help="how many jobs may wait in the queue before new ones are refused")
    g.add_argument("--autolaunch", action="store_true", help="open the UI in the system's browser at start")

    g = p.add_argument_group("performance")
    g.add_argument("--use-cpu", nargs="*", default=None, help="run on the CPU (optionally: 'all' or module names)")
    g.add_argument("--device-id", default=None, help="CUDA device index to use")
    g.add_argument("--no-half", action="store_true", help="keep the model in float32 (no fp16)")
    g.add_argument("--no-half-vae", action="store_true", help="keep the VAE in float32")
    g.add_argument("--precision", choices=["full", "half", "autocast"], default="autocast", help="'full' = float32 everywhere")
    g.add_argument("--medvram", action="store_true", help="move whole models to the GPU only while they are used")
    g.add_argument("--lowvram", action="store_true", help="offload smaller pieces of the model (slowest, least memory)")
    g.add_argument("--compile", action="store_true", help="torch.compile the UNet (first generation is slower)")
    g.add_argument("--opt-channelslast", action="store_true",
                   help="channels_last memory format for the UNet on CUDA (faster on some GPUs, slower on others)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags from `argv`, `COMMANDLINE_ARGS` (environment) coming first."""
    env = shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    args, unknown = build_parser().parse_known_args(env + list(argv or []))
    args.unknown = unknown
    return args


def server_name(args: argparse.Namespace) -> str:
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"
