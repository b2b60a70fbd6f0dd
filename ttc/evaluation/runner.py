"""`ttc run`: every problem of a recipe through one engine, concurrently, resumable.

All (strategy x budget x seed x problem) solves are in flight together, bounded
by the recipe's max_concurrent_problems, so the backend sees one large continuous batch.
Each finished problem is appended to results.jsonl at once; a rerun skips what
is there. Failed problems go to errors.jsonl and are retried on the next run.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, TextIO

from ttc.evaluation.datasets import load_problems
from ttc.engine import Engine
from ttc.core.errors import TTCError
from ttc.evaluation.recipe import Recipe
from ttc.core.errors import ConfigError
from ttc.evaluation.progress import Progress
from ttc.evaluation.results import ResultsLog, record_fingerprint, record_key, solution_record
# The sweep's cells live in their own module, which the report reads too; named here for existing callers.
from ttc.evaluation.sweep import RunConfig, budget_label, expand, settings_of  # noqa: F401
from ttc.core.types import Problem, Solution


def resumable(records: list[dict[str, Any]], configs: list[RunConfig], problems: list[Problem], out: Path
              ) -> list[dict[str, Any]]:
    """The records this run may reuse (same configuration settings, same problem); refuses an output
    folder whose results for one of these labels were made with other settings, rather than mix them."""
    current = {c.label: c for c in configs}
    by_id = {p.id: p for p in problems}
    reusable, stale = [], {}
    for r in records:
        c = current.get(r["config"])
        if c is None:
            continue  # a configuration this recipe no longer runs: left alone, not reported
        if r.get("settings") != c.settings or (r["id"] in by_id and
                                               r.get("fingerprint") != record_fingerprint(c.settings, by_id[r["id"]])):
            stale[c.label] = stale.get(c.label, 0) + 1
        elif r["id"] in by_id:
            reusable.append(r)
    if stale:
        which = ", ".join(f"{label!r} ({n})" for label, n in sorted(stale.items()))
        raise ConfigError(f"output folder {str(out)!r} holds results made with other settings (or other problems) "
                          f"for {which}: they cannot be resumed, nor mixed with this run's; set another `output` "
                          "(or remove that folder to start over)")
    return reusable


async def run_recipe_async(recipe: Recipe, *, engine: Engine | None = None, progress: "bool | TextIO" = True,
                           base_dir: Path | None = None, make_plots: bool = True) -> dict[str, Any]:
    """Run what is not yet in results.jsonl; write metrics.json and plots from all results."""
    from ttc.evaluation.report import write_report

    out = recipe.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2))
    record_provenance(out / "provenance.json")
    problems = load_problems(recipe.dataset, base_dir=base_dir or recipe._base_dir)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise TTCError("dataset has duplicate problem ids; results could not be resumed safely")
    log = ResultsLog(out / "results.jsonl")
    errors = ResultsLog(out / "errors.jsonl")
    configs = expand(recipe)
    done = {record_key(r) for r in resumable(log.load(), configs, problems, out)}
    todo = [(c, p) for c in configs for p in problems if (c.label, p.id) not in done]
    bar = Progress(len(todo), progress)
    own_engine = engine is None
    engine = engine or Engine(recipe.engine_config())
    try:
        def keep(config: RunConfig, problem: Problem, result: "Solution | TTCError") -> None:
            """Log one finished problem at once: a result line, or an error line (rerun next time)."""
            if isinstance(result, TTCError):
                errors.append({"config": config.label, "id": problem.id, "error": str(result), "time": time.time()})
                bar.update(None)
                return
            record = solution_record(result, config=config.label, strategy=config.strategy_label,
                                     budget=config.budget.to_dict(), seed=config.seed, settings=config.settings,
                                     problem=problem)
            log.append(record)
            bar.update(record)

        async def one(config: RunConfig, problem: Problem) -> None:
            try:
                result = await engine.asolve(problem, config.budget, config.strategy, seed=config.seed,
                                             **config.options)
            except TTCError as exc:
                result = exc
            keep(config, problem, result)

        if recipe.pooled_budget:
            # One budget per configuration for all its remaining problems, shared by them (SharedBudget).
            by_id = {p.id: p for p in problems}  # the engine hands back its own copy (system prompt set)
            by_config: dict[str, list[Problem]] = {}
            for c, p in todo:
                by_config.setdefault(c.label, []).append(p)

            async def pooled(config: RunConfig, group: list[Problem]) -> None:
                await engine.asolve_pooled(group, config.budget.generated_tokens * len(group), seed=config.seed,
                                           on_done=lambda p, r: keep(config, by_id[p.id], r),
                                           strategy=config.strategy, **config.options)

            await asyncio.gather(*(pooled(c, by_config[c.label]) for c in configs if c.label in by_config))
        else:
            await asyncio.gather(*(one(c, p) for c, p in todo))
    finally:
        bar.close()
        if recipe.cluster is not None:
            await asyncio.to_thread(write_cluster_stats, engine, out / "cluster.json")
        if own_engine:
            await asyncio.to_thread(engine.close)
    summary = write_report(out, configs, resumable(log.load(), configs, problems, out), make_plots=make_plots)
    if make_plots:
        summary["report"], summary["report_error"] = write_html_report(out)
    return summary


def record_provenance(path: Path) -> None:
    """The code version, commit and machine of each start of the run that ran on other code than the
    last (a resumed run may finish on other code than it began with, and its report says so). Written
    whole and then renamed: a kill mid-write never leaves a file that stops the next run."""
    from ttc.core.paths import write_whole
    from ttc.provenance import provenance

    try:
        entries = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        entries = []  # unreadable (written by hand, or by an older version): start the list again
    now = provenance()
    same = ("ttc_version", "commit", "dirty", "machine")
    if entries and all(entries[-1].get(k) == now[k] for k in same):
        return
    write_whole(path, json.dumps([*entries, now], indent=2))


def write_html_report(out: Path) -> tuple[str | None, str | None]:
    """report.html beside the results: (its path, None), or (None, why not). A report that fails is said
    (by `ttc run`), never allowed to fail the run: the results are safe on disk and `ttc report` retries."""
    from ttc.report import write_run_report

    try:
        return str(write_run_report(out, out / "report.html")), None
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"


def write_cluster_stats(engine: Engine, path: Path) -> None:
    """The pools' counters of this run (retries, replaced replicas, routing), beside its results."""
    try:
        stats = engine.cluster_stats()
    except Exception as exc:  # noqa: BLE001 - a report of the pools must not hide the run's own outcome
        stats = {"error": f"{type(exc).__name__}: {exc}"}
    if stats:
        path.write_text(json.dumps(stats, indent=2, default=str))


def run_recipe(recipe: Recipe, **kwargs) -> dict[str, Any]:
    return asyncio.run(run_recipe_async(recipe, **kwargs))
