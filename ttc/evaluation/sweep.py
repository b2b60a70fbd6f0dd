"""A recipe's sweep: its cells (strategy x budget x seed), their labels, and the fingerprint of what decides
each one's results. The runner runs them; the report reads a folder's results against them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttc.core.budget import Budget
from ttc.core.registry import build
from ttc.evaluation.recipe import Recipe
from ttc.evaluation.results import fingerprint


@dataclass(frozen=True)
class RunConfig:
    """One cell of a sweep: a strategy with its options, a budget and a seed."""

    label: str
    strategy_label: str
    strategy: str
    options: dict[str, Any]
    budget: Budget
    seed: int
    #: Fingerprint of everything that decides its results (see `settings_of`).
    settings: str = ""


def budget_label(b: Budget) -> str:
    if list(b.to_dict()) == ["generated_tokens"]:
        return str(b.generated_tokens)
    return ",".join(f"{k}={v:g}" for k, v in b.to_dict().items())


def expand(recipe: Recipe) -> list[RunConfig]:
    configs = []
    for seed in recipe.seeds:
        for spec in recipe.strategies:
            for budget in recipe.budgets:
                label = f"{spec.display()}@{budget_label(budget)}"
                if len(recipe.seeds) > 1:
                    label += f"#seed{seed}"
                options = recipe.strategy_options(spec)
                configs.append(RunConfig(label, spec.display(), spec.name, options, budget, seed,
                                         settings_of(recipe, spec.name, options, budget, seed)))
    return configs


def settings_of(recipe: Recipe, strategy: str, options: dict[str, Any], budget: Budget, seed: int) -> str:
    """Fingerprint of what decides a configuration's results: the strategy's resolved config (defaults
    included), budget, seed, the generator and verifier with their options, the system prompt, and
    the dataset's source and selection. Concurrency and the cluster change how fast, not what."""
    engine = recipe.engine_config().model_dump(mode="json", exclude={"max_concurrent_problems", "cluster", "seed"})
    resolved = build("strategy", strategy, options).config.model_dump(mode="json")
    return fingerprint({"strategy": strategy, "config": resolved, "budget": budget.to_dict(), "seed": seed,
                        "engine": engine, "dataset": recipe.dataset.model_dump(mode="json"),
                        "pooled_budget": recipe.pooled_budget})
