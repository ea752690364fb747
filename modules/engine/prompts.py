"""The conditioning stage: a job's prompts prepared (styles, comments, extra-network tags), split into
A1111's per-step schedules and ``AND`` sub-prompts, and encoded by the model's text encoders.

A prompt becomes a list of :class:`WeightedSchedule` (one per ``AND`` part, with its weight); each
schedule is a list of (last step, text) entries for prompt editing (``[from:to:when]``).  Each
schedule's texts are encoded together, as A1111 does, into :class:`EncodedPrompts`, which the CFG
denoiser reads at every call.
"""
from __future__ import annotations

from dataclasses import dataclass

from modules import prompt_parser
from modules.engine.context import JobContext, JobPrompts


@dataclass(frozen=True)
class ScheduleEntry:
    end_step: int    # this text is used up to and including this (0-based) denoiser call
    text: str


@dataclass(frozen=True)
class WeightedSchedule:
    weight: float
    entries: tuple[ScheduleEntry, ...]


@dataclass
class EncodedSchedule:
    weight: float
    entries: tuple[ScheduleEntry, ...]
    conds: list            # conditioning.Cond per entry

    def at(self, call: int):
        """A1111's rule: the first entry whose end step is >= the current (0-based) denoiser call."""
        for entry, cond in zip(self.entries, self.conds):
            if call <= entry.end_step:
                return cond
        return self.conds[-1]


@dataclass
class EncodedPrompts:
    positive: list[EncodedSchedule]     # the AND sub-prompts
    negative: EncodedSchedule

    @property
    def plain(self) -> bool:
        """A single sub-prompt of weight 1 (CFG scale 1 then needs no unconditional pass)."""
        return len(self.positive) == 1 and self.positive[0].weight == 1.0


def apply_styles(prompt: str, negative: str, styles: list[str], style_db: dict | None) -> tuple[str, str]:
    """A style's text replaces `{prompt}` if present, else is appended with ', '."""
    for name in styles or []:
        st = (style_db or {}).get(name)
        if st is None:
            continue
        prompt = _merge_style(prompt, st.get("prompt", ""))
        negative = _merge_style(negative, st.get("negative_prompt", ""))
    return prompt, negative


def _merge_style(text: str, style: str) -> str:
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return style if not text.strip() else f"{text}, {style}"


def prepare(ctx: JobContext) -> JobPrompts:
    """The job's prompts: styles merged, ``#`` comments removed, extra-network tags taken out."""
    req = ctx.request
    prompt, negative = apply_styles(req.prompt, req.negative_prompt, req.styles, ctx.styles)
    if ctx.opts.get("enable_prompt_comments", True):
        prompt, negative = prompt_parser.strip_comments(prompt), prompt_parser.strip_comments(negative)
    prompt_clean, networks = prompt_parser.parse_extra_networks(prompt)
    negative_clean, negative_networks = prompt_parser.parse_extra_networks(negative)
    if negative_networks:
        ctx.warn("extra-network tags in the negative prompt have no effect; they were ignored")
    return JobPrompts(prompt, negative, prompt_clean, negative_clean, networks)


def schedules(prompt: str, steps: int, hires_steps: int | None = None) -> list[WeightedSchedule]:
    """The AND sub-prompts of ``prompt``, each with its prompt-editing schedule over ``steps``."""
    out = []
    for text, weight in prompt_parser.split_and(prompt):
        sched = prompt_parser.get_learned_conditioning_prompt_schedules([text], steps, hires_steps)[0]
        out.append(WeightedSchedule(weight, tuple(ScheduleEntry(int(end), t) for end, t in sched)))
    return out


def conditioner(ctx: JobContext):
    """The model's TextConditioner for the job's settings, from the app's cache (one at a time)."""
    from modules import conditioning

    emphasis = ctx.opts.get("emphasis", "Original")
    backtrack = int(ctx.opts.get("comma_padding_backtrack", 20))
    key = (id(ctx.components), ctx.clip_skip, emphasis, backtrack, id(ctx.embeddings))
    cond = ctx.conditioners.get(key)
    if cond is None:
        ctx.conditioners.clear()
        cond = conditioning.TextConditioner(ctx.components, clip_skip=ctx.clip_skip, emphasis=emphasis,
                                            comma_padding_backtrack=backtrack, embeddings=ctx.embeddings,
                                            device=ctx.device, dtype=ctx.dtype)
        ctx.conditioners[key] = cond
    return cond


def encode(ctx: JobContext, prompt: str, negative: str, steps: int, hires_steps: int | None = None) -> EncodedPrompts:
    """Encode a pass's prompt and negative prompt (each schedule's texts in one batch, as A1111)."""
    enc = conditioner(ctx)
    positive = [EncodedSchedule(s.weight, s.entries, enc.encode([e.text for e in s.entries], joint=True))
                for s in schedules(prompt, steps, hires_steps)]
    neg = schedules(negative, steps, hires_steps)[0]
    negative_enc = EncodedSchedule(1.0, neg.entries, enc.encode([e.text for e in neg.entries], joint=True,
                                                                is_negative=True))
    encoded = EncodedPrompts(positive, negative_enc)
    ctx.hooks.fire("after_conditioning", ctx, encoded)
    return encoded
