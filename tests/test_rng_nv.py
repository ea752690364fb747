"""A1111's "NV" random source: torch's CUDA randn for a seed, computed on any device.

Checked three ways: Random123's published known-answer vectors for Philox4x32-10, an independent
pure-Python Philox + Box-Muller written here from the definitions, and the values A1111 records for
CUDA's randn with seed 0 (tests/test_devices.py compares with torch's CUDA randn where a GPU is present).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules import engine, infotext, rng
from modules.options import Options
from modules.sampling.philox import PhiloxGenerator, philox4x32_10

MASK = 0xFFFFFFFF

# Random123 (Salmon et al. 2011) known-answer vectors: (counter, key) -> output of philox4x32 with 10 rounds
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# torch.manual_seed(0); torch.randn((3, 4), device="cuda"), as A1111 records it for its NV generator
CUDA_SEED0_3x4 = [[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                  [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                  [-1.07454231, -0.36314407, -1.67105067, 2.26550497]]


def philox_reference(counter, key):
    """Philox4x32-10 in plain Python integers: 10 rounds of two 32x32->64 multiplies, key bumped between rounds."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
        if r < 9:
            k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
    return c0, c1, c2, c3


def cuda_randn_reference(seed: int, n: int, offset: int = 0) -> list[float]:
    """torch's CUDA normal draw for small tensors: element i from counter (offset, 0, i, 0) and key = seed;
    cuRAND's Box-Muller on the first two words, first output (sin)."""
    out = []
    for i in range(n):
        x, y, _, _ = philox_reference((offset, 0, i, 0), (seed & MASK, seed >> 32))
        u = x * 2.0 ** -32 + 2.0 ** -33
        v = (y * 2.0 ** -32 + 2.0 ** -33) * 2 * math.pi
        out.append(math.sqrt(-2.0 * math.log(u)) * math.sin(v))
    return out


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    got = philox4x32_10(np.array(counter, dtype=np.uint32).reshape(4, 1), key)[:, 0]
    assert tuple(int(v) for v in got) == expected
    assert philox_reference(counter, key) == expected


def test_nv_noise_equals_cudas_recorded_values():
    got = PhiloxGenerator(0).randn((3, 4))
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor(CUDA_SEED0_3x4), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**32 - 1, 2**40 + 7])
def test_nv_noise_equals_an_independent_computation(seed):
    gen = PhiloxGenerator(seed)
    first, second = gen.randn((4, 8, 8)).flatten(), gen.randn((4, 8, 8)).flatten()
    assert np.allclose(first.numpy(), cuda_randn_reference(seed, 256), atol=2e-5)
    assert np.allclose(second.numpy(), cuda_randn_reference(seed, 256, offset=1), atol=2e-5)  # the next draw
    assert abs(float(first.std()) - 1) < 0.15


def test_image_rng_with_nv_source_draws_philox_noise_per_image():
    r = rng.ImageRNG((4, 8, 8), [7, 8], source="NV")
    first, nxt = r.first(), r.next()
    assert torch.equal(first[0], PhiloxGenerator(7).randn((4, 8, 8)))
    assert torch.equal(first[1], PhiloxGenerator(8).randn((4, 8, 8)))
    g = PhiloxGenerator(7)
    g.randn((4, 8, 8))
    assert torch.equal(nxt[0], g.randn((4, 8, 8)))  # sampler noise continues the image's own generator
    cpu = rng.ImageRNG((4, 8, 8), [7], source="CPU").first()
    assert not torch.allclose(cpu[0], first[0])


def test_nv_is_a_setting_and_written_into_the_infotext(sd1):
    from pathlib import Path

    from modules.sd_models import CheckpointInfo, LoadedModel

    assert "NV" in Options().info("randn_source").choices
    loaded = LoadedModel(info=CheckpointInfo(Path("/x/tiny.safetensors"), "tiny.safetensors", "ab" * 32),
                         components=sd1, vae_name="None")
    req = engine.GenerationRequest(prompt="a circle", steps=3, width=64, height=64, seed=3,
                                       sampler_name="Euler a", save_images=False)
    res = engine.generate(loaded, req, {**Options().snapshot(), "randn_source": "NV"})
    assert ", RNG: NV, " in res.infotexts[0]


def test_a_pasted_infotext_without_rng_means_nv():
    """A1111's rule: an infotext without "RNG" was made with the GPU source, whose numbers NV reproduces anywhere."""
    assert infotext.settings_from_params({"Steps": "20"}) == {"randn_source": "NV"}
    assert infotext.settings_from_params({"RNG": "CPU"}) == {"randn_source": "CPU"}
    # A1111's parser fills a missing RNG in as "GPU" (and A1111 never writes "RNG: GPU")
    assert infotext.settings_from_params({"RNG": "GPU", "Clip skip": "2"}) == {"randn_source": "NV",
                                                                               "CLIP_stop_at_last_layers": "2"}
    params = infotext.parse_generation_parameters("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    assert infotext.settings_from_params(params)["randn_source"] == "NV"
