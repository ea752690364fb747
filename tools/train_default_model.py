"""Train the shipped default model (sd-shapes-64) on the synthetic shapes world, on CPU.

Stable Diffusion 1.x architecture at toy scale: KL autoencoder (8x downsampling, 4 latent channels),
CLIP text encoder (real CLIP BPE tokenizer, 128 wide, 2 layers) and a cross-attention UNet, trained
with the SD noise schedule (scaled_linear 0.00085..0.012, 1000 steps, epsilon prediction).

Phases (each seeded from --seed, so they give the same result run together or one by one):
  vae     train the autoencoder (L1 + L2 reconstruction, 5x weight on the object's pixels, tiny KL),
          then measure it: the classifier must name colour and shape of its
          round trips at >= 98% (--vae-gate) or the script stops.  (With --phase all, up to two
          continuations of 800 steps from the saved autoencoder run first, as `--phase vae
          --vae-resume --vae-steps 800 --vae-lr 4e-4 --vae-warmup 20` would.)
  unet    encode the training images with the frozen autoencoder, compute the latent scaling
          factor (1 / std), train UNet and text encoder together (10% empty captions, for CFG).
  export  write models/Stable-diffusion/sd-shapes-64.safetensors (float16, LDM layout) with
          modules.model_formats.save_checkpoint and check that it reads back to the same weights.
  all     the three in order.

Usage:  python tools/train_default_model.py --phase all --seed 0
Everything intermediate goes to work/ (git-ignored); the log is printed to stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules import synthetic_world as world  # noqa: E402

OUTPUT_NAME = "sd-shapes-64.safetensors"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Model definitions
# ---------------------------------------------------------------------------------------------

def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.18215,  # replaced by the measured value before saving
    )


def make_unet(width: int = 64, layers: int = 2):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(width, width * 2, width * 2),
        layers_per_block=layers,
        attention_head_dim=8,  # SD 1.x: this is the number of heads
        cross_attention_dim=128,
        norm_num_groups=32,
        use_linear_projection=False,
    )


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,  # hidden // 64, what SD checkpoint loaders infer
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=128,
    )
    return CLIPTextModel(cfg)


def make_scheduler_config() -> dict:
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

def build_tokenizer_files(dest: Path) -> Path:
    """vocab.json + merges.txt of the CLIP BPE in dest, from the open-clip-torch wheel's vocab file.

    The wheel is only downloaded (pip download --no-deps open-clip-torch -d /tmp/oc), never installed.
    """
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    if (dest / "vocab.json").exists() and (dest / "merges.txt").exists():
        return dest
    wheels = sorted(Path("/tmp/oc").glob("open_clip_torch-*.whl"))
    if not wheels:
        raise SystemExit("no tokenizer: configs/tokenizer/ is missing and /tmp/oc has no open-clip-torch wheel")
    with zipfile.ZipFile(wheels[-1]) as zf:
        name = next(n for n in zf.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
        text = gzip.decompress(zf.read(name)).decode("utf-8")
    merges = text.split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    # byte -> unicode table of GPT-2/CLIP BPE
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (dest / "tokenizer_config.json").write_text(json.dumps(
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}, indent=1))
    return dest


def load_tokenizer(work: Path):
    from transformers import CLIPTokenizer

    repo_dir = ROOT / "configs" / "tokenizer"
    if (repo_dir / "vocab.json").exists() and (repo_dir / "merges.txt").exists():
        src = repo_dir
    else:
        src = build_tokenizer_files(work / "tokenizer_files")
    tok = CLIPTokenizer.from_pretrained(str(src), local_files_only=True)
    if tok("a red circle").input_ids != [49406, 320, 736, 7117, 49407]:
        raise SystemExit(f"tokenizer in {src} does not produce CLIP BPE ids")
    log(f"tokenizer from {src}: 'a red circle' -> {tok('a red circle').input_ids}")
    return tok


def tokenize(tok, captions: list[str]) -> torch.Tensor:
    return tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def object_weights(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights (N, 1, H, W): 1 on the background, 1 + weight on the object and a 2-pixel
    rim around it.  The background is the colour of the top-left pixel (no object reaches the corners).
    Small objects are a few percent of the pixels; without this their corners are what the loss neglects."""
    obj = ((x - x[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 0.05).float()
    obj = F.max_pool2d(obj, 5, stride=1, padding=2)
    return 1.0 + weight * obj


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up then cosine decay to floor * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def schedule(step: int, total: int, minutes: float | None, peak: float, warmup: int, t_loop: float) -> float | None:
    """Learning rate for this step, or None when training is over.

    Fixed-step mode (minutes None): warm-up then cosine over ``total`` steps; reproducible from the seed.
    Time-budget mode: the cosine runs over wall-clock time instead and training stops when the budget
    is spent; the number of steps done is logged (it depends on the machine's load, so such a run is
    only approximately reproducible)."""
    if minutes is None:
        return lr_at(step, total, peak, warmup) if step < total else None
    frac = (time.time() - t_loop) / (minutes * 60)
    if frac >= 1.0:
        return None
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))


