"""The diffusers scheduler that runs the same algorithm as an A1111 sampler, for tests that compare with
diffusers' pipelines."""
from __future__ import annotations


def diffusers_scheduler(sampler: str, config: dict):
    """The diffusers scheduler that runs the same algorithm as A1111's sampler, configured to A1111's sigma grid
    (diffusers' DDIM/PLMS/UniPC grids and last steps differ from A1111's, and its DPM-Solver runs the UNet at
    rounded timesteps: tests/test_sampler_reference.py checks every sampler against an independent reference)."""
    import diffusers

    base = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    base.update(timestep_spacing="linspace")
    if sampler == "Euler":
        return diffusers.EulerDiscreteScheduler.from_config(base)
    if sampler == "Heun":
        return diffusers.HeunDiscreteScheduler.from_config(base)
    raise KeyError(sampler)
