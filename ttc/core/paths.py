"""Where ttc keeps what it makes once and reuses: converted models, allocator files."""
from __future__ import annotations

import os
from pathlib import Path


def ttc_home() -> Path:
    """`$TTC_HOME`, or `~/.cache/ttc` when it is unset."""
    return Path(os.environ.get("TTC_HOME") or Path.home() / ".cache" / "ttc")
