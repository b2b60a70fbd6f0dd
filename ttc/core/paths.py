"""Where ttc keeps what it makes once and reuses (converted models, allocator files), and how a file is
written so that no reader ever sees half of it."""
from __future__ import annotations

import os
from pathlib import Path


def ttc_home() -> Path:
    """`$TTC_HOME`, or `~/.cache/ttc` when it is unset."""
    return Path(os.environ.get("TTC_HOME") or Path.home() / ".cache" / "ttc")


def write_whole(path: str | Path, text: str) -> Path:
    """Write `text` beside `path`, then rename it over `path`: a reader (a browser, the next run) sees the old
    file or the new one, never a torn one, even when the writer is killed midway."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
