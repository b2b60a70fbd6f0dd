"""Step-level search on the fakes: the properties a peer library gets wrong."""
import hashlib
import random
from collections import Counter

import pytest

from strategies.particle_filtering import resample
from strategies.rebase import allocate, softmax
from ttc.core.budget import Budget
from ttc.engine import Engine
from ttc.core.errors import BudgetError, ConfigError
from ttc.testing import FakeGenerator, FakeScorer, answer_script

STRATEGIES = {
    "beam_search": {"n": 8, "beam_width": 2},
    "dvts": {"n": 8, "beam_width": 2},
    "rebase": {"n": 8},
    "particle_filtering": {"n": 8},
}


def step_score(text: str) -> float:
    """A deterministic pseudo-PRM: any step text maps to a fixed score in [0, 1)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def run(strategy, *, steps=4, seed=0, budget=100_000, scorer=None, gen=None, **options):
    gen = gen or FakeGenerator(answer_script({"42": 0.5, "41": 0.3, "7": 0.2}, steps=steps, words_per_step=5),
                               seed=seed)
    scorer = scorer or FakeScorer(by_step=step_score)
    opts = {**STRATEGIES[strategy], "max_tokens": 400, "max_step_tokens": 40, **options}
    with Engine(generator=gen, scorer=scorer, seed=seed) as e:
        sol = e.solve("what is 6*7?", budget, strategy, reference="42", **opts)
    return sol, gen, scorer


def step_events(sol):
    return [ev for ev in sol.trace if ev["event"] == "step"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_generate_and_one_score_call_per_search_step(strategy):
    sol, gen, scorer = run(strategy)
    steps = sol.metrics["steps_searched"]
    assert steps >= 2
    assert scorer.calls == steps + (1 if strategy == "dvts" else 0)  # DVTS also scores its roots
    # The root sampling call, then one expansion call per step that had survivors.
    assert steps <= len(gen.calls) <= steps + 1


def test_beam_keeps_the_top_by_aggregated_score():
    sol, _, _ = run("beam_search", n=8, beam_width=2, steps=5)
    keep = 8 // 2
    for ev in step_events(sol):
        open_nodes = [n for n in ev["nodes"] if not n["finished"]]
        kept = [n for n in open_nodes if n["kept"]]
        assert len(kept) == min(keep, -(-ev["left"] // 2), len(open_nodes)) if ev["left"] > 0 else not kept
        if kept:
            worst_kept = min(n["score"] for n in kept)
            assert all(n["score"] <= worst_kept for n in open_nodes if not n["kept"])


@pytest.mark.parametrize("aggregation", ["last", "min", "prod", "mean"])
def test_beam_ranks_by_the_aggregation_asked_for(aggregation):
    sol, _, _ = run("beam_search", aggregation=aggregation, steps=5)
    by_id = {c.node_id: c for c in sol.candidates}
    from ttc.core.aggregation import aggregate
    for c in sol.candidates:
        assert c.step_scores and len(c.step_scores) == len(c.steps)
    last = step_events(sol)[-1]
    for node in last["nodes"]:
        if node["id"] in by_id:
            assert node["score"] == pytest.approx(aggregate(by_id[node["id"]].step_scores, aggregation), abs=1e-6)


def test_dvts_subtrees_stay_independent():
    sol, _, _ = run("dvts", n=8, beam_width=2, steps=5)
    subtree = {}
    for ev in step_events(sol):
        for node, k in zip(ev["nodes"], ev["subtrees"]):
            subtree[node["id"]] = k
            if node["parent"] in subtree:
                assert subtree[node["parent"]] == k, "a child must stay in its parent's subtree"
        for k in set(ev["subtrees"]):
            mine = [n for n, kk in zip(ev["nodes"], ev["subtrees"]) if kk == k]
            kept = [n for n in mine if n["kept"]]
            assert len(kept) == 1 and kept[0]["score"] == max(n["score"] for n in mine)
    assert len(set(subtree.values())) == 4


def test_rebase_widths_sum_to_the_step_width_and_follow_the_softmax():
    sol, _, _ = run("rebase", n=8, steps=5, balance_temperature=0.3)
    events = [ev for ev in step_events(sol) if ev["shares"]]
    assert events
    for ev in events:
        shares = [s["share"] for s in ev["shares"]]
        assert sum(shares) == ev["width"]
        for s in ev["shares"]:
            assert abs(s["share"] - ev["width"] * s["weight"]) < 1.0


def test_rebase_allocation_and_softmax_by_hand():
    w = softmax([0.9, 0.5, 0.1], temperature=0.2)
    assert sum(w) == pytest.approx(1.0) and w[0] > w[1] > w[2]
    assert allocate([0.5, 0.3, 0.2], 10) == [5, 3, 2]
    assert allocate([0.45, 0.45, 0.1], 3) == [2, 1, 0]  # largest remainders, ties to the earlier
    assert sum(allocate(softmax([3.0, 1.0, 2.0, 0.5], 0.7), 13)) == 13


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resampling_frequencies_match_the_weights_over_many_seeds(method):
    weights = [0.5, 0.25, 0.15, 0.1, 0.0]
    counts = Counter()
    draws = 0
    for seed in range(400):
        picks = resample(weights, 10, method, random.Random(seed))
        counts.update(picks)
        draws += len(picks)
    for i, w in enumerate(weights):
        assert abs(counts[i] / draws - w) < 0.02
    assert counts[4] == 0


def test_systematic_resampling_has_low_variance():
    # Systematic resampling gives each particle floor(k w) or ceil(k w) copies, never more.
    for seed in range(100):
        c = Counter(resample([0.55, 0.3, 0.15], 10, "systematic", random.Random(seed)))
        assert 5 <= c[0] <= 6 and 3 <= c[1] <= 3 + 1 and 1 <= c[2] <= 2


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_particle_filtering_uses_the_resampling_method_asked_for(method, monkeypatch):
    import strategies.particle_filtering as pf

    used = []
    real = pf.resample
    monkeypatch.setattr(pf, "resample", lambda w, k, m, rng: used.append(m) or real(w, k, m, rng))
    sol, _, _ = run("particle_filtering", resampling=method, steps=4)
    assert used and set(used) == {method}
    assert all(ev["resampling"] == method for ev in step_events(sol))


def test_particle_gibbs_runs_extra_iterations_around_a_reference():
    sol, _, _ = run("particle_filtering", gibbs_iterations=2, steps=3)
    refs = [ev for ev in sol.trace if ev["event"] == "gibbs_reference"]
    assert len(refs) == 2
    ids = [c.node_id for c in sol.candidates]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_ended_trajectory_is_never_asked_to_continue(strategy):
    sol, gen, _ = run(strategy, steps=3)
    prompts = {r.prompt for call in gen.calls for r in call}
    rendered = gen.render_prompt(sol.problem)
    finished = [t for t in sol.candidates if t.finished]
    assert finished
    for t in finished:
        assert rendered + t.text not in prompts


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_steps", [1, 2, 3])
def test_max_steps_caps_every_trajectory(strategy, max_steps):
    sol, _, _ = run(strategy, steps=8, max_steps=max_steps)
    assert all(len(t.steps) <= max_steps for t in sol.candidates)
    assert any(t.finish_reason == "max_steps" for t in sol.candidates)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_finished_trajectory_is_kept_once(strategy):
    sol, _, _ = run(strategy, steps=2)  # many finish early, while the search is still wide
    ids = [t.node_id for t in sol.candidates]
    assert len(ids) == len(set(ids))
    assert len({id(t) for t in sol.candidates}) == len(sol.candidates)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_result(strategy):
    a, _, _ = run(strategy, seed=3)
    b, _, _ = run(strategy, seed=3)
    c, _, _ = run(strategy, seed=4)
    assert [t.text for t in a.candidates] == [t.text for t in b.candidates]
    assert a.trace == b.trace
    assert [t.text for t in a.candidates] != [t.text for t in c.candidates]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_step_search_exceeds_its_budget(strategy, seed, monkeypatch):
    from ttc.core.budget import Ledger

    real_reserve = Ledger.reserve

    def checked_reserve(self, params, prompt_tokens=0):
        r = real_reserve(self, params, prompt_tokens)
        # At every send, what is spent plus what is in flight stays within the cap.
        assert self.usage.generated_tokens + self._reserved.generated_tokens <= self.budget.generated_tokens
        return r

    monkeypatch.setattr(Ledger, "reserve", checked_reserve)
    rng = random.Random(seed)
    budget = Budget(generated_tokens=rng.randint(60, 2000), verifier_tokens=rng.choice([None, rng.randint(50, 3000)]))
    sol, gen, _ = run(strategy, seed=seed, steps=rng.randint(1, 6), budget=budget, max_tokens=60,
                      max_step_tokens=rng.randint(3, 30), n=None)
    assert sol.usage.generated_tokens <= budget.generated_tokens
    if budget.verifier_tokens:
        assert sol.usage.verifier_tokens <= budget.verifier_tokens


def test_width_is_derived_from_the_budget_and_validated():
    sol, _, _ = run("beam_search", n=None, beam_width=4, budget=8 * 100, max_tokens=100)
    assert sol.metrics["width"] == 8
    with pytest.raises(ConfigError, match="beam_width must divide n, got n=10 beam_width=4"):
        run("beam_search", n=10, beam_width=4)
    with pytest.raises(BudgetError, match=r"budget=300 cannot pay for 2 steps of 4 trajectories \(beam_width=4\) "
                                          "of max_step_tokens=40"):
        run("dvts", n=None, beam_width=4, budget=300, max_tokens=100)
    # Three whole trajectories of max_tokens fit, fewer than one beam: the search runs anyway at width 4
    # (the audit's "refuses to run at all with its defaults").
    sol, _, _ = run("dvts", n=None, beam_width=4, budget=320, max_tokens=100)
    assert sol.metrics["width"] == 4 and sol.usage.generated_tokens <= 320
    with Engine(generator=FakeGenerator()) as e, pytest.raises(ConfigError, match="needs a verifier"):
        e.solve("q", 1000, "rebase")


def test_trace_records_the_search_tree():
    sol, _, _ = run("beam_search", steps=3)
    nodes = [n for ev in step_events(sol) for n in ev["nodes"]]
    ids = {n["id"] for n in nodes}
    assert all(n["parent"] is None or n["parent"] in ids for n in nodes)
    assert {t.node_id for t in sol.candidates} <= ids


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_spent_verifier_budget_keeps_the_finished_solutions(strategy):
    # Everything finishes at step 2; the verifier pays for the first scoring call (8 nodes x 1 step x
    # 10 tokens) but not the second (8 x 2 x 10): the finished step-2 nodes must still be kept.
    sol, _, _ = run(strategy, steps=1, budget=Budget(generated_tokens=100_000, verifier_tokens=150))
    assert any(ev["event"] == "verifier_budget_exhausted" for ev in sol.trace)
    assert sol.candidates and all(t.finished for t in sol.candidates)
    assert sol.answer in {"42", "41", "7"}


def test_dvts_scores_and_traces_its_roots():
    sol, _, scorer = run("dvts", steps=3)
    first = step_events(sol)[0]
    assert first["step"] == 0 and len(first["nodes"]) == 4 and all(n["parent"] is None for n in first["nodes"])


def test_answer_only_at_once_is_scored_in_every_search():
    def immediate(prompt, rng):
        return f"The answer is \\boxed{{{rng.choice(['41', '42'])}}}"

    for strategy in STRATEGIES:
        sol, _, _ = run(strategy, gen=FakeGenerator(immediate), scorer=FakeScorer({"42": 0.9, "41": 0.1}))
        assert sol.answer == "42", strategy
        assert all(t.step_scores for t in sol.candidates)


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_never_keeps_more_than_n(seed):
    sol, _, _ = run("beam_search", n=8, beam_width=4, seed=seed, steps=random.Random(seed).randint(2, 5))
    assert sol.metrics["completed"] <= 8


def test_a_boxed_answer_split_across_steps_ends_the_trajectory():
    def split(prompt, rng):
        so_far = prompt.rpartition("[assistant]\n")[2]
        return "one\n\n" if "\\boxed{" not in so_far and "one" not in so_far else (
            "and \\boxed{\n\n" if "\\boxed{" not in so_far else "42} done\n\nmore\n\n")

    sol, gen, _ = run("beam_search", gen=FakeGenerator(split), max_steps=8)
    assert all(len(t.steps) == 3 and t.finished and t.answer == "42" for t in sol.candidates)


def test_self_eval_cache_eviction_never_loses_scores_it_needs(monkeypatch):
    import asyncio

    import verifiers.self_eval as se
    from ttc.core.types import Problem, Trajectory

    monkeypatch.setattr(se, "_CACHE_SIZE", 3)
    scorer = se.SelfEvalScorer().for_solve(FakeGenerator())
    p = Problem("q")
    asyncio.run(scorer.score(p, [Trajectory(["a\n\n"], 1, "stop")]))
    res = asyncio.run(scorer.score(p, [Trajectory(["a\n\n", "b\n\n", "c\n\n", "d"], 4, "stop")]))
    assert len(res.step_scores[0]) == 4 and len(scorer._cache) == 3


def test_lookahead_rolls_out_scores_candidates_and_keeps_finished_rollouts():
    sol, gen, scorer = run("beam_search", lookahead=2, steps=4)
    steps = sol.metrics["steps_searched"]
    assert scorer.calls == steps  # still one scoring call per search step
    assert len(gen.calls) > steps + 1  # rollouts cost extra generate calls
    assert any(ev["event"] == "lookahead" for ev in sol.trace)
    assert all(t.step_scores for t in sol.candidates)


def test_particle_copies_of_one_parent_are_one_request_with_n_copies():
    """Resampling picks some particles several times: their children come from one request of
    n = copies (shared prefill), never one n=1 request per copy."""
    sol, gen, _ = run("particle_filtering", n=8, steps=4, weight_temperature=0.05)
    later = gen.calls[1:]  # after the root request
    assert later
    assert any(r.params.n > 1 for call in later for r in call)  # some particle was copied
    for call in later:
        prompts = [r.prompt for r in call]
        assert len(prompts) == len(set(prompts))  # one request per distinct parent


def test_self_eval_in_best_of_n_judges_only_what_the_aggregation_reads():
    """aggregation='last' reads one score per sample: one judge request per sample, not one per step."""
    from verifiers.self_eval import SelfEvalScorer

    gen = FakeGenerator(answer_script({"1": 0.5, "2": 0.5}, steps=4, words_per_step=3))
    with Engine(generator=gen, scorer=SelfEvalScorer()) as e:
        last = e.solve("q", 10_000, "best_of_n", n=5, max_tokens=100, selection="weighted")
        every = e.solve("q", 10_000, "best_of_n", n=5, max_tokens=100, selection="weighted", aggregation="min")
    assert last.usage.requests == 1 + 5  # the sampling request, then one judgement per sample
    assert every.usage.requests > 1 + 5 * 4  # every step prefix of every sample is judged
    assert all(len(c.step_scores) == 1 for c in last.candidates)


def test_each_solve_pays_for_its_own_self_evaluation():
    """The judge's cache is per solve: the same question twice is charged twice, not once."""
    from verifiers.self_eval import SelfEvalScorer

    gen = FakeGenerator(answer_script({"1": 1.0}, steps=2, words_per_step=3), seed=1)
    with Engine(generator=gen, scorer=SelfEvalScorer(), seed=0) as e:
        first = e.solve("q", 10_000, "best_of_n", n=2, max_tokens=100, selection="weighted", seed=0)
        second = e.solve("q", 10_000, "best_of_n", n=2, max_tokens=100, selection="weighted", seed=0)
    assert first.usage.verifier_tokens == second.usage.verifier_tokens > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_budget_sized_search_keeps_searching_while_the_budget_pays(strategy):
    """Sized by the budget alone, a search whose trajectories finish early is followed by more, so the
    budget is put to use; with n given, one search of width n runs."""
    budget = 4000
    sol, _, _ = run(strategy, n=None, budget=budget, steps=3)
    assert sol.metrics["searches"] > 1 and sol.usage.generated_tokens <= budget
    assert sol.metrics["budget_used"] >= 0.8
    fixed, _, _ = run(strategy, budget=budget, steps=3)
    assert fixed.metrics["searches"] == 1


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_logprob_scorer_gets_every_steps_logprobs(strategy):
    """mean_logprob reads token logprobs: a step search asks for them at every step and carries the
    parents' along, so each node's logprobs cover all its tokens (particle Gibbs' reference prefixes too)."""
    from verifiers.logprob import MeanLogprobScorer

    options = {"gibbs_iterations": 1} if strategy == "particle_filtering" else {}
    sol, gen, _ = run(strategy, scorer=MeanLogprobScorer(), **options)
    assert sol.answer is not None
    assert all(request.params.logprobs == 0 for call in gen.calls for request in call)
    for t in sol.candidates:
        assert t.token_logprobs is not None and len(t.token_logprobs) == t.num_tokens
