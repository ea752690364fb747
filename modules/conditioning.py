"""Text conditioning: prompt -> cross-attention context (and SDXL's pooled vector).

Behaviour follows AUTOMATIC1111's webui (``sd_hijack_clip`` / ``sd_emphasis``);
the facts are theirs, the code is ours.

Tokens and chunks
    The prompt is split by :func:`modules.prompt_parser.parse_prompt_attention`
    into ``(text, weight)`` fragments; each fragment is tokenized without
    special tokens and every token carries its fragment's weight.  Tokens are
    packed into chunks of 75.  Each chunk is encoded as 77 ids::

        [BOS] t1 .. tk [EOS] [EOS ...]          SD1 / SDXL's CLIP-L (pad = EOS 49407)
        [BOS] t1 .. tk [EOS] [0 ...]            SD2 / SDXL's OpenCLIP-G (pad = "!" = 0)

    (the text part is first padded with EOS; for a pad id other than EOS every
    id after the first EOS is then replaced by the pad id).  BOS, EOS and
    padding have weight 1.0.  An empty prompt is one chunk.  ``BREAK`` closes
    the current chunk (padding it).  When a chunk is full and the token that
    does not fit is not a comma, the tokens after the last comma of the chunk
    move to the next chunk, provided that comma is at most
    ``comma_padding_backtrack`` tokens from the end (0 turns this off).

Textual-inversion embeddings
    An embedding is used where the token ids of its name appear inside one
    fragment (longest name first among names that start with the same id).
    It takes ``num_vectors`` positions (token id 0) whose input token
    embeddings are replaced by its vectors (a forward hook on the
    token-embedding module of that one text-encoder instance, registered only
    during our call and acting only on our input ids).  An embedding never
    straddles chunks: if it does not fit, the current chunk is closed and it
    starts the next one.  When comma backtracking moves an embedding to the
    next chunk its vectors move with it (A1111 leaves them behind at the old
    offset, a bug not reproduced).

Emphasis (per chunk, per text encoder, after the encoder)
    ``"Original"``: ``z *= w`` per token, then ``z *= mean_before / mean_after``
    (means over the whole chunk tensor).  ``"No norm"``: multiply only.
    ``"Ignore"``: brackets are parsed (and removed) but weights are not applied.
    ``"None"``: no parsing at all; brackets and ``BREAK`` are literal text.
    Chunks whose weights are all 1 are left untouched (identical result, and no
    0/0 on an all-zero output).

Layers
    Which hidden layer each encoder gives is its family's rule (``TextEncoderSlot.layer`` in
    :mod:`modules.families`): SD 1.x ``final_layer_norm(hidden_states[-clip_skip])``; SD 2.x
    OpenCLIP-H's penultimate layer + final layer norm whatever the clip skip (as A1111, whose
    OpenCLIP wrapper ignores the setting; a 23-layer encoder is a diffusers conversion that
    already dropped the last layer); SDXL both encoders ``hidden_states[-2]`` without the final
    norm, concatenated on features (768 + 1280), clip skip ignored unless ``sdxl_clip_l_skip``
    (A1111 option) lets it pick CLIP-L's layer.  The slot marked ``pooled`` (SDXL's OpenCLIP-G)
    gives the pooled vector: its projected output (``text_embeds``) of the first chunk.
    Families with ``zero_empty_negative`` (SDXL) encode a negative prompt that is all empty
    (``is_negative=True``) to zeros, context and pooled alike (A1111's
    ``force_zero_negative_prompt``).

Differences between positive and negative lengths: :func:`pad_to_same_length`
appends the encoding of the empty prompt (one 77-token chunk) to the shorter
contexts, as A1111 does with "Pad prompt/negative prompt" on.  (With that
option off — A1111's default — A1111 instead runs the UNet separately for cond
and uncond; that choice belongs to the sampler.)

Within one call of ``encode`` each distinct text is encoded once; results are
also kept in a small LRU per conditioner keyed by the text and the settings.
Returned tensors are shared with that cache: do not modify them in place.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

CHUNK_LENGTH = 75
EMPHASIS_MODES = ("None", "Ignore", "Original", "No norm")
_LRU_SIZE = 32


# --------------------------------------------------------------------------- data


@dataclass
class EmbeddingVectors:
    """A textual-inversion embedding.

    ``vectors`` maps an encoder key to a ``(n, dim)`` tensor: ``"clip_l"`` for
    the first (or only) text encoder, ``"clip_g"`` for SDXL's OpenCLIP-G.  A
    single-encoder embedding (SD1 768, SD2 1024) uses ``"clip_l"``.
    """

    name: str
    vectors: dict[str, torch.Tensor]
    shorthash: str | None = None  # for the "TI hashes" infotext

    @property
    def num_vectors(self) -> int:
        for vec in self.vectors.values():
            return int(vec.shape[0]) if vec.ndim > 1 else 1
        return 0


@dataclass
class Chunk:
    """75 token ids of a prompt (BOS/EOS not included), their weights, and the
    embeddings to insert: ``fixes`` holds ``(offset, embedding)`` with offset
    counted within these 75 (the encoder input position is ``offset + 1``)."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, EmbeddingVectors]] = field(default_factory=list)

    def ids(self, bos: int, eos: int, pad: int) -> list[int]:
        """The 77 encoder input ids: BOS, tokens, EOS; after the first EOS every id
        becomes ``pad`` (no-op when pad == eos)."""
        out = [bos] + list(self.tokens) + [eos]
        if pad != eos:
            first = out.index(eos)
            out[first + 1:] = [pad] * (len(out) - first - 1)
        return out

    def weights(self) -> list[float]:
        return [1.0] + list(self.multipliers) + [1.0]


