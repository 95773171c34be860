"""Titles: template filling, cleaning and the 80-character cut that never splits a character."""

from __future__ import annotations

import random
import unicodedata

import pytest

from migrate.transform.titles import (
    ELLIPSIS,
    MAX_TITLE_LENGTH,
    collapse_whitespace,
    make_title,
    template_problems,
    title_from_text,
)

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 7 code points
FLAG_FR = "\U0001f1eb\U0001f1f7"
FLAG_DE = "\U0001f1e9\U0001f1ea"
THUMBS_MEDIUM = "\U0001f44d\U0001f3fd"  # thumbs up + skin tone
E_ACUTE = "e\u0301"  # e + combining acute: one character on screen, two code points
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


def dangling(head: str, rest: str) -> bool:
    """True when cutting between `head` and `rest` splits a grapheme cluster (test oracle)."""
    if not head or not rest:
        return False
    joiners_dropped = rest.lstrip("\u200d")
    if len(joiners_dropped) < len(rest) and (not joiners_dropped or joiners_dropped[0] == " "):
        return False  # a joiner before a space joins nothing; the cut may drop it
    after = rest[0]
    if unicodedata.combining(after) or unicodedata.category(after) in ("Mn", "Me", "Mc"):
        return True
    if after in "\u200d\u200c" or 0x1F3FB <= ord(after) <= 0x1F3FF:
        return True
    if 0xE0020 <= ord(after) <= 0xE007F:  # emoji tag characters
        return True
    if head.endswith("\u200d") and not after.isspace():
        return True
    regional = 0
    for char in reversed(head):
        if not "\U0001f1e6" <= char <= "\U0001f1ff":
            break
        regional += 1
    return regional % 2 == 1 and "\U0001f1e6" <= after <= "\U0001f1ff"


def assert_well_cut(source: str, title: str) -> None:
    """`title` is `source` cut to ≤ 80 code points at a cluster boundary, plus the ellipsis."""
    assert len(title) <= MAX_TITLE_LENGTH
    assert title.endswith(ELLIPSIS)
    head = title[: -len(ELLIPSIS)]
    assert source.startswith(head)
    assert not dangling(head, source[len(head) :])


# -- exact lengths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a" * 80,
        "word " * 15 + "word",  # 79
        "\U0001f600" * 80,  # 80 code points, 320 UTF-8 bytes: still fits
        "é" * 80,  # precomposed: one code point each
    ],
)
def test_up_to_80_code_points_is_unchanged(text: str) -> None:
    assert title_from_text(text) == text


def test_81_is_cut_at_a_word_boundary() -> None:
    text = "a" * 79 + " b"  # 81
    assert title_from_text(text) == "a" * 79 + ELLIPSIS
    words = " ".join(f"word{i}" for i in range(30))
    title = title_from_text(words)
    assert title == "word0 word1 word2 word3 word4 word5 word6 word7 word8 word9 word10 word11…"
    assert_well_cut(words, title)


def test_cut_drops_trailing_punctuation_before_the_ellipsis() -> None:
    text = "Leak at stair 2, landing: " + "x" * 60
    assert title_from_text(text) == "Leak at stair 2, landing…"


def test_single_long_word_is_hard_cut() -> None:
    assert title_from_text("x" * 200) == "x" * 79 + ELLIPSIS
    assert title_from_text("ab " + "y" * 200) == "ab" + ELLIPSIS


# -- grapheme clusters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "head"),
    [
        ("\U0001f600" * 100, "\U0001f600" * 79),
        (FAMILY * 15, FAMILY * 11),  # 77 code points; a 12th family would end at 84
        ("x" + FAMILY * 15, "x" + FAMILY * 11),
        (FLAG_FR * 50, FLAG_FR * 39),  # flags are pairs: cut at 78, never between halves
        ("x" + FLAG_DE * 50, "x" + FLAG_DE * 39),
        (THUMBS_MEDIUM * 50, THUMBS_MEDIUM * 39),
        (E_ACUTE * 60, E_ACUTE * 39),
        ("x" + E_ACUTE * 60, "x" + E_ACUTE * 39),
        ("e\u0301\u0323" * 40, "e\u0301\u0323" * 26),  # two marks on each letter
        (ENGLAND * 20, ENGLAND * 11),
        ("\u1100\u1161\u11a8" * 30, "\u1100\u1161\u11a8" * 26),  # Hangul jamo L V T
    ],
)
def test_hard_cut_keeps_grapheme_clusters_whole(text: str, head: str) -> None:
    title = title_from_text(text)
    assert title == head + ELLIPSIS
    assert_well_cut(text, title)


def test_word_cut_keeps_emoji_and_accents() -> None:
    text = f"Caf{E_ACUTE} {FAMILY} {FLAG_FR} {THUMBS_MEDIUM} " * 8
    title = title_from_text(text)
    assert_well_cut(collapse_whitespace(text), title)
    assert title.endswith(f"Caf{E_ACUTE} {FAMILY} {FLAG_FR} {THUMBS_MEDIUM}…")


def test_zalgo_marks_are_limited_before_cutting() -> None:
    text = "Z" + "\u0301" * 100 + " rest of the title" * 10
    title = title_from_text(text)
    assert title.startswith("Z" + "\u0301" * 30 + " rest")
    assert "\u0301" * 31 not in title
    assert len(title) <= MAX_TITLE_LENGTH


