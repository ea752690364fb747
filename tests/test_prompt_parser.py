"""Tests for modules/prompt_parser.py (A1111 prompt syntax).

Expected values are A1111's: its doctests, and results of A1111's own
lark-based parser for the quirkier inputs (checked against it when written).
"""

import math

import pytest
from hypothesis import assume, given, settings, strategies as st

from modules.prompt_parser import (
    ExtraNetworkParams,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_extra_networks,
    parse_prompt,
    parse_prompt_attention,
    reconstruct_schedule_at,
    split_and,
    strip_comments,
)


def assert_weighted(actual, expected):
    assert [text for text, _ in actual] == [text for text, _ in expected]
    assert [w for _, w in actual] == pytest.approx([w for _, w in expected])


# ---------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------

ATTENTION_CASES = [
    # A1111 doctests
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1],
      ["hill", 0.55], [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
    ("[unbalanced", [["unbalanced", 0.9090909090909091]]),
    (")", [[")", 1.0]]),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    # empty / escapes
    ("", [["", 1.0]]),
    ("a\\\\b", [["a\\b", 1.0]]),           # escaped backslash
    ("a\\b", [["ab", 1.0]]),               # a lone backslash vanishes
    ("\\\\(x)", [["\\", 1.0], ["x", 1.1]]),
    # explicit weights
    ("(a:1.5) b", [["a", 1.5], [" b", 1.0]]),
    ("(a: 1.5 )", [["a", 1.5]]),
    ("(a:-1)", [["a", -1.0]]),
    ("(a:b)", [["a:b", 1.1]]),             # not a number: ':' is text
    ("x:1.2)", [["x:1.2)", 1.0]]),         # weight closer without an open '('
    ("a:b", [["a:b", 1.0]]),
    # nesting, stray closers, merging
    ("[[a]]", [["a", 0.8264462809917354]]),
    ("((a)", [["a", 1.2100000000000002]]),
    ("([a])", [["a", 1.0]]),
    ("(a)[b]", [["a", 1.1], ["b", 0.9090909090909091]]),
    ("[a (b) c]", [["a ", 0.9090909090909091], ["b", 1.0], [" c", 0.9090909090909091]]),
    ("x]y", [["x]y", 1.0]]),
    # BREAK
    ("aBREAK b", [["aBREAK b", 1.0]]),
    ("a BREAKb", [["a BREAKb", 1.0]]),
    ("a break b", [["a break b", 1.0]]),
    ("BREAK", [["", 1.0], ["BREAK", -1], ["", 1.0]]),
    ("a\nBREAK\nb", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("a BREAK BREAK b", [["a", 1.0], ["BREAK", -1], ["", 1.0], ["BREAK", -1], ["b", 1.0]]),
    # A1111 multiplies the BREAK marker inside brackets too
    ("(a BREAK b:2)", [["a", 2.0], ["BREAK", -2.0], ["b", 2.0]]),
]


@pytest.mark.parametrize("text,expected", ATTENTION_CASES)
def test_parse_prompt_attention(text, expected):
    assert_weighted(parse_prompt_attention(text), expected)


def test_attention_exact_float_products():
    # The same multiplication order as A1111, so the floats are bit-identical.
    res = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert res[1] == ["house", 1.5730000000000004]
    assert res[7] == ["sky", 1.4641000000000006]


def test_attention_break_entry_is_int_minus_one():
    res = parse_prompt_attention("a BREAK b")
    assert res[1] == ["BREAK", -1] and type(res[1][1]) is int


def test_attention_where_a1111_would_crash():
    # A1111 raises on float('1.2.3'); here ':' stays text and ')' closes with 1.1.
    assert_weighted(parse_prompt_attention("(a:1.2.3)"), [["a:1.2.3", 1.1]])
    # Huge weights stay finite.
    res = parse_prompt_attention("((a:" + "9" * 400 + "))")
    assert res[0][0] == "a" and math.isfinite(res[0][1]) and res[0][1] > 1e300


# ---------------------------------------------------------------------------
# scheduling
# ---------------------------------------------------------------------------

def sched(prompt, *args):
    return get_learned_conditioning_prompt_schedules([prompt], *args)[0]


ALT_AB = [[1, "a"], [2, "(b:1.1)"], [3, "a"], [4, "(b:1.1)"], [5, "a"], [6, "(b:1.1)"],
          [7, "a"], [8, "(b:1.1)"], [9, "a"], [10, "(b:1.1)"]]

SCHEDULE_DOCTESTS = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    # (the lead's brief wrote 'a  b  d'; A1111's doctest and parser give 'a b  d')
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", ALT_AB),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
    # A1111's doctest claims [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this
    # right now"), but its grammar cannot parse a bare '|' there and its parser
    # returns the prompt unchanged; we follow the parser.
    ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
]


