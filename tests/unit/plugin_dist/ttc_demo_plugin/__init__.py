"""One plugin of each kind, written as a third party would: against ttc's declared protocol only."""
from __future__ import annotations

from pydantic import Field

from ttc.core.config import SamplingOptions, StrictModel
from ttc.core.plugins import Generator, Outcome, Scorer, ScoreResult, Strategy
from ttc.core.types import Completion, GenerationResult


class FirstSampleConfig(SamplingOptions):
    """Options of the demo strategy."""

    n: int = Field(2, ge=1, description="Samples drawn.")


class FirstSample(Strategy):
    """Draws n samples, scores them, answers with the best-scored one."""

    name = "demo_first"
    Config = FirstSampleConfig

    def needs_scorer(self) -> bool:
        return True

    def selection(self) -> str:
        return "verifier"

    async def run(self, ctx):
        samples = await ctx.sample(self.config.params(self.config.n))
        scores = await ctx.score(samples)
        best = max(range(len(samples)), key=lambda i: scores[i][-1])
        return Outcome(samples[best].answer, samples[best], samples, {"scores": scores})


class EchoConfig(StrictModel):
    """Options of the demo backend."""

    model: str | None = Field(None, description="Ignored.")
    answer: str = Field("5", description="What every sample answers.")


class EchoGenerator(Generator):
    """Answers every request with its configured answer, sample i padded with i words."""

    Config = EchoConfig
    model_name = "echo"

    def __init__(self, config: EchoConfig):
        self.config = config
        self.started = False

    def start(self) -> None:
        self.started = True

    async def generate(self, requests):
        out = []
        for r in requests:
            texts = ["word " * i + f"\\boxed{{{self.config.answer}}}" for i in range(r.params.n)]
            out.append(GenerationResult([Completion(t, len(t.split()), "stop") for t in texts], len(r.prompt.split())))
        return out


class LengthConfig(StrictModel):
    """Options of the demo scorer."""


class LengthScorer(Scorer):
    """Scores a trajectory by its length: longer is better."""

    name = "demo_length"
    Config = LengthConfig

    def __init__(self, config: LengthConfig):
        self.config = config

    async def score(self, problem, trajectories):
        return ScoreResult([[float(t.num_tokens)] for t in trajectories], verifier_tokens=len(trajectories))
