"""Code problems: what marks one, and the program a completion stands for.

A code problem carries `metadata["entry_point"]` (the function its tests call) and
`metadata["code_prompt"]` (the stub the model is asked to complete: signature, docstring,
imports, helpers). Its answer is a whole program, so the execution verifier and the judge
run the same text: the stub first (for its imports and helpers), then the model's code.
Its public tests (`metadata["public_tests"]`) may guide a search; its hidden tests
(`metadata["test"]`) only judge correctness.
"""
from __future__ import annotations

import ast
import re

from ttc.core.types import Problem

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def is_code_problem(problem: Problem) -> bool:
    return bool(problem.metadata.get("entry_point"))


def _defines(code: str, name: str) -> bool:
    """A top-level def of `name` (a method of that name in a class is not the entry point)."""
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


_CODE_START = re.compile(r"^(?:import\s|from\s+\S+\s+import\s|def\s|async\s+def\s|class\s|@)", re.M)


def _unfenced_code(text: str, name: str) -> str:
    """Code written without a fence: from the first import or def line before the entry point's def,
    with trailing prose lines dropped until it parses."""
    definition = re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", text, re.M).start()
    starts = [m.start() for m in _CODE_START.finditer(text) if m.start() <= definition]
    lines = text[starts[0] if starts else definition:].split("```")[0].rstrip().splitlines()
    while lines and not _parses("\n".join(lines)):
        lines.pop()
    return "\n".join(lines)


def extract_program(text: str, problem: Problem) -> str | None:
    """The program a completion stands for, or None when it holds no code for the entry point.

    Taken, in order: the last fenced block that defines the entry point (at top level); unfenced
    code that defines it (from its first import or def, trailing prose dropped); else the
    completion read as the body that continues the stub. The stub goes first in every case, so its
    imports and helpers are there and a redefinition replaces it.
    """
    entry = problem.metadata.get("entry_point", "")
    stub = problem.metadata.get("code_prompt", "")
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    defining = [b for b in blocks if _defines(b, entry)]
    if defining:
        code = defining[-1]
    elif _defines(text, entry):
        code = _unfenced_code(text, entry)
    elif stub and text.strip():
        body = blocks[-1] if blocks else text
        joined = stub + body
        return joined if _parses(joined) else None
    else:
        return None
    program = (stub.rstrip() + "\n\n\n" + code.strip() + "\n") if stub else code.strip() + "\n"
    return program if _parses(program) and _defines(code, entry) else None
