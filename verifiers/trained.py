"""Verifiers trained by `ttc train-verifier`: found by name, scored in the format they were trained on.

A trained verifier is a transformers causal-LM checkpoint (a Math-Shepherd-style PRM: the
probability of a "good" token against a "bad" one after each step tag) plus
`ttc_verifier.json`, which records that scoring format and how it was trained. Both PRM
scorers accept it by path, or by name from `$TTC_HOME/verifiers/<name>`, and take the
format from that file for every option the user did not set, so scoring always reads the
positions the verifier was trained on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttc.core.paths import ttc_home

FORMAT_FILE = "ttc_verifier.json"


def verifiers_dir() -> Path:
    """Where `ttc train-verifier` puts verifiers by default, and where names are looked up."""
    return ttc_home() / "verifiers"


def resolve(model: str) -> Path | None:
    """The folder of a trained verifier given by path or by name; None when `model` is neither."""
    path = Path(model).expanduser()
    if path.is_dir() and (path / FORMAT_FILE).is_file():
        return path
    named = verifiers_dir() / model
    if "/" not in model and named.is_dir() and (named / FORMAT_FILE).is_file():
        return named
    return None


def read_format(folder: Path) -> dict[str, Any]:
    return json.loads((folder / FORMAT_FILE).read_text())


def with_trained_format(data: Any, scorer: str) -> Any:
    """A scorer config's raw options with a trained verifier's path and scoring format filled in
    (options the user gave win). `scorer` is "transformers" or "vllm"."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        return data
    folder = resolve(data["model"])
    if folder is None:
        return data
    fmt = read_format(folder)["format"]
    if scorer == "transformers":
        defaults = {k: fmt[k] for k in ("step_tag", "good_token", "bad_token", "prompt_template")}
    else:
        defaults = {"step_tag": fmt["step_tag"], "returned_token_ids": [fmt["good_id"], fmt["bad_id"]],
                    "prompt_template": fmt["prompt_template"], "use_chat_template": False, "system_prompt": None}
    return {**defaults, **data, "model": str(folder)}
