"""A process reward model (PRM) run in-process with transformers.

A PRM of the Math-Shepherd / RLHFlow kind is a causal LM trained to predict a
"good step" token right after each reasoning step. The input is

    prompt_template.format(problem=...) + step_1 + step_tag + step_2 + step_tag + ...

(each step with its trailing whitespace stripped), and the score of step k is
P(good) from a softmax over just the (good_token, bad_token) pair of logits at
the last token of the k-th step tag.

The token ids are built by concatenating separately tokenized pieces, so the
position that ends each tag is known exactly: tags may be several tokens long,
and a step that happens to contain the tag text gets no extra score.

torch and transformers are imported only when the model is first used, so
importing this module is cheap. The forward pass runs in a worker thread
(`asyncio.to_thread`) so the event loop keeps serving other requests.
"""
from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field, field_validator, model_validator

from ttc.core.config import StrictModel
from ttc.core.errors import ConfigError, VerifierError
from ttc.core.plugins import ScoreResult
from ttc.core.types import Problem, Trajectory
from verifiers.prm_base import PRMScorer
from verifiers.step_input import StepInput
from verifiers.trained import with_trained_format

# Tokenizations kept between estimate_tokens() and the score() call that follows it.
_CACHE_SIZE = 256


class TransformersPRMConfig(StrictModel):
    """Options of the transformers process reward model scorer."""

    model: str = Field(
        ..., min_length=1,
        description="PRM checkpoint: a local folder, or a model name already in the local Hugging Face cache (nothing is downloaded).",
    )
    step_tag: str = Field(
        "\n\n", min_length=1,
        description="Text appended after each (right-stripped) step; the score is read at its last token. "
                    "Math-Shepherd uses ' ки'; RLHFlow PRMs use '\\n\\n'.",
    )
    good_token: str = Field("+", min_length=1, description="Token the PRM predicts after a good step; must be one token.")
    bad_token: str = Field("-", min_length=1, description="Token the PRM predicts after a bad step; must be one token.")
    prompt_template: str = Field(
        "{problem}\n\n", description="How the question precedes the steps; '{problem}' is replaced by the problem prompt.",
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Trajectories per forward pass.")
    max_length: int = Field(
        4096, ge=16, le=1_048_576,
        description="Longest input (prompt + steps + tags) in tokens; a longer trajectory is an error, never truncated.",
    )
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="Where the model runs; 'auto' = cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; 'auto' = float32 on cpu, the checkpoint's own dtype on cuda.",
    )

    @model_validator(mode="before")
    @classmethod
    def _trained_format(cls, data: Any) -> Any:
        return with_trained_format(data, "transformers")

    @field_validator("prompt_template")
    @classmethod
    def _template_formats(cls, v: str) -> str:
        try:
            v.format(problem="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"must be a format string whose only field is {{problem}} ({type(exc).__name__}: {exc})") from None
        return v

    @model_validator(mode="after")
    def _distinct_tokens(self) -> "TransformersPRMConfig":
        if self.good_token == self.bad_token:
            raise ValueError(f"good_token and bad_token must differ, both are {self.good_token!r}")
        return self


def _looks_like_path(model: str) -> bool:
    return Path(model).is_absolute() or model.startswith(("./", "../", "~", ".\\", "..\\")) or model in (".", "..")


class TransformersPRMScorer(PRMScorer):
    """Per-step scores P(good) from a causal-LM PRM (Math-Shepherd / RLHFlow style)."""

    name = "prm_transformers"
    Config = TransformersPRMConfig

    def __init__(self, config: TransformersPRMConfig):
        path = Path(config.model).expanduser()
        if path.is_dir():
            self._source = str(path)
        elif _looks_like_path(config.model) or path.exists():
            raise ConfigError(f"prm_transformers: model folder {config.model!r} does not exist or is not a folder")
        else:
            self._source = config.model  # a name, looked up in the local Hugging Face cache only (never downloaded)
        super().__init__(config, self._source)
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: Any = None
        self._logit_transform: Any = None
        self._input: StepInput | None = None  # builds the scored input (verifiers/step_input.py)
        self._good_id = self._bad_id = -1
        self._pad_id = 0
        self._cache: OrderedDict[tuple, tuple[list[int], list[int]]] = OrderedDict()
        self._load_lock = threading.Lock()  # loading the tokenizer / model once
        self._tok_lock = threading.Lock()  # fast tokenizers are not safe to share between threads
        self._run_lock = threading.Lock()  # one forward pass at a time; also guards aclose

    # ---- loading -------------------------------------------------------------------------------
    def _load_tokenizer(self) -> Any:
        if self._tokenizer is not None:
            return self._tokenizer
        with self._load_lock:
            if self._tokenizer is not None:
                return self._tokenizer
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(self._source, local_files_only=True)
            except Exception as exc:
                where = "folder" if Path(self._source).is_dir() else "name (not a local folder, and not in the local cache)"
                raise ConfigError(
                    f"prm_transformers: cannot load the tokenizer of model {self.config.model!r} by {where}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            c = self.config

            ids = {}
            for field in ("good_token", "bad_token"):
                text = getattr(c, field)
                piece = list(tok.encode(text, add_special_tokens=False))
                if len(piece) != 1:
                    raise ConfigError(
                        f"prm_transformers: {field}={text!r} is {len(piece)} tokens "
                        f"({tok.convert_ids_to_tokens(piece)}) in the tokenizer of {c.model!r}; it must be exactly one token"
                    )
                ids[field] = piece[0]
            self._input = StepInput(tok, c.step_tag, c.prompt_template)
            self._good_id, self._bad_id = ids["good_token"], ids["bad_token"]
            self._pad_id = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
            self._tokenizer = tok  # published last: other threads take a non-None tokenizer as "ready"
            return tok

    def _load_model(self) -> Any:
        self._load_tokenizer()
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is not None:
                return self._model
            import torch
            from transformers import AutoModelForCausalLM

            c = self.config
            cuda = torch.cuda.is_available()
            if c.device == "cuda" and not cuda:
                raise ConfigError("prm_transformers: device='cuda', but torch sees no CUDA device; use device='cpu' or 'auto'")
            device = torch.device("cuda" if (c.device == "cuda" or (c.device == "auto" and cuda)) else "cpu")
            if c.dtype == "auto":
                dtype: Any = "auto" if device.type == "cuda" else torch.float32
            else:
                dtype = getattr(torch, c.dtype)
            try:
                model = AutoModelForCausalLM.from_pretrained(self._source, dtype=dtype, local_files_only=True)
            except Exception as exc:
                raise ConfigError(
                    f"prm_transformers: cannot load model {c.model!r} as a causal LM: {type(exc).__name__}: {exc}"
                ) from None
            model.to(device).eval()
            head = model.get_output_embeddings()
            if model.get_decoder() is model or head is None or getattr(head, "weight", None) is None:
                raise ConfigError(
                    f"prm_transformers: model {c.model!r} ({type(model).__name__}) has no separate decoder and "
                    "linear LM head; only causal-LM PRMs of the Math-Shepherd / RLHFlow kind are supported"
                )
            vocab = head.weight.shape[0]
            for field, tid in (("good_token", self._good_id), ("bad_token", self._bad_id)):
                if tid >= vocab:
                    raise ConfigError(f"prm_transformers: {field} id {tid} is outside the model's vocabulary of {vocab}")
            self._logit_transform = _final_logit_transform(model.config)
            self._device = device
            self.num_parameters = int(model.num_parameters())
            self._model = model
            return model

    # ---- tokenization --------------------------------------------------------------------------
    def _encode_one(self, problem_prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Input ids of one trajectory and, per step, the index of the last token of its tag (cached)."""
        key = (problem_prompt, tuple(steps))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        self._cache[key] = encoded = self._input.encode(problem_prompt, steps)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return encoded

    def encode(self, problem: Problem, trajectories: Sequence[Trajectory]) -> list[tuple[list[int], list[int]] | None]:
        """One (ids, tag positions) per trajectory; None for a trajectory without steps. The one place the
        scoring input is built: `ttc train-verifier` trains on exactly these positions."""
        if not any(t.steps for t in trajectories):
            return [None] * len(trajectories)
        self._load_tokenizer()
        out: list[tuple[list[int], list[int]] | None] = []
        with self._tok_lock:
            for i, t in enumerate(trajectories):
                if not t.steps:
                    out.append(None)
                    continue
                ids, positions = self._encode_one(problem.prompt, t.steps)
                if len(ids) > self.config.max_length:
                    raise VerifierError(
                        f"prm_transformers: trajectory {i} is {len(ids)} tokens (prompt, {len(t.steps)} steps and their "
                        f"tags), more than max_length={self.config.max_length}; raise max_length or shorten the trajectory"
                    )
                out.append((ids, positions))
        return out

    # ---- scoring -------------------------------------------------------------------------------
    def estimate_tokens(self, problem: Problem, trajectories: Sequence[Trajectory]) -> int:
        return sum(len(e[0]) for e in self.encode(problem, trajectories) if e is not None)

    async def score(self, problem: Problem, trajectories: Sequence[Trajectory]) -> ScoreResult:
        if not any(t.steps for t in trajectories):
            return ScoreResult([[] for _ in trajectories], 0)
        return await asyncio.to_thread(self._score_sync, problem, list(trajectories))

    def _score_sync(self, problem: Problem, trajectories: list[Trajectory]) -> ScoreResult:
        encoded = self.encode(problem, trajectories)
        self._load_model()
        scores: list[list[float]] = [[] for _ in trajectories]
        todo = sorted((i for i, e in enumerate(encoded) if e is not None), key=lambda i: len(encoded[i][0]))
        with self._run_lock:
            if self._model is None:  # closed meanwhile
                self._load_model()
            bs = self.config.batch_size
            for k in range(0, len(todo), bs):
                chunk = todo[k:k + bs]
                for i, s in zip(chunk, self._forward([encoded[i] for i in chunk])):
                    scores[i] = s
        tokens = sum(len(e[0]) for e in encoded if e is not None)
        return ScoreResult(scores, verifier_tokens=tokens)

    def _forward(self, batch: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """P(good) at each tag position of each row; right padding with an attention mask."""
        import torch

        model, device = self._model, self._device
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols = [], []
        for r, (ids, positions) in enumerate(batch):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, :len(ids)] = 1
            rows += [r] * len(positions)
            cols += positions
        with torch.inference_mode():
            # Run the decoder only, then the LM head on just the tag positions and just the two
            # token rows: the full [batch, length, vocab] logits would not fit for long inputs.
            hidden = model.get_decoder()(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False,
            ).last_hidden_state
            picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
            head = model.get_output_embeddings()
            pair = torch.tensor([self._good_id, self._bad_id], device=device)
            weight = head.weight[pair].float()
            logits = picked.float() @ weight.T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[pair].float()
            logits = self._logit_transform(logits)
            p_good = torch.softmax(logits, dim=-1)[:, 0].cpu().tolist()
        out, at = [], 0
        for _, positions in batch:
            out.append(p_good[at:at + len(positions)])
            at += len(positions)
        return out

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._run_lock:
            if self._model is None:
                return
            on_cuda = self._device is not None and self._device.type == "cuda"
            self._model = None
            if on_cuda:
                import torch

                torch.cuda.empty_cache()


def _final_logit_transform(config: Any):
    """The element-wise changes some model heads make to their logits after the linear layer
    (Gemma 2 soft-capping, Cohere's logit_scale, Granite's logits_scaling); identity otherwise."""
    import torch

    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divide = getattr(config, "logits_scaling", None)

    def transform(logits):
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform
