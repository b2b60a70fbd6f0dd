"""`ttc check-code`: the sandbox from the shell; exit 0 whatever the verdict, 2 for bad arguments."""
from __future__ import annotations

import json

from ttc.cli import main

TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run_json(capsys, *argv):
    code = main(["check-code", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_verdicts_as_json(tmp_path, capsys):
    tests = write(tmp_path, "tests.py", TESTS)
    good = write(tmp_path, "good.py", "def add(a, b):\n    print('hi')\n    return a + b\n")
    code, out = run_json(capsys, good, tests, "--entry-point", "add")
    assert code == 0 and out["passed"] is True and out["status"] == "passed"
    assert (out["tests_passed"], out["tests_total"], out["output"]) == (2, 2, "hi\nhi\n")
    half = write(tmp_path, "half.py", "def add(a, b):\n    return 3\n")
    code, out = run_json(capsys, half, tests, "--entry-point", "add")
    assert code == 0 and (out["passed"], out["status"], out["tests_passed"]) == (False, "failed", 1)
    loop = write(tmp_path, "loop.py", "def add(a, b):\n    while True:\n        pass\n")
    code, out = run_json(capsys, loop, tests, "--entry-point", "add", "--timeout", "1")
    assert code == 0 and out["status"] == "timeout"
    code, out = run_json(capsys, good, tests, "--entry-point", "plus")
    assert code == 0 and out["status"] == "error"


def test_bad_arguments_exit_2(tmp_path, capsys):
    tests = write(tmp_path, "tests.py", TESTS)
    assert main(["check-code", str(tmp_path / "missing.py"), tests, "--entry-point", "add"]) == 2
    assert "missing.py" in capsys.readouterr().err
    good = write(tmp_path, "good.py", "def add(a, b):\n    return a + b\n")
    assert main(["check-code", good, tests, "--entry-point", "add", "--timeout", "-1"]) == 2
    no_check = write(tmp_path, "t2.py", "def test():\n    pass\n")
    assert main(["check-code", good, no_check, "--entry-point", "add"]) == 2
