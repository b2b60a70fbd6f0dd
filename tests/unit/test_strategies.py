import random

import pytest

from strategies.base import samples_for_budget
from ttc.core.selection import select
from ttc.core.budget import Budget
from ttc.engine import Engine
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.registry import STRATEGIES, Registry
from ttc.testing import FakeGenerator, FakeScorer, answer_script
from ttc.core.types import Trajectory


def traj(answer, score=None):
    return Trajectory([f"x {answer}"], 2, "stop", step_scores=[score] if score is not None else [], answer=answer)


def engine(answers=None, scorer=None, seed=0, **gen_kwargs):
    gen = FakeGenerator(answer_script(answers or {"42": 0.6, "41": 0.4}), seed=seed, **gen_kwargs)
    return Engine(backend="fake", generator=gen, scorer=scorer)


@pytest.mark.parametrize("n, max_tokens, budget, expected", [
    (None, 256, 2048, 8), (None, 100, 250, 2), (5, 256, 100, 5), (None, 1, 1, 1),
])
def test_n_follows_from_budget_when_not_given(n, max_tokens, budget, expected):
    assert samples_for_budget(n, max_tokens, Budget.coerce(budget)) == expected


def test_too_small_budget_names_both_numbers():
    with pytest.raises(BudgetError, match="budget=100 .* max_tokens=256"):
        samples_for_budget(None, 256, Budget(generated_tokens=100))
    with pytest.raises(ConfigError, match="n is required"):
        samples_for_budget(None, 256, Budget(seconds=3))


def test_majority_groups_equivalent_answers_and_breaks_ties_by_first_seen():
    cands = [traj("1/2"), traj("3"), traj("0.5"), traj("3"), traj(None)]
    choice = select(cands, "majority")
    assert choice.answer == "1/2" and choice.best is cands[0] and choice.votes == {"1/2": 2.0, "3": 2.0}


def test_weighted_majority_and_verifier_selection_disagree_as_they_should():
    cands = [traj("7"), traj("7"), traj("9")]
    scores = [0.4, 0.4, 0.7]
    assert select(cands, "weighted", scores).answer == "7"  # 0.8 total beats 0.7
    assert select(cands, "verifier", scores).answer == "9"  # the single best candidate
    lone = traj(None)
    choice = select([lone], "majority")
    assert (choice.answer, choice.best, choice.votes) == (None, lone, {})  # no answer anywhere: keep the sample


def test_repeated_sampling_reports_coverage_and_counts():
    with engine({"42": 0.2, "41": 0.8}) as e:
        sol = e.solve("q", 64 * 20, "repeated_sampling", reference="42", max_tokens=64)
    # 20 full-length samples fit; the fake's samples are short, so later rounds draw more (budget use).
    assert len(sol.candidates) >= 20 and sol.metrics["samples"] == len(sol.candidates)
    assert 0.8 * 64 * 20 <= sol.usage.generated_tokens <= 64 * 20
    assert sol.metrics["coverage"] is True
    assert sol.metrics["correct_samples"] == sum(c.correct for c in sol.candidates)
    assert sol.answer == "41"


@pytest.mark.parametrize("selection, expected", [("majority", "41"), ("verifier", "42"), ("weighted", "42")])
def test_best_of_n_selection_rules(selection, expected):
    # "41" is the commonest answer, but the verifier scores "42" far higher.
    scorer = FakeScorer({"42": 0.95, "41": 0.1})
    with engine({"42": 0.3, "41": 0.7}, scorer=scorer) as e:
        sol = e.solve("q", 64 * 16, "best_of_n", selection=selection, max_tokens=64)
    assert sol.answer == expected
    assert sol.best.answer == expected
    assert scorer.calls == (0 if selection == "majority" else 1)


def test_verifier_selection_without_scorer_is_a_config_error():
    with engine() as e, pytest.raises(ConfigError, match=r"selection='weighted'\) needs a verifier"):
        e.solve("q", 1000, "best_of_n", selection="weighted")


def test_verifier_budget_exhausted_falls_back_to_majority_keeping_samples():
    scorer = FakeScorer({"42": 0.9}, tokens_per_step=1000)
    with engine(scorer=scorer) as e:
        sol = e.solve("q", {"generated_tokens": 640, "verifier_tokens": 10}, "best_of_n",
                      selection="verifier", max_tokens=64)
    assert len(sol.candidates) >= 10 and scorer.calls == 0
    assert sol.metrics["selection"].startswith("majority")
    assert sol.usage.verifier_tokens == 0


def test_same_seed_same_result_different_seed_different_samples():
    def run(seed):
        with engine(seed=seed) as e:
            sol = e.solve("q", 64 * 8, "best_of_n", max_tokens=64)
        return [c.text for c in sol.candidates]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        STRATEGIES.get("beam")
    assert ("valid names are ['auto', 'beam_search', 'best_of_n', 'dvts', 'mrt', 'particle_filtering', 'plan_search', 'rebase', "
            "'repeated_sampling']") in str(info.value)


def test_all_option_problems_reported_at_once():
    with engine() as e, pytest.raises(ConfigError) as info:
        e.solve("q", 1000, "best_of_n", n=0, top_p=1.5, selection="best", colour="red")
    text = str(info.value)
    for fragment in ["best_of_n.n", "got 0", "best_of_n.top_p", "got 1.5", "best_of_n.selection", "'best'",
                     "unknown option 'best_of_n.colour'"]:
        assert fragment in text
    assert len(info.value.problems) == 4


def test_registry_loads_entry_points_and_runtime_registrations(monkeypatch):
    class EP:
        name, value = "plugin_strategy", "strategies.best_of_n:BestOfN"

    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EP] if group == "grp" else [])
    reg = Registry("strategy", {}, "grp")
    assert reg.names() == ["plugin_strategy"]
    assert reg.get("plugin_strategy").name == "best_of_n"
    reg.register("mine", select)
    assert reg.get("mine") is select


@pytest.mark.parametrize("seed", range(40))
def test_no_strategy_ever_exceeds_its_budget(seed):
    """Random budgets, strategies, options and sample lengths: spend never passes any cap."""
    rng = random.Random(seed)
    steps = rng.randint(1, 12)
    gen = FakeGenerator(answer_script({"1": 0.5, "2": 0.5}, steps=steps, words_per_step=rng.randint(1, 30)),
                        seed=seed)
    budget = Budget(generated_tokens=rng.randint(16, 3000), prompt_tokens=rng.choice([None, rng.randint(5, 200)]),
                    flops=rng.choice([None, 2e6 * rng.randint(20, 4000)]))
    strategy = rng.choice(["repeated_sampling", "best_of_n"])
    options = {"max_tokens": rng.randint(8, 400), "n": rng.choice([None, rng.randint(1, 64)])}
    if options["n"] is None and budget.generated_tokens < options["max_tokens"]:
        options["max_tokens"] = budget.generated_tokens
    with Engine(backend="fake", generator=gen) as e:
        sol = e.solve("what is 1+1?", budget, strategy, **options)
    u = sol.usage
    assert u.generated_tokens <= budget.generated_tokens
    if budget.prompt_tokens is not None:
        assert u.prompt_tokens <= budget.prompt_tokens
    if budget.flops is not None:
        assert u.flops <= budget.flops
    # Capped before sending, not trimmed after: no request ever asked for more than the cap.
    assert all(r.params.n * r.params.max_tokens <= budget.generated_tokens for call in gen.calls for r in call)
