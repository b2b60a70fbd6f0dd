"""`ttc label`: step labels from the engine's own rollouts (Math-Shepherd style).

For each problem of a recipe's dataset (references required): sample trajectories with
the recipe's policy and sampling, split each into steps, and estimate for every step
prefix the chance J that the policy, continuing from it, reaches the right answer
(`ttc.core.success`). The last step of a finished trajectory needs no estimate: its J
is its correctness. One JSON line per problem goes to `labels.jsonl`, appended as each
finishes and fingerprinted like `ttc run`'s results, so a rerun resumes and a changed
setting is refused rather than mixed in. With `continuations: 0` only outcomes are
labelled: the cheap way to get candidates with their correctness for evaluation.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import Field

from ttc.core.config import SamplingOptions, StrictModel
from ttc.core.errors import ConfigError, TTCError
from ttc.core.plugins import Outcome, Strategy
from ttc.core.selection import select
from ttc.core.success import estimate_success, step_prefixes
from ttc.core.types import Problem, Solution, Trajectory
from ttc.evaluation.datasets import load_problems
from ttc.evaluation.progress import Progress
from ttc.evaluation.results import ResultsLog, fingerprint, record_fingerprint


class LabelOptions(StrictModel):
    """The `label:` section of a recipe: how `ttc label` samples and estimates."""

    samples: int = Field(16, ge=1, le=4096, description="Trajectories sampled per problem.")
    continuations: int = Field(
        4, ge=0, le=1024, description="Completions per step prefix that estimate its J (k); 0 = outcome labels only.")
    continuation_max_tokens: int | None = Field(
        None, ge=1, le=131072, description="Most tokens per continuation; None = sampling.max_tokens.")
    max_prefixes: int = Field(
        8, ge=0, le=1024, description="Intermediate step prefixes estimated per trajectory, from the first; later "
        "steps keep J unknown (null).")
    step_labelled_samples: int | None = Field(
        None, ge=0, description="Samples per problem whose steps are estimated (the first ones); the others get "
        "outcome labels only. None = all. Continuations cost several times the samples themselves.")
    threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="Hard label of a step: 1 when its J is at least this.")
    output: str = Field("{output}/labels.jsonl", description="Label file; {output} is the recipe's output folder.")


class RolloutLabeler(Strategy):
    """Sample, then estimate J of every step prefix: the control flow of `ttc label`, run by the engine
    so that every request is capped, charged and batched like a solve's."""

    name = "rollout_labels"

    def __init__(self, options: LabelOptions, sampling: SamplingOptions):
        super().__init__()
        self.options, self.sampling = options, sampling

    def check(self, budget, has_scorer: bool) -> None:
        return None

    async def run(self, ctx) -> Outcome:
        o = self.options
        samples = await ctx.sample(self.sampling.params(o.samples, logprobs=0))
        # J of every intermediate prefix, each distinct prefix estimated once (samples often share steps).
        wanted: dict[str, int] = {}
        per_sample: list[list[str]] = []
        labelled = len(samples) if o.step_labelled_samples is None else o.step_labelled_samples
        for k, t in enumerate(samples):
            prefixes = step_prefixes(t.steps)[:-1][:o.max_prefixes] if o.continuations and k < labelled else []
            per_sample.append(prefixes)
            for p in prefixes:
                wanted.setdefault(p, len(wanted))
        estimates = []
        if wanted:
            params = self.sampling.params(o.continuations, max_tokens=o.continuation_max_tokens)
            estimates = await estimate_success(ctx, list(wanted), params)
        labels = []
        for t, prefixes in zip(samples, per_sample):
            j: list[float | None] = [None] * len(t.steps)
            for k, p in enumerate(prefixes):
                e = estimates[wanted[p]]
                j[k] = None if e is None else round(e.j, 6)
            if t.finish_reason != "length":  # a finished trajectory's last step: J is its correctness
                j[-1] = float(bool(t.correct))
            labels.append(j)
        vote = select(samples, "majority") if samples else None
        return Outcome(vote.answer if vote else None, vote.best if vote else None, samples, {"j": labels})


