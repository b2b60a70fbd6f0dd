"""Episode splitting: where a trace changes course, on a table of traces; nothing is lost."""
from __future__ import annotations

import pytest

from ttc.core.episodes import EpisodeOptions, ThinkingFormat, episode_prefixes, split_episodes, thinking_part
from ttc.core.errors import ConfigError
from ttc.core.config import validate

A = "First I add 12 and 30, which gives 42."  # 39 characters
B = "Wait, the question asks for the product, not the sum."
C = "Alternatively, I can multiply step by step: 12 x 30 = 360."
D = "But wait, 12 x 30 is 360, so that is the answer."


@pytest.mark.parametrize("text, options, expected", [
    (f"{A}\n\n{B}", {}, [f"{A}\n\n", B]),
    (f"{A}\n\n{B}\n\n{C}\n\n{D}", {}, [f"{A}\n\n", f"{B}\n\n", f"{C}\n\n", D]),
    # a marker inside a paragraph is not a turn; nor is a word that merely starts with one
    (f"{A} Wait, no.\n\nWaiting is over: {B}", {}, [f"{A} Wait, no.\n\nWaiting is over: {B}"]),
    # "But wait" is one marker, not "But" text followed by "wait"; markdown emphasis before it is allowed
    (f"{A}\n\n**But wait**, {D}", {}, [f"{A}\n\n", f"**But wait**, {D}"]),
    # a run of blank lines stays with the episode before
    (f"{A}\n\n\n\n{B}", {}, [f"{A}\n\n\n\n", B]),
    # too close to the previous split: skipped, the text joins the next episode
    (f"{A}\n\n{B}\n\n{C}", {"min_chars": 60}, [f"{A}\n\n{B}\n\n", C]),
    # groups of 2
    (f"{A}\n\n{B}\n\n{C}\n\n{D}", {"group_size": 2}, [f"{A}\n\n{B}\n\n", f"{C}\n\n{D}"]),
    (f"{A}\n\n{B}\n\n{C}", {"group_size": 2}, [f"{A}\n\n{B}\n\n", C]),
    # configurable markers and paragraph break
    (f"{A}\nHmm, {B}", {"markers": ["Hmm"], "paragraph_break": "\n"}, [f"{A}\n", f"Hmm, {B}"]),
    ("", {}, []),
    (A, {}, [A]),
])
def test_split_episodes(text, options, expected):
    episodes = split_episodes(text, EpisodeOptions(**{"min_chars": 0, **options}))
    assert episodes == expected
    assert "".join(episodes) == text


def test_default_min_chars_skips_a_split_right_after_the_start():
    text = f"Ok.\n\n{B} {A}\n\n{C}"  # 5 characters, then 95 (the default min_chars is 64)
    assert split_episodes(text) == [f"Ok.\n\n{B} {A}\n\n", C]


def test_thinking_part_and_prefixes():
    fmt = ThinkingFormat(think_start="<think>", think_end="</think>")
    assert thinking_part(f"<think>{A}\n\n{B}</think>The answer is 42.", fmt) == (f"{A}\n\n{B}", "</think>The answer is 42.")
    assert thinking_part(f"<think>{A}", fmt) == (A, "")  # still thinking
    assert thinking_part(A, ThinkingFormat()) == (A, "")  # a model without delimiters thinks in all of it
    assert episode_prefixes(["a ", "b ", "c"]) == ["a ", "a b ", "a b c"]


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match=r"markers.*empty"):
        validate(EpisodeOptions, {"markers": ["Wait", " "]})
    with pytest.raises(ConfigError, match="group_size"):
        validate(EpisodeOptions, {"group_size": 0})