@pytest.mark.parametrize("prompt,expected", SCHEDULE_DOCTESTS)
def test_schedule_a1111_doctests(prompt, expected):
    assert sched(prompt, 10) == expected


SCHEDULE_CASES = [
    # (prompt, args, expected) -- args: base_steps[, hires_steps[, use_old_scheduling]]
    ("", (5,), [[5, ""]]),
    ("[x|y]", (1,), [[1, "x"]]),
    ("[a:2]", (0,), [[0, ""]]),
    # the forms of prompt editing
    ("[a:b:2]", (4,), [[2, "a"], [4, "b"]]),
    ("[a::2]", (4,), [[2, "a"], [4, ""]]),
    ("[:2]", (4,), [[2, ""], [4, ""]]),
    ("[::2]", (4,), [[2, ""], [4, ""]]),
    ("[a:2:3]", (4,), [[3, "a"], [4, "2"]]),
    ("[a:(b):2]", (4,), [[2, "a"], [4, "(b)"]]),
    ("(a [b:2])", (4,), [[2, "(a )"], [4, "(a b)"]]),
    ("[a:[b:c:3]:0.5]", (10,), [[3, "a"], [5, "a"], [10, "c"]]),
    # numbers
    ("[a:+2]", (4,), [[2, ""], [4, "a"]]),
    ("[a:1e0]", (4,), [[1, ""], [4, "a"]]),
    ("[a:-1]", (4,), [[4, "a"]]),
    ("[a:b:0]", (4,), [[4, "b"]]),
    ("[a:2.5]", (4,), [[4, ""]]),           # 2.5 * 4 -> capped at 4
    ("[a:b:2.5]", (4,), [[4, "a"]]),
    ("[a:1.0]", (10,), [[10, ""]]),         # "1.0" is a fraction: all steps
    ("[a:0.3]", (10,), [[3, ""], [10, "a"]]),
    ("[a:0.29]", (100,), [[28, ""], [100, "a"]]),   # int(0.29 * 100) == 28
    ("[a: \n2\t]", (4,), [[2, ""], [4, "a"]]),
    ("[a:1e999]", (4,), [[4, ""]]),          # A1111 overflows here; capped
    ("[a:-1e999]", (4,), [[4, "a"]]),
    # alternation
    ("[a|b|]", (4,), [[1, "a"], [2, "b"], [3, ""], [4, "a"]]),
    ("[|]", (2,), [[1, ""], [2, ""]]),
    ("[[a|b]:2]", (4,), [[1, ""], [2, ""], [3, "a"], [4, "b"]]),
    # not parseable -> literal
    ("a | b", (4,), [[4, "a | b"]]),
    ("[a||b:2]", (4,), [[4, "[a||b:2]"]]),
    ("a\\", (4,), [[4, "a\\"]]),
    ("a\\\nb", (4,), [[4, "a\\\nb"]]),
    # constructs that fail are literal text, the rest still parses
    ("[a:b:c:2]", (4,), [[4, "[a:b:c:2]"]]),
    ("[a:(b:2)]", (4,), [[4, "[a:(b:2)]"]]),
    ("[a:2](", (4,), [[2, "("], [4, "a("]]),
    ("([a:2]", (4,), [[2, "("], [4, "(a"]]),
    ("a:[b:2]", (4,), [[2, "a:"], [4, "a:b"]]),
    ("[[a:2]", (4,), [[2, "["], [4, "[a"]]),
    ("[a:2]]", (4,), [[2, "]"], [4, "a]"]]),
    # escapes stay in the text, escaped brackets open nothing
    ("\\[a:2]", (4,), [[4, "\\[a:2]"]]),
    ("[a\\:b:2]", (4,), [[2, ""], [4, "a\\:b"]]),
    ("[\\[a|b]", (2,), [[1, "\\[a"], [2, "b"]]),
    # A1111's parser quirk: after a construct, an odd-length run of 3+ stray
    # brackets swallows the construct's closing bracket, which leaves the
    # construct as plain text; an even-length run does not.
    ("[a:2]]]", (4,), [[4, "[a:2]]]"]]),
    ("[a:b:2]]]x", (4,), [[4, "[a:b:2]]]x"]]),
    ("(x)[a:b:2]]]", (4,), [[4, "(x)[a:b:2]]]"]]),
    ("[a:b:2]:)", (4,), [[4, "[a:b:2]:)"]]),
    ("[a:b:2]]]]", (4,), [[2, "a]]]"], [4, "b]]]"]]),
    ("[a:b:2]]])", (4,), [[2, "a]])"], [4, "b]])"]]),
    ("[a:b:2] ]]", (4,), [[2, "a ]]"], [4, "b ]]"]]),
    # hires pass (new scheduling): steps count the hires pass, 1.0 / base_steps offsets
    ("a [b:.5] c", (10, 10), [[10, "a b c"]]),
    ("a [b:1.5] c", (10, 10), [[5, "a  c"], [10, "a b c"]]),
    ("[a:b:15]", (10, 10), [[5, "a"], [10, "b"]]),
    ("[a:b:5]", (10, 10), [[10, "b"]]),
    ("[a:b:1.25]", (10, 20), [[5, "a"], [20, "b"]]),
    ("[a|b]", (3, 5), [[1, "a"], [2, "b"], [3, "a"], [4, "b"], [5, "a"]]),
    # old scheduling: base steps; below 1 is a fraction, else absolute
    ("[a:1.0]", (10, None, True), [[1, ""], [10, "a"]]),
    ("[a:b:0.5]", (10, 20, True), [[5, "a"], [10, "b"]]),
    ("[a:b:15]", (10, 20, True), [[10, "a"]]),
]


