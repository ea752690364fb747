"""modules.conditioning: A1111 chunking, emphasis, clip skip, embeddings, SDXL, diffusers agreement.

Tiny random text encoders (3 layers, 32 features) built here; only the
tokenizer comes from configs/tokenizer.  No UNet/VAE is needed.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from modules import model_formats as mf
from modules.conditioning import (Chunk, Cond, EmbeddingVectors, TextConditioner, pad_to_same_length)

BOS, EOS = 49406, 49407
A, B, CAT, DOG, COMMA = 320, 321, 2368, 1929, 267
H = 32


# --------------------------------------------------------------------------- fixtures


def _text_model(seed: int, projection: bool, act: str):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=H, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act=act,
                         projection_dim=H, bos_token_id=BOS, eos_token_id=EOS,
                         pad_token_id=1)
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)
    with torch.no_grad():  # make norms and biases non-trivial
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def toks():
    eos_pad = mf.load_tokenizer("<|endoftext|>")
    bang_pad = mf.load_tokenizer("!")
    return eos_pad, bang_pad


def _comps(family, toks, seed=0):
    eos_pad, bang_pad = toks
    spec = SimpleNamespace(family=family, arch=family)
    if family == "sd1":
        return SimpleNamespace(spec=spec, text_encoder=_text_model(seed, False, "quick_gelu"),
                               text_encoder_2=None, tokenizer=eos_pad, tokenizer_2=None)
    if family == "sd2":
        return SimpleNamespace(spec=spec, text_encoder=_text_model(seed, False, "gelu"),
                               text_encoder_2=None, tokenizer=bang_pad, tokenizer_2=None)
    return SimpleNamespace(spec=spec, text_encoder=_text_model(seed, False, "quick_gelu"),
                           text_encoder_2=_text_model(seed + 1, True, "gelu"),
                           tokenizer=eos_pad, tokenizer_2=bang_pad)


@pytest.fixture(scope="module")
def sd1(toks):
    return _comps("sd1", toks)


@pytest.fixture(scope="module")
def sd2(toks):
    return _comps("sd2", toks)


@pytest.fixture(scope="module")
def sdxl(toks):
    return _comps("sdxl", toks)


def ids77(tokens, pad=EOS):
    out = [BOS] + list(tokens) + [EOS]
    return torch.tensor([out + [pad] * (77 - len(out))])


@torch.no_grad()
def hidden(model, ids):
    return model(input_ids=ids, output_hidden_states=True)


def close(a, b, tol=1e-6):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= tol, (a - b).abs().max().item()


# --------------------------------------------------------------------------- chunking


def test_exactly_75_tokens_is_one_chunk_76_is_two(sd1):
    tc = TextConditioner(sd1)
    one = tc.tokenize_chunks("a " * 75)
    assert len(one) == 1 and one[0].tokens == [A] * 75
    two = tc.tokenize_chunks("a " * 76)
    assert len(two) == 2
    assert two[0].tokens == [A] * 75
    assert two[1].tokens == [A] + [EOS] * 74
    assert two[1].multipliers == [1.0] * 75
    assert tc.encode(["a " * 76])[0].context.shape == (1, 154, H)


def test_empty_prompt_is_one_padded_chunk(sd1):
    tc = TextConditioner(sd1)
    chunks = tc.tokenize_chunks("")
    assert len(chunks) == 1 and chunks[0].tokens == [EOS] * 75
    assert tc.token_count("") == (0, 75)


def test_break_closes_chunk(sd1):
    tc = TextConditioner(sd1)
    chunks = tc.tokenize_chunks("a BREAK b")
    assert [c.tokens[:2] for c in chunks] == [[A, EOS], [B, EOS]]
    assert tc.token_count("a BREAK b") == (76, 150)
    # BREAK as the first word still closes the (empty) first chunk, as A1111
    assert [c.tokens[0] for c in tc.tokenize_chunks("BREAK a")] == [EOS, A]


def test_comma_backtrack_moves_words_after_last_comma(sd1):
    text = "a " * 70 + ", " + "b " * 10  # comma is token 70; the chunk fills at b #4
    tc = TextConditioner(sd1)
    c1, c2 = tc.tokenize_chunks(text)
    assert c1.tokens == [A] * 70 + [COMMA] + [EOS] * 4
    assert c2.tokens == [B] * 10 + [EOS] * 65
    assert tc.token_count(text) == (85, 150)


def test_comma_backtrack_zero_or_too_far_disables(sd1):
    text = "a " * 70 + ", " + "b " * 10
    for backtrack in (0, 4):  # 0 = off; 4 < distance 5 from the comma to the chunk end
        c1, c2 = TextConditioner(sd1, comma_padding_backtrack=backtrack).tokenize_chunks(text)
        assert c1.tokens == [A] * 70 + [COMMA] + [B] * 4
        assert c2.tokens == [B] * 6 + [EOS] * 69
    c1, _ = TextConditioner(sd1, comma_padding_backtrack=5).tokenize_chunks(text)
    assert c1.tokens[-5:] == [COMMA] + [EOS] * 4


def test_comma_that_overflows_starts_next_chunk(sd1):
    c1, c2 = TextConditioner(sd1).tokenize_chunks("a " * 75 + ", b")
    assert c1.tokens == [A] * 75
    assert c2.tokens[:3] == [COMMA, B, EOS]


def test_weights_per_token(sd1):
    c, = TextConditioner(sd1).tokenize_chunks("(a:1.5) [cat] dog")
    assert c.tokens[:4] == [A, CAT, DOG, EOS]
    assert c.multipliers[:4] == pytest.approx([1.5, 1 / 1.1, 1.0, 1.0])
    assert c.weights()[0] == 1.0 and len(c.weights()) == 77


def test_emphasis_none_keeps_brackets_and_break_literal(sd1):
    c, = TextConditioner(sd1, emphasis="None").tokenize_chunks("(a:1.5) BREAK b")
    assert c.tokens[0] == 263 and 2568 in c.tokens and set(c.multipliers) == {1.0}


def test_token_count(sd1):
    tc = TextConditioner(sd1)
    assert tc.token_count("a photo of a cat") == (5, 75)
    assert tc.token_count("a " * 80) == (80, 150)
    assert tc.token_count("a " * 150) == (150, 150)
    assert tc.token_count("<lora:foo:0.8> a cat") == (2, 75)
    # AND parts / schedules counted separately with steps, longest wins
    assert tc.token_count("a AND b cat dog", steps=20) == (3, 75)
    assert tc.token_count("a AND b cat dog") == (5, 75)


# --------------------------------------------------------------------------- encoder layers and pads


def test_sd1_plain_prompt_is_last_hidden_state(sd1):
    cond = TextConditioner(sd1).encode(["a cat"])[0]
    assert cond.pooled is None
    ref = hidden(sd1.text_encoder, ids77([A, CAT])).last_hidden_state
    close(cond.context, ref, 0.0)


@pytest.mark.parametrize("skip", [2, 3])
def test_sd1_clip_skip_uses_hidden_layer_with_final_norm(sd1, skip):
    cond = TextConditioner(sd1, clip_skip=skip).encode(["a cat"])[0]
    out = hidden(sd1.text_encoder, ids77([A, CAT]))
    ref = sd1.text_encoder.final_layer_norm(out.hidden_states[-skip])
    close(cond.context, ref, 0.0)
    assert (cond.context - out.last_hidden_state).abs().max() > 1e-3


def test_sd2_pads_with_zero_and_uses_penultimate_layer(sd2):
    tc = TextConditioner(sd2)
    chunk, = tc.tokenize_chunks("a cat")
    assert chunk.ids(BOS, EOS, tc.encoders[0].pad_id) == [BOS, A, CAT, EOS] + [0] * 73
    out = hidden(sd2.text_encoder, ids77([A, CAT], pad=0))
    ref = sd2.text_encoder.final_layer_norm(out.hidden_states[-2])
    for skip in (1, 2, 4):  # A1111 ignores clip skip for SD2
        close(TextConditioner(sd2, clip_skip=skip).encode(["a cat"])[0].context, ref, 0.0)


def test_sd1_pads_with_eos(sd1):
    tc = TextConditioner(sd1)
    chunk, = tc.tokenize_chunks("a cat")
    assert chunk.ids(BOS, EOS, tc.encoders[0].pad_id) == [BOS, A, CAT] + [EOS] * 74


def test_sdxl_concat_and_pooled(sdxl):
    cond = TextConditioner(sdxl, clip_skip=2).encode(["a cat"])[0]
    assert cond.context.shape == (1, 77, 2 * H) and cond.pooled.shape == (1, H)
    l = hidden(sdxl.text_encoder, ids77([A, CAT]))
    g = hidden(sdxl.text_encoder_2, ids77([A, CAT], pad=0))
    close(cond.context[..., :H], l.hidden_states[-2], 0.0)
    close(cond.context[..., H:], g.hidden_states[-2], 0.0)
    close(cond.pooled, g.text_embeds, 0.0)


def test_sdxl_pooled_comes_from_first_chunk(sdxl):
    text = "a " * 75 + "cat"
    cond = TextConditioner(sdxl).encode([text])[0]
    assert cond.context.shape == (1, 154, 2 * H)
    # chunks run as one batch: equal up to float rounding of batched matmuls
    g = hidden(sdxl.text_encoder_2, ids77([A] * 75, pad=0))
    close(cond.pooled, g.text_embeds, 1e-5)
    g2 = hidden(sdxl.text_encoder_2, ids77([CAT], pad=0))
    close(cond.context[:, 77:, H:], g2.hidden_states[-2], 1e-5)


def test_sdxl_clip_l_skip_option(sdxl):
    cond = TextConditioner(sdxl, clip_skip=3, sdxl_clip_l_skip=True).encode(["a cat"])[0]
    l = hidden(sdxl.text_encoder, ids77([A, CAT]))
    close(cond.context[..., :H], l.hidden_states[-3], 0.0)
    g = hidden(sdxl.text_encoder_2, ids77([A, CAT], pad=0))
    close(cond.context[..., H:], g.hidden_states[-2], 0.0)


def test_sdxl_empty_negative_is_zeros(sdxl, sd1):
    neg = TextConditioner(sdxl).encode([""], is_negative=True)[0]
    assert neg.context.shape == (1, 77, 2 * H) and not neg.context.any()
    assert neg.pooled.shape == (1, H) and not neg.pooled.any()
    assert TextConditioner(sdxl).encode([""])[0].context.abs().sum() > 0
    assert TextConditioner(sd1).encode([""], is_negative=True)[0].context.abs().sum() > 0


# --------------------------------------------------------------------------- emphasis


def _manual_emphasis(z, w, norm=True):
    scaled = z * w[None, :, None]
    return scaled * (z.mean() / scaled.mean()) if norm else scaled


def test_original_emphasis_restores_mean(sd1):
    cond = TextConditioner(sd1).encode(["(a:1.5) [cat]"])[0]
    z = hidden(sd1.text_encoder, ids77([A, CAT])).last_hidden_state
    w = torch.ones(77)
    w[1], w[2] = 1.5, 1 / 1.1
    close(cond.context, _manual_emphasis(z, w), 1e-6)
    close(cond.context.mean(), z.mean(), 1e-6)


def test_no_norm_and_ignore(sd1):
    z = hidden(sd1.text_encoder, ids77([A, CAT])).last_hidden_state
    w = torch.ones(77)
    w[1] = 1.5
    no_norm = TextConditioner(sd1, emphasis="No norm").encode(["(a:1.5) cat"])[0]
    close(no_norm.context, _manual_emphasis(z, w, norm=False), 1e-6)
    ignore = TextConditioner(sd1, emphasis="Ignore").encode(["(a:1.5) cat"])[0]
    close(ignore.context, z, 0.0)


def test_sdxl_emphasis_is_per_encoder(sdxl):
    cond = TextConditioner(sdxl).encode(["(a:1.5) cat"])[0]
    w = torch.ones(77)
    w[1] = 1.5
    l = hidden(sdxl.text_encoder, ids77([A, CAT])).hidden_states[-2]
    g = hidden(sdxl.text_encoder_2, ids77([A, CAT], pad=0)).hidden_states[-2]
    close(cond.context[..., :H], _manual_emphasis(l, w), 1e-6)
    close(cond.context[..., H:], _manual_emphasis(g, w), 1e-6)


def test_emphasis_mean_is_per_chunk(sd1):
    text = "a " * 75 + "(cat:1.3)"
    cond = TextConditioner(sd1).encode([text])[0]
    z1 = hidden(sd1.text_encoder, ids77([A] * 75)).last_hidden_state
    z2 = hidden(sd1.text_encoder, ids77([CAT])).last_hidden_state
    w = torch.ones(77)
    w[1] = 1.3
    close(cond.context[:, :77], z1, 1e-5)
    close(cond.context[:, 77:], _manual_emphasis(z2, w), 1e-5)
    # the mean restore uses chunk 2's own mean, not the whole prompt's
    close(cond.context[:, 77:].mean(), z2.mean(), 1e-6)


def test_joint_mode_pads_and_shares_the_mean(sd1):
    tc = TextConditioner(sd1)
    j1, j2 = tc.encode(["(a:1.5) cat", "a " * 76], joint=True)
    assert j1.context.shape == j2.context.shape == (1, 154, H)
    z = hidden(sd1.text_encoder, torch.cat([ids77([A, CAT]), ids77([A] * 75)])).last_hidden_state
    w = torch.ones(2, 77)
    w[0, 1] = 1.5
    scaled = z * w[..., None]
    ref = scaled * (z.mean() / scaled.mean())
    close(j1.context[:, :77], ref[:1], 1e-6)
    close(j2.context[:, :77], ref[1:], 1e-6)
    empty = hidden(sd1.text_encoder, ids77([])).last_hidden_state
    close(j1.context[:, 77:], empty, 1e-5)


# --------------------------------------------------------------------------- embeddings


def _with_rows(model, rows: dict[int, torch.Tensor]):
    """A copy of ``model`` whose token-embedding rows ``rows`` are replaced."""
    m = copy.deepcopy(model)
    emb = (m.text_model if hasattr(m, "text_model") else m).embeddings.token_embedding
    with torch.no_grad():
        for i, v in rows.items():
            emb.weight[i] = v
    return m


def test_embedding_vectors_replace_inputs(sd1):
    torch.manual_seed(5)
    vec = torch.randn(2, H)
    emb = EmbeddingVectors("zqx", {"clip_l": vec})
    tc = TextConditioner(sd1, embeddings={"zqx": emb})
    chunk, = tc.tokenize_chunks("a zqx cat")
    assert chunk.tokens[:5] == [A, 0, 0, CAT, EOS]
    assert [(off, e.name) for off, e in chunk.fixes] == [(1, "zqx")]
    assert tc.token_count("a zqx cat") == (4, 75)
    cond = tc.encode(["a zqx cat"])[0]
    ref_model = _with_rows(sd1.text_encoder, {100: vec[0], 101: vec[1]})
    ref = hidden(ref_model, ids77([A, 100, 101, CAT])).last_hidden_state
    close(cond.context, ref, 1e-6)
    assert tc.used_embeddings == {"zqx"}
    # the model itself is untouched afterwards (hook removed)
    plain = hidden(sd1.text_encoder, ids77([A, 0, 0, CAT])).last_hidden_state
    assert (plain - ref).abs().max() > 1e-3


def test_embedding_that_does_not_fit_starts_next_chunk(sd1):
    emb = EmbeddingVectors("zqx", {"clip_l": torch.randn(3, H)})
    tc = TextConditioner(sd1, embeddings={"zqx": emb})
    c1, c2 = tc.tokenize_chunks("a " * 73 + "zqx b")
    assert c1.tokens == [A] * 73 + [EOS] * 2 and c1.fixes == []
    assert c2.tokens[:5] == [0, 0, 0, B, EOS]
    assert [off for off, _ in c2.fixes] == [0]
    assert tc.token_count("a " * 73 + "zqx b") == (79, 150)


def test_longest_embedding_name_wins(sd1):
    short = EmbeddingVectors("style", {"clip_l": torch.randn(1, H)})
    long = EmbeddingVectors("style-x", {"clip_l": torch.randn(4, H)})
    tc = TextConditioner(sd1, embeddings={"style": short, "style-x": long})
    chunk, = tc.tokenize_chunks("style-x style")
    assert [(off, e.name) for off, e in chunk.fixes] == [(0, "style-x"), (4, "style")]
    assert chunk.tokens[:6] == [0, 0, 0, 0, 0, EOS]


def test_sdxl_embedding_uses_both_vector_sets(sdxl):
    torch.manual_seed(6)
    vl, vg = torch.randn(1, H), torch.randn(1, H)
    tc = TextConditioner(sdxl, embeddings={"zqx": EmbeddingVectors("zqx", {"clip_l": vl, "clip_g": vg}),
                                           "emb": EmbeddingVectors("emb", {"clip_l": vl})})
    assert "emb" in tc.skipped_embeddings and "emb" not in tc.embeddings
    cond = tc.encode(["zqx cat"])[0]
    l = hidden(_with_rows(sdxl.text_encoder, {100: vl[0]}), ids77([100, CAT])).hidden_states[-2]
    g = hidden(_with_rows(sdxl.text_encoder_2, {100: vg[0]}), ids77([100, CAT], pad=0))
    close(cond.context[..., :H], l, 1e-6)
    close(cond.context[..., H:], g.hidden_states[-2], 1e-6)
    close(cond.pooled, g.text_embeds, 1e-6)


# --------------------------------------------------------------------------- diffusers agreement


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(steps_offset=1)


def test_matches_diffusers_sd1_encode_prompt(sd1):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=None, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer, unet=None,
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    prompt = "a photo of an astronaut riding a horse on mars"
    ref, _ = pipe.encode_prompt(prompt, torch.device("cpu"), 1, False)
    close(TextConditioner(sd1).encode([prompt])[0].context, ref, 1e-5)
    # (diffusers 0.42's clip_skip path reads text_encoder.text_model, which transformers 5
    # CLIPTextModel no longer has; clip skip is checked against hidden_states above.)


def test_matches_diffusers_sdxl_encode_prompt(sdxl):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=sdxl.text_encoder, text_encoder_2=sdxl.text_encoder_2,
                                     tokenizer=sdxl.tokenizer, tokenizer_2=sdxl.tokenizer_2, unet=None,
                                     scheduler=_scheduler(), add_watermarker=False)
    prompt = "a photo of an astronaut riding a horse on mars"
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, device=torch.device("cpu"), num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    cond = TextConditioner(sdxl).encode([prompt])[0]
    close(cond.context, embeds, 1e-5)
    close(cond.pooled, pooled, 1e-5)


# --------------------------------------------------------------------------- padding and caching


def test_pad_to_same_length(sd1):
    tc = TextConditioner(sd1)
    short, long = tc.encode(["a cat", "a " * 80])
    p_short, p_long = pad_to_same_length(tc, [short, long])
    assert p_long is long
    assert p_short.context.shape == (1, 154, H)
    close(p_short.context[:, :77], short.context, 0.0)
    close(p_short.context[:, 77:], tc.encode([""])[0].context, 0.0)
    same = pad_to_same_length(tc, [short, short])
    assert same[0] is short and same[1] is short


def test_pad_keeps_pooled(sdxl):
    tc = TextConditioner(sdxl)
    short, long = tc.encode(["a cat", "a " * 160])
    p_short, _ = pad_to_same_length(tc, [short, long])
    assert p_short.context.shape == (1, 231, 2 * H)
    assert p_short.pooled is short.pooled
    close(p_short.context[:, 154:], tc.empty_cond().context, 0.0)


def test_dedupe_and_lru(sd1):
    calls = []
    handle = sd1.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        tc = TextConditioner(sd1)
        a1, b1, a2 = tc.encode(["a", "b", "a"])
        assert len(calls) == 2 and a1 is a2 and a1 is not b1
        assert tc.encode(["a"])[0] is a1 and len(calls) == 2
        tc.clip_skip = 2
        assert tc.encode(["a"])[0] is not a1 and len(calls) == 3
    finally:
        handle.remove()


def test_chunk_ids_helper():
    c = Chunk([A] + [EOS] * 74, [1.0] * 75, [])
    assert c.ids(BOS, EOS, 0)[:4] == [BOS, A, EOS, 0]
    assert Cond(torch.zeros(1, 154, 4), None).chunks == 2


def test_backtrack_moves_embedding_with_its_vectors(sd1):
    emb = EmbeddingVectors("zqx", {"clip_l": torch.randn(2, H)})
    tc = TextConditioner(sd1, embeddings={"zqx": emb})
    c1, c2 = tc.tokenize_chunks("a " * 70 + ", b zqx b b b")
    assert c1.tokens == [A] * 70 + [COMMA] + [EOS] * 4 and c1.fixes == []
    assert c2.tokens[:6] == [B, 0, 0, B, B, B]
    assert [off for off, _ in c2.fixes] == [1]


def test_refiner_matches_diffusers(toks):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    full = _comps("sdxl", toks, seed=3)
    refiner = SimpleNamespace(spec=SimpleNamespace(family="sdxl", arch="sdxl-refiner"), text_encoder=None,
                              text_encoder_2=full.text_encoder_2, tokenizer=None, tokenizer_2=full.tokenizer_2)
    cond = TextConditioner(refiner).encode(["a photo of a cat"])[0]
    pipe = StableDiffusionXLImg2ImgPipeline(vae=None, text_encoder=None, text_encoder_2=full.text_encoder_2,
                                            tokenizer=None, tokenizer_2=full.tokenizer_2, unet=None,
                                            scheduler=_scheduler(), requires_aesthetics_score=True,
                                            add_watermarker=False)
    embeds, _, pooled, _ = pipe.encode_prompt("a photo of a cat", device=torch.device("cpu"),
                                              num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert cond.context.shape == (1, 77, H)
    close(cond.context, embeds, 1e-5)
    close(cond.pooled, pooled, 1e-5)


def test_output_dtype_and_infotext(sd1):
    emb = EmbeddingVectors("zqx", {"clip_l": torch.randn(1, H)}, shorthash="abcdef012345")
    tc = TextConditioner(sd1, emphasis="No norm", dtype=torch.float16, embeddings={"zqx": emb})
    cond = tc.encode(["(zqx:1.2) cat"])[0]
    assert cond.context.dtype == torch.float16
    assert tc.infotext_params(["(zqx:1.2) cat"]) == {"Emphasis": "No norm", "TI hashes": "zqx: abcdef012345"}
    assert TextConditioner(sd1).infotext_params(["(a) cat"]) == {}


def test_sd2_diffusers_layout_with_23_layers_uses_last_layer(toks):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=23,
                         num_attention_heads=1, max_position_embeddings=77, hidden_act="gelu",
                         bos_token_id=BOS, eos_token_id=EOS)
    model = CLIPTextModel(cfg).eval()
    comps = SimpleNamespace(spec=SimpleNamespace(family="sd2", arch="sd2"), text_encoder=model, tokenizer=toks[1])
    cond = TextConditioner(comps).encode(["a cat"])[0]
    close(cond.context, hidden(model, ids77([A, CAT], pad=0)).last_hidden_state, 0.0)
