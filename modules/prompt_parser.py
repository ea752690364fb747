"""A1111-compatible prompt syntax, in pure Python (no torch, no parser library).

The syntax (the facts of the format are AUTOMATIC1111's; the code is ours):

Attention / emphasis (:func:`parse_prompt_attention`)
    ``(x)`` multiplies the weight of ``x`` by 1.1, ``[x]`` divides it by 1.1,
    ``(x:1.3)`` multiplies it by 1.3.  Nesting multiplies.  Unclosed brackets
    run to the end of the text; stray closers are plain text.  ``\\(``,
    ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters, a backslash
    in front of anything else is dropped.  Neighbouring pieces with equal
    weights are merged.  ``BREAK`` (upper case, on word boundaries) produces a
    ``["BREAK", -1]`` entry.

Prompt editing and alternation (:func:`get_learned_conditioning_prompt_schedules`)
    ``[from:to:when]``, ``[to:when]``, ``[from::when]`` switch text at a step;
    ``[a|b|c]`` cycles through the options, one per step.  Both nest.  A prompt
    that does not fit the grammar is used literally, unscheduled.

Composition (:func:`get_multicond_prompt_list`, :func:`split_and`)
    ``a AND b :0.5`` splits into sub-prompts with optional weights.

Extra networks (:func:`parse_extra_networks`)
    ``<kind:name:arg...>`` tags are removed from the text and returned.

Comments (:func:`strip_comments`)
    ``#`` up to the end of the line (only when the setting is on).

The structured entry point for the engine is :func:`parse_prompt`, which runs
all of the above in A1111's order and returns a :class:`ParsedPrompt`.

No function here raises on any input string: text that cannot be parsed is
used literally.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = [
    "ExtraNetworkParams",
    "ParsedPrompt",
    "SubPrompt",
    "get_learned_conditioning_prompt_schedules",
    "get_multicond_prompt_list",
    "parse_extra_networks",
    "parse_prompt",
    "parse_prompt_attention",
    "reconstruct_schedule_at",
    "split_and",
    "strip_comments",
]

_FLOAT_MAX = sys.float_info.max


def _finite(x: float) -> float:
    """Clamp to the finite float range (A1111 would produce inf/nan there)."""
    if x > _FLOAT_MAX:
        return _FLOAT_MAX
    if x < -_FLOAT_MAX:
        return -_FLOAT_MAX
    return x


# ---------------------------------------------------------------------------
# Attention / emphasis
# ---------------------------------------------------------------------------

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# ":<number>)" closing a round bracket with an explicit weight; spaces allowed
# around the number.  (Unicode digits count, as in A1111.)
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
# BREAK as a whole word, swallowing the whitespace around it.
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")
_ATTENTION_SPECIAL = "\\()[]:"
_ESCAPABLE = "()[]\\"


def parse_prompt_attention(text: str) -> list[list[Any]]:
    """Split ``text`` into ``[piece, weight]`` pairs following A1111's rules.

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    >>> parse_prompt_attention('a BREAK b')
    [['a', 1.0], ['BREAK', -1], ['b', 1.0]]

    An empty text gives ``[['', 1.0]]``.  Differences from A1111 only where
    A1111 raises or overflows: a malformed weight such as ``(a:1.2.3)`` keeps
    the ``:`` as text (and the ``)`` closes with 1.1), and weights are clamped
    to the finite float range.
    """
    try:
        return _parse_attention(str(text))
    except Exception:  # pragma: no cover - defensive, should be unreachable
        return [[str(text), 1.0]]


def _parse_attention(text: str) -> list[list[Any]]:
    res: list[list[Any]] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for entry in res[start:]:
            entry[1] = _finite(entry[1] * factor)

    def add_text(piece: str) -> None:
        for k, part in enumerate(_BREAK_SPLIT.split(piece)):
            if k:
                res.append(["BREAK", -1])
            res.append([part, 1.0])

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            nxt = text[i + 1:i + 2]
            if nxt and nxt in _ESCAPABLE:
                res.append([nxt, 1.0])
                i += 2
            else:  # a lone backslash vanishes
                res.append(["", 1.0])
                i += 1
        elif c == "(":
            open_round.append(len(res))
            i += 1
        elif c == "[":
            open_square.append(len(res))
            i += 1
        elif c == ":":
            m = _WEIGHT_CLOSE.match(text, i)
            weight = None
            if m is not None:
                try:
                    weight = _finite(float(m.group(1)))
                except ValueError:
                    m = None
            if m is None:
                add_text(":")
                i += 1
            elif open_round:
                scale_from(open_round.pop(), weight)
                i = m.end()
            else:
                add_text(m.group(0))
                i = m.end()
        elif c == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
            i += 1
        elif c == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
            i += 1
        elif c in ")]":
            add_text(c)
            i += 1
        else:
            j = i + 1
            while j < n and text[j] not in _ATTENTION_SPECIAL:
                j += 1
            add_text(text[i:j])
            i = j

    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)

    if not res:
        return [["", 1.0]]

    merged = [res[0]]
    for entry in res[1:]:
        if entry[1] == merged[-1][1]:
            merged[-1][0] += entry[0]
        else:
            merged.append(entry)
    return merged


# ---------------------------------------------------------------------------
# Scheduling grammar ([from:to:when], [a|b]) — A1111's grammar, parsed by hand
# ---------------------------------------------------------------------------
#
# A1111 describes the syntax with this grammar (lark, Earley):
#
#   start      : (prompt | one of "[]():" as a literal character)*
#   prompt     : (emphasized | scheduled | alternate | plain | WHITESPACE)*
#   emphasized : "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
#   scheduled  : "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
#   alternate  : "[" prompt ("|" [prompt])+ "]"
#   plain      : ( any char but \ [ ] ( ) : |  or  backslash + any char but newline )+
#
# Inside a `prompt`, every bracket must open a construct, and what follows an
# opening bracket decides the construct, so a construct starting at a given
# position has at most one parse.  We compute it for every opening bracket
# from the end of the text backwards (inner constructs are known before outer
# ones, so there is no recursion and no depth limit).  Only the top level has
# choices: a bracket there is a construct or a literal character.  A forward
# pass records which prefixes parse; if the whole text does not ("|" outside
# an alternation, a backslash at the end or before a newline) the prompt is
# used literally.  Among the parses, we pick the one A1111's parser (lark's
# Earley with ambiguity="resolve") picks; see _ScheduleParser.parse.  This
# was checked against A1111's parser on several hundred thousand generated
# prompts.  Known limit: when a top-level run of stray brackets also holds
# the ends of constructs, lark's choice depends on its internal processing
# order, which we only approximate; about 1 in 1000 random bracket-heavy
# strings (and no realistic prompt we tried) gets a different parse there.

_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)"
)
_SPACES = re.compile(r"\s+")


class _Scheduled:
    """``[before:after:when]``; ``before`` is None for ``[after:when]``."""

    __slots__ = ("before", "after", "when")

    def __init__(self, before, after, when: str):
        self.before = before
        self.after = after
        self.when = when  # the NUMBER text, converted per call


class _Alternate:
    """``[a|b|...]``; each option is a node list (possibly empty)."""

    __slots__ = ("options",)

    def __init__(self, options):
        self.options = options


# A node list is a Python list whose items are str, nested node lists
# (emphasis keeps its brackets as text), _Scheduled or _Alternate.


class _ScheduleParser:
    def __init__(self, text: str):
        self.s = text
        self.n = len(text)
        self.constructs: list = [None] * self.n  # position -> (end, node) | None

    def scan_prompt(self, pos: int):
        """Parse a `prompt` from ``pos``; return (nodes, stop position)."""
        s, n, table = self.s, self.n, self.constructs
        nodes: list = []
        start = i = pos
        while i < n:
            c = s[i]
            if c == "\\":
                if i + 1 < n and s[i + 1] != "\n":
                    i += 2
                    continue
                break
            if c == "[" or c == "(":
                hit = table[i]
                if hit is None:
                    break
                if i > start:
                    nodes.append(s[start:i])
                i, node = hit
                nodes.append(node)
                start = i
                continue
            if c in "]):|":
                break
            i += 1
        if i > start:
            nodes.append(s[start:i])
        return nodes, i

    def number_tail(self, pos: int):
        """Match ``[WHITESPACE] NUMBER [WHITESPACE] "]"``; return (end, number)."""
        s = self.s
        m = _SPACES.match(s, pos)
        if m:
            pos = m.end()
        num = _NUMBER.match(s, pos)
        if num is None:
            return None
        pos = num.end()
        m = _SPACES.match(s, pos)
        if m:
            pos = m.end()
        if pos < self.n and s[pos] == "]":
            return pos + 1, num.group(0)
        return None

    def construct(self, pos: int):
        """The construct opening at ``pos`` as (end, node), or None."""
        s, n = self.s, self.n
        first, k = self.scan_prompt(pos + 1)
        if k >= n:
            return None
        stop = s[k]
        if s[pos] == "(":
            if stop == ")":
                return k + 1, ["(", first, ")"]
            if stop == ":":
                second, m = self.scan_prompt(k + 1)
                if m < n and s[m] == ")":
                    return m + 1, ["(", first, ":", second, ")"]
            return None
        if stop == "]":
            return k + 1, ["[", first, "]"]
        if stop == "|":
            options = [first]
            while True:
                option, m = self.scan_prompt(k + 1)
                options.append(option)
                if m >= n:
                    return None
                if s[m] == "|":
                    k = m
                    continue
                if s[m] == "]":
                    return m + 1, _Alternate(options)
                return None
        if stop == ":":
            tail = self.number_tail(k + 1)
            if tail is not None:
                return tail[0], _Scheduled(None, first, tail[1])
            second, m = self.scan_prompt(k + 1)
            if m < n and s[m] == ":":
                tail = self.number_tail(m + 1)
                if tail is not None:
                    return tail[0], _Scheduled(first, second, tail[1])
        return None

    def parse(self):
        """The node list for the whole text, or None if it does not parse."""
        s, n, table = self.s, self.n, self.constructs
        for i in range(n - 1, -1, -1):  # inner constructs before outer ones
            if s[i] == "[" or s[i] == "(":
                table[i] = self.construct(i)
        # end -> starts of the constructs ending there.  Several only when an
        # escaped bracket inside a construct also opens one ("[\\[a|b]"); at
        # most one of them is reachable from the left.
        ending_at: dict[int, list[int]] = {}
        for i, hit in enumerate(table):
            if hit is not None:
                ending_at.setdefault(hit[0], []).append(i)

        # ok[k]: the first k characters parse as top-level items.
        ok = bytearray(n + 1)
        ok[0] = 1
        for k in range(1, n + 1):
            c = s[k - 1]
            if c in _TOP_LITERAL or (c != "|" and c != "\\"):
                v = ok[k - 1]
            else:
                v = 0
            if not v and k >= 2 and s[k - 2] == "\\" and c != "\n":
                v = ok[k - 2]
            if not v and k in ending_at:
                v = any(ok[start] for start in ending_at[k])
            ok[k] = v
        if not ok[n]:
            return None

        # Pick the parse A1111's parser picks.  It settles the top-level items
        # from the right end: a prompt item (text, escape, construct) ending
        # here wins over literal bracket characters; when the item must be a
        # run of literal brackets, the run length follows the order of
        # _run_offsets.  A run can swallow the closing bracket of a construct,
        # which then stays literal text (e.g. "[a:2]]]" is not scheduled).
        first_text = 0
        while first_text < n and s[first_text] in _TOP_LITERAL:
            first_text += 1
        pieces: list = []  # right to left
        pos = n
        while pos > 0:
            if pos <= first_text:  # everything left is bracket characters
                pieces.append(s[:pos])
                break
            c = s[pos - 1]
            start = next((i for i in ending_at.get(pos, ()) if ok[i]), None)
            if start is not None:
                pieces.append(table[start][1])
                pos = start
            elif c not in _TOP_LITERAL and c != "|" and c != "\\" and ok[pos - 1]:
                pieces.append(c)
                pos -= 1
            elif pos >= 2 and s[pos - 2] == "\\" and c != "\n" and ok[pos - 2]:
                pieces.append(s[pos - 2:pos])
                pos -= 2
            else:  # c is a literal bracket character
                run = pos - 1
                while run > 0 and s[run - 1] in _TOP_LITERAL:
                    run -= 1
                while not ok[run]:  # the run starts where a prefix first parses
                    run += 1
                for offset in _run_offsets(pos - run):
                    if ok[run + offset]:
                        break
                pieces.append(s[run + offset:pos])
                pos = run + offset

        nodes: list = []
        text: list[str] = []
        for piece in reversed(pieces):
            if isinstance(piece, str):
                text.append(piece)
            else:
                if text:
                    nodes.append("".join(text))
                    text = []
                nodes.append(piece)
        if text:
            nodes.append("".join(text))
        return nodes


_TOP_LITERAL = "[]():"


def _run_offsets(length: int):
    """Order in which A1111's parser tries the start of a run of literal
    brackets (offsets from the start of the bracket run that ends here).

    Odd length: 0, then odd offsets downwards from length-2, even ones upwards
    from 2, then 1.  Even length: 1, even offsets downwards from length-2, odd
    ones upwards from 3, then 0.
    """
    if length % 2:
        yield 0
        yield from range(length - 2, 2, -2)
        yield from range(2, length, 2)
        if length > 1:
            yield 1
    else:
        yield 1
        yield from range(length - 2, 1, -2)
        yield from range(3, length, 2)
        yield 0


def _parse_schedule_tree(prompt: str):
    try:
        return _ScheduleParser(prompt).parse()
    except Exception:  # pragma: no cover - defensive
        return None


def _walk(nodes):
    """Yield every _Scheduled / _Alternate node of a tree (all branches)."""
    stack = [nodes]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, _Scheduled):
            if item.before is not None:
                stack.append(item.before)
            stack.append(item.after)
            yield item
        elif isinstance(item, _Alternate):
            stack.extend(item.options)
            yield item


def _render(nodes, step: int, when_of) -> str:
    """The text of a tree at ``step`` (iterative, so deep nesting is fine)."""
    out: list[str] = []
    stack = [iter(nodes)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                out.append(item)
                continue
            if isinstance(item, list):
                stack.append(iter(item))
            elif isinstance(item, _Scheduled):
                chosen = (item.before or ()) if step <= when_of(item) else item.after
                stack.append(iter(chosen))
            else:
                stack.append(iter(item.options[(step - 1) % len(item.options)]))
            break
        else:
            stack.pop()
    return "".join(out)


def _schedule_one(prompt: str, steps: int, int_offset: int, float_offset: float,
                  use_old_scheduling: bool) -> list[list[Any]]:
    tree = _parse_schedule_tree(prompt)
    if tree is None:
        return [[steps, prompt]]

    whens: dict[int, int] = {}

    def when_of(node: _Scheduled) -> int:
        key = id(node)
        if key not in whens:
            raw = node.when
            v = float(raw)
            if use_old_scheduling:
                if v < 1:
                    v = v * steps
            elif "." in raw:
                v = (v - float_offset) * steps
            else:
                v = v - int_offset
            # min(steps, int(v)) without int() overflowing on +-inf.
            if v >= steps:
                whens[key] = steps
            else:
                whens[key] = int(v) if v > -1e18 else -10 ** 18
        return whens[key]

    boundaries = {steps}
    for node in _walk(tree):
        if isinstance(node, _Alternate):
            boundaries.update(range(1, steps + 1))
        else:
            w = when_of(node)
            if w >= 1:
                boundaries.add(w)
    return [[t, _render(tree, t, when_of)] for t in sorted(boundaries)]


def get_learned_conditioning_prompt_schedules(prompts: Sequence[str], base_steps: int,
                                              hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list[Any]]]:
    """For each prompt, the list of ``[end_step, text]`` it goes through (A1111).

    ``text`` applies up to and including ``end_step``; the last ``end_step``
    is the number of steps of the pass.

    Step numbers of ``when`` in ``[from:to:when]``:

    * first pass (``hires_steps`` None): a number written with a "." is a
      fraction of ``base_steps`` (``int(when * base_steps)``), otherwise an
      absolute step; values are capped at ``base_steps``.
    * hires pass (``hires_steps`` given): the schedule counts the hires pass's
      own steps ``1..hires_steps``.  Fractions are offset by 1.0 (``1.5`` is
      half-way through the hires pass, anything below 1.0 is over before it
      starts) and integers by ``base_steps`` (``15`` with ``base_steps=10`` is
      hires step 5).
    * ``use_old_scheduling``: always ``base_steps``; a value below 1 is a
      fraction, anything else an absolute step.

    ``[a|b]`` makes every step a boundary; step ``t`` uses option
    ``(t - 1) % len(options)``.

    >>> get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)
    [[[3, 'a '], [10, 'a b']]]
    >>> get_learned_conditioning_prompt_schedules(["a [b:1.5] c"], 10, 10)
    [[[5, 'a  c'], [10, 'a b c']]]
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, float_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, float_offset, steps = base_steps, 1.0, hires_steps

    cache: dict[str, list[list[Any]]] = {}
    result = []
    for prompt in prompts:
        if prompt not in cache:
            try:
                cache[prompt] = _schedule_one(prompt, steps, int_offset, float_offset,
                                              use_old_scheduling)
            except Exception:  # pragma: no cover - defensive
                cache[prompt] = [[steps, prompt]]
        result.append([list(entry) for entry in cache[prompt]])
    return result


