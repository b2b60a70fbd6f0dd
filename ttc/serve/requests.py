"""OpenAI request bodies to ttc searches: what each field means here, and a clear 400 for what it cannot.

A body has OpenAI's fields and, from clients' `extra_body`, ttc's: `budget` (generated tokens, or an
object with the other caps), `strategy` (a registered name or `auto`), `verifier`, and any other key
is an option of the strategy, validated by the strategy's own config (`strategy_options`, an object,
gives options whose names OpenAI uses itself, such as the strategy's own `n`). OpenAI's sampling fields map
to the strategy's options (`max_tokens` / `max_completion_tokens`: the most one sample generates;
`temperature`, `top_p`, `stop`); `n` keeps its OpenAI meaning, the number of choices returned;
`seed` seeds the search. Every request is parsed into its own SearchRequest: nothing is shared.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttc.core.budget import Budget
from ttc.core.errors import ConfigError
from ttc.core.types import Problem
from ttc.serve.config import ServeConfig


class RequestError(Exception):
    """A bad request: a 400 whose OpenAI error body names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind


#: OpenAI fields accepted and ignored: they do not change what a search returns.
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"}
#: OpenAI fields only accepted at their neutral value (what they ask for is not served).
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "top_logprobs": None, "echo": False,
           "best_of": None, "suffix": None, "logit_bias": None, "tools": None, "tool_choice": None, "functions": None,
           "function_call": None, "response_format": None, "modalities": None, "audio": None, "prediction": None,
           "reasoning_effort": None, "web_search_options": None}
SAMPLING = {"temperature": "temperature", "top_p": "top_p", "stop": "stop", "max_tokens": "max_tokens",
            "max_completion_tokens": "max_tokens"}
TTC_FIELDS = {"budget", "strategy", "verifier", "strategy_options"}
CHAT_FIELDS = {"model", "messages", "n", "stream", "stream_options", "seed"}
COMPLETION_FIELDS = {"model", "prompt", "n", "stream", "stream_options", "seed"}


@dataclass
class SearchRequest:
    """One request's search, parsed and checked: its own options, never another request's."""

    problem: Problem
    model: str
    budget: Budget
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    verifier: str | None = None
    n: int = 1
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False


def parse(body: Any, config: ServeConfig, *, chat: bool) -> SearchRequest:
    """A chat or completions body to a SearchRequest; RequestError naming the field otherwise."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    known = CHAT_FIELDS if chat else COMPLETION_FIELDS
    strategy_options: dict[str, Any] = {}
    for key, value in body.items():
        if key in NEUTRAL:
            if value not in (NEUTRAL[key], None) and value != [] and value != {}:
                if key == "response_format" and isinstance(value, dict) and value.get("type") == "text":
                    continue
                raise RequestError(f"{key}={value!r} is not supported by this server", key)
        elif key in SAMPLING and value is not None:
            strategy_options[SAMPLING[key]] = [value] if key == "stop" and isinstance(value, str) else value
        elif key == "strategy_options":  # the way to give an option whose name OpenAI uses (the strategy's n)
            if not isinstance(value, dict):
                raise RequestError(f"strategy_options must be an object of the strategy's options, got {value!r}",
                                   "strategy_options")
            strategy_options.update(value)
        elif key not in known and key not in TTC_FIELDS and key not in IGNORED and key not in SAMPLING:
            strategy_options[key] = value  # an option of the strategy: its config says whether it exists
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model is required (a string; GET /v1/models lists the one served)", "model")
    problem = _chat_problem(body.get("messages")) if chat else _completion_problem(body.get("prompt"))
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= config.serve.max_n:
        raise RequestError(f"n must be an integer from 1 to {config.serve.max_n}, got {n!r}", "n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"seed must be an integer, got {seed!r}", "seed")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be a boolean, got {stream!r}", "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
            raise RequestError(f"stream_options must be an object with include_usage, got {options!r}", "stream_options")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise RequestError(f"stream_options.include_usage must be a boolean, got {include_usage!r}",
                               "stream_options.include_usage")
    budget = _budget(body.get("budget"), config)
    strategy = body.get("strategy")
    default = config.default_strategy
    if strategy is None or strategy == default.name:
        strategy, merged = default.name, {**config.default_options(), **strategy_options}
    elif isinstance(strategy, str):
        merged = {**config.sampling, **strategy_options}
    else:
        raise RequestError(f"strategy must be a strategy name, got {strategy!r}", "strategy")
    verifier = body.get("verifier")
    if verifier is not None and not isinstance(verifier, str):
        raise RequestError(f"verifier must be a verifier name, got {verifier!r}", "verifier")
    return SearchRequest(problem, model, budget, strategy, merged, verifier, n, seed, stream, include_usage)


def _budget(raw: Any, config: ServeConfig) -> Budget:
    if raw is None:
        budget = config.default_budget
    else:
        try:
            budget = Budget.coerce(raw)
        except (ConfigError, ValueError, TypeError) as exc:
            raise RequestError(f"budget: {exc}", "budget") from None
    cap = config.serve.max_budget
    if budget.generated_tokens is None:
        raise RequestError("budget must cap generated_tokens (an int, or an object with generated_tokens)", "budget")
    if budget.generated_tokens > cap:
        raise RequestError(f"budget={budget.generated_tokens} generated tokens exceeds this server's limit of {cap} "
                           "per request", "budget")
    return budget


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"{where}[{i}]: only text parts are supported, got {part!r:.80}", where)
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{where} must be a string or a list of text parts, got {content!r:.80}", where)


def _chat_problem(messages: Any) -> Problem:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", "messages")
    system, turns = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError(f"messages[{i}] must be an object with a role and content", f"messages[{i}]")
        role = m["role"]
        text = _text(m.get("content"), f"messages[{i}].content")
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append((role, text))
        else:
            raise RequestError(f"messages[{i}].role={role!r} is not supported (system, developer, user, assistant)",
                               f"messages[{i}].role")
    if not turns or turns[-1][0] != "user":
        raise RequestError("the last message must be the user's: it is the problem to solve", "messages")
    if not turns[-1][1].strip():
        raise RequestError("the last user message is empty", "messages")
    if len(turns) == 1:
        prompt = turns[0][1]
    else:  # earlier turns are context of the problem: the search solves the last message
        history = "\n\n".join(f"{role.capitalize()}: {text}" for role, text in turns[:-1])
        prompt = f"Conversation so far:\n\n{history}\n\nUser: {turns[-1][1]}"
    return Problem(prompt, system="\n\n".join(system) if system else None)


def _completion_problem(prompt: Any) -> Problem:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("prompt must be one non-empty string (a batch of prompts is not supported: send one "
                           "request each, they share the engine's batch)", "prompt")
    return Problem(prompt)