def vae_roundtrip_accuracy(vae, images: np.ndarray, scenes, batch: int = 100) -> tuple[float, float, float]:
    """(colour accuracy, shape accuracy, mean abs pixel error) of the classifier on vae round trips."""
    ok_c = ok_s = 0
    err = 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_tensor(images[i : i + batch])
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
            out = to_uint8(rec)
            err += float(np.abs(out.astype(np.float32) - images[i : i + batch]).mean()) * len(out)
            for im, sc in zip(out, scenes[i : i + batch]):
                c, s = world.classify(im)
                ok_c += c == sc.colour
                ok_s += s == sc.shape
    n = len(images)
    return ok_c / n, ok_s / n, err / n


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------

def phase_vae(args, work: Path) -> dict:
    t0 = time.time()
    torch.manual_seed(args.seed)
    images, _, _ = world.make_dataset(args.vae_images, args.seed * 1000 + 1)
    held_images, _, held_scenes = world.make_dataset(args.vae_check, args.seed * 1000 + 2)
    data = to_tensor(images)
    if args.vae_resume:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(work / "vae")  # continue an earlier vae phase
        log(f"vae: continuing from {work / 'vae'}")
    else:
        vae = make_vae()
    nparams = sum(p.numel() for p in vae.parameters())
    log(f"vae: {nparams/1e6:.2f}M params, {args.vae_steps} steps of batch {args.vae_batch}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed * 1000 + 3)
    vae.train()
    t_loop = time.time()
    total = args.vae_steps
    step = 0
    while True:
        lr = schedule(step, total, args.vae_minutes, args.vae_lr, args.vae_warmup, t_loop)
        if lr is None:
            break
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.randint(0, len(data), (args.vae_batch,), generator=g)
        x = data[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        if args.vae_object_weight:
            w = object_weights(x, args.vae_object_weight)
            l1 = ((rec - x).abs() * w).sum() / (w.sum() * x.shape[1])
            l2 = (((rec - x) ** 2) * w).sum() / (w.sum() * x.shape[1])
        else:
            l1 = (rec - x).abs().mean()
            l2 = ((rec - x) ** 2).mean()
        kl = post.kl().mean()  # summed over latent elements, averaged over the batch
        loss = l1 + l2 + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            el = time.time() - t_loop
            log(f"vae step {step:5d} l1 {l1.item():.4f} l2 {l2.item():.4f} kl {kl.item():.1f} "
                f"lr {opt.param_groups[0]['lr']:.2e} ({el/(step+1):.2f}s/step, {el/60:.1f} min)")
        step += 1
    log(f"vae: {step} steps in {(time.time() - t_loop) / 60:.1f} min")
    vae.eval()
    acc_c, acc_s, err = vae_roundtrip_accuracy(vae, held_images, held_scenes)
    log(f"vae round trips on {len(held_images)} held-out images: colour {acc_c:.1%} shape {acc_s:.1%} "
        f"mean abs error {err:.2f}/255")
    vae.save_pretrained(work / "vae")
    info = {"vae_seconds": time.time() - t0, "vae_params": nparams, "vae_steps_done": step, "vae_roundtrip_colour": acc_c,
            "vae_roundtrip_shape": acc_s, "vae_roundtrip_abs_err": err}
    (work / "vae_summary.json").write_text(json.dumps(info, indent=1))
    if min(acc_c, acc_s) < args.vae_gate:
        raise GateNotMet(f"autoencoder round trips below {args.vae_gate:.0%}")
    log(f"vae phase done in {info['vae_seconds']/60:.1f} min")
    return info


class GateNotMet(Exception):
    pass


def phase_vae_gated(args, work: Path) -> dict:
    """The autoencoder phase, then up to --vae-extend-rounds continuations (each --vae-extend-steps at
    peak --vae-extend-lr, from the saved autoencoder, exactly as `--phase vae --vae-resume` would run them)
    while its round trips miss the gate.  Fine detail (the corners of small squares and triangles) is what
    the first pass tends to miss.  Stops the run when the gate is still not met: the UNet is never trained
    on latents that lose colour or shape."""
    import copy

    run_args, seconds = args, 0.0
    for round_no in range(args.vae_extend_rounds + 1):
        try:
            info = phase_vae(run_args, work)
            info["vae_seconds"] += seconds
            info["vae_extension_rounds"] = round_no
            return info
        except GateNotMet as e:
            summary = json.loads((work / "vae_summary.json").read_text())
            seconds += summary["vae_seconds"]
            if round_no == args.vae_extend_rounds:
                log(f"STOP: {e}; not training the UNet on these latents")
                raise SystemExit(2) from None
            log(f"{e}: continuing the autoencoder for {args.vae_extend_steps} steps (round {round_no + 1})")
            run_args = copy.copy(args)
            run_args.vae_resume, run_args.vae_steps, run_args.vae_minutes = True, args.vae_extend_steps, None
            run_args.vae_lr, run_args.vae_warmup = args.vae_extend_lr, 20
    raise AssertionError("unreachable")


def phase_unet(args, work: Path) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler

    t0 = time.time()
    torch.manual_seed(args.seed + 1)
    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    tok = load_tokenizer(work)
    images, captions, _ = world.make_dataset(args.unet_images, args.seed * 1000 + 11)

    # Encode once; keep mean and std of the posterior so each step can draw a fresh latent sample.
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 250):
            post = vae.encode(to_tensor(images[i : i + 250])).latent_dist
            means.append(post.mean)
            stds.append(post.std)
    means, stds = torch.cat(means), torch.cat(stds)
    g = torch.Generator().manual_seed(args.seed * 1000 + 12)
    sample = means + stds * torch.randn(means.shape, generator=g)
    scaling = float(1.0 / sample.std())
    latent_mean = float(sample.mean())
    log(f"encoded {len(images)} images in {time.time()-t0:.0f}s; latent std {sample.std():.4f} mean {latent_mean:.4f}"
        f" -> scaling factor {scaling:.5f}")
    ids = tokenize(tok, captions)
    empty_ids = tokenize(tok, [""])[0]

    unet = make_unet(args.unet_width, args.unet_layers)
    te = make_text_encoder()
    n_unet = sum(p.numel() for p in unet.parameters())
    n_te = sum(p.numel() for p in te.parameters())
    log(f"unet {n_unet/1e6:.2f}M params, text encoder {n_te/1e6:.2f}M params; {args.unet_steps} steps of batch {args.unet_batch}")
    sched = DDPMScheduler.from_config(make_scheduler_config())
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    unet.train()
    te.train()
    t_loop = time.time()
    ema_loss = None
    total = args.unet_steps
    step = 0
    while True:
        lr = schedule(step, total, args.unet_minutes, args.unet_lr, args.unet_warmup, t_loop)
        if lr is None:
            break
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.randint(0, len(images), (args.unet_batch,), generator=g)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scaling
        tokens = ids[idx].clone()
        drop = torch.rand(args.unet_batch, generator=g) < args.uncond_prob
        tokens[drop] = empty_ids
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, 1000, (args.unet_batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        cond = te(tokens).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        # min-SNR-gamma weighting (gamma 5) for epsilon prediction
        w = torch.clamp(snr[t], max=args.min_snr) / snr[t]
        loss = (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0:
            el = time.time() - t_loop
            log(f"unet step {step:5d} loss {loss.item():.4f} (avg {ema_loss:.4f}) lr {lr:.2e} "
                f"({el/(step+1):.2f}s/step, {el/60:.1f} min)")
        step += 1
    log(f"unet: {step} steps in {(time.time() - t_loop) / 60:.1f} min")
    unet.eval()
    te.eval()
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(work / "final" / "vae")
    unet.save_pretrained(work / "final" / "unet")
    te.save_pretrained(work / "final" / "text_encoder")
    tok.save_pretrained(work / "final" / "tokenizer")
    (work / "final" / "scheduler").mkdir(parents=True, exist_ok=True)
    (work / "final" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDPMScheduler", **make_scheduler_config()}, indent=1))
    info = {"unet_seconds": time.time() - t0, "unet_steps_done": step, "unet_params": n_unet, "text_encoder_params": n_te,
            "scaling_factor": scaling, "latent_mean": latent_mean, "final_loss_avg": ema_loss}
    (work / "unet_summary.json").write_text(json.dumps(info, indent=1))
    log(f"unet phase done in {info['unet_seconds']/60:.1f} min")
    return info


def phase_export(args, work: Path) -> dict:
    import shutil

    from modules import model_formats as mf

    final = work / "final"
    # work/final is a diffusers folder; the lead's loader gives SDComponents with a matching spec.
    shutil.copyfile(ROOT / "configs" / "sd1" / "model_index.json", final / "model_index.json")
    comps = mf.load_diffusers_folder(final, dtype=torch.float16)
    out = Path(args.output)
    scaling = float(comps.vae.config.scaling_factor)
    metadata = {
        "sd_webui_config": json.dumps({"scaling_factor": scaling, "native_resolution": 64, "prediction_type": "epsilon"}),
        "modelspec.title": "sd-shapes-64",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.resolution": "64x64",
        "modelspec.description": "Tiny SD 1.x-architecture model trained on synthetic coloured shapes (64x64).",
        "training_seed": str(args.seed),
    }
    mf.save_checkpoint(out, comps, metadata)
    size_mb = out.stat().st_size / 1e6
    log(f"wrote {out} ({size_mb:.1f} MB)")
    if size_mb >= 40:
        raise SystemExit(f"checkpoint too large: {size_mb:.1f} MB")
    # Round trip: read back, detect, build, and compare with the float16 weights we wrote.
    sd, md = mf.read_state_dict(out)
    spec = mf.detect_architecture(sd, md)
    log(f"detect_architecture: arch {spec.arch}, prediction {spec.prediction_type}, scaling {spec.scaling_factor}, "
        f"resolution {spec.native_resolution}")
    if spec.arch != "sd1" or spec.prediction_type != "epsilon" or abs(spec.scaling_factor - scaling) > 1e-6:
        raise SystemExit("round trip: wrong architecture / prediction type / scaling factor")
    built = mf.build_components(sd, spec)
    worst = 0.0
    for name in ("unet", "vae", "text_encoder"):
        ref = getattr(comps, name).state_dict()
        got = getattr(built, name).state_dict()
        if set(ref) != set(got):
            raise SystemExit(f"round trip: {name} keys differ: {sorted(set(ref) ^ set(got))[:5]}")
        for k, v in ref.items():
            worst = max(worst, float((got[k].float() - v.float()).abs().max()))
    log(f"round trip max abs weight difference: {worst:g}")
    if worst > 0:
        raise SystemExit("round trip: weights differ")
    return {"checkpoint_mb": size_mb, "roundtrip_max_diff": worst, "arch": spec.arch,
            "prediction_type": spec.prediction_type, "scaling_factor_read_back": spec.scaling_factor}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=("all", "vae", "unet", "export"), default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "work"))
    p.add_argument("--output", default=str(ROOT / "models" / "Stable-diffusion" / OUTPUT_NAME))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-warmup", type=int, default=60)
    p.add_argument("--vae-resume", action="store_true", help="continue training the autoencoder saved in work/vae")
    p.add_argument("--vae-minutes", type=float, default=None, help="wall-clock budget instead of --vae-steps")
    p.add_argument("--unet-minutes", type=float, default=None, help="wall-clock budget instead of --unet-steps")
    p.add_argument("--unet-layers", type=int, default=2)
    p.add_argument("--vae-kl", type=float, default=1e-6)
    p.add_argument("--vae-images", type=int, default=20000)
    p.add_argument("--vae-check", type=int, default=500)
    p.add_argument("--vae-gate", type=float, default=0.98)
    p.add_argument("--vae-extend-rounds", type=int, default=2, help="continuations while the gate is not met")
    p.add_argument("--vae-extend-steps", type=int, default=800)
    p.add_argument("--vae-extend-lr", type=float, default=4e-4)
    p.add_argument("--vae-object-weight", type=float, default=4.0,
                   help="extra loss weight on object pixels (0: plain mean over all pixels)")
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--unet-warmup", type=int, default=200)
    p.add_argument("--unet-width", type=int, default=64)
    p.add_argument("--unet-images", type=int, default=20000)
    p.add_argument("--uncond-prob", type=float, default=0.1)
    p.add_argument("--min-snr", type=float, default=5.0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log(f"args: {vars(args)}")
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    t0 = time.time()
    summary = {"args": vars(args)}
    if args.phase == "all":
        summary.update(phase_vae_gated(args, work))
    elif args.phase == "vae":
        try:
            summary.update(phase_vae(args, work))
        except GateNotMet as e:
            log(f"STOP: {e}; not training the UNet on these latents")
            return 2
    if args.phase in ("all", "unet"):
        summary.update(phase_unet(args, work))
    if args.phase in ("all", "export"):
        summary.update(phase_export(args, work))
    summary["total_seconds"] = time.time() - t0
    summary["load_average_end"] = os.getloadavg()
    (work / f"summary_{args.phase}.json").write_text(json.dumps(summary, indent=1, default=str))
    log("SUMMARY " + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