def reconstruct_schedule_at(schedule: Sequence[Sequence[Any]], step: int) -> Any:
    """The payload of the schedule entry in force at ``step``.

    ``schedule`` is a list of ``(end_step, payload)`` pairs as returned by
    :func:`get_learned_conditioning_prompt_schedules` (payload = text) or the
    engine's own ``(end_step, cond)`` pairs.  The first entry with
    ``step <= end_step`` wins, as in A1111 (note that A1111 passes its 0-based
    sampler step counter here).  A step past the last boundary returns the
    last entry (A1111 would fall back to the first).
    """
    if not schedule:
        raise ValueError("empty schedule")
    for end_step, payload in schedule:
        if step <= end_step:
            return payload
    return schedule[-1][1]


# ---------------------------------------------------------------------------
# AND (composable diffusion)
# ---------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
# "<text> : <weight>" at the very end of a sub-prompt.
_SUBPROMPT_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


def _split_subprompt(subprompt: str) -> tuple[str, float]:
    m = _SUBPROMPT_WEIGHT.match(subprompt)
    if m is None:  # pragma: no cover - the pattern always matches
        return subprompt, 1.0
    text, weight = m.group(1), m.group(2)
    return text, (_finite(float(weight)) if weight is not None else 1.0)


def _split_and_raw(prompt: str) -> list[tuple[str, float]]:
    return [_split_subprompt(part) for part in _AND.split(prompt)]


