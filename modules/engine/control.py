"""A job's progress and its interrupt / skip flags, shared by the job (which writes the step count) and
whoever watches it (the queue, the UI's progress poll, the API's /progress)."""
from __future__ import annotations

import time
from typing import Callable

import torch


class Interrupted(Exception):
    """Raised inside sampling when the job was interrupted or the current image skipped."""


class JobControl:
    """Progress reporting and interrupt/skip flags for one job (thread-safe enough: plain flags)."""

    def __init__(self, on_progress: Callable[["JobControl"], None] | None = None):
        self.interrupted = False
        self.skipped = False
        self.step = 0
        self.total_steps = 0
        self.job_no = 0
        self.job_count = 0
        self.started = time.time()
        self.current_latents: torch.Tensor | None = None   # the live preview's source (set by the previews hook)
        self.on_progress = on_progress
        self.textinfo = ""
        self.script_jobs: tuple[int, int] | None = None   # (jobs done, jobs in all) of a script's run

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    @property
    def stopping(self) -> bool:
        return self.interrupted or self.skipped

    @property
    def step_progress(self) -> float:
        """The progress of the current job's sampler steps (0..1)."""
        if self.total_steps <= 0:
            return 0.0
        return min(1.0, self.step / self.total_steps)

    @property
    def progress(self) -> float:
        """The whole job's progress: a script's run counts the jobs it has done and the current one's steps."""
        inner = self.step_progress
        if self.script_jobs:
            done, total = self.script_jobs
            return min(1.0, (min(done, total) + (inner if done < total else 0.0)) / max(total, 1))
        return inner

    @property
    def eta(self) -> float | None:
        p = self.progress
        if p <= 0:
            return None
        elapsed = time.time() - self.started
        return elapsed / p - elapsed

    def report(self, latents: torch.Tensor | None = None):
        if latents is not None:
            self.current_latents = latents
        if self.on_progress is not None:
            self.on_progress(self)
