"""Keep third-party noise out of what the command line shows.

vLLM, torch and Triton write to the process's standard error from Python, from C++
(a NUMA binding warning) and from the engine's own processes (warnings repeated once
per process, progress bars). None of it is actionable for a user asking one question,
so by default the command line sends all of it (file descriptor 2, which child
processes inherit, and Python's `sys.stderr`) to a log file, and writes its own
messages and progress bar to the terminal. `--verbose` shows everything as it comes.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, TextIO

from ttc.core.paths import ttc_home


def backend_log() -> Path:
    """Where the backends' own output goes when the command line is not verbose."""
    return ttc_home() / "logs" / "backends.log"


@contextlib.contextmanager
def backends_to_log(verbose: bool) -> Iterator[TextIO]:
    """Route the backends' standard error to `backend_log()` (unless `verbose`) for the block; yields
    the stream the command line's own messages go to (the terminal's standard error)."""
    terminal = sys.stderr
    if verbose:
        yield terminal
        return
    path = backend_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    log.write(f"\n--- ttc {' '.join(sys.argv[1:])[:200]} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    log.flush()
    try:
        terminal.flush()
    except (OSError, ValueError):
        pass
    saved_fd = os.dup(2)
    own = None
    if _writes_to_fd2(terminal):  # the real standard error: our messages go to a copy of it
        own = terminal = open(os.dup(saved_fd), "w", buffering=1, encoding=getattr(terminal, "encoding", None),
                              errors="replace")
    os.dup2(log.fileno(), 2)
    previous, sys.stderr = sys.stderr, log
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # shown once each, into the log
            yield terminal
    finally:
        sys.stderr = previous
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        if own is not None:
            own.close()
        log.close()


def _writes_to_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's capture buffer, a StringIO
        return False