@dataclass
class Cond:
    context: torch.Tensor            # (1, 77 * chunks, dim)
    pooled: torch.Tensor | None      # (1, proj_dim) for SDXL, else None

    @property
    def chunks(self) -> int:
        return self.context.shape[1] // (CHUNK_LENGTH + 2)


@dataclass
class _Encoder:
    key: str          # "clip_l" | "clip_g" (embedding vector set)
    model: Any        # CLIPTextModel or CLIPTextModelWithProjection
    pad_id: int
    layer: Any        # the family's layer rule (TextEncoderSlot.layer)
    pooled: bool      # take text_embeds of the first chunk


def _core(model):
    """The module holding embeddings/encoder/final_layer_norm."""
    return model.text_model if hasattr(model, "text_model") else model


def _num_layers(model) -> int:
    return int(model.config.num_hidden_layers)


# --------------------------------------------------------------------------- conditioner


class TextConditioner:
    """Turns prompts into :class:`Cond` for one loaded model (see module doc)."""

    def __init__(self, components, *, clip_skip: int = 1, emphasis: str = "Original",
                 comma_padding_backtrack: int = 20,
                 embeddings: dict[str, EmbeddingVectors] | None = None,
                 device=None, dtype=None, sdxl_clip_l_skip: bool = False):
        from modules import families

        spec = components.spec
        family = families.family_of(spec)
        self.zero_empty_negative = family.zero_empty_negative
        self.clip_skip = int(clip_skip)
        self.emphasis = emphasis
        self.comma_padding_backtrack = int(comma_padding_backtrack)
        self.sdxl_clip_l_skip = bool(sdxl_clip_l_skip)
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype

        slots = family.text_encoders(family.variant(spec.arch))
        toks = [_slot_value(components, "tokenizers", slot.tokenizer) for slot in slots]
        self.tokenizer = next((t for t in toks if t is not None), None)  # all CLIP BPE: one vocabulary
        self.encoders: list[_Encoder] = []
        for slot, tok in zip(slots, toks):
            model = _slot_value(components, "text_encoders", slot.attr)
            if model is None:
                raise ValueError(f"{spec.arch} conditioning needs {slot.attr}")
            self.encoders.append(_Encoder(slot.embedding_key, model, _pad_id(tok or self.tokenizer), slot.layer,
                                          slot.pooled))
        if self.tokenizer is None:
            raise ValueError("conditioning needs a tokenizer")
        self.id_start = int(self.tokenizer.bos_token_id)
        self.id_end = int(self.tokenizer.eos_token_id)
        self.comma_token = self.tokenizer.get_vocab().get(",</w>")

        self.used_embeddings: set[str] = set()
        self.skipped_embeddings: dict[str, str] = {}
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple, tuple[list[Cond], frozenset[str]]] = OrderedDict()
        self.set_embeddings(embeddings or {})

    # ----------------------------------------------------------------- settings

    @property
    def context_dim(self) -> int:
        return sum(int(e.model.config.hidden_size) for e in self.encoders)

    def set_embeddings(self, embeddings: dict[str, EmbeddingVectors]) -> None:
        """Replace the embedding set.  Embeddings whose vectors do not fit the
        encoders are left out and listed in ``skipped_embeddings`` (name -> why)."""
        usable: dict[str, EmbeddingVectors] = {}
        skipped: dict[str, str] = {}
        for key, emb in embeddings.items():
            why = self._embedding_problem(emb)
            if why:
                skipped[emb.name or key] = why
            else:
                usable[emb.name or key] = emb
        lookup: dict[int, list[tuple[list[int], EmbeddingVectors]]] = {}
        for name, emb in usable.items():
            ids = self._tokenize([name])[0]
            if not ids:
                skipped[name] = "name has no tokens"
                continue
            lookup.setdefault(ids[0], []).append((ids, emb))
        for first in lookup:  # stable: equal lengths keep registration order
            lookup[first].sort(key=lambda entry: len(entry[0]), reverse=True)
        with self._lock:
            self.embeddings = usable
            self.skipped_embeddings = skipped
            self._ids_lookup = lookup
            self._cache.clear()

    def _embedding_problem(self, emb: EmbeddingVectors) -> str | None:
        if emb.num_vectors < 1:
            return "no vectors"
        for enc in self.encoders:
            vec = emb.vectors.get(enc.key)
            if vec is None:
                return f"no {enc.key} vectors"
            dim = int(enc.model.config.hidden_size)
            if vec.ndim != 2 or vec.shape[-1] != dim:
                return f"{enc.key} vectors have shape {tuple(vec.shape)}, the model needs (n, {dim})"
            if vec.shape[0] != emb.num_vectors:
                return "vector sets of different lengths"
        return None

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # ----------------------------------------------------------------- tokens

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), truncation=False, add_special_tokens=False,
                                                    verbose=False)["input_ids"]]

    def _find_embedding(self, tokens: list[int], position: int):
        for ids, emb in self._ids_lookup.get(tokens[position], ()):
            if tokens[position:position + len(ids)] == ids:
                return emb, len(ids)
        return None, 0

    def _tokenize_line(self, line: str) -> tuple[list[Chunk], int]:
        """(chunks, token count) for one prompt, as A1111's tokenize_line."""
        if self.emphasis != "None":
            from modules.prompt_parser import parse_prompt_attention

            parsed = parse_prompt_attention(line)
        else:
            parsed = [[line, 1.0]]
        tokenized = self._tokenize([text for text, _ in parsed])

        chunks: list[Chunk] = []
        chunk = Chunk()
        count = 0
        last_comma = -1
        n = CHUNK_LENGTH
        backtrack = self.comma_padding_backtrack

        def close(is_last: bool = False) -> None:
            nonlocal chunk, count, last_comma
            count += len(chunk.tokens) if is_last else n
            missing = n - len(chunk.tokens)
            if missing > 0:
                chunk.tokens += [self.id_end] * missing
                chunk.multipliers += [1.0] * missing
            last_comma = -1
            chunks.append(chunk)
            chunk = Chunk()

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                close()
                continue
            weight = float(weight)
            pos = 0
            while pos < len(tokens):
                token = tokens[pos]
                if token == self.comma_token:
                    last_comma = len(chunk.tokens)
                elif (backtrack != 0 and len(chunk.tokens) == n and last_comma != -1
                      and len(chunk.tokens) - last_comma <= backtrack):
                    cut = last_comma + 1
                    moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                    moved_fixes = [(off - cut, e) for off, e in chunk.fixes if off >= cut]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    chunk.fixes = [(off, e) for off, e in chunk.fixes if off < cut]
                    close()
                    chunk.tokens, chunk.multipliers, chunk.fixes = moved_tokens, moved_mults, moved_fixes
                if len(chunk.tokens) == n:
                    close()

                emb, name_len = self._find_embedding(tokens, pos)
                if emb is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(weight)
                    pos += 1
                    continue
                k = emb.num_vectors
                if len(chunk.tokens) + k > n:
                    close()
                chunk.fixes.append((len(chunk.tokens), emb))
                chunk.tokens += [0] * k
                chunk.multipliers += [weight] * k
                pos += name_len

        if chunk.tokens or not chunks:
            close(is_last=True)
        return chunks, count

    def tokenize_chunks(self, text: str) -> list[Chunk]:
        return self._tokenize_line(text)[0]

    def token_count(self, text: str, steps: int | None = None, is_positive: bool = True) -> tuple[int, int]:
        """(tokens used, tokens available = 75 * chunks), A1111's "85/150" counter.

        ``<kind:...>`` extra-network tags are removed first.  With ``steps`` the
        prompt is also split on AND (positive prompts) and expanded into its
        prompt-editing schedule, and the longest text counts, as A1111's UI does.
        No text encoder is run.
        """
        from modules import prompt_parser

        text, _ = prompt_parser.parse_extra_networks(text)
        texts = [text]
        if steps is not None:
            try:
                flat = prompt_parser.get_multicond_prompt_list([text])[1] if is_positive else [text]
                schedules = prompt_parser.get_learned_conditioning_prompt_schedules(flat, int(steps))
                texts = [t for schedule in schedules for _, t in schedule] or [text]
            except Exception:
                texts = [text]
        best = max((self._tokenize_line(t)[1] for t in texts), default=0)
        return best, math.ceil(max(best, 1) / CHUNK_LENGTH) * CHUNK_LENGTH

    # ----------------------------------------------------------------- encoding

    def _cache_key(self, kind: str, texts) -> tuple:
        return (kind, texts, self.clip_skip, self.emphasis, self.comma_padding_backtrack,
                self.sdxl_clip_l_skip, self.device, self.dtype)

    def encode(self, texts: list[str], *, is_negative: bool = False, joint: bool = False) -> list[Cond]:
        """One :class:`Cond` per text.

        ``is_negative``: for SDXL models, a list of only empty texts gives zeros.
        ``joint=True`` reproduces A1111's batched call exactly (it encodes a
        prompt's edit schedule this way): every text gets as many chunks as the
        longest (empty-chunk padding) and the "Original" emphasis takes its
        means over all texts of a chunk position together.  Default: each
        distinct text alone.
        """
        texts = [str(t) for t in texts]
        if not texts:
            return []
        if is_negative and self.zero_empty_negative and all(t == "" for t in texts):
            return [self._zero_cond() for _ in texts]
        if joint:
            return list(self._cached(("joint", tuple(texts)), lambda: self._encode_group(texts)))
        out: dict[str, Cond] = {}
        for text in texts:
            if text not in out:
                out[text] = self._cached(("one", text), lambda t=text: self._encode_group([t]))[0]
        return [out[t] for t in texts]

    def empty_cond(self) -> Cond:
        """The encoding of the empty prompt (one chunk), used for padding."""
        return self.encode([""])[0]

    def _cached(self, ident: tuple, compute) -> list[Cond]:
        key = self._cache_key(*ident)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.used_embeddings |= hit[1]
                return hit[0]
        conds, used = compute()
        with self._lock:
            self._cache[key] = (conds, used)
            while len(self._cache) > _LRU_SIZE:
                self._cache.popitem(last=False)
            self.used_embeddings |= used
        return conds

    def _zero_cond(self) -> Cond:
        dtype = self.dtype or self.encoders[0].model.dtype
        device = self.device or self.encoders[0].model.device
        context = torch.zeros(1, CHUNK_LENGTH + 2, self.context_dim, dtype=dtype, device=device)
        g = self.encoders[-1].model
        pooled = torch.zeros(1, int(g.config.projection_dim), dtype=dtype, device=device)
        return Cond(context, pooled)

    def _encode_group(self, texts: list[str]) -> tuple[list[Cond], frozenset[str]]:
        """Encode texts together, A1111 style: chunk position by chunk position,
        shorter texts padded with empty chunks, emphasis over the batch."""
        per_text = [self._tokenize_line(t)[0] for t in texts]
        used = frozenset(e.name for chunks in per_text for c in chunks for _, e in c.fixes)
        n_chunks = max(len(c) for c in per_text)
        empty = Chunk([self.id_end] * CHUNK_LENGTH, [1.0] * CHUNK_LENGTH, [])
        # grid[i][b]: chunk i of text b
        grid = [[chunks[i] if i < len(chunks) else empty for chunks in per_text] for i in range(n_chunks)]
        flat = [c for row in grid for c in row]

        contexts, pooled = [], None
        for enc in self.encoders:
            z, pool = self._run_encoder(enc, flat)  # (n_chunks * B, 77, C) float32
            z = z.view(n_chunks, len(texts), CHUNK_LENGTH + 2, -1)
            parts = []
            for i, row in enumerate(grid):
                w = torch.tensor([c.weights() for c in row], dtype=torch.float32, device=z.device)
                parts.append(self._emphasis(z[i], w))
            contexts.append(torch.cat(parts, dim=1))  # (B, 77 * n_chunks, C)
            if enc.pooled:
                pooled = pool.view(n_chunks, len(texts), -1)[0]  # first chunk of each text
        context = torch.cat(contexts, dim=-1)
        dtype = self.dtype or self.encoders[0].model.dtype
        context = context.to(device=self.device or context.device, dtype=dtype)
        if pooled is not None:
            pooled = pooled.to(device=self.device or pooled.device, dtype=dtype)
        conds = [Cond(context[b:b + 1].clone(), None if pooled is None else pooled[b:b + 1].clone())
                 for b in range(len(texts))]
        return conds, used

    def _emphasis(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.emphasis in ("None", "Ignore") or bool((w == 1.0).all()):
            return z
        scaled = z * w.reshape(w.shape + (1,)).expand(z.shape)
        if self.emphasis == "No norm":
            return scaled
        before, after = z.mean(), scaled.mean()
        return scaled * (before / after)

    def _layer(self, enc: _Encoder) -> tuple[int, bool]:
        """(hidden_states index or 0 for last_hidden_state, apply final layer norm)."""
        return enc.layer(_num_layers(enc.model), self.clip_skip, {"sdxl_clip_l_skip": self.sdxl_clip_l_skip})

    @torch.no_grad()
    def _run_encoder(self, enc: _Encoder, chunks: list[Chunk]):
        model = enc.model
        device = model.device
        if device.type == "meta":  # parameters offloaded; the offload hooks place inputs
            device = self.device or torch.device("cpu")
        ids = torch.tensor([c.ids(self.id_start, self.id_end, enc.pad_id) for c in chunks],
                           dtype=torch.long, device=device)
        index, final_norm = self._layer(enc)
        core = _core(model)
        fixes = [(b, off, e) for b, c in enumerate(chunks) for off, e in c.fixes]
        handle = None
        if fixes:
            shape = tuple(ids.shape)

            def insert_vectors(module, args, output):
                # only our own input (offload hooks may have moved it to another device)
                if not args or not torch.is_tensor(args[0]) or tuple(args[0].shape) != shape \
                        or not torch.equal(args[0], ids.to(args[0].device)):
                    return None
                output = output.clone()
                for b, off, emb in fixes:
                    vec = emb.vectors[enc.key].to(device=output.device, dtype=output.dtype)
                    n = min(shape[1] - off - 1, vec.shape[0])
                    output[b, off + 1:off + 1 + n] = vec[:n]
                return output

            handle = core.embeddings.token_embedding.register_forward_hook(insert_vectors)
        try:
            out = model(input_ids=ids, output_hidden_states=index != 0)
        finally:
            if handle is not None:
                handle.remove()
        if index == 0:
            z = out.last_hidden_state
        else:
            z = out.hidden_states[index]
            if final_norm:
                z = core.final_layer_norm(z)
        pooled = out.text_embeds.float() if enc.pooled else None
        return z.float(), pooled

    # ----------------------------------------------------------------- infotext

    def infotext_params(self, texts: list[str]) -> dict[str, str]:
        """A1111's extra generation params from conditioning: "Emphasis" when a
        non-default mode meets brackets, "TI hashes" for used embeddings with a hash."""
        params = {}
        if self.emphasis != "Original" and any("(" in t or "[" in t for t in texts):
            params["Emphasis"] = self.emphasis
        hashes = []
        for name in sorted(self.used_embeddings):
            emb = self.embeddings.get(name)
            if emb is not None and emb.shorthash:
                hashes.append(f"{name.replace(':', '').replace(',', '')}: {emb.shorthash}")
        if hashes:
            params["TI hashes"] = ", ".join(hashes)
        return params


# --------------------------------------------------------------------------- helpers


def pad_to_same_length(conditioner: TextConditioner, conds: list[Cond]) -> list[Cond]:
    """Make all contexts as long as the longest by appending the empty prompt's
    encoding (77 tokens) as often as needed, as A1111's "Pad prompt/negative
    prompt" does.  Pooled vectors are unchanged.  New Cond objects are returned
    for the padded ones; the others are returned as they are."""
    if not conds:
        return []
    longest = max(c.context.shape[1] for c in conds)
    if all(c.context.shape[1] == longest for c in conds):
        return list(conds)
    empty = conditioner.empty_cond().context
    out = []
    for c in conds:
        missing = longest - c.context.shape[1]
        if missing == 0:
            out.append(c)
            continue
        if missing % empty.shape[1]:
            raise ValueError(f"context lengths {c.context.shape[1]} and {longest} are not whole chunks apart")
        pad = empty.to(device=c.context.device, dtype=c.context.dtype)
        pad = pad.repeat(c.context.shape[0], missing // empty.shape[1], 1)
        out.append(Cond(torch.cat([c.context, pad], dim=1), c.pooled))
    return out


def _pad_id(tokenizer) -> int:
    if tokenizer is None:
        return 49407
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def _slot_value(components, table: str, key: str):
    """components.<table>[key] (SDComponents), or the attribute of that name (a stand-in object)."""
    values = getattr(components, table, None)
    if isinstance(values, dict):
        return values.get(key)
    return getattr(components, key, None)


_TOKEN_COUNTER: TextConditioner | None = None
_TOKEN_COUNTER_LOCK = threading.Lock()


def count_tokens_without_model(text: str, steps: int | None = None) -> tuple[int, int]:
    """The prompt-box counter before any model is loaded: the shipped CLIP tokenizer, no text encoder."""
    global _TOKEN_COUNTER
    with _TOKEN_COUNTER_LOCK:
        if _TOKEN_COUNTER is None:
            from types import SimpleNamespace

            from modules import families, model_formats

            base = families.default().base
            fake_encoder = SimpleNamespace(config=SimpleNamespace(hidden_size=768))
            comps = SimpleNamespace(spec=SimpleNamespace(family=base.family, arch=base.name),
                                    text_encoder=fake_encoder, tokenizer=model_formats.load_tokenizer())
            _TOKEN_COUNTER = TextConditioner(comps)
        counter = _TOKEN_COUNTER
    return counter.token_count(text, steps)
