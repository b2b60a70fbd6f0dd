"""The Engine: loads models once and serves many solves concurrently.

It owns one event loop on a background thread, so the async backends (vLLM's
AsyncLLM is bound to the loop it starts on) serve callers from any thread and
any event loop; every concurrent solve lands in the same backend batch.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine, Sequence, TypeVar

from ttc.core.budget import Budget, Ledger
from ttc.core.config import validate
from ttc.core.code import is_code_problem
from ttc.core.context import SearchContext
from ttc.core.errors import BackendError, BudgetError, ConfigError, SolveError, TTCError
from ttc.core.plugins import Generator, Scorer, Strategy, Worker
from ttc.core.registry import BACKENDS, VERIFIERS, build
from ttc.core.shared_budget import SharedBudget
from ttc.core.types import Problem, Solution, Trajectory, Usage
from ttc.engine_config import DEFAULT_STRATEGY, EngineConfig

T = TypeVar("T")


def make_problem(prompt: str | Problem, reference: str | None = None, system: str | None = None) -> Problem:
    if isinstance(prompt, Problem):
        problem = prompt
    elif not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string, got {type(prompt).__name__} {prompt!r}")
    else:
        problem = Problem(prompt=prompt, reference=reference)
    if not problem.prompt.strip():
        raise ConfigError(f"prompt must be a non-empty string, got {problem.prompt!r}")
    if problem.system is None and system:
        problem = Problem(problem.prompt, problem.id, problem.reference, system, problem.metadata)
    return problem


class Engine:
    """Holds the generator (and scorer) and runs strategies against them.

    Pass `generator=` / `scorer=` to inject backends (tests, custom workers);
    otherwise they are built from `config` on first use.
    """

    def __init__(self, config: EngineConfig | dict | None = None, *, generator: Generator | None = None,
                 scorer: Scorer | None = None, **overrides: Any):
        if isinstance(config, EngineConfig):
            data = config.model_dump()
        else:
            data = dict(config or {})
        data.update(overrides)
        self.config = validate(EngineConfig, data)
        self._generator = generator
        self._owns_generator = generator is None
        self._scorer = scorer
        self._owns_scorer = scorer is None
        self._named_scorers: dict[str, Scorer] = {}
        self._code_judge = None  # the sandbox that judges code problems' candidates, built on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._problem_slots: asyncio.Semaphore | None = None
        if self._generator is None:
            BACKENDS.get(self.config.backend)  # unknown backend: fail now, not at the first solve
        if self._scorer is None and self.config.verifier is not None:
            VERIFIERS.get(self.config.verifier)

    # ---- the engine's own event loop ----------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="ttc-engine", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        loop = self._ensure_loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking Engine call was made from the engine's own thread; await asolve instead")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    # ---- backends -------------------------------------------------------------------------------
    def _get_generator(self) -> Generator:
        if self._generator is None:
            # A backend binds to the loop it starts on (vLLM's AsyncLLM): built elsewhere, its outputs
            # would be delivered on another thread's loop and solves would wait for them forever.
            if threading.current_thread() is not self._thread:
                raise RuntimeError("the generator must be built on the engine's own thread (go through _submit)")
            options = dict(self.config.backend_options)
            if self.config.backend == "vllm":
                from ttc.default_model import resolve_model

                options.setdefault("model", resolve_model(self.config.model))
            elif self.config.model is not None:
                options.setdefault("model", self.config.model)
            if self.config.cluster is not None:
                from workers.ray_pool import RayGeneratorPool

                build("backend", self.config.backend, options, prefix="backend_options", check_only=True)
                self._generator = RayGeneratorPool(self.config.backend, options, self.config.cluster)
            else:
                self._generator = build("backend", self.config.backend, options, prefix="backend_options")
            self._generator.start()
        return self._generator

    def _get_scorer(self, name: str | None = None) -> Scorer | None:
        """The engine's scorer, or the named one (built once and kept, like the default)."""
        if name is not None and name != self.config.verifier:
            scorer = self._named_scorers.get(name)
            if scorer is None:
                scorer = self._named_scorers[name] = self._build_scorer(name, {})
        else:
            if self._scorer is None and self.config.verifier is not None:
                self._scorer = self._build_scorer(self.config.verifier, self.config.verifier_options)
            scorer = self._scorer
        return scorer

    def _build_scorer(self, name: str, options: dict[str, Any]) -> Scorer:
        """In-process, or on its own replica pool when a cluster is configured and it holds a model."""
        if self.config.cluster is not None and VERIFIERS.get(name).runs_on_replicas:
            from workers.ray_pool import RayScorerPool

            build("verifier", name, options, prefix="verifier_options", check_only=True)  # bad options fail here
            scorer = RayScorerPool(name, options, self.config.cluster)
            scorer.start()
            return scorer
        return build("verifier", name, options, prefix="verifier_options")

    @staticmethod
    async def _started(component: Worker | None):
        """Workers with replicas or async engines start them inside the engine's loop, before first use."""
        if component is not None:
            await component.astart()
        return component

    def start(self) -> "Engine":
        """Load the models now rather than at the first solve (e.g. before timing)."""
        self._submit(self._astart()).result()
        return self

    async def _astart(self) -> None:
        await self._started(self._get_generator())
        await self._started(self._get_scorer())

    # ---- solving ------------------------------------------------------------------------------
    def _prepare(self, strategy: "str | Strategy", options: dict[str, Any], budget, verifier: str | None = None
                 ) -> tuple[Strategy, Budget]:
        budget = Budget.coerce(budget)
        if isinstance(strategy, Strategy):  # built by the caller (labelling runs its own control flow)
            if options:
                raise ConfigError(f"options {sorted(options)} given with a strategy object; set them on it")
            strat = strategy
        elif isinstance(strategy, str):
            strat = build("strategy", strategy, options)
        else:
            raise ConfigError(f"strategy must be a name, got {strategy!r}")
        if verifier is not None:
            VERIFIERS.get(verifier)  # unknown name: fail before any work
        has_scorer = self._scorer is not None or self.config.verifier is not None or verifier is not None
        strat.check(budget, has_scorer)
        return strat, budget

    @property
    def backend_dead(self) -> bool:
        """Whether the generator this engine holds has died (a server reports itself unready)."""
        return self._generator is not None and bool(self._generator.dead)

    def check(self, strategy: str, options: dict[str, Any], budget, verifier: str | None = None) -> None:
        """Raise the ConfigError or BudgetError a solve with these settings would, without solving
        (a server answers 400 before a request waits for a slot)."""
        self._prepare(strategy, options, budget, verifier)

    async def _solve(self, problem: Problem, budget, strategy: str, options: dict[str, Any],
                     seed: int | None, verifier: str | None = None, shared: SharedBudget | None = None,
                     shared_key: object = None, on_event=None) -> Solution:
        strat, budget = self._prepare(strategy, options, budget, verifier)
        if self._problem_slots is None:
            self._problem_slots = asyncio.Semaphore(self.config.max_concurrent_problems)
        async with self._problem_slots:
            generator = self._get_generator()
            try:
                await self._started(generator)
            except BackendError:
                if self._owns_generator and self._generator is generator:
                    self._generator = None
                    try:  # a pool may have started some replicas: stop them before the next try
                        await generator.aclose()
                    except Exception:  # noqa: BLE001 - the start error is the one to report
                        pass
                raise
            scorer = await self._started(self._get_scorer(verifier))
            if scorer is not None:
                scorer = scorer.for_solve(generator)  # a self-judging scorer gets the policy and its own cache
            ledger = Ledger(budget, num_parameters=generator.num_parameters)
            ctx = SearchContext(problem, await generator.arender_prompt(problem), generator, ledger, scorer,
                                seed=self.config.seed if seed is None else seed)
            ctx.shared_budget, ctx.shared_key, ctx.slot = shared, shared_key, self._problem_slots
            ctx.listener = on_event
            try:
                outcome = await strat.run(ctx)
            except (ConfigError, BudgetError):
                if not ctx.produced:
                    raise  # bad input found before any compute was spent
                raise SolveError("solve failed after spending compute", self._partial(ctx, strat)) from None
            except Exception as exc:
                if generator.dead and self._owns_generator and self._generator is generator:
                    self._generator = None  # the next solve starts a fresh backend
                    try:
                        await generator.aclose()
                    except Exception:  # a dead backend may fail to close; its replacement matters more
                        pass
                cause = str(exc) if isinstance(exc, TTCError) else f"{type(exc).__name__}: {exc}"
                raise SolveError(f"{strat.name} failed: {cause}", self._partial(ctx, strat)) from exc
            usage = ledger.finish()
            metrics = dict(outcome.metrics)
            if is_code_problem(problem) and problem.metadata.get("test"):
                judged = [*outcome.candidates, *([outcome.best] if outcome.best else [])]
                metrics.update(await self._judge_code(problem, judged, scorer))
            metrics["budget_limited"] = ctx.budget_limited
            if budget.generated_tokens is not None:  # how much of the token budget the strategy put to use
                metrics["budget_used"] = round(usage.generated_tokens / budget.generated_tokens, 4)
            return Solution(outcome.answer, strat.name, outcome.best, outcome.candidates, usage, ctx.trace,
                            metrics, problem)

    async def _judge_code(self, problem: Problem, candidates: list[Trajectory], scorer: Scorer | None) -> dict:
        """Correctness of code candidates: each distinct program against the hidden tests, in the sandbox.
        This is evaluation, after the search: nothing the strategy saw came from these tests. Returns
        the figures it adds to the solution's metrics (coverage, or the error that left it unjudged)."""
        from workers.sandbox import CodeJob, Sandbox, SandboxConfig

        if self._code_judge is None:
            # The execution verifier's limits, when it is the scorer; built off the loop (the first build
            # makes one trial run of the isolation).
            config = getattr(getattr(scorer, "config", None), "sandbox", None)
            self._code_judge = await asyncio.to_thread(Sandbox, config if isinstance(config, SandboxConfig) else None)
        programs = sorted({t.answer for t in candidates if t.answer})
        entry = problem.metadata["entry_point"]
        prelude = problem.metadata.get("code_prompt", "")  # helpers some hidden tests call
        jobs = [CodeJob(p, entry, problem.metadata["test"], prelude) for p in programs]
        try:
            verdicts = dict(zip(programs, await self._code_judge.acheck_many(jobs)))
        except TTCError as exc:  # bad hidden tests, a broken sandbox: the search's work is kept, unjudged
            return {"judge_error": str(exc)}
        for t in candidates:
            t.correct = bool(t.answer) and verdicts[t.answer].passed
        unique = {id(t): t for t in candidates}.values()
        return {"coverage": any(t.correct for t in unique), "correct_samples": sum(bool(t.correct) for t in unique)}

    @staticmethod
    def _partial(ctx: SearchContext, strat: Strategy) -> Solution:
        usage = ctx.ledger.finish()
        return Solution(None, strat.name, None, list(ctx.produced), usage, ctx.trace, {"failed": True}, ctx.problem)

    async def asolve(self, prompt: str | Problem, budget: Budget | int | dict, strategy: str = DEFAULT_STRATEGY, *,
                     reference: str | None = None, seed: int | None = None, verifier: str | None = None,
                     on_event: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> Solution:
        """Solve one problem; `verifier` overrides the engine's scorer for this call. `on_event` is told of
        each search event with the tokens spent so far (called on the engine's thread: keep it quick)."""
        problem = make_problem(prompt, reference, self.config.system_prompt)
        fut = self._submit(self._solve(problem, budget, strategy, options, seed, verifier, on_event=on_event))
        return await asyncio.wrap_future(fut)

    def solve(self, prompt: str | Problem, budget: Budget | int | dict, strategy: str = DEFAULT_STRATEGY, *,
              reference: str | None = None, seed: int | None = None, verifier: str | None = None,
              **options: Any) -> Solution:
        problem = make_problem(prompt, reference, self.config.system_prompt)
        return self._submit(self._solve(problem, budget, strategy, options, seed, verifier)).result()

    async def asolve_many(self, problems: Sequence[str | Problem], budget, strategy: str = DEFAULT_STRATEGY, *,
                          seed: int | None = None, **options: Any) -> list[Solution | TTCError]:
        """Solve many problems concurrently; a failed problem yields its error, the others still finish."""
        prepared = [make_problem(p, None, self.config.system_prompt) for p in problems]
        self._prepare(strategy, options, budget)  # report bad input once, before any work

        async def one(p: Problem):
            try:
                return await asyncio.wrap_future(self._submit(self._solve(p, budget, strategy, options, seed)))
            except TTCError as exc:
                return exc

        return list(await asyncio.gather(*(one(p) for p in prepared)))

    async def asolve_pooled(self, problems: Sequence[str | Problem], total_budget: int, *,
                            seed: int | None = None, on_done=None, strategy: str = "auto",
                            **options: Any) -> list[Solution | TTCError]:
        """A strategy that can share a budget (`auto`) over a batch under ONE generated-token budget.

        Each problem first spends its entry (auto: the probe); confident ones stop there, and what
        the entries left is shared among the rest, so compute moves from easy prompts to hard ones.
        At most `max_concurrent_problems` run at once, all under the one total.
        """
        prepared = [make_problem(p, None, self.config.system_prompt) for p in problems]
        if isinstance(total_budget, bool) or not isinstance(total_budget, int) or total_budget <= 0:
            raise BudgetError(f"total_budget must be a positive int of generated tokens, got {total_budget!r}")
        strat, _ = self._prepare(strategy, options, 1 << 62)
        entry = strat.shared_budget_entry()
        if not strat.shares_budget:
            raise ConfigError(f"strategy {strategy!r} cannot share one budget across a batch (it does not declare "
                              "shares_budget); 'auto' can")
        if total_budget < entry * len(prepared):
            raise BudgetError(f"total_budget={total_budget} cannot pay for {len(prepared)} probes of "
                              f"{entry} tokens (probe_samples x max_tokens)")
        # ONE budget for the whole batch: a problem waiting for its share gives its slot to the next
        # problem's probe (SearchContext.wait_without_slot), so any number of problems can share it.
        shared = SharedBudget(total_budget, len(prepared))

        async def one(i: int, p: Problem):
            coro = self._solve(p, entry, strategy, options, seed, None, shared, i)
            try:
                result = await asyncio.wrap_future(self._submit(coro))
            except TTCError as exc:
                result = exc
            if on_done is not None:  # e.g. the recipe runner logs each problem as it finishes
                on_done(p, result)
            return result

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prepared))))

    def solve_many(self, problems: Sequence[str | Problem], budget, strategy: str = DEFAULT_STRATEGY, *,
                   seed: int | None = None, **options: Any) -> list[Solution | TTCError]:
        return asyncio.run(self.asolve_many(problems, budget, strategy, seed=seed, **options))

    @property
    def model_name(self) -> str:
        """The policy model's name (a checkpoint folder, or the backend's own name for it). Blocking:
        the generator is built, on the engine's thread, if it was not yet."""
        return self._submit(self._model_name()).result()

    async def _model_name(self) -> str:
        return self._get_generator().model_name

    async def ascore(self, problem: Problem, trajectories: Sequence[Trajectory], budget=None, *,
                     verifier: str | None = None) -> tuple[list[list[float]], Usage]:
        """Score given trajectories (every step) with the engine's scorer, or `verifier`; returns the
        per-step scores and what the scoring cost. Used to evaluate verifiers on stored samples."""
        fut = self._submit(self._score(problem, list(trajectories), Budget.coerce(budget), verifier))
        return await asyncio.wrap_future(fut)

    async def _score(self, problem: Problem, trajectories: list[Trajectory], budget: Budget,
                     verifier: str | None) -> tuple[list[list[float]], Usage]:
        if self._problem_slots is None:
            self._problem_slots = asyncio.Semaphore(self.config.max_concurrent_problems)
        async with self._problem_slots:
            scorer = await self._started(self._get_scorer(verifier))
            if scorer is None:
                raise ConfigError("scoring needs a verifier: give one to the engine or as verifier=")
            generator = self._get_generator()
            if scorer.uses_policy:  # only a self-judging scorer needs the policy running
                await self._started(generator)
            scorer = scorer.for_solve(generator)
            ledger = Ledger(budget, num_parameters=generator.num_parameters)
            ctx = SearchContext(problem, problem.prompt, generator, ledger, scorer)
            scores = await ctx.score(trajectories)
            if scores is None:
                raise BudgetError("the verifier budget could not pay for scoring these trajectories")
            return scores, ledger.finish()

    def cluster_stats(self) -> dict[str, Any] | None:
        """What the replica pools did (per replica: requests served, affinity hits, peak in flight;
        per pool: failures, retries, replaced replicas); None without a `cluster:` section."""
        if self.config.cluster is None:
            return None
        from workers.ray_pool import RayGeneratorPool, RayScorerPool

        out: dict[str, Any] = {}
        for kind, component in (("generator", self._generator), ("scorer", self._scorer)):
            if isinstance(component, (RayGeneratorPool, RayScorerPool)):
                stats = component.stats()
                for r in stats["replicas"]:  # the keys themselves are for tests; a count is enough here
                    r["affinity_keys"] = len(r.get("affinity_keys", ()))
                out[kind] = stats
        return out

    # ---- shutdown -----------------------------------------------------------------------------
    async def _aclose(self) -> None:
        if self._owns_generator and self._generator is not None:
            await self._generator.aclose()
        if self._owns_scorer and self._scorer is not None:
            await self._scorer.aclose()
        for scorer in self._named_scorers.values():
            await scorer.aclose()
        self._named_scorers.clear()
        self._generator = None if self._owns_generator else self._generator
        self._scorer = None if self._owns_scorer else self._scorer

    def close(self) -> None:
        if self._loop is None:
            return
        self._submit(self._aclose()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None
        if self.config.cluster is not None:
            from workers.cluster import disconnect

            disconnect()  # the private cluster of address: local, if this process started one

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
