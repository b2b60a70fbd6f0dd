"""The declared plugin protocol, the one builder, and the entry-point groups of all three kinds."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ttc.core.config import StrictModel
from ttc.core.errors import ConfigError
from ttc.core.plugins import Generator, Plugin, Scorer, Strategy
from ttc.core.registry import BACKENDS, STRATEGIES, VERIFIERS, build

ROOT = Path(__file__).resolve().parents[2]
KINDS = [("strategy", STRATEGIES, Strategy), ("verifier", VERIFIERS, Scorer), ("backend", BACKENDS, Generator)]


@pytest.mark.parametrize("kind,registry,base", KINDS)
def test_every_builtin_declares_the_protocol(kind, registry, base):
    """Each built-in subclasses its kind's base and declares a StrictModel Config, so every hook and
    capability a caller uses exists with a default."""
    for name in registry.names():
        if name in ("vllm", "prm_vllm", "prm_transformers"):  # import vllm/torch: checked by integration tests
            continue
        cls = registry.get(name)
        assert issubclass(cls, base) and issubclass(cls, Plugin), name
        assert issubclass(cls.Config, StrictModel), name
        assert not inspect.isabstract(cls), name


def test_capabilities_are_declared_with_defaults():
    best_of_n = build("strategy", "best_of_n", {"selection": "weighted"})
    beam = build("strategy", "beam_search", {"beam_width": 2})
    auto = build("strategy", "auto", {})
    assert (best_of_n.needs_scorer(), best_of_n.selection(), best_of_n.reuses_probe) == (True, "weighted", True)
    assert (beam.needs_scorer(), beam.selection(), beam.reuses_probe, beam.width_multiple()) == (True, "weighted", False, 2)
    assert auto.shares_budget and auto.shared_budget_entry() == 4 * 256 and not best_of_n.shares_budget
    fake = build("verifier", "fake", {})
    assert (fake.runs_on_replicas, fake.needs_logprobs, fake.uses_policy, fake.dead) == (True, False, False, False)
    assert (VERIFIERS.get("self_eval").uses_policy, VERIFIERS.get("mean_logprob").needs_logprobs) == (True, True)


def test_build_names_the_field_and_value_and_the_valid_names():
    with pytest.raises(ConfigError, match=r"best_of_n.n: .* got 0"):
        build("strategy", "best_of_n", {"n": 0})
    with pytest.raises(ConfigError, match=r"unknown option 'best_of_n.sellection' \(did you mean 'selection'"):
        build("strategy", "best_of_n", {"sellection": "majority"})
    with pytest.raises(ConfigError, match=r"unknown verifier 'oracel' \(did you mean 'oracle'\?\)"):
        build("verifier", "oracel")
    with pytest.raises(ConfigError, match=r"unknown plugin kind 'scorer'; valid kinds are"):
        build("scorer", "oracle")
    assert build("backend", "fake", {"answers": {"1": 1.0}}, check_only=True) is None


PLUGIN_RUN = textwrap.dedent("""
    import ttc
    from ttc.core.registry import BACKENDS, STRATEGIES, VERIFIERS, build

    assert "demo_first" in STRATEGIES.names() and "demo_length" in VERIFIERS.names()
    assert "demo_echo" in BACKENDS.names()
    assert build("strategy", "demo_first", {"n": 3}).config.n == 3
    with ttc.Engine(backend="demo_echo", backend_options={"answer": "9"}, verifier="demo_length") as engine:
        sol = engine.solve("What is 4 + 5?", 1000, "demo_first", n=3)
    print(sol.answer, len(sol.candidates), sol.best.num_tokens, sol.usage.verifier_tokens)
""")


def test_third_party_plugins_of_every_kind_install_and_run(tmp_path):
    """A distribution that declares a strategy, a verifier and a backend in the three entry-point
    groups is installed into a temporary folder; a fresh interpreter finds and runs all three."""
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--target", str(site), str(tmp_path / "src")] if _copy_plugin(tmp_path / "src") else [],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert list(site.glob("ttc_demo_plugin-0.1.0.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    run = subprocess.run([sys.executable, "-c", PLUGIN_RUN], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    answer, candidates, best_tokens, verifier_tokens = run.stdout.split()
    # The echo backend answers 9; the length scorer prefers the longest of 3 samples (2 padding words).
    assert (answer, candidates, best_tokens, verifier_tokens) == ("9", "3", "3", "3")


def _copy_plugin(dest: Path) -> bool:
    """A copy of the plugin's source, so the build leaves nothing in the repository."""
    import shutil

    shutil.copytree(Path(__file__).parent / "plugin_dist", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return True
