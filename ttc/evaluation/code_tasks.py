"""HumanEval-style code problems: the instruction a chat model gets, and public tests from the docstring.

The docstring's examples are what a programmer sees, so they are the public tests a search
may use (PlanSearch's and best-of-N's filter); the package's `check` stays hidden and only
judges. Examples come in several styles across HumanEval: doctest (`>>> f(x)` then the
value), and prose lines such as `f(x) ➞ y`, `f(x) == y`, `f(x) => y`, `f(x) should return y`.
An example counts only when its call is a call of the entry point and its value is a literal.
"""
from __future__ import annotations

import ast
import doctest
import re

from ttc.core.types import Problem

INSTRUCTION = ("Complete the following Python function. Reply with the whole function, imports included, "
               "in one ```python code block.\n\n```python\n{code}```")

_ARROWS = r"(?:==>|==|➞|=>|->|→|returns|should return|should be|=)"


def _literal(text: str):
    text = text.strip().rstrip(".,;")
    return ast.literal_eval(text)


def _is_entry_call(source: str, entry: str) -> bool:
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        return False
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry):
        return False
    try:  # arguments must be values, not names from the surrounding prose ("f(a) => False")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(arg)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def docstring_examples(code_prompt: str, entry: str) -> list[tuple[str, object]]:
    """(call source, expected value) pairs found in the prompt's examples, in order, without repeats."""
    found: list[tuple[str, object]] = []
    for example in doctest.DocTestParser().get_examples(code_prompt):
        # The docstring's closing quotes follow the last example with no blank line: doctest reads them as output.
        want = re.split(r"^\s*(?:\"\"\"|\'\'\')", example.want, maxsplit=1, flags=re.M)[0]
        if _is_entry_call(example.source, entry) and want.strip():
            try:
                found.append((example.source.strip(), _literal(want)))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    if not found:  # prose styles, one example per line
        pattern = re.compile(rf"({re.escape(entry)}\(.*\))\s*{_ARROWS}\s*(.+)$")
        for line in code_prompt.splitlines():
            match = pattern.search(line.strip().lstrip(">").strip())
            if not match or not _is_entry_call(match.group(1), entry):
                continue
            try:
                found.append((match.group(1), _literal(match.group(2))))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    unique, seen = [], set()
    for call, value in found:
        if call not in seen:
            seen.add(call)
            unique.append((call, value))
    return unique


def public_tests(code_prompt: str, entry: str) -> str | None:
    """A `check(candidate)` with one assert per docstring example; None when there is none."""
    lines = []
    for call, value in docstring_examples(code_prompt, entry):
        called = "candidate" + call[len(entry):]
        if isinstance(value, float):
            lines.append(f"    assert abs({called} - {value!r}) < 1e-6")
        else:
            lines.append(f"    assert {called} == {value!r}")
    return "def check(candidate):\n" + "\n".join(lines) + "\n" if lines else None


def code_problem(task_id: str, code_prompt: str, entry: str, hidden_tests: str, **extra) -> Problem:
    """A code problem as the engine uses it (see `ttc.core.code`)."""
    metadata = {"entry_point": entry, "code_prompt": code_prompt, "test": hidden_tests,
                "public_tests": public_tests(code_prompt, entry), **extra}
    return Problem(prompt=INSTRUCTION.format(code=code_prompt), id=task_id, reference=None, metadata=metadata)
