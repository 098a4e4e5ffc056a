"""A1111 emphasis syntax.

Expected values come from the AUTOMATIC1111 wiki ("Features" > "Attention/emphasis") and
the doctest examples of its prompt parser: ``(x)`` x1.1, ``[x]`` /1.1, ``(x:w)`` xw, nesting
multiplies, escapes are literal, unbalanced openers close at the end, ``BREAK`` is a marker.
"""

from __future__ import annotations

import pytest

from altdiffusion.prompts.emphasis import BREAK, parse_emphasis

A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    ("a (very beautiful:1.5) house", [("a ", 1.0), ("very beautiful", 1.5), (" house", 1.0)]),
    ("(abc)", [("abc", 1.1)]),
    ("((abc))", [("abc", 1.1 * 1.1)]),
    ("[abc]", [("abc", 1 / 1.1)]),
    ("(abc", [("abc", 1.1)]),
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("(a:1.2) (b:1.2)", [("a", 1.2), (" ", 1.0), ("b", 1.2)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_EXAMPLES)
def test_a1111_examples_exactly(prompt, expected):
    # Exact float equality: factors are applied innermost-first from 1.0, as A1111 does.
    assert parse_emphasis(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("\\\\", [("\\", 1.0)]),
        ("\\(x\\)", [("(x)", 1.0)]),
        ("\\[x\\]", [("[x]", 1.0)]),
        ("(\\(x\\))", [("(x)", 1.1)]),
        ("a\\b", [("a\\b", 1.0)]),  # a backslash escaping nothing stays a backslash
    ],
)
def test_escapes_are_literal(prompt, expected):
    assert parse_emphasis(prompt) == expected


def test_stray_closers_are_text():
    assert parse_emphasis("a) b] c") == [("a) b] c", 1.0)]
    assert parse_emphasis("x:1.3) y") == [("x:1.3) y", 1.0)]


def test_colon_without_weight_is_text():
    assert parse_emphasis("time: 12:30") == [("time: 12:30", 1.0)]
    assert parse_emphasis("(ratio 16:9 wide)") == [("ratio 16:9 wide", 1.1)]
    # ...but a number right before the ')' is a weight, as in A1111.
    assert parse_emphasis("(ratio 16:9)") == [("ratio 16", 9.0)]


def test_nesting_multiplies():
    assert parse_emphasis("((a) b)") == [("a", 1.1 * 1.1), (" b", 1.1)]
    assert parse_emphasis("[[a]]") == [("a", 1 / 1.1 / 1.1)]
    assert parse_emphasis("((a:2):3)") == [("a", 6.0)]
    assert parse_emphasis("[(a:2)]") == [("a", 2 / 1.1)]


@pytest.mark.parametrize(
    ("prompt", "weight"),
    [("(x:-1)", -1.0), ("(x:-0.5)", -0.5), ("(x:.5)", 0.5), ("(x:+2)", 2.0), ("(x: 1.5 )", 1.5)],
)
def test_explicit_weights(prompt, weight):
    assert parse_emphasis(prompt) == [("x", weight)]


def test_weight_one_is_plain_text():
    assert parse_emphasis("(x:1.0)") == parse_emphasis("x") == [("x", 1.0)]
    assert parse_emphasis("a (x:1.0) b") == parse_emphasis("a x b") == [("a x b", 1.0)]


def test_malformed_number_does_not_raise():
    # '1.2.3' is not a float: the closer is text and the '(' is closed at the end.
    assert parse_emphasis("(x:1.2.3)") == [("x:1.2.3)", 1.1)]


def test_unbalanced_opener_applies_to_rest():
    assert parse_emphasis("a (b c") == [("a ", 1.0), ("b c", 1.1)]
    assert parse_emphasis("a [b (c") == [("a ", 1.0), ("b ", 1 / 1.1), ("c", 1.1 / 1.1)]


def test_equal_neighbours_merge():
    assert parse_emphasis("(a:1.2)(b:1.2)") == [("ab", 1.2)]
    assert parse_emphasis("(a)[(b:1.21)]") == [("a", 1.1), ("b", 1.21 / 1.1)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a BREAK", [("a", 1.0), BREAK]),
        ("BREAK a", [BREAK, ("a", 1.0)]),
        ("a\nBREAK\n b", [("a", 1.0), BREAK, ("b", 1.0)]),
        ("a BREAK BREAK b", [("a", 1.0), BREAK, BREAK, ("b", 1.0)]),
        ("a, BREAK, b", [("a,", 1.0), BREAK, (", b", 1.0)]),
        ("aBREAK b", [("aBREAK b", 1.0)]),  # not a word of its own
        ("a break b", [("a break b", 1.0)]),  # lowercase is text
        ("(a BREAK b)", [("a", 1.1), BREAK, ("b", 1.1)]),  # marker keeps -1 inside brackets
    ],
)
def test_break(prompt, expected):
    assert parse_emphasis(prompt) == expected
