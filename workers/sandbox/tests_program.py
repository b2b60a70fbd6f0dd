"""HumanEval-format tests, made countable: every `assert` in `check` becomes one recorded test.

The tests are trusted (they come with the problem, not from the model) and run outside the
sandbox, in the judge; only `candidate` crosses into it. Each assert statement is wrapped so
a failure is recorded and the next one still runs, which gives `tests_passed / tests_total`
instead of HumanEval's stop-at-the-first-failure. An assert inside a loop is one test, which
passes when every one of its executions passes.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ttc.core.errors import ConfigError

RECORD = "__ttc_record_test__"


@dataclass
class TestsProgram:
    """Compiled tests: `code` defines `check(candidate)` with every assert instrumented."""

    code: object
    total: int
    entry: str = "check"


@dataclass
class TestTally:
    total: int
    executed: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)

    def record(self, index: int, error: BaseException | None) -> None:
        self.executed.add(index)
        if error is not None and index not in self.failed:
            self.failed[index] = f"{type(error).__name__}: {error}"[:300]

    def passed_count(self, completed: bool) -> int:
        """Asserts that never failed; one never reached counts as passed only if `check` finished."""
        reached = len(self.executed - set(self.failed))
        return reached + (self.total - len(self.executed) if completed else 0)


class _WrapAsserts(ast.NodeTransformer):
    def __init__(self):
        self.count = 0

    def visit_Assert(self, node: ast.Assert):
        index = self.count
        self.count += 1
        call = lambda error: ast.Expr(ast.Call(ast.Name(RECORD, ast.Load()), [ast.Constant(index), error], []))  # noqa: E731
        handler = ast.ExceptHandler(ast.Name("Exception", ast.Load()), "__ttc_error__",
                                    [call(ast.Name("__ttc_error__", ast.Load()))])
        wrapped = ast.Try(body=[node], handlers=[handler], orelse=[call(ast.Constant(None))], finalbody=[])
        return ast.copy_location(wrapped, node)


def compile_tests(source: str, filename: str = "tests.py", entry: str = "check") -> TestsProgram:
    """Instrument the asserts of `entry` in `source`; a file without it is a clear error."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise ConfigError(f"tests {filename}: not valid Python ({exc.msg}, line {exc.lineno})") from None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry]
    if not functions:
        raise ConfigError(f"tests {filename}: defines no function {entry!r}(candidate)")
    wrapper = _WrapAsserts()
    for function in functions:
        wrapper.visit(function)
    ast.fix_missing_locations(tree)
    return TestsProgram(code=compile(tree, filename, "exec"), total=wrapper.count, entry=entry)