def get_multicond_prompt_list(prompts: Sequence[str]):
    """A1111's AND split of a batch of prompts.

    Returns ``(res_indexes, prompt_flat_list, prompt_indexes)``:
    ``res_indexes[i]`` lists ``(index, weight)`` for the sub-prompts of
    ``prompts[i]``; ``prompt_flat_list`` holds each distinct sub-prompt text
    once; ``prompt_indexes`` maps text -> index.  Sub-prompt texts keep their
    leading whitespace (trailing whitespace and the ``:weight`` are removed),
    as in A1111.
    """
    res_indexes = []
    prompt_flat_list: list[str] = []
    prompt_indexes: dict[str, int] = {}
    for prompt in prompts:
        indexes = []
        for text, weight in _split_and_raw(prompt):
            index = prompt_indexes.get(text)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Split on ``AND`` (upper case, whole word) into ``(text, weight)`` pairs.

    A sub-prompt may end with ``:weight`` (negative allowed); texts are
    stripped.  ``"a AND b :0.5"`` -> ``[("a", 1.0), ("b", 0.5)]``.
    """
    return [(text.strip(), weight) for text, weight in _split_and_raw(str(prompt))]


# ---------------------------------------------------------------------------
# Extra networks and comments
# ---------------------------------------------------------------------------

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """The arguments of one ``<kind:arg1:arg2...>`` tag.

    ``items`` holds the colon-separated strings (name first);
    ``positional`` those without exactly one ``=``; ``named`` the
    ``key=value`` ones (``<lora:x:te=0.5:unet=1>``).
    """

    def __init__(self, items: Sequence[str] | None = None):
        self.items: list[str] = list(items or [])
        self.positional: list[str] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            parts = item.split("=", 2)
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        if not isinstance(other, ExtraNetworkParams):
            return NotImplemented
        return self.items == other.items

    def __repr__(self):
        return f"ExtraNetworkParams(items={self.items!r})"


def parse_extra_networks(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """Remove ``<kind:args>`` tags; return (clean prompt, {kind: [params...]}).

    ``kind`` is one or more word characters, ``args`` anything up to ``>``,
    split on ``:``.  Tags are removed without touching the text around them.
    """
    found: dict[str, list[ExtraNetworkParams]] = {}

    def take(m: re.Match) -> str:
        found.setdefault(m.group(1), []).append(ExtraNetworkParams(m.group(2).split(":")))
        return ""

    clean = _EXTRA_NETWORK.sub(take, str(prompt))
    return clean, found


def strip_comments(text: str) -> str:
    """Remove ``#`` comments: from ``#`` to the end of the line.

    A line that starts with ``#`` disappears with its line break.  (A1111 can
    leave an extra line break behind; the difference is whitespace only.)
    """
    lines = []
    for line in str(text).split("\n"):
        if line.startswith("#"):
            continue
        cut = line.find("#")
        lines.append(line if cut < 0 else line[:cut])
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Structured API for the engine
# ---------------------------------------------------------------------------


@dataclass
class SubPrompt:
    """One AND-separated part of a prompt."""

    text: str  # as A1111 encodes it (leading whitespace kept, ":weight" removed)
    weight: float
    schedule: list[tuple[int, str]]  # (end_step, text to encode up to that step)

    def text_at(self, step: int) -> str:
        return reconstruct_schedule_at(self.schedule, step)


@dataclass
class ParsedPrompt:
    """Everything the engine needs from one prompt.

    ``text`` is the prompt after comment stripping and extra-network removal;
    ``steps`` the length of the pass the schedules cover (``hires_steps`` for a
    hires pass under the new scheduling rules, else ``steps``).
    """

    prompt: str
    text: str
    steps: int
    extra_networks: dict[str, list[ExtraNetworkParams]] = field(default_factory=dict)
    subprompts: list[SubPrompt] = field(default_factory=list)

    def at_step(self, step: int) -> list[tuple[str, float]]:
        """``(text, weight)`` of every sub-prompt at ``step``."""
        return [(sp.text_at(step), sp.weight) for sp in self.subprompts]

    def all_texts(self) -> list[str]:
        """Every distinct text any schedule uses, in first-seen order."""
        seen: dict[str, None] = {}
        for sp in self.subprompts:
            for _, text in sp.schedule:
                seen.setdefault(text, None)
        return list(seen)


def parse_prompt(prompt: str, steps: int, hires_steps: int | None = None, *,
                 use_old_scheduling: bool = False, enable_comments: bool = False) -> ParsedPrompt:
    """Parse one prompt the way A1111's pipeline does.

    Order: comments (if ``enable_comments``) -> extra networks removed ->
    split on ``AND`` (with ``:weight``) -> each sub-prompt scheduled with
    :func:`get_learned_conditioning_prompt_schedules` (``steps`` is the first
    pass's step count; give ``hires_steps`` for the hires pass's schedule).
    Attention weights are left in the texts; apply
    :func:`parse_prompt_attention` to each scheduled text when encoding.

    >>> p = parse_prompt("<lora:x:0.5>a [b:c:2] AND d:0.3", 4)
    >>> p.extra_networks["lora"][0].items, [(s.text, s.weight, s.schedule) for s in p.subprompts]
    (['x', '0.5'], [('a [b:c:2]', 1.0, [(2, 'a b'), (4, 'a c')]), (' d', 0.3, [(4, ' d')])])
    """
    prompt = str(prompt)
    text = strip_comments(prompt) if enable_comments else prompt
    text, networks = parse_extra_networks(text)
    parts = _split_and_raw(text)
    schedules = get_learned_conditioning_prompt_schedules(
        [part for part, _ in parts], steps, hires_steps, use_old_scheduling)
    if hires_steps is None or use_old_scheduling:
        effective = steps
    else:
        effective = hires_steps
    subprompts = [SubPrompt(part, weight, [(int(end), txt) for end, txt in schedule])
                  for (part, weight), schedule in zip(parts, schedules)]
    return ParsedPrompt(prompt=prompt, text=text, steps=effective,
                        extra_networks=networks, subprompts=subprompts)
