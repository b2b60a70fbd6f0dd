"""`ttc verifier-pipeline RECIPE.yaml`: label, train and evaluate a verifier in one resumable run.

The recipe's `dataset` gives the calibration problems (labelled with Monte-Carlo step
labels, `label:`), `train:` how the verifier is trained, and `evaluate_verifier:` the
held-out and tuning problems (outcome labels only), the baseline scorers, and a step
search to run against best-of-N majority. Everything lands in the recipe's output folder:

    labels.jsonl              calibration labels       heldout/labels.jsonl   held-out candidates
    tuning/labels.jsonl       tuning candidates        heldout_deduped.jsonl  held-out minus calibration prompts
    verifier/                 the trained verifier     verifier_eval.json     every figure

Each step resumes: label files skip labelled problems, and a verifier already trained
from the same labels with the same settings is reused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from ttc.core.errors import ConfigError, TTCError
from ttc.evaluation.labeling import label_recipe, problem_of, read_labels
from ttc.evaluation.verifier_eval import evaluate_verifier, plot_curves, table
from ttc.verifier_training import file_sha256


def dedupe(heldout: Path, calibration: Path, out: Path) -> int:
    """Write the held-out records whose prompt is not a calibration prompt (nor a repeat); their count."""
    seen = {r["prompt"] for r in read_labels(calibration)}
    kept = []
    for r in read_labels(heldout):
        if r["prompt"] not in seen:
            kept.append(json.dumps(r) + "\n")
            seen.add(r["prompt"])
    out.write_text("".join(kept))
    return len(kept)


def _outcome_recipe(recipe, dataset, out: Path, samples: int):
    label = recipe.label.model_copy(update={"continuations": 0, "samples": samples,
                                            "output": str(out / "labels.jsonl")})
    return recipe.model_copy(update={"dataset": dataset, "label": label, "output": str(out)})


def _trained_already(folder: Path, labels: Path, config) -> bool:
    """A verifier in `folder` trained from these labels with these settings."""
    info_file = folder / "ttc_verifier.json"
    if not info_file.is_file():
        return False
    info = json.loads(info_file.read_text())
    wanted = config.model_dump(mode="json")
    return (info["data"].get("labels_sha256") == file_sha256(labels)
            and all(info["training"].get(k) == v for k, v in wanted.items()))


def run_pipeline(recipe, *, progress: "bool | TextIO" = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    from ttc.engine import Engine
    from ttc.verifier_training import train_verifier

    ev = recipe.evaluate_verifier
    if ev.heldout is None:
        raise ConfigError("evaluate_verifier.heldout: the pipeline needs held-out problems to evaluate on")
    out = recipe.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"recipe": recipe.name}
    started = time.monotonic()
    cal_recipe = recipe.model_copy(update={"label": recipe.label.model_copy(update={
        "output": str(out / "labels.jsonl")})})
    cal_recipe._base_dir = recipe._base_dir
    engine = Engine(recipe.engine_config())
    try:
        cal = label_recipe(cal_recipe, engine=engine, progress=progress)
        log(f"calibration labels: {cal['problems']} problems, positive step share {cal['positive_step_share']}, "
            f"{cal['generated_tokens']} generated tokens ({cal['continuation_tokens']} in continuations)")
        # Held-out and tuning problems never repeat a calibration prompt (nor each other's).
        seen = {r["prompt"] for r in read_labels(cal["path"])}
        held = label_recipe(_outcome_recipe(recipe, ev.heldout, out / "heldout", ev.samples), engine=engine,
                            progress=progress, exclude_prompts=seen)
        tuning = None
        if ev.tuning is not None:
            seen |= {r["prompt"] for r in read_labels(held["path"])}
            tuning = label_recipe(_outcome_recipe(recipe, ev.tuning, out / "tuning", ev.samples), engine=engine,
                                  progress=progress, exclude_prompts=seen)
        for name, s in (("calibration", cal), ("held-out", held), ("tuning", tuning)):
            if s is not None and s["errors"]:
                raise TTCError(f"{name} labelling failed for {len(s['errors'])} problem(s), e.g. {s['errors'][0]}; "
                               "rerun to retry them")
        held_path = out / "heldout_deduped.jsonl"
        n_eval = dedupe(Path(held["path"]), Path(cal["path"]), held_path)
        tune_path = Path(tuning["path"]) if tuning else None
        log(f"held-out: {n_eval} problems after removing calibration prompts")
        result.update(labels=cal, n_eval_problems=n_eval, label_seconds=round(time.monotonic() - started, 1))
        evals: dict[str, Any] = {}
        for name in ev.baselines:
            path = held_path
            if ev.baseline_problems:
                path = out / f"heldout_{name}_subset.jsonl"
                path.write_text("".join(json.dumps(r) + "\n" for r in read_labels(held_path)[:ev.baseline_problems]))
            evals[name] = evaluate_verifier(engine, path, verifier=name, tuning_path=tune_path,
                                            samples=ev.samples)
            log(table(name, evals[name]))
    finally:
        engine.close()

    train = recipe.train
    if train.base is None:
        train = train.model_copy(update={"base": recipe.generator.model})
    folder, cal_path = out / "verifier", Path(cal["path"])
    if _trained_already(folder, cal_path, train):
        info = json.loads((folder / "ttc_verifier.json").read_text())
        log(f"verifier: reusing {folder} (trained from these labels with these settings)")
    else:
        info = train_verifier(cal_path, folder, train, log=log)
    result["training"] = {k: info[k] for k in ("train_seconds", "validation", "layers", "base_layers")}

    config = recipe.engine_config().model_copy(update={
        "verifier": "prm_transformers", "verifier_options": {"model": str(folder), "device": "auto"}})
    engine = Engine(config)
    try:
        evals["trained"] = evaluate_verifier(engine, held_path, tuning_path=tune_path, samples=ev.samples)
        log(table("trained", evals["trained"]))
        result["evaluations"] = evals
        plot_curves(evals, out / "verifier_accuracy_vs_tokens.png")
        if ev.search is not None:
            result["search"] = _search(engine, held_path, ev, evals["trained"]["verifier_weight"], recipe, log)
    finally:
        engine.close()
    result["wall_s"] = round(time.monotonic() - started, 1)
    (out / "verifier_eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _search(engine, held_path: Path, ev, g: float, recipe, log) -> list[dict[str, Any]]:
    """The step search with the trained verifier, best-of-N majority and best-of-N combined, at each budget."""
    problems = [problem_of(r) for r in read_labels(held_path)[:ev.search.problems]]
    sampling = dict(recipe.sampling)
    rows = []
    log(f"{'strategy':<40} {'budget':>7} {'accuracy':>9} {'tokens':>8}")
    for budget in ev.search.budgets:
        for label, strategy, options in (
                ("best_of_n majority", "best_of_n", {**sampling, "selection": "majority"}),
                (f"best_of_n combined (g={g})", "best_of_n", {**sampling, "selection": "combined",
                                                             "verifier_weight": g}),
                (f"{ev.search.strategy} (trained verifier)", ev.search.strategy,
                 {"temperature": sampling.get("temperature", 0.8), **ev.search.options})):
            sols = engine.solve_many(problems, budget, strategy, **options)
            done = [s for s in sols if not isinstance(s, TTCError)]
            row = {"strategy": label, "budget": budget, "problems": len(done), "failed": len(sols) - len(done),
                   "accuracy": round(sum(bool(s.correct) for s in done) / max(1, len(done)), 4),
                   "mean_generated_tokens": round(sum(s.usage.generated_tokens for s in done) / max(1, len(done)), 1),
                   "mean_verifier_tokens": round(sum(s.usage.verifier_tokens for s in done) / max(1, len(done)), 1)}
            rows.append(row)
            log(f"{label:<40} {budget:>7} {row['accuracy']:>9.1%} {row['mean_generated_tokens']:>8.0f}")
    return rows
