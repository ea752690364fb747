"""The engine stays readable one piece at a time: no function over 80 lines in it, and short functions
across the program (the median)."""
from __future__ import annotations

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what makes pictures: the stages, the model families, the samplers, loading models, text and networks
ENGINE = ["modules/engine", "modules/families", "modules/sampling", "modules/samplers.py", "modules/hooks.py",
          "modules/model_formats.py", "modules/conditioning.py", "modules/lora.py", "modules/extra_networks.py"]
MAX_LINES = 80


def function_lengths(paths: list[str]) -> dict[str, int]:
    out = {}
    for rel in paths:
        p = ROOT / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{f.relative_to(ROOT)}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    return out


def test_no_function_in_the_engine_is_over_80_lines():
    lengths = function_lengths(ENGINE)
    assert len(lengths) > 400  # the scan sees the engine
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_functions_are_short_on_the_whole():
    assert statistics.median(function_lengths(["modules"]).values()) <= 8
    assert statistics.median(function_lengths(ENGINE).values()) <= 7