def label_record(solution: Solution, problem: Problem, options: LabelOptions, *, settings: str,
                 policy: dict[str, Any]) -> dict[str, Any]:
    """One problem's line of labels.jsonl."""
    samples = []
    for t, j in zip(solution.candidates, solution.metrics["j"]):
        samples.append({
            "steps": t.steps, "j": j,
            "labels": [None if v is None else int(v >= options.threshold) for v in j],
            "answer": t.answer, "correct": t.correct, "num_tokens": t.num_tokens,
            "finish_reason": t.finish_reason,
            "mean_logprob": (sum(t.token_logprobs) / len(t.token_logprobs)) if t.token_logprobs else None,
            "token_logprobs": [round(x, 4) for x in t.token_logprobs] if t.token_logprobs else None,
        })
    return {"id": problem.id, "prompt": problem.prompt, "reference": problem.reference, "system": problem.system,
            "metadata": problem.metadata, "settings": settings, "fingerprint": record_fingerprint(settings, problem),
            "policy": policy, "samples": samples, "usage": solution.usage.to_dict()}


def trajectories_of(record: dict[str, Any]) -> list[Trajectory]:
    """The samples of a label record as trajectories (for scoring them again)."""
    return [Trajectory(list(s["steps"]), s["num_tokens"], s["finish_reason"], answer=s["answer"],
                       correct=s["correct"], token_logprobs=s.get("token_logprobs")) for s in record["samples"]]


def problem_of(record: dict[str, Any]) -> Problem:
    return Problem(record["prompt"], record["id"], record.get("reference"), record.get("system"),
                   record.get("metadata") or {})


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    """The records of a label file; a clear error when it is missing or holds none."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"label file {str(path)!r} does not exist")
    records = ResultsLog(path).load()
    if not records:
        raise ConfigError(f"label file {str(path)!r} holds no labelled problems")
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict) or "samples" not in r or "prompt" not in r]
    if bad:
        raise ConfigError(f"label file {str(path)!r}: line {bad[0] + 1} is not a label record (no 'samples')")
    return records


async def label_recipe_async(recipe, *, engine=None, progress: "bool | TextIO" = True,
                             exclude_prompts: set[str] = frozenset()) -> dict[str, Any]:
    """Label the recipe's dataset; returns the summary. A problem whose prompt is in `exclude_prompts`,
    or repeats an earlier problem's prompt, is left out (generated datasets repeat small problems)."""
    options: LabelOptions = recipe.label
    sampling = SamplingOptions(**recipe.sampling)
    # What decides the labels; the step-label options do not matter when no step is estimated.
    step_only = {"max_prefixes", "threshold", "continuation_max_tokens", "step_labelled_samples"}
    decides = options.model_dump(mode="json", exclude={"output", *(step_only if not options.continuations else ())})

    def record(sol: Solution, problem: Problem, settings: str, policy: dict[str, Any]) -> dict[str, Any]:
        return label_record(sol, problem, options, settings=settings, policy=policy)

    return await run_labels(recipe, command="ttc label", output=options.output, labeler=RolloutLabeler(options, sampling),
                            decides={"label": decides}, make_record=record, summarize=summarize, engine=engine,
                            progress=progress, exclude_prompts=exclude_prompts)


