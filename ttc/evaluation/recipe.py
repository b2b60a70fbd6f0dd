"""Recipes: one YAML file says which model, verifier, strategies, budgets and data to run.

The schema composes the components' own configs (strategy options are checked
by each strategy's pydantic Config, backend options by the backend's), so every
default has one source of truth. Loading reports every problem at once, each
with its key path, and never shows a traceback for a bad file.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, field_validator

from ttc.core.budget import Budget
from ttc.core.config import StrictModel, validate
from ttc.engine_config import EngineConfig, EngineOptions
from ttc.evaluation.datasets import DatasetConfig
from ttc.evaluation.labeling import LabelOptions
from ttc.evaluation.mrt_labeling import MRTLabelOptions
from ttc.evaluation.verifier_eval import VerifierEvalOptions
from ttc.verifier_training import TrainConfig
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.registry import BACKENDS, STRATEGIES, VERIFIERS, build


_ENGINE = EngineConfig.model_fields


class GeneratorSpec(StrictModel):
    """The policy model and the backend that runs it (the engine's backend, model and backend_options)."""

    backend: str = Field(_ENGINE["backend"].default, description=_ENGINE["backend"].description)
    model: str | None = Field(_ENGINE["model"].default, description=_ENGINE["model"].description)
    options: dict[str, Any] = Field(default_factory=dict, description=_ENGINE["backend_options"].description)


class VerifierSpec(StrictModel):
    """A scorer from the verifier registry."""

    name: str = Field(description="Verifier name, e.g. mean_logprob.")
    options: dict[str, Any] = Field(default_factory=dict, description="The verifier's own options.")


class StrategySpec(StrictModel):
    """A strategy and its options; `label` names it in results and plots."""

    model_config = {**StrictModel.model_config, "extra": "allow"}  # the strategy's own options, checked by it

    name: str = Field(description="Strategy name from the registry.")
    label: str | None = Field(None, description="Name in results and plots; default: name plus options.")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def display(self) -> str:
        if self.label:
            return self.label
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}[{opts}]" if opts else self.name


class Recipe(EngineOptions):
    """A run: generator + verifier + strategies x budgets x seeds over a dataset.

    `system_prompt`, `max_concurrent_problems` and `cluster` are the engine's own options (EngineOptions)."""

    name: str = Field("run", description="Name of the run, shown in reports.")
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec, description="Policy model and backend.")
    verifier: VerifierSpec | None = Field(None, description="Scorer for verifier-guided selection.")
    strategy: StrategySpec | list[StrategySpec] = Field(description="One strategy, or a list to compare (a sweep).")
    budget: int | dict[str, float] | list[int | dict[str, float]] = Field(
        description="Per-problem budget (int = generated tokens), or a list of budgets to sweep.")
    dataset: DatasetConfig = Field(description="Where the problems come from.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="Sampling options given to every strategy.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Seeds; each is a full repeat.")
    pooled_budget: bool = Field(
        False, description="strategy auto only: each budget is the average per problem of ONE budget shared by "
                           "the whole dataset, so easy prompts hand compute to hard ones.")
    output: str = Field("runs/{name}", description="Output folder; {name} is replaced by the recipe name.")
    label: LabelOptions = Field(default_factory=LabelOptions,
                                description="`ttc label` only: how step labels are sampled and estimated.")
    mrt_label: MRTLabelOptions = Field(default_factory=MRTLabelOptions,
                                       description="`ttc mrt-label` only: how traces are sampled and J estimated.")
    train: TrainConfig = Field(default_factory=TrainConfig,
                               description="`ttc verifier-pipeline` only: how the verifier is trained.")
    evaluate_verifier: VerifierEvalOptions = Field(
        default_factory=VerifierEvalOptions,
        description="`ttc verifier-pipeline` only: held-out and tuning problems, baselines, search comparison.")
    #: Folder of the recipe file: relative dataset paths are resolved against it.
    _base_dir: Path | None = PrivateAttr(None)

    @field_validator("strategy", mode="after")
    @classmethod
    def _as_list(cls, v):
        return v if isinstance(v, list) else [v]

    @property
    def strategies(self) -> list[StrategySpec]:
        return self.strategy  # type: ignore[return-value]

    @property
    def budgets(self) -> list[Budget]:
        raw = self.budget if isinstance(self.budget, list) else [self.budget]
        return [Budget.coerce(b) for b in raw]

    def strategy_options(self, spec: StrategySpec) -> dict[str, Any]:
        return {**self.sampling, **spec.options}

    def engine_config(self) -> EngineConfig:
        """The engine this recipe runs on: its own engine options, its generator, verifier and first seed."""
        shared = {name: getattr(self, name) for name in EngineOptions.model_fields}
        return EngineConfig(**shared, backend=self.generator.backend, model=self.generator.model,
                            backend_options=self.generator.options,
                            verifier=self.verifier.name if self.verifier else None,
                            verifier_options=self.verifier.options if self.verifier else {}, seed=self.seeds[0])

    def output_dir(self) -> Path:
        """Relative to the working directory, like any command-line tool's output."""
        return Path(self.output.replace("{name}", self.name)).expanduser()


def _check_components(recipe: Recipe) -> list[str]:
    """Problems the per-field schema cannot see: names and options checked by each component."""
    problems: list[str] = []
    for kind, registry, name, prefix in [
        ("backend", BACKENDS, recipe.generator.backend, "generator.backend"),
        ("verifier", VERIFIERS, recipe.verifier.name if recipe.verifier else None, "verifier.name"),
    ]:
        if name is not None:
            try:
                registry.get(name)
            except ConfigError as exc:
                problems.append(f"{prefix}: {exc}")
    if recipe.verifier is not None and not problems:
        try:
            build("verifier", recipe.verifier.name, recipe.verifier.options, prefix="verifier.options", check_only=True)
        except ConfigError as exc:
            problems.extend(exc.problems)
    for i, spec in enumerate(recipe.strategies):
        where = f"strategy[{i}]" if len(recipe.strategies) > 1 else "strategy"
        try:
            STRATEGIES.get(spec.name)
        except ConfigError as exc:
            problems.append(f"{where}.name: {exc}")
            continue
        try:
            strat = build("strategy", spec.name, recipe.strategy_options(spec), prefix=where)
            for budget in recipe.budgets:
                strat.check(budget, recipe.verifier is not None)
        except (ConfigError, BudgetError) as exc:
            problems.extend(getattr(exc, "problems", [str(exc)]))
    try:
        recipe.budgets
    except BudgetError as exc:
        problems.append(str(exc))
    if recipe.pooled_budget:
        not_sharing = [s.display() for s in recipe.strategies
                       if s.name in STRATEGIES.names() and not STRATEGIES.get(s.name).shares_budget]
        if not_sharing:
            problems.append(f"pooled_budget: true needs strategy 'auto', got {not_sharing}")
        if any(b.generated_tokens is None or len(b.to_dict()) > 1 for b in recipe.budgets):
            problems.append("pooled_budget: true needs int budgets (generated tokens)")
    labels = [s.display() for s in recipe.strategies]
    dupes = sorted({l for l in labels if labels.count(l) > 1})
    if dupes:
        problems.append(f"strategy: two entries share the label(s) {dupes}; give each a distinct 'label'")
    return problems


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one `a.b.c=value` override; list items are addressed by index (`strategy.0.n`)."""
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[int(key)]
            continue
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if isinstance(nxt, list) and not keys[i + 1].isdigit():
            if len(nxt) != 1:
                raise ConfigError(f"override {dotted!r}: {key!r} is a list; name an index, e.g. {key}.0.{keys[i + 1]}")
            nxt = nxt[0]
            node[key] = [nxt]
        node = nxt
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


def parse_recipe(data: Any, overrides: dict[str, Any] | None = None, source: str = "recipe") -> Recipe:
    """Validate raw recipe data (plus overrides); raise one ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping of keys, got {type(data).__name__}")
    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        try:
            set_dotted(data, key, value)
        except (ValueError, IndexError, TypeError, AttributeError):
            raise ConfigError(f"override {key!r} does not fit the recipe's structure") from None
    try:
        recipe = validate(Recipe, data)
    except ConfigError as exc:
        # Report the components' problems too, in the same round: check what did validate, with
        # neutral stand-ins for the fields that did not.
        problems = list(exc.problems)
        stand_ins = {"strategy": [], "budget": 1 << 40, "dataset": {"source": "arithmetic"}}
        partial = {k: v for k, v in data.items() if k not in exc.fields}
        partial.update({k: v for k, v in stand_ins.items() if k in exc.fields or k not in partial})
        try:
            problems += [p for p in _check_components(validate(Recipe, partial)) if p not in problems]
        except ConfigError:
            pass  # nothing more can be checked
        raise ConfigError(problems) from None
    problems = _check_components(recipe)
    if problems:
        raise ConfigError(problems)
    return recipe


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the recipe as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    recipe = parse_recipe(data, overrides, source=str(path))
    recipe._base_dir = path.resolve().parent
    return recipe