@pytest.mark.parametrize("prompt,args,expected", SCHEDULE_CASES)
def test_schedules(prompt, args, expected):
    assert sched(prompt, *args) == expected


def test_schedules_batch_and_duplicates():
    res = get_learned_conditioning_prompt_schedules(["a [b:2]", "c", "a [b:2]"], 4)
    assert res == [[[2, "a "], [4, "a b"]], [[4, "c"]], [[2, "a "], [4, "a b"]]]
    res[0][0][1] = "changed"  # results for equal prompts are not shared
    assert res[2][0][1] == "a "


def test_schedules_deep_nesting_does_not_recurse():
    deep = "[" * 3000 + "a:2" + "]" * 3000
    assert sched(deep, 4) == [[2, "[" * 2999 + "]" * 2999], [4, "[" * 2999 + "a" + "]" * 2999]]
    assert sched("(" * 5000 + "x", 3) == [[3, "(" * 5000 + "x"]]


def test_reconstruct_schedule_at():
    schedule = [[3, "a "], [10, "a b"]]
    assert [reconstruct_schedule_at(schedule, s) for s in (0, 1, 3, 4, 10)] == \
        ["a ", "a ", "a ", "a b", "a b"]
    assert reconstruct_schedule_at(schedule, 11) == "a b"
    assert reconstruct_schedule_at([(5, "x")], 2) == "x"
    with pytest.raises(ValueError):
        reconstruct_schedule_at([], 1)


# ---------------------------------------------------------------------------
# AND
# ---------------------------------------------------------------------------

