"""Episodes of a thinking trace (MRT, Qu et al.): where the model changes course.

A long output is read as a sequence of episodes. An episode ends at a paragraph break whose
next paragraph opens with one of the markers models use when they turn ("Wait", "But wait",
"Alternatively", ...). A split too close to the previous one (fewer than `min_chars`) is
skipped, and consecutive episodes can be merged into groups (`group_size`; MRT's analysis
used groups of 3-5). Splitting never loses text: "".join(episodes) is the thinking part.

Thinking delimiters are optional: with `think_start`/`think_end` (such as `<think>` and
`</think>`) the thinking is what lies between them; a model without them (the embedded one)
thinks in its whole output.
"""
from __future__ import annotations

import re
from typing import Sequence

from pydantic import Field, field_validator

from ttc.core.config import StrictModel, nonblank_items

#: Where models change course: the default episode markers (MRT's list, plus "Hmm" from s1).
MARKERS = ("Wait", "But wait", "Alternatively", "But hold on", "But let me double-check",
           "Is there another way", "Hmm")


class ThinkingFormat(StrictModel):
    """Where a model's thinking starts and ends in its output."""

    think_start: str | None = Field(None, description="Text that opens the thinking (e.g. '<think>'); None: the "
                                    "output starts thinking at once.")
    think_end: str | None = Field(None, description="Text that closes the thinking (e.g. '</think>'); None: the "
                                  "model thinks until it stops.")


class EpisodeOptions(StrictModel):
    """How a trace is cut into episodes."""

    markers: list[str] = Field(list(MARKERS), min_length=1, description="Openings of a paragraph that start a new "
                               "episode (matched at the paragraph's start, case-sensitive).")
    paragraph_break: str = Field("\n\n", min_length=1, description="What separates paragraphs.")
    min_chars: int = Field(64, ge=0, le=1_000_000, description="An episode shorter than this is not cut: the split "
                           "is skipped and the text joins the next episode.")
    group_size: int = Field(1, ge=1, le=64, description="Consecutive episodes merged into one (MRT used 3-5).")

    @field_validator("markers")
    @classmethod
    def _non_empty(cls, markers: list[str]) -> list[str]:
        return nonblank_items(markers, "markers", "marker")


def thinking_part(text: str, options: ThinkingFormat) -> tuple[str, str]:
    """(thinking, what follows it). Without delimiters, or without a closing one yet, all of the
    text after the opening one is thinking."""
    start = 0
    if options.think_start and options.think_start in text:
        start = text.index(options.think_start) + len(options.think_start)
    if options.think_end:
        end = text.find(options.think_end, start)
        if end >= 0:
            return text[start:end], text[end:]
    return text[start:], ""


def _marker_pattern(options: EpisodeOptions) -> re.Pattern:
    # Longest first, so "But wait" is not read as a shorter marker; a marker must end a word.
    markers = sorted(options.markers, key=len, reverse=True)
    return re.compile(r"[ \t*_#>]*(?:" + "|".join(re.escape(m) for m in markers) + r")(?![A-Za-z])")


def boundaries(thinking: str, options: EpisodeOptions) -> list[int]:
    """Offsets in `thinking` where a new episode starts (before grouping)."""
    pattern = _marker_pattern(options)
    brk = options.paragraph_break
    cuts, last, at = [], 0, thinking.find(brk)
    while at >= 0:
        start = at + len(brk)
        while thinking.startswith(brk, start):  # a run of breaks belongs to the episode before
            start += len(brk)
        if start < len(thinking) and pattern.match(thinking, start) and start - last >= options.min_chars:
            cuts.append(start)
            last = start
        at = thinking.find(brk, start)
    return cuts


def split_episodes(thinking: str, options: EpisodeOptions | None = None) -> list[str]:
    """The episodes (grouped) of a thinking text; "".join of them is `thinking`. An empty text has none."""
    options = options or EpisodeOptions()
    if not thinking:
        return []
    cuts = [0, *boundaries(thinking, options), len(thinking)]
    episodes = [thinking[a:b] for a, b in zip(cuts, cuts[1:])]
    return group(episodes, options.group_size)


def group(episodes: Sequence[str], size: int) -> list[str]:
    """Merge consecutive episodes `size` at a time (the last group may be smaller)."""
    return ["".join(episodes[i:i + size]) for i in range(0, len(episodes), size)]


def episode_prefixes(episodes: Sequence[str]) -> list[str]:
    """The thinking up to the end of each episode (built as step prefixes are)."""
    from ttc.core.success import step_prefixes

    return step_prefixes(episodes)
