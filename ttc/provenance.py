"""Where figures come from: the code's version and commit, the machine, the date.

A run folder keeps one entry per start of the run (`provenance.json`), so a report can say which code
made its results, and a benchmark's JSON line carries the same fields.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def provenance() -> dict[str, str | bool]:
    """The commit (and whether the tree had uncommitted changes), the machine, the date."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    from ttc import __version__

    return {"ttc_version": __version__, "commit": git("rev-parse", "--short", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}