SPLIT_AND_CASES = [
    ("a AND b :0.5", [("a", 1.0), ("b", 0.5)]),
    ("a AND b:-1", [("a", 1.0), ("b", -1.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("ANDROID ANDx xAND", [("ANDROID ANDx xAND", 1.0)]),
    ("a AND", [("a", 1.0), ("", 1.0)]),
    ("x AND (y:1.2)", [("x", 1.0), ("(y:1.2)", 1.0)]),
    ("c:1.5", [("c", 1.5)]),
    ("a\nAND\nb : 2 ", [("a", 1.0), ("b", 2.0)]),
    ("a AND b:.5 AND c:+3.", [("a", 1.0), ("b", 0.5), ("c", 3.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize("prompt,expected", SPLIT_AND_CASES)
def test_split_and(prompt, expected):
    assert split_and(prompt) == expected


def test_get_multicond_prompt_list_matches_a1111():
    prompts = ["a AND b:0.5", "a", "x AND (y:1.2)", "c:1.5", "ANDROID and AND",
               "a AND b:-1", "a\nAND\nb : 2 ", "x AND [y:3"]
    res_indexes, flat, indexes = get_multicond_prompt_list(prompts)
    assert res_indexes == [[(0, 1.0), (1, 0.5)], [(0, 1.0)], [(2, 1.0), (3, 1.0)], [(4, 1.5)],
                           [(5, 1.0), (6, 1.0)], [(0, 1.0), (1, -1.0)], [(0, 1.0), (7, 2.0)],
                           [(2, 1.0), (8, 3.0)]]
    assert flat == ["a", " b", "x", " (y:1.2)", "c", "ANDROID and", "", "\nb", " [y"]
    assert indexes == {text: i for i, text in enumerate(flat)}


# ---------------------------------------------------------------------------
# extra networks, comments
# ---------------------------------------------------------------------------

def test_parse_extra_networks():
    text, nets = parse_extra_networks(
        "a <lora:foo:0.8> b<lora:bar:0.8:0.5>, <hypernet:x:1><lora:n:te=0.5:unet=1>")
    assert text == "a  b, "
    assert sorted(nets) == ["hypernet", "lora"]
    assert [p.items for p in nets["lora"]] == [["foo", "0.8"], ["bar", "0.8", "0.5"],
                                               ["n", "te=0.5", "unet=1"]]
    assert nets["hypernet"] == [ExtraNetworkParams(["x", "1"])]
    named = nets["lora"][2]
    assert named.positional == ["n"] and named.named == {"te": "0.5", "unet": "1"}
    assert nets["lora"][1].positional == ["bar", "0.8", "0.5"] and nets["lora"][1].named == {}


@pytest.mark.parametrize("prompt", ["<lora>", "<lo-ra:x>", "<:x>", "<lora:>", "a < b > c"])
def test_parse_extra_networks_not_tags(prompt):
    assert parse_extra_networks(prompt) == (prompt, {})


def test_extra_network_params_double_equals_is_positional():
    p = ExtraNetworkParams(["x", "a=b=c", "k=v"])
    assert p.positional == ["x", "a=b=c"] and p.named == {"k": "v"}


@pytest.mark.parametrize("text,expected", [
    ("no comment", "no comment"),
    ("a # c\nb", "a \nb"),
    ("# only\nb", "b"),
    ("a\n#c\nb", "a\nb"),
    ("a#b#c", "a"),
    ("a\n# end", "a"),
    ("  # indented\nb", "  \nb"),
])
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


# ---------------------------------------------------------------------------
# structured API
# ---------------------------------------------------------------------------

def test_parse_prompt_full():
    p = parse_prompt("<lora:x:0.5>a [b:c:2] # note\nAND (d:1.2) [e|f] :0.3", 4,
                     enable_comments=True)
    assert p.text == "a [b:c:2] \nAND (d:1.2) [e|f] :0.3"
    assert p.steps == 4
    assert [n.items for n in p.extra_networks["lora"]] == [["x", "0.5"]]
    assert [(s.text, s.weight) for s in p.subprompts] == [("a [b:c:2]", 1.0),
                                                          (" (d:1.2) [e|f]", 0.3)]
    assert p.subprompts[0].schedule == [(2, "a b"), (4, "a c")]
    assert p.subprompts[1].schedule == [(1, " (d:1.2) e"), (2, " (d:1.2) f"),
                                        (3, " (d:1.2) e"), (4, " (d:1.2) f")]
    assert p.at_step(2) == [("a b", 1.0), (" (d:1.2) f", 0.3)]
    assert p.at_step(3) == [("a c", 1.0), (" (d:1.2) e", 0.3)]
    assert p.all_texts() == ["a b", "a c", " (d:1.2) e", " (d:1.2) f"]


def test_parse_prompt_comments_off_by_default_and_hires():
    p = parse_prompt("a [b:1.5] #x", 10, 20)
    assert p.text == "a [b:1.5] #x" and p.steps == 20
    assert p.subprompts[0].schedule == [(10, "a  #x"), (20, "a b #x")]
    assert parse_prompt("a [b:1.5]", 10, 20, use_old_scheduling=True).steps == 10


# ---------------------------------------------------------------------------
# properties: nothing raises, schedules are well formed
# ---------------------------------------------------------------------------

PIECES = ["(", ")", "[", "]", ":", "|", "\\", " ", "AND", "BREAK", "<", ">", "a", "b",
          "1", ".5", "2", "-", "\n", "#", "<lora:x:1>", "e", "é"]
prompt_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(prompt=prompt_text, steps=st.integers(1, 50),
       hires=st.one_of(st.none(), st.integers(1, 50)), old=st.booleans())
def test_property_never_raises_and_well_formed(prompt, steps, hires, old):
    for text, weight in parse_prompt_attention(prompt):
        assert isinstance(text, str) and math.isfinite(weight)

    (schedule,) = get_learned_conditioning_prompt_schedules([prompt], steps, hires, old)
    last = hires if hires is not None and not old else steps
    ends = [end for end, _ in schedule]
    assert ends[-1] == last
    assert all(1 <= end for end in ends)
    assert all(a < b for a, b in zip(ends, ends[1:]))
    assert all(isinstance(text, str) for _, text in schedule)

    parsed = parse_prompt(prompt, steps, hires, use_old_scheduling=old, enable_comments=True)
    assert len(parsed.subprompts) == len(split_and(parsed.text))
    for sub in parsed.subprompts:
        assert sub.schedule[-1][0] == last and math.isfinite(sub.weight)
    get_multicond_prompt_list([prompt])


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="()[]:|\\"), max_size=40),
       steps=st.integers(1, 50))
def test_property_plain_text_passes_through(text, steps):
    assume("BREAK" not in text)
    assert sched(text, steps) == [[steps, text]]
    assert parse_prompt_attention(text) == [[text, 1.0]]
