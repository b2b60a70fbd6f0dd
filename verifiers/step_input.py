"""The input of a step-scoring PRM, built piece by piece so every step tag lands where it should.

    prompt_template.format(problem=...) + step_1 + step_tag + step_2 + step_tag + ...

(each step right-stripped). The pieces are tokenized separately and concatenated, so the
position that ends each tag is known exactly: a tag may be several tokens, text that
happens to contain the tag's characters adds no score, and a tag such as "\\n\\n" stays one
token where tokenizing the whole text would split it against the next word. The transformers
PRM reads scores at these positions, the vLLM PRM at these tag tokens, and
`ttc train-verifier` trains on exactly them.
"""
from __future__ import annotations

from typing import Any, Sequence

# Text put before a piece to tokenize it "in context", for tokenizers that add a prefix space
# to text tokenized on its own (SentencePiece, e.g. Mistral's, which Math-Shepherd uses).
_ANCHOR = "\n"


class StepInput:
    """Token ids of a problem and its steps with a tag after each, and the tags' last positions."""

    def __init__(self, tokenizer: Any, step_tag: str, prompt_template: str):
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template

        def encode(text: str) -> list[int]:
            return list(tokenizer.encode(text, add_special_tokens=False))

        self._encode = encode
        # Special tokens the tokenizer puts before a text (a BOS), found by difference.
        plain, full = encode("a"), list(tokenizer.encode("a"))
        start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
        self.special_prefix = full[:start]
        # Does a piece tokenize differently on its own than after other text (a prefix space)?
        anchor = encode(_ANCHOR)
        self.in_context = encode(_ANCHOR + "a")[len(anchor):] != plain
        self.tag_ids = self.continuation_ids(step_tag)

    def continuation_ids(self, text: str) -> list[int]:
        """Ids of `text` as it tokenizes after other text (no prefix space added)."""
        if self.in_context:
            anchor = self._encode(_ANCHOR)
            ids = self._encode(_ANCHOR + text)
            if ids[:len(anchor)] == anchor:
                return ids[len(anchor):]
        return self._encode(text)

    def encode(self, problem_prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """(ids, the index of the last token of each step's tag)."""
        ids = self.special_prefix + self._encode(self.prompt_template.format(problem=problem_prompt))
        positions = []
        for step in steps:
            text = step.rstrip()
            if text:
                ids += self.continuation_ids(text)
            ids += self.tag_ids
            positions.append(len(ids) - 1)
        return ids, positions
