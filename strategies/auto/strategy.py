"""`auto`: probe the prompt, predict its difficulty, run the compute-optimal configuration.

The probe draws a few samples (charged to the budget). When they already agree
enough, the prompt is easy and the answer is returned at once: the rest of the
budget is not spent. Otherwise the allocator (fitted by `ttc calibrate`) picks
the configuration that was most accurate for prompts of this difficulty at the
budget that is left, and runs it. The probe samples stay among the candidates:
a vote counts them, so no compute is thrown away.

The allocator may also decide that more compute does not pay for prompts like
this one (they are easy, or hopeless for this model): `price_per_1k_tokens` is
the accuracy 1000 more tokens must buy, as calibration measured it for the
prompt's difficulty bin, so the budget is a cap, not a target. A best-of-N it
picks draws its samples in rounds of the probe's size and stops once the vote is
settled (`stop_margin`): the early stop on confident agreement, after each round.

Without an allocator file the documented default is used: easy prompts stop
after the probe; every other prompt gets best-of-N majority with the rest of
the budget (the strongest fixed choice on the embedded model, see BENCHMARKS.md).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from strategies.auto.allocator import (PROBE_ONLY_STRATEGY, AllocatorModel, ConfigChoice, Decision, probe_features,
                                       vote_settled)
from strategies.base import MAX_ROUNDS, Outcome, Strategy
from ttc.core.answers import group_answers
from ttc.core.budget import Budget
from ttc.core.config import SamplingOptions
from ttc.core.context import SearchContext
from ttc.core.errors import BudgetError, ConfigError
from ttc.core.selection import choose, select

#: Samples in the difficulty probe, for `auto` and for `ttc calibrate` alike.
DEFAULT_PROBE_SAMPLES = 4

DEFAULT_CHOICE = ConfigChoice(label="best_of_n[majority]", strategy="best_of_n", options={"selection": "majority"})


class AutoConfig(SamplingOptions):
    """The probe, the early stop, and which allocator to follow."""

    probe_samples: int = Field(DEFAULT_PROBE_SAMPLES, ge=1, le=64, description="Samples in the difficulty probe (with an allocator, "
                                                           "default: the probe it was calibrated with).")
    allocator: str | None = Field(None, description="Allocator file or name from `ttc calibrate`; None = default.")
    confident_agreement: float = Field(
        1.0, gt=0.0, le=1.0, description="Stop after the probe when this share of its samples agree.")
    price_per_1k_tokens: float | None = Field(
        None, ge=0.0, le=10.0,
        description="Spend more only where calibration shows it buys this much accuracy per 1000 generated "
                    "tokens (0.05 = 5 points); 0 = the most accurate choice within the budget; None = the value "
                    "`ttc calibrate` chose for the allocator file.")
    stop_margin: int | None = Field(
        None, ge=0, le=1000,
        description="A chosen best-of-N samples in rounds of probe_samples and stops once the leading answer has "
                    "this many more votes than the next; 0 = all samples at once (then what short samples left of the budget); None = the allocator file's "
                    "value (0 without an allocator).")


class Auto(Strategy):
    name = "auto"
    Config = AutoConfig
    shares_budget = True

    def __init__(self, config: AutoConfig | None = None):
        super().__init__(config)
        self._model = None
        if self.config.allocator is not None:
            from strategies.auto.allocator import load

            self.use_allocator(load(self.config.allocator))

    def use_allocator(self, model: AllocatorModel) -> "Auto":
        """Follow an allocator already in memory, as the `allocator` option follows a file's (calibration
        hands each fold's fitted model to the real strategy this way). Returns self."""
        self._model = model
        if "probe_samples" not in self.config.model_fields_set:
            # The probe the bins were fitted on (its features, and the rounds the early stop was tuned for).
            self.config = self.config.model_copy(update={"probe_samples": model.probe_samples})
        return self

    def shared_budget_entry(self) -> int:
        """A problem of a batch sharing one budget first pays for its probe."""
        return self.config.probe_samples * self.config.max_tokens

    def check(self, budget: Budget, has_scorer: bool) -> None:
        c = self.config
        if budget.generated_tokens is None and self._model is None:
            raise ConfigError("auto without an allocator spends the rest of a generated-token budget on best-of-N: "
                              "give the budget as an int (generated tokens), or an allocator")
        if budget.generated_tokens is not None and budget.generated_tokens < c.probe_samples * c.max_tokens:
            raise BudgetError(f"budget={budget.generated_tokens} generated tokens cannot pay for the probe of "
                              f"probe_samples={c.probe_samples} x max_tokens={c.max_tokens}")
        self._has_scorer = has_scorer

    async def run(self, ctx: SearchContext) -> Outcome:
        c = self.config
        shared = ctx.shared_budget
        try:
            probe = await ctx.sample(c.params(c.probe_samples, logprobs=0))
            # the prompt's length: prompt tokens are counted once per sequence
            features = probe_features(probe, prompt_tokens=ctx.ledger.usage.prompt_tokens // max(1, len(probe)))
            ctx.record("probe", samples=len(probe), **features.to_dict())
            vote = await ctx.offload(select, probe, "majority")
            answer, best = vote.answer, vote.best
        except BaseException:
            if shared is not None:  # never leave the batch waiting for this prompt
                shared.report(ctx.shared_key, ctx.ledger.usage.generated_tokens, hard=False)
            raise
        metrics: dict[str, Any] = {"probe": features.to_dict(), "probe_votes": vote.votes}
        if shared is not None:
            # Batch mode: easy prompts hand back what they did not spend; hard ones share it.
            shared.report(ctx.shared_key, ctx.ledger.usage.generated_tokens,
                          hard=features.agreement < c.confident_agreement)
            share = await ctx.wait_without_slot(shared.share(ctx.shared_key))
            shared.grant(ctx.ledger, share)
            ctx.record("budget_share", tokens=share)
            metrics["budget_share"] = share
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
        if choice.strategy == PROBE_ONLY_STRATEGY:  # the allocator found the probe enough for prompts like this
            ctx.record("auto", decision="stop_after_probe", reason="allocator", **where)
            return Outcome(answer, best, probe, {**metrics, "decision": "stop_after_probe", "reason": "allocator",
                                                 **where})
        # The chosen budget counts the probe when the strategy reuses its samples.
        sub_budget = left if decision is None else decision.budget - (spent if choice.reuses_probe else 0)
        if sub_budget is not None and left is not None:
            sub_budget = min(sub_budget, left)
        ctx.record("auto", decision="run", config=choice.label, budget_left=left, sub_budget=sub_budget, **where)
        metrics.update(decision="run", config=choice.label, sub_budget=sub_budget, **where)
        if choice.reuses_probe:
            return await self.run_best_of_n(ctx, choice, probe, sub_budget, metrics)
        outcome = await self.build(choice, sub_budget).run(ctx)
        metrics["sub_metrics"] = outcome.metrics
        return Outcome(outcome.answer, outcome.best, probe + [t for t in outcome.candidates if t not in probe], metrics)

    async def run_best_of_n(self, ctx: SearchContext, choice: ConfigChoice, probe: list, sub_budget: int | None,
                            metrics: dict[str, Any]) -> Outcome:
        """Best-of-N with the probe's samples as its first: more samples in rounds of the probe's size
        until the budget's N or a settled vote, then one selection over all of them. Sized by the
        budget, what short samples leave of it buys further rounds (as best-of-N does), within the
        sub-budget the allocator chose, while the vote is not settled."""
        # The choice's own sampling settings (those calibration ran it with) override auto's.
        sampling = self.config.model_copy(update={k: v for k, v in choice.options.items()
                                                  if k in SamplingOptions.model_fields})
        selection = choice.selection
        if "n" in choice.options:  # N counts the probe's samples
            more = max(0, int(choice.options["n"]) - len(probe))
        elif sub_budget is None:  # check() refuses this without an allocator; with one, its budgets apply
            raise ConfigError(f"auto: {choice.label!r} needs n or a generated-token budget")
        else:
            more = sub_budget // sampling.max_tokens
        margin = self.stop_margin()
        budget_sized, start = "n" not in choice.options, ctx.ledger.usage.generated_tokens
        needs_scores = selection != "majority" and self._has_scorer
        logprobs = 0 if needs_scores and ctx.scorer.needs_logprobs else None
        candidates, rounds = list(probe), 0
        while more > 0 and rounds < MAX_ROUNDS:
            groups = await ctx.offload(group_answers, [t.answer for t in candidates]) if margin > 0 else []
            if vote_settled([len(g) for g in groups], margin):
                ctx.record("auto_early_stop", samples=len(candidates), stop_margin=margin)
                break
            k = min(sampling.probe_samples, more) if margin > 0 else more
            drawn = await ctx.sample(sampling.params(k, logprobs=logprobs))
            if not drawn:  # the ledger could not pay for another round
                break
            rounds += 1
            candidates += drawn
            more -= k
            if more <= 0 and budget_sized:  # samples stop short of max_tokens: what they left buys more
                more = (sub_budget - (ctx.ledger.usage.generated_tokens - start)) // sampling.max_tokens
        metrics.update(samples=len(candidates), rounds=rounds, stop_margin=margin)
        final = await choose(ctx, candidates, selection if needs_scores else "majority",
                             choice.options.get("aggregation", "last"))
        if final.votes is not None:
            metrics["votes"] = final.votes
        return Outcome(final.answer, final.best, candidates, metrics)

    def stop_margin(self) -> int:
        """The early-stop margin: this run's option, else the allocator file's, else none."""
        if self.config.stop_margin is not None:
            return self.config.stop_margin
        return self._model.stop_margin if self._model is not None else 0

    def decide(self, features, budget: int | None, spent: int) -> Decision | None:
        """The allocator's pick for this prompt (None without an allocator: the default applies)."""
        if self._model is None:
            return None
        # Configurations that need a verifier are left out when none is configured.
        allowed = [cfg.label for cfg in self._model.configs
                   if cfg.strategy == PROBE_ONLY_STRATEGY or self._has_scorer or not cfg.build().needs_scorer()]
        return self._model.decide(features, budget if budget is not None else max(self._model.budgets),
                                  probe_tokens=spent, probe_budget=self.config.probe_samples * self.config.max_tokens,
                                  allowed=allowed, price_per_1k_tokens=self.config.price_per_1k_tokens)

    def build(self, choice: ConfigChoice, left: int | None) -> Strategy:
        """The chosen strategy, sized to the budget that is left."""
        sampling = {k: getattr(self.config, k) for k in SamplingOptions.model_fields}
        try:
            strategy = choice.build(**sampling)
            if "n" not in choice.options and left is not None and "n" in strategy.Config.model_fields:
                n = left // strategy.config.max_tokens
                m = strategy.width_multiple()
                strategy = choice.build(**sampling, n=max(m, n - n % m))
        except ConfigError as exc:
            raise ConfigError(f"auto: the allocator's choice {choice.label!r} is invalid here: {exc}") from None
        return strategy