def test_a_single_cluster_longer_than_the_budget_is_cut_before_a_joiner() -> None:
    chain = "\U0001f468" + "\u200d\U0001f468" * 50  # one ZWJ sequence of 101 code points
    title = title_from_text(chain)
    assert len(title) <= MAX_TITLE_LENGTH
    assert title[:-1].endswith("\U0001f468") and chain.startswith(title[:-1])


def test_random_texts_are_always_cut_cleanly() -> None:
    pieces = [
        "a",
        "bc",
        "Z",
        " ",
        "  ",
        "\n",
        "\t",
        "\u00a0",
        "é",
        E_ACUTE,
        "\u0301",
        FAMILY,
        FLAG_FR,
        "\U0001f1eb",
        THUMBS_MEDIUM,
        "\U0001f600",
        "\u200d",
        "\ufe0f",
        ENGLAND,
        "-",
        ",",
        "\x00",
        "\u200b",
        "\u1100\u1161",
        "\u11a8",
        "日本",
    ]
    rng = random.Random(20240601)
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 120)))
        title = title_from_text(text)
        clean = collapse_whitespace(text)
        assert len(title) <= MAX_TITLE_LENGTH
        if len(clean) <= MAX_TITLE_LENGTH:
            assert title in (clean, "")
        else:
            assert_well_cut(clean, title)
        assert title_from_text(text) == title  # deterministic


# -- cleaning ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("   ", ""),
        (" \t\n\r\u00a0\u2003\u3000\u200b\ufeff ", ""),
        ("\x00\x01\x7f\x9f", ""),
        ("\u0301\u0301\u200d", ""),  # nothing visible left
        ("a\x00b\x07c\td", "abc d"),
        ("Line one\r\nline\ttwo\u00a0\u00a0three", "Line one line two three"),
        ("zero\u200bwidth\u2060space\ufeffhere", "zero width space here"),
        ("\ud800lone surrogate", "lone surrogate"),
        ("  padded  ", "padded"),
        (f"keeps {FAMILY} and {FLAG_FR}", f"keeps {FAMILY} and {FLAG_FR}"),
        ("\x1c\x1d\x1e\x1fa\x85b", "a b"),
    ],
)
def test_cleaning(text: str, expected: str) -> None:
    assert title_from_text(text) == expected


def test_long_description_is_only_read_as_far_as_needed() -> None:
    assert title_from_text(" " * 5000 + "word " * 100_000) == " ".join(["word"] * 16) + "…"
    assert title_from_text("\x00" * 5000 + "text") == "text"
    assert title_from_text("\n" * 3000 + "a" * 81) == "a" * 79 + "…"
    spaced = "x " * 3000 + "y"
    assert title_from_text(spaced) == title_from_text(collapse_whitespace(spaced))


# -- templates -----------------------------------------------------------------------------

RECORD = {
    "identifier": "TH-00013",
    "description": "Water leak\nat stair 2",
    "issue_type_name": "Leak",
    "category_name": "Quality",
    "area_path": "North Building>Level 1",
    "location_detail": None,
    "status": "Open",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{identifier} {description}", "TH-00013 Water leak at stair 2"),
        ("[{category}/{type}] {description}", "[Quality/Leak] Water leak at stair 2"),
        ("{area}: {location_detail} {status}", "North Building>Level 1: Open"),
        ("{{{identifier}}}", "{TH-00013}"),
        ("{location_detail}", ""),
        ("Fixed title", "Fixed title"),
    ],
)
def test_make_title_fills_the_template(template: str, expected: str) -> None:
    assert make_title(template, RECORD) == expected


def test_make_title_handles_missing_and_odd_values() -> None:
    assert make_title("{identifier} {description}", {}) == ""
    assert make_title("{identifier} {description}", {"identifier": 12.0, "description": 3}) == (
        "12 3"
    )
    long_record = {"identifier": "A-1", "description": "word " * 40}
    assert_well_cut(
        collapse_whitespace("A-1 " + "word " * 40),
        make_title("{identifier} {description}", long_record),
    )


@pytest.mark.parametrize(
    ("template", "problems"),
    [
        ("{identifier} {description}", []),
        ("{identifer}", ["uses unknown placeholder {identifer}"]),
        (
            "{} {0} {a.b}",
            [
                "uses unknown placeholder {}",
                "uses unknown placeholder {0}",
                "uses unknown placeholder {a.b}",
            ],
        ),
        ("{status!r}", ["placeholder {status} takes no format spec or conversion"]),
        (
            "{identifier",
            [
                "is not a valid template (expected '}' before end of string; "
                "write {{ or }} for a literal brace)"
            ],
        ),
        (
            "}",
            [
                "is not a valid template (Single '}' encountered in format string; "
                "write {{ or }} for a literal brace)"
            ],
        ),
    ],
)
def test_template_problems(template: str, problems: list[str]) -> None:
    assert template_problems(template) == problems


def test_make_title_rejects_a_bad_template() -> None:
    with pytest.raises(ValueError, match=r"uses unknown placeholder \{title\}"):
        make_title("{title}", RECORD)
