"""Shared cases for the allocator, auto and calibration tests: synthetic outcome tables with a
known optimum, recorded samples, and fake engines and allocator files."""
from strategies.auto import allocator as A
from ttc.engine import Engine
from ttc.testing import FakeGenerator, answer_script

CONFIGS = [A.ConfigChoice(label="cheap", strategy="best_of_n", options={"selection": "majority"}),
           A.ConfigChoice(label="search", strategy="beam_search", options={"beam_width": 2})]


def synthetic(n_per_group=10):
    """Easy prompts (probe agreement 1.0) are solved best by `cheap`; hard ones (0.25) by `search`."""
    feats, outcomes = {}, []
    groups = {"easy": (1.0, {"cheap": 0.9, "search": 0.7}), "mid": (0.5, {"cheap": 0.5, "search": 0.5}),
              "hard": (0.25, {"cheap": 0.1, "search": 0.6})}
    for g, (agreement, acc) in groups.items():
        for i in range(n_per_group):
            pid = f"{g}-{i}"
            feats[pid] = A.ProbeFeatures(agreement, 1.0, None, 50.0)
            for budget, scale in ((256, 0.5), (1024, 1.0)):
                for cfg, a in acc.items():
                    # exactly round(a * scale * n) of the group are correct
                    correct = i < round(a * scale * n_per_group)
                    outcomes.append(A.Outcome(pid, cfg, budget, correct, budget * (0.9 if cfg == "cheap" else 1.0)))
    return feats, outcomes


def hopeless_and_medium(per_group=20):
    """Two groups: hopeless (5% at any budget) and medium (20% at 512, 60% at 2048)."""
    feats, outcomes = {}, []
    for i in range(2 * per_group):
        hopeless = i < per_group
        pid = f"{'h' if hopeless else 'm'}{i}"
        feats[pid] = A.ProbeFeatures(0.25 if hopeless else 0.75, 1.0, None, 80.0)
        k = i % 20
        for budget, tokens, rate in ((512, 400.0, 0.05 if hopeless else 0.2), (2048, 1300.0, 0.05 if hopeless else 0.6)):
            outcomes.append(A.Outcome(pid, "cheap", budget, k < round(rate * 20), tokens))
        outcomes.append(A.Outcome(pid, A.PROBE_ONLY.label, 2048, k < 1, 320.0))
        outcomes.append(A.Outcome(pid, A.PROBE_ONLY.label, 512, k < 1, 320.0))
    return feats, outcomes


def probe_record(draws, more=None, *, reference="0", budget=512, prompt_tokens=0):
    """A probe record as calibration builds it: its samples' features, cost and majority answer."""
    from ttc.calibrate import ProbeRecord
    from ttc.core.selection import pick
    from ttc.core.types import Trajectory

    features = A.probe_features([Trajectory([], d.tokens, d.finish_reason, answer=d.answer) for d in draws],
                                prompt_tokens=prompt_tokens)
    chosen = pick([d.cluster for d in draws], None, "majority")
    return ProbeRecord(features=features, tokens=float(sum(d.tokens for d in draws)), budget=budget,
                       correct=chosen is not None and draws[chosen].correct, draws=list(draws), more=dict(more or {}),
                       reference=reference, prompt_tokens=prompt_tokens)


def probes_without_pools(feats, outcomes):
    """Probe records for `hopeless_and_medium`: four 80-token samples agreeing as the features say,
    their majority right where the "probe_only" outcome is, and no configuration's samples (so
    auto's best-of-N choices are judged by the recorded outcomes)."""
    out = {}
    for pid, f in feats.items():
        right = next(o.correct for o in outcomes if o.problem_id == pid and o.config == A.PROBE_ONLY.label)
        lead = 0 if right else 1  # cluster 0 is the reference's answer
        clusters = [lead, 2, 3, 4] if f.agreement == 0.25 else [lead, lead, lead, 2]
        out[pid] = probe_record(draws(*[(c, c == 0, 80, None) for c in clusters]))
    return out


def draws(*spec):
    """Draws from (cluster, correct, tokens, score) tuples; a cluster's answer is its number (-1: none)."""
    from ttc.calibrate import Draw

    return [Draw(*d, answer=str(d[0]) if d[0] >= 0 else None) for d in spec]


def fake_engine(answers, **kw):
    return Engine(generator=FakeGenerator(answer_script(answers), **kw))


def weighted_allocator(tmp_path, monkeypatch, name="wtd", probe_samples=4, stop_margin=0):
    """An allocator whose only choice (besides stopping) is verifier-weighted best-of-N."""
    monkeypatch.setenv("TTC_HOME", str(tmp_path))
    feats, outcomes = hopeless_and_medium()
    weighted = A.ConfigChoice(label="cheap", strategy="best_of_n", options={"selection": "weighted"})
    model = A.fit(feats, outcomes, [weighted, A.PROBE_ONLY], n_bins=2, probe_samples=probe_samples, shrinkage=0)
    A.save(model.model_copy(update={"stop_margin": stop_margin}), A.allocator_path(name))
    return name