async def run_labels(recipe, *, command: str, output: str, labeler: Strategy, decides: dict[str, Any], make_record,
                     summarize, engine=None, progress: "bool | TextIO" = True,
                     exclude_prompts: set[str] = frozenset()) -> dict[str, Any]:
    """Run `labeler` (a Strategy) on every distinct problem of the recipe's dataset (references required)
    and append one record per problem (`make_record(solution, problem, settings, policy)`) to `output`;
    fingerprinted by `decides`, the sampling, the engine, the dataset and the seed, so a rerun resumes and
    a file made with other settings is refused. Returns `summarize(records, problems)` with the run's figures."""
    from ttc.engine import Engine

    seen = set(exclude_prompts)
    problems = []
    for p in load_problems(recipe.dataset, recipe._base_dir):
        if p.prompt not in seen:
            seen.add(p.prompt)
            problems.append(p)
    missing = [p.id for p in problems if p.reference is None]
    if missing:
        raise ConfigError(f"dataset: `{command}` needs a reference answer for every problem; {len(missing)} have "
                          f"none (first: {missing[0]!r}); give the dataset's answer column (dataset.fields.answer)")
    sampling = SamplingOptions(**recipe.sampling)
    path = Path(output.replace("{output}", str(recipe.output_dir())))
    engine_settings = recipe.engine_config().model_dump(mode="json", exclude={"max_concurrent_problems", "cluster",
                                                                              "seed"})
    settings = fingerprint({**decides, "sampling": sampling.model_dump(mode="json"), "engine": engine_settings,
                            "dataset": recipe.dataset.model_dump(mode="json"), "seed": recipe.seeds[0]})
    log = ResultsLog(path)
    by_id = {p.id: p for p in problems}
    done, stale = set(), 0
    for r in log.load():  # every record of the file, not only this dataset's: readers take the whole file
        if r.get("settings") != settings or (r.get("id") in by_id and
                                              r.get("fingerprint") != record_fingerprint(settings, by_id[r["id"]])):
            stale += 1
        elif r.get("id") in by_id:
            done.add(r["id"])
    if stale:
        raise ConfigError(f"label file {str(path)!r} holds {stale} problem(s) labelled with other settings or other "
                          "problems: they cannot be resumed nor mixed with these; remove that file or set "
                          "the output elsewhere")
    todo = [p for p in problems if p.id not in done]
    own = engine is None
    engine = engine or Engine(recipe.engine_config())
    policy = {"model": engine.model_name, "backend": engine_settings.get("backend"),
              "sampling": sampling.model_dump(mode="json")}
    bar = Progress(len(todo), progress)
    errors: list[str] = []
    start = time.monotonic()

    async def one(p: Problem) -> None:
        try:
            sol = await engine.asolve(p, None, labeler, seed=recipe.seeds[0])
        except TTCError as exc:
            errors.append(f"{p.id}: {exc}")
            bar.update(None)
            return
        record = make_record(sol, p, settings, policy)
        log.append(record)
        bar.update({"usage": record["usage"], "correct": sol.correct})

    try:
        await asyncio.gather(*(one(p) for p in todo))
    finally:
        bar.close()
        if own:
            await asyncio.to_thread(engine.close)
    summary = summarize(log.load(), by_id)
    summary.update(path=str(path), labelled_now=len(todo) - len(errors), errors=errors,
                   wall_s=round(time.monotonic() - start, 1))
    return summary


def summarize(records: list[dict[str, Any]], by_id: dict[str, Problem] | None = None) -> dict[str, Any]:
    """Label balance, outcome accuracy and tokens of a label file's records."""
    records = [r for r in records if by_id is None or r.get("id") in by_id]
    samples = [s for r in records for s in r["samples"]]
    steps = [v for s in samples for v in s["labels"][:-1] if v is not None]
    js = [v for s in samples for v in s["j"][:-1] if v is not None]
    usage = [r["usage"] for r in records]
    sample_tokens = sum(s["num_tokens"] for s in samples)
    generated = sum(u["generated_tokens"] for u in usage)
    return {
        "problems": len(records), "samples": len(samples),
        "sample_accuracy": round(sum(bool(s["correct"]) for s in samples) / len(samples), 4) if samples else None,
        "intermediate_steps_labelled": len(steps),
        "positive_step_share": round(sum(steps) / len(steps), 4) if steps else None,
        "mean_j": round(sum(js) / len(js), 4) if js else None,
        "sample_tokens": sample_tokens, "continuation_tokens": generated - sample_tokens,
        "generated_tokens": generated, "prompt_tokens": sum(u["prompt_tokens"] for u in usage),
        "cached_prompt_tokens": sum(u["cached_prompt_tokens"] for u in usage),
    }


def label_recipe(recipe, **kwargs) -> dict[str, Any]:
    return asyncio.run(label_recipe_async(recipe, **kwargs))
