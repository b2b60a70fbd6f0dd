"""Process reward model (PRM) scorer on vLLM's pooling runner: one probability per step.

Every step of every trajectory of a batch is scored in ONE pooling pass: each trajectory
becomes one input (the problem, then each step with its trailing whitespace stripped and
the step separator appended), all inputs go to one in-process vLLM `AsyncLLM` started with
`runner="pooling"`, and vLLM's "STEP" token pooling returns one row per step-tag token.

Two kinds of checkpoint:

* **Native PRMs** such as Qwen2.5-Math-PRM-7B (`Qwen2ForProcessRewardModel`): the model's
  own two-label head; vLLM returns, per separator token, the softmax over
  (wrong, right), and the step score is the probability of label 1 ("right"). The
  defaults (separator `<extra_0>`, Qwen's system prompt, the chat template) are this
  model's scoring format.
* **Math-Shepherd-style causal LMs** (`*ForCausalLM` whose next-token logits at the step
  tag carry the verdict): set `returned_token_ids=[good_id, bad_id]`, the separator (e.g.
  " ки") and usually `use_chat_template=False`. vLLM 0.32 has no reward converter for a
  causal LM, and its `returned_token_ids` pooling parameter indexes the columns of the
  model output, which for a converted causal LM are hidden states, not vocabulary logits.
  So the LM is converted with `convert="classify"` and `hf_overrides` that build the
  classifier from those tokens' LM-head rows (`classifier_from_token`, method
  `no_post_processing`); the step score is softmax over those tokens' logits, taken at
  the first (good) one — Math-Shepherd's own formula.

The separator inside the text: the step tag is found by token id, so a problem or step
that itself contains the tag's text would add tags and shift every later score onto the
wrong step. This scorer REMOVES every occurrence of the tag's text (e.g. "<extra_0>")
from the problem and the steps before scoring, and then checks twice that nothing else
misaligns: the tokenized input must hold exactly one tag per step, and vLLM must return
exactly one row per step; otherwise it raises `VerifierError` with both counts.

Trajectories with no steps are not sent; they get an empty score list (which
aggregation turns into -inf) and cost no verifier tokens. `verifier_tokens` is the
total length of the token ids sent, which are tokenized here once and passed to vLLM as
token ids, so the charge and the work are the same tokens.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import math
from pathlib import Path
from typing import Sequence

from pydantic import Field, model_validator

from ttc.core.errors import VerifierError
from ttc.core.plugins import ScoreResult
from ttc.core.types import Problem, Trajectory
from verifiers.prm_base import PRMScorer
from verifiers.step_input import StepInput
from verifiers.trained import with_trained_format
from workers.vllm_engine import (
    CpuKVCacheGB, MaxModelLen, RequiredModel, VLLMEngineOptions, is_cpu_build,
    offline_for_local_folder, request_errors, start_engine,
)

QWEN_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


class VLLMPRMConfig(VLLMEngineOptions):
    """Options of the vLLM process-reward-model scorer: the shared engine options plus the scoring format."""

    # The engine fills in only the generator's model, so a PRM must be named.
    model: RequiredModel
    # A scored input is a whole trajectory plus the PRM's system prompt and a tag per step: more room than
    # the generator's default.
    max_model_len: MaxModelLen = 4096
    # A PRM pass only prefills (no decoding, no prefix cache to keep), and it shares the machine with the generator.
    cpu_kv_cache_gb: CpuKVCacheGB = 1
    step_tag: str = Field(
        "<extra_0>", min_length=1,
        description="Text appended after each step (its trailing whitespace stripped first); Qwen2.5-Math-PRM uses '<extra_0>'.",
    )
    system_prompt: str | None = Field(
        QWEN_PRM_SYSTEM_PROMPT,
        description="System message of the PRM's chat input; None or '' = no system message. Not the policy's Problem.system.",
    )
    use_chat_template: bool = Field(
        True,
        description="Render system + user problem + assistant steps with the tokenizer's chat template; "
        "False (or a tokenizer without one) = plain '<problem> <steps>' text.",
    )
    step_tag_id: int | None = Field(
        None, ge=0,
        description="Token id whose positions are scored; None = the step tag's id (it must then be one token).",
    )
    prompt_template: str | None = Field(
        None, description="Build the input piece by piece as prm_transformers does: this template ('{problem}' is "
        "the problem), then each right-stripped step and its tag, each piece tokenized on its own (so a tag such as "
        "'\\n\\n' stays one token). None = the chat template or plain text. Trained verifiers set it.")
    returned_token_ids: list[int] | None = Field(
        None, min_length=2,
        description="Math-Shepherd-style causal LM: vocabulary ids [good, bad, ...] whose logits at the step tag "
        "are soft-maxed; the step score is the probability of the first. None = a native PRM head.",
    )

    @model_validator(mode="before")
    @classmethod
    def _trained_format(cls, data):
        return with_trained_format(data, "vllm")

    @model_validator(mode="after")
    def _distinct_returned_ids(self):
        ids = self.returned_token_ids
        if ids is not None and (len(set(ids)) != len(ids) or min(ids) < 0):
            raise ValueError(f"returned_token_ids must be distinct non-negative token ids, got {ids}")
        return self


class VLLMPRMScorer(PRMScorer):
    """Per-step probabilities from a PRM on vLLM's pooling runner, every step of a batch in one pass."""

    name = "prm_vllm"
    Config = VLLMPRMConfig

    def __init__(self, config: VLLMPRMConfig):
        super().__init__(config)
        self._cpu = is_cpu_build()
        self._tokenizer = None
        self._tag_id: int | None = None
        self._tag_text = ""
        self._input: StepInput | None = None  # the piece-by-piece input, with prompt_template
        self._engine = None
        self.dead = False  # its engine died: a replica pool replaces this scorer, in-process runs stop
        self._start_lock: asyncio.Lock | None = None
        self._ids = itertools.count()

    # ---- input building (no engine needed) --------------------------------------------------------
    @property
    def tokenizer(self):
        """The PRM's tokenizer, loaded without the engine (inputs are built and counted here)."""
        if self._tokenizer is None:
            self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> None:
        offline_for_local_folder(self.config.model)
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.config.model)
        except Exception as exc:
            raise VerifierError(f"prm_vllm could not load the tokenizer of model={self.config.model!r}: {exc}") from exc
        c = self.config
        if c.step_tag_id is not None:
            tag_id = c.step_tag_id
        else:
            sep_ids = tok.encode(c.step_tag, add_special_tokens=False)
            if len(sep_ids) != 1:
                raise VerifierError(
                    f"step_tag={c.step_tag!r} is {len(sep_ids)} tokens {sep_ids} for this tokenizer; "
                    "set step_tag_id to the token id whose positions should be scored"
                )
            tag_id = sep_ids[0]
        if tag_id >= len(tok):
            raise VerifierError(f"step_tag_id={tag_id} is outside the tokenizer's vocabulary of {len(tok)} tokens")
        self._tag_id = tag_id
        self._tag_text = tok.decode([tag_id]).strip()
        if c.prompt_template is not None:
            self._input = StepInput(tok, c.step_tag, c.prompt_template)
        self._tokenizer = tok

    def _clean(self, text: str) -> str:
        """Remove the step tag's text, so only the separators we add produce tags."""
        return text.replace(self._tag_text, "") if self._tag_text else text

    def render(self, problem: Problem, steps: Sequence[str]) -> tuple[str, bool]:
        """The PRM input text for one trajectory, and whether it came from the chat template."""
        tok = self.tokenizer
        c = self.config
        body = "".join(self._clean(s).rstrip() + c.step_tag for s in steps)
        question = self._clean(problem.prompt)
        if c.use_chat_template and getattr(tok, "chat_template", None):
            messages = [{"role": "system", "content": self._clean(c.system_prompt)}] if c.system_prompt else []
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": body}]
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False), True
        return f"{question} {body}", False

    def encode(self, problem: Problem, steps: Sequence[str]) -> list[int]:
        """Token ids of one trajectory's PRM input (chat text carries its own special tokens)."""
        return self.encode_with_rows(problem, steps)[0]

    def encode_with_rows(self, problem: Problem, steps: Sequence[str]) -> tuple[list[int], list[int] | None]:
        """The ids, and which of vLLM's step rows (one per tag token in the input) are the steps' own:
        None when every tag token is a step's (the text paths, which remove the tag from the text)."""
        tok = self.tokenizer
        if self._input is None:
            text, chat = self.render(problem, steps)
            return list(tok.encode(text, add_special_tokens=not chat)), None
        ids, positions = self._input.encode(problem.prompt, steps)
        tags = [k for k, t in enumerate(ids) if t == self._tag_id]
        at = {k: row for row, k in enumerate(tags)}
        if any(p not in at for p in positions):
            raise VerifierError(f"prm_vllm: step_tag={self.config.step_tag!r} does not end in token id "
                                f"{self._tag_id}; set step_tag_id to its last token")
        return ids, [at[p] for p in positions]

    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        """Exactly what `score` will charge: the token ids of every trajectory that has steps."""
        return sum(len(self.encode(problem, t.steps)) for t in trajectories if t.steps)

    # ---- engine ---------------------------------------------------------------------------------
    def _engine_args(self) -> dict:
        """This engine's own `AsyncEngineArgs` keywords, added to the shared ones."""
        c = self.config
        args = dict(
            runner="pooling",
            # Token pooling reads every position, so cached prefixes could not be reused anyway.
            enable_prefix_caching=False,
            # STEP pooling at our tag id; vLLM's own default for Qwen2ForProcessRewardModel is
            # 151651 (Qwen's "<extra_0>"), which is wrong for any other tokenizer.
            pooler_config={"tok_pooling_type": "STEP", "step_tag_id": self._tag_id},
        )
        if c.returned_token_ids is not None:
            tokens = self.tokenizer.convert_ids_to_tokens(list(c.returned_token_ids))
            if any(t is None for t in tokens):
                raise VerifierError(f"returned_token_ids={c.returned_token_ids} are not all in the tokenizer's vocabulary")
            args["convert"] = "classify"
            args["hf_overrides"] = {"classifier_from_token": list(tokens), "method": "no_post_processing"}
        return args

    def start(self) -> None:
        """Create the pooling engine (blocking, ~tens of seconds); safe to call from any thread."""
        if self._engine is not None:
            return
        c = self.config
        self.tokenizer  # noqa: B018 - resolves the step tag before the engine is built
        archs = _architectures(c.model)
        if c.returned_token_ids is None and archs and all(a.endswith("ForCausalLM") for a in archs):
            raise VerifierError(
                f"model={c.model!r} is a causal LM ({archs[0]}), not a PRM with its own head; "
                "set returned_token_ids=[good_id, bad_id] to score it Math-Shepherd-style"
            )
        self._engine = start_engine(c, self._cpu, self._engine_args(), VerifierError, label="the PRM ")

    async def astart(self) -> None:
        """Start the engine off the event loop, once, however many callers wait for it."""
        if self._engine is not None:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._engine is None:
                await asyncio.to_thread(self.start)

    # ---- Scorer interface -----------------------------------------------------------------------
    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        """One probability per step of each trajectory, all inputs sent to the engine together."""
        if self.dead:
            raise VerifierError("the PRM's vLLM engine died earlier; restart the engine")
        inputs: list[tuple[int, list[int]]] = []  # (trajectory index, token ids)
        for i, t in enumerate(trajectories):
            if not t.steps:
                continue
            ids, rows = self.encode_with_rows(problem, t.steps)
            tags = ids.count(self._tag_id) if rows is None else len(rows)
            if tags != len(t.steps):
                raise VerifierError(
                    f"trajectory {i}: its PRM input holds {tags} step tags (token id {self._tag_id}) "
                    f"for {len(t.steps)} steps, so scores would not line up with steps"
                )
            if len(ids) > self.config.max_model_len:
                raise VerifierError(
                    f"trajectory {i}: its PRM input is {len(ids)} tokens, over max_model_len={self.config.max_model_len}"
                )
            inputs.append((i, ids, rows))
        scores: list[list[float]] = [[] for _ in trajectories]
        if not inputs:
            return ScoreResult(scores, 0)
        await self.astart()
        pooled = await asyncio.gather(*(self._pool(ids) for _, ids, _ in inputs))
        for (i, ids, rows), data in zip(inputs, pooled):
            scores[i] = self.step_probabilities(data, ids, len(trajectories[i].steps), where=f"trajectory {i}",
                                                rows=rows)
        return ScoreResult(scores, sum(len(ids) for _, ids, _ in inputs))

    async def _pool(self, ids: list[int]):
        from vllm import PoolingParams

        EngineDeadError, refused = request_errors()

        params = PoolingParams(task="token_classify", use_activation=True, step_tag_id=self._tag_id)
        final = None
        try:
            async for out in self._engine.encode({"prompt_token_ids": ids}, params, request_id=f"prm-{next(self._ids)}"):
                final = out
        except EngineDeadError as exc:
            self.dead = True
            raise VerifierError(f"the PRM's vLLM engine died: {exc}") from exc
        except refused as exc:
            raise VerifierError(f"vLLM rejected the PRM request: {exc}") from exc
        if final is None or final.outputs is None:
            raise VerifierError("vLLM returned no pooling output for a PRM request")
        return final.outputs.data

    def step_probabilities(self, data, ids: Sequence[int], n_steps: int, where: str = "a trajectory",
                           rows: Sequence[int] | None = None) -> list[float]:
        """One probability per step from vLLM's pooled rows.

        vLLM's STEP pooling returns one row per step tag (what 0.32 does when given
        `step_tag_id`); a build that ignored the tag would return one row per input token,
        and the tag rows are then picked here. A row of two or more columns is a softmax
        over labels (native PRM: label 1 = right) or over `returned_token_ids` (the first
        = good); a single column is already a sigmoid probability.
        """
        import torch

        t = torch.as_tensor(data).float().cpu()
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2:
            raise VerifierError(f"{where}: vLLM returned pooled data of shape {tuple(t.shape)}, expected (steps, labels)")
        if t.shape[0] == len(ids) and len(ids) != n_steps:
            positions = [k for k, tok in enumerate(ids) if tok == self._tag_id]
            t = t[positions]
        if rows is not None and t.shape[0] == ids.count(self._tag_id):  # tag tokens inside the prompt too
            t = t[list(rows)]
        if t.shape[0] != n_steps:
            raise VerifierError(f"{where}: vLLM returned {t.shape[0]} step scores for {n_steps} steps")
        if t.shape[1] == 1:
            column = 0
        else:
            column = 0 if self.config.returned_token_ids is not None else 1
            if self.config.returned_token_ids is None and t.shape[1] != 2:
                raise VerifierError(f"{where}: the PRM head has {t.shape[1]} labels, expected 2 (wrong, right)")
        probs = t[:, column].tolist()
        if not all(math.isfinite(p) and -1e-6 <= p <= 1 + 1e-6 for p in probs):
            raise VerifierError(f"{where}: PRM step scores are not probabilities: {probs}")
        return [min(1.0, max(0.0, p)) for p in probs]

    async def aclose(self) -> None:
        """Shut the pooling engine down; a later score starts a new one."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.shutdown()


def _architectures(model: str) -> list[str]:
    """The checkpoint's declared architectures (local folders only); [] when unknown."""
    f = Path(model) / "config.json"
    try:
        return list(json.loads(f.read_text()).get("architectures") or [])
    except (OSError, ValueError):
        return []
