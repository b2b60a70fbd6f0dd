"""Configuration base: pydantic models, and one way to turn their errors into ConfigError.

Each component owns its config class (strategies, backends, scorers); this
module holds their base class, the sampling options shared by strategies (the
one builder of SamplingParams), and `validate`, which reports every problem at once with its field
path and bad value, never a traceback.
"""
from __future__ import annotations

import difflib
from typing import Any, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttc.core.errors import ConfigError
from ttc.core.types import SamplingParams

M = TypeVar("M", bound=BaseModel)


def nonblank_items(values: list[str], field: str, noun: str) -> list[str]:
    """A validator's check that no item of a list of texts is blank; the ValueError names the first."""
    blank = [i for i, v in enumerate(values) if not v.strip()]
    if blank:
        raise ValueError(f"{field}[{blank[0]}] is empty; every {noun} must be some text")
    return values


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _describe(err: dict[str, Any], model: type[BaseModel], prefix: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    path = f"{prefix}.{loc}" if prefix else loc
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, list(model.model_fields), n=1) if len(err["loc"]) == 1 else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = f"; valid options are {sorted(model.model_fields)}" if len(err["loc"]) == 1 else ""
        return f"unknown option {path!r}{hint}{valid}"
    return f"{path}: {err['msg']}, got {err.get('input')!r}"


def validate(model: type[M], data: dict[str, Any] | None, prefix: str = "") -> M:
    """Build `model` from `data`, or raise one ConfigError naming every bad field and value.

    The error's `fields` holds the top-level fields that failed, so a caller can go on checking
    the rest and report everything at once."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        error = ConfigError([_describe(e, model, prefix) for e in exc.errors()])
        error.fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        raise error from None


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`["n=8", "selection=majority", "stop=[\"\\n\"]"]` -> {"n": 8, ...}; values are YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


class SamplingOptions(StrictModel):
    """Sampling settings shared by every strategy that samples."""

    max_tokens: int = Field(256, ge=1, le=131072, description="Most tokens generated per sample.")
    # vLLM refuses temperatures above 2: the bound is checked here, before any compute is spent.
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Softmax temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a sample.")

    def params(self, n: int, *, max_tokens: int | None = None, stop: Sequence[str] = (), logprobs: int | None = None,
               greedy: bool = False) -> SamplingParams:
        """The request's SamplingParams: these options, `n` samples, and what the caller adds (a shorter
        `max_tokens`, extra `stop` strings first, logprobs, greedy decoding). The only place they are built."""
        return SamplingParams(n=n, temperature=0.0 if greedy else self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens if max_tokens is None else max_tokens,
                              stop=(*stop, *self.stop), logprobs=logprobs)
