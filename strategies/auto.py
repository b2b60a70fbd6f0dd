"""`auto`: probe the prompt, predict its difficulty, run the compute-optimal configuration.

The probe draws a few samples (charged to the budget). When they already agree
enough, the prompt is easy and the answer is returned at once: the rest of the
budget is not spent. Otherwise the allocator (fitted by `ttc calibrate`) picks
the configuration that was most accurate for prompts of this difficulty at the
budget that is left, and runs it. The probe samples stay in the candidate pool:
a vote counts them, so no compute is thrown away.

The allocator may also decide that more compute does not pay for prompts like
this one (they are easy, or hopeless for this model): `min_gain_per_doubling`
is the accuracy a doubling of tokens must buy, as calibration measured it for
the prompt's difficulty bin, so the budget is a cap, not a target.

Without an allocator file the documented default is used: easy prompts stop
after the probe; every other prompt gets best-of-N majority with the rest of
the budget (the strongest fixed choice on the embedded model, see BENCHMARKS.md).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from strategies.base import Outcome, Strategy
from strategies.selection import majority_vote
from ttc.allocator import PROBE_REUSING, ConfigChoice, Decision, probe_features
from ttc.budget import Budget
from ttc.config import SamplingOptions
from ttc.context import SearchContext
from ttc.errors import BudgetError, ConfigError

DEFAULT_CHOICE = ConfigChoice(label="best_of_n[majority]", strategy="best_of_n", options={"selection": "majority"})


class AutoConfig(SamplingOptions):
    """The probe, the early stop, and which allocator to follow."""

    probe_samples: int = Field(4, ge=1, le=64, description="Samples in the difficulty probe.")
    allocator: str | None = Field(None, description="Allocator file or name from `ttc calibrate`; None = default.")
    confident_agreement: float = Field(
        1.0, gt=0.0, le=1.0, description="Stop after the probe when this share of its samples agree.")
    min_gain_per_doubling: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Spend more only where calibration shows this much accuracy gained per doubling of tokens "
                    "(0.02 = 2 points); 0 = the most accurate choice within the budget; None = the value "
                    "`ttc calibrate` chose for the allocator file.")


class Auto(Strategy):
    name = "auto"
    Config = AutoConfig

    def __init__(self, config: AutoConfig | None = None):
        super().__init__(config)
        self._model = None
        if self.config.allocator is not None:
            from ttc.allocator import load

            self._model = load(self.config.allocator)

    def check(self, budget: Budget, has_scorer: bool) -> None:
        c = self.config
        if budget.generated_tokens is not None and budget.generated_tokens < c.probe_samples * c.max_tokens:
            raise BudgetError(f"budget={budget.generated_tokens} generated tokens cannot pay for the probe of "
                              f"probe_samples={c.probe_samples} x max_tokens={c.max_tokens}")
        self._has_scorer = has_scorer

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        pool = ctx.pool
        try:
            probe = await ctx.sample(self.sampling_params(c.probe_samples, logprobs=0))
        except BaseException:
            if pool is not None:  # never leave the batch waiting for this prompt
                pool.report(ctx.pool_key, ctx.ledger.usage.generated_tokens, hard=False)
            raise
        features = probe_features(probe, prompt_tokens=ctx.ledger.usage.prompt_tokens)
        ctx.record("probe", samples=len(probe), **features.to_dict())
        answer, best, votes = await ctx.offload(majority_vote, probe)
        metrics: dict[str, Any] = {"probe": features.to_dict(), "probe_votes": votes}
        if pool is not None:
            # Batch mode: easy prompts hand back what they did not spend; hard ones share it.
            pool.report(ctx.pool_key, ctx.ledger.usage.generated_tokens, hard=features.agreement < c.confident_agreement)
            share = await pool.share(ctx.pool_key)
            pool.grant(ctx.ledger, share)
            ctx.record("pool_share", tokens=share)
            metrics["pool_share"] = share
        left = ctx.ledger.generated_left()
        if features.agreement >= c.confident_agreement or (left is not None and left < c.max_tokens):
            reason = "confident" if features.agreement >= c.confident_agreement else "budget spent by probe"
            ctx.record("auto", decision="stop_after_probe", reason=reason)
            return Outcome(answer, best, probe, {**metrics, "decision": "stop_after_probe", "reason": reason})
        spent = ctx.ledger.usage.generated_tokens
        decision = self.decide(features, None if left is None else spent + left, spent)
        choice = decision.config if decision is not None else DEFAULT_CHOICE
        where = {} if decision is None else {"bin": decision.bin, "expected_accuracy": round(decision.expected_accuracy, 4),
                                             "expected_tokens": round(decision.expected_tokens, 1)}
        if choice.strategy == "probe_only":  # the allocator found the probe enough for prompts like this
            ctx.record("auto", decision="stop_after_probe", reason="allocator", **where)
            return Outcome(answer, best, probe, {**metrics, "decision": "stop_after_probe", "reason": "allocator",
                                                 **where})
        # The chosen budget counts the probe when the strategy reuses its samples.
        sub_budget = left if decision is None else decision.budget - (spent if choice.strategy in PROBE_REUSING else 0)
        sub_budget = None if sub_budget is None else min(sub_budget, left)
        sub = self.build(choice, sub_budget)
        ctx.record("auto", decision="run", config=choice.label, budget_left=left, sub_budget=sub_budget, **where)
        outcome = await sub.run(ctx)
        candidates = probe + [t for t in outcome.candidates if t not in probe]
        metrics.update(decision="run", config=choice.label, sub_budget=sub_budget, sub_metrics=outcome.metrics,
                       **where)
        if choice.strategy in ("best_of_n", "repeated_sampling"):
            # The probe's samples are the first of the N: they vote (and are scored) like the rest.
            selection = choice.options.get("selection", "majority")
            if selection == "majority" or choice.strategy == "repeated_sampling":
                answer, best, metrics["votes"] = await ctx.offload(majority_vote, candidates)
                return Outcome(answer, best, candidates, metrics)
            scores = await ctx.score(probe)
            if scores is not None:
                from strategies.selection import best_scored
                from verifiers.aggregation import aggregate

                how = choice.options.get("aggregation", "last")
                weights = [aggregate(t.step_scores, how) for t in candidates]
                if selection == "verifier":
                    answer, best = best_scored(candidates, weights)
                else:
                    answer, best, metrics["votes"] = await ctx.offload(majority_vote, candidates, weights)
                return Outcome(answer, best, candidates, metrics)
        return Outcome(outcome.answer, outcome.best, candidates, metrics)

    def decide(self, features, budget: int | None, spent: int) -> Decision | None:
        """The allocator's pick for this prompt (None without an allocator: the default applies)."""
        if self._model is None:
            return None
        from ttc.registry import STRATEGIES

        # Configurations that need a verifier are left out when none is configured.
        allowed = []
        for cfg in self._model.configs:
            if cfg.strategy == "probe_only":
                allowed.append(cfg.label)
                continue
            cls = STRATEGIES.get(cfg.strategy)
            needs = cls.needs_scorer or cfg.options.get("selection", "majority") != "majority"
            if self._has_scorer or not needs:
                allowed.append(cfg.label)
        return self._model.decide(features, budget if budget is not None else max(self._model.budgets),
                                  probe_tokens=spent, probe_budget=self.config.probe_samples * self.config.max_tokens,
                                  allowed=allowed,
                                  min_gain_per_doubling=self.config.min_gain_per_doubling)

    def build(self, choice: ConfigChoice, left: int | None) -> Strategy:
        """The chosen strategy, sized to the budget that is left."""
        from ttc.registry import STRATEGIES

        cls = STRATEGIES.get(choice.strategy)
        options = {"max_tokens": self.config.max_tokens, "temperature": self.config.temperature,
                   "top_p": self.config.top_p, "stop": self.config.stop, **choice.options}
        if "n" not in choice.options and left is not None and "n" in cls.Config.model_fields:
            n = left // options["max_tokens"]
            m = options.get("beam_width", 1) if "beam_width" in cls.Config.model_fields else 1
            options["n"] = max(m, n - n % m)
        try:
            return cls.from_options(options)
        except ConfigError as exc:
            raise ConfigError(f"auto: the allocator's choice {choice.label!r} is invalid here: {exc}") from None
