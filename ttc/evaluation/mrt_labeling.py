"""`ttc mrt-label`: MRT's dense rewards from the engine's own traces, ready for RL or STaR-style tuning.

For each problem of a recipe's dataset (references required) `traces` thinking traces are sampled
(with budget forcing: at most `thinking.max_thinking_tokens`, then the answer is forced) and split
into episodes (`ttc.core.episodes`). For the empty prefix and the end of every episode, J (the
chance that the policy, stopped there with the termination text `thinking.answer_prompt`, answers
right) is estimated from `continuations` forced answers judged against the reference, by the
estimator of `ttc.core.success`. One JSON line per problem (format below), appended as each
finishes, fingerprinted and resumable like `ttc label`.

Per trace: `text`, `thinking`, `answer`, `correct`, `reward` (1/0: the trace's own final answer),
`j0` (J before any thinking) and `episodes`, each with
- `index`, `text` (the episode), `prefix` (the thinking up to its end);
- `j`: J(prefix), `progress`: j minus the J before the episode (MRT's dense bonus);
- `cumulative_regret`: sum over episodes so far of (comparator - j), the comparator being the best
  J on the trace (`regret_comparator: max_j`) or 1 (`one`);
- `advantage`: reward - j, the advantage over terminating here (MRT's termination baseline);
- `forced_answers`: the answers J was estimated from.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import Field

from strategies.mrt import MRTThinking
from strategies.thinking import force_samples
from ttc.core.config import SamplingOptions, StrictModel
from ttc.core.episodes import EpisodeOptions, episode_prefixes, split_episodes, thinking_part
from ttc.core.plugins import Outcome, Strategy
from ttc.core.selection import select
from ttc.core.success import estimate_success
from ttc.core.types import Problem, Solution
from ttc.evaluation.labeling import run_labels


class MRTLabelOptions(StrictModel):
    """The `mrt_label:` section of a recipe: how `ttc mrt-label` samples traces and estimates J."""

    traces: int = Field(4, ge=1, le=1024, description="Thinking traces sampled per problem.")
    thinking: MRTThinking = Field(default_factory=MRTThinking, description="Budget forcing of the traces "
                                  "(max_thinking_tokens None: what sampling.max_tokens leaves after answer_tokens); "
                                  "its answer_prompt, MRT's termination text, is what J is measured with.")
    episodes: EpisodeOptions = Field(default_factory=EpisodeOptions)
    continuations: int = Field(8, ge=1, le=1024, description="Forced answers per prefix that estimate its J.")
    regret_comparator: Literal["max_j", "one"] = Field(
        "max_j", description="What cumulative regret compares each J with: the best J on the trace, or 1.")
    output: str = Field("{output}/mrt_labels.jsonl", description="Label file; {output} is the recipe's output folder.")
    plot: str | None = Field("{output}/mrt_j.png", description="Plot of J over episodes; None: no plot.")


class EpisodeLabeler(Strategy):
    """Sample traces, split them into episodes and estimate J at every episode boundary: the control
    flow of `ttc mrt-label`, run by the engine so that its requests are capped, charged and batched."""

    name = "mrt_labels"

    def __init__(self, options: MRTLabelOptions, sampling: SamplingOptions):
        super().__init__()
        # Without its own cap the thinking gets what the recipe's max_tokens leaves after the answer.
        thinking = options.thinking.within(sampling.max_tokens, explicit=False, name="mrt_label.thinking",
                                           source="sampling.max_tokens")
        self.options, self.sampling = options.model_copy(update={"thinking": thinking}), sampling

    def check(self, budget, has_scorer: bool) -> None:
        return None

    async def run(self, ctx) -> Outcome:
        o = self.options
        samples = await force_samples(ctx, o.traces, self.sampling, o.thinking)
        per_trace, wanted = [], {}
        for s in samples:
            thinking, _ = thinking_part(s.thinking, o.thinking)
            opening = s.thinking[:len(s.thinking) - len(thinking)] if thinking else s.thinking
            episodes = split_episodes(thinking, o.episodes)
            prefixes = [opening + p for p in ["", *episode_prefixes(episodes)]]
            per_trace.append((thinking, episodes, prefixes))
            for p in prefixes:
                wanted.setdefault(p, len(wanted))
        params = self.sampling.params(o.continuations, max_tokens=o.thinking.answer_tokens)
        terminated = [p + (o.thinking.think_end or "") + o.thinking.answer_prompt for p in wanted]
        estimates = await estimate_success(ctx, terminated, params, forced=True)
        traces = []
        for s, (thinking, episodes, prefixes) in zip(samples, per_trace):
            est = [estimates[wanted[p]] for p in prefixes]
            traces.append(_trace_record(s, thinking, episodes, prefixes, est, o.regret_comparator))
        trajectories = [s.trajectory for s in samples]
        vote = select(trajectories, "majority") if trajectories else None
        return Outcome(vote.answer if vote else None, vote.best if vote else None, trajectories, {"traces": traces})


def _trace_record(sample, thinking: str, episodes: list[str], prefixes: list[str], estimates: list,
                  comparator: str) -> dict[str, Any]:
    t = sample.trajectory
    reward = float(bool(t.correct))
    js = [None if e is None else e.j for e in estimates]
    known = [j for j in js if j is not None]
    best = 1.0 if comparator == "one" else (max(known) if known else None)
    rows, regret = [], 0.0
    for i, episode in enumerate(episodes, start=1):
        j, before = js[i], js[i - 1]
        if j is not None and best is not None:
            regret += best - j
        rows.append({
            "index": i, "text": episode, "prefix": prefixes[i], "j": _round(j),
            "progress": _round(j - before) if j is not None and before is not None else None,
            "cumulative_regret": _round(regret) if j is not None else None,
            "advantage": _round(reward - j) if j is not None else None,
            "forced_answers": estimates[i].answers if estimates[i] is not None else None,
        })
    return {"text": sample.text, "thinking": thinking, "thinking_tokens": sample.thinking_tokens,
            "answer": t.answer, "correct": t.correct, "reward": reward, "j0": _round(js[0]),
            "forced_answers0": estimates[0].answers if estimates[0] is not None else None, "episodes": rows}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def mrt_record(solution: Solution, problem: Problem, settings: str, policy: dict[str, Any]) -> dict[str, Any]:
    from ttc.evaluation.results import record_fingerprint

    return {"id": problem.id, "prompt": problem.prompt, "reference": problem.reference, "system": problem.system,
            "metadata": problem.metadata, "settings": settings, "fingerprint": record_fingerprint(settings, problem),
            "policy": policy, "traces": solution.metrics["traces"], "usage": solution.usage.to_dict()}


def summarize(records: list[dict[str, Any]], by_id: dict[str, Problem] | None = None) -> dict[str, Any]:
    """Traces, episodes, J before and after thinking, the share of episodes that made progress, tokens."""
    records = [r for r in records if by_id is None or r.get("id") in by_id]
    traces = [t for r in records for t in r["traces"]]
    episodes = [e for t in traces for e in t["episodes"]]
    progress = [e["progress"] for e in episodes if e["progress"] is not None]
    j0 = [t["j0"] for t in traces if t["j0"] is not None]
    j_end = [t["episodes"][-1]["j"] for t in traces if t["episodes"] and t["episodes"][-1]["j"] is not None]
    usage = [r["usage"] for r in records]
    mean = (lambda xs: round(sum(xs) / len(xs), 4) if xs else None)
    return {
        "problems": len(records), "traces": len(traces), "episodes": len(episodes),
        "episodes_per_trace": mean([len(t["episodes"]) for t in traces]),
        "trace_accuracy": mean([t["reward"] for t in traces]), "mean_j0": mean(j0), "mean_j_end": mean(j_end),
        "positive_progress_share": mean([float(p > 0) for p in progress]),
        "thinking_tokens": sum(t["thinking_tokens"] for t in traces),
        "generated_tokens": sum(u["generated_tokens"] for u in usage),
    }


def plot_j(records: list[dict[str, Any]], path: str | Path) -> Path:
    """J over episodes: one faint line per trace, the mean per episode index in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    by_index: dict[int, list[float]] = {}
    for r in records:
        for t in r["traces"]:
            js = [t["j0"], *(e["j"] for e in t["episodes"])]
            points = [(i, j) for i, j in enumerate(js) if j is not None]
            for i, j in points:
                by_index.setdefault(i, []).append(j)
            if points:
                ax.plot(*zip(*points), color="tab:blue", alpha=0.15, linewidth=0.8)
    if by_index:
        xs = sorted(by_index)
        means = [sum(by_index[x]) / len(by_index[x]) for x in xs]
        ax.plot(xs, means, color="tab:red", linewidth=2.5, marker="o", label="mean J (n: traces that long)")
        for x, m in zip(xs, means):  # a mean over few traces is noise: say how many
            ax.annotate(f"n={len(by_index[x])}", (x, m), textcoords="offset points", xytext=(4, 6), fontsize=8)
        ax.set_xticks(xs)
        ax.legend()
    ax.set_xlabel("episodes of thinking")
    ax.set_ylabel("J (chance of a right answer when stopped here)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"J over episodes ({sum(len(r['traces']) for r in records)} traces)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


async def mrt_label_recipe_async(recipe, *, engine=None, progress: "bool | TextIO" = True) -> dict[str, Any]:
    """Write the recipe's MRT labels; returns the summary (and the plot's path)."""
    from ttc.evaluation.results import ResultsLog

    options: MRTLabelOptions = recipe.mrt_label
    sampling = SamplingOptions(**recipe.sampling)
    labeler = EpisodeLabeler(options, sampling)
    decides = {"mrt_label": options.model_dump(mode="json", exclude={"output", "plot"})}
    summary = await run_labels(recipe, command="ttc mrt-label", output=options.output, labeler=labeler,
                               decides=decides, make_record=mrt_record, summarize=summarize, engine=engine,
                               progress=progress)
    if options.plot:
        records = ResultsLog(Path(summary["path"])).load()
        target = options.plot.replace("{output}", str(recipe.output_dir()))
        summary["plot"] = str(await asyncio.to_thread(plot_j, records, target))
    return summary


def mrt_label_recipe(recipe, **kwargs) -> dict[str, Any]:
    return asyncio.run(mrt_label_recipe_async(recipe, **kwargs))
