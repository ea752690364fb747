"""Fixtures shared by several test files."""
from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one test process per core (pytest -n 2): more torch threads than free cores only make them wait
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, for a browser test module (which calls require_chromium)."""
    from tests.browser_support import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def sd1():
    """Tiny random SD 1.x components (seed 0)."""
    from testing.tiny_models import build_tiny_components

    return build_tiny_components("sd1", seed=0)
