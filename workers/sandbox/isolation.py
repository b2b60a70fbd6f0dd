"""What isolation this machine allows, found out once by trying it.

Namespaces mode needs Linux, root (to create the namespaces, remount and drop to the sandbox
user) and util-linux `unshare`. Anything less falls back to rlimits mode, with a warning that
says what is then not isolated.
"""
from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ttc.core.errors import ConfigError

UNSHARE_FLAGS = ["--net", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", "--propagation", "private"]

WHAT_IS_ISOLATED = {
    "namespaces": "own network namespace (no network at all), own mount namespace with a new root "
    "holding only the system folders (read-only, nosuid, nodev) and a private size-limited /tmp, own "
    "PID namespace (the whole process tree dies with the run), a separate unprivileged user per slot "
    "with no-new-privileges, rlimits, stripped environment",
    "rlimits": "rlimits (CPU, memory, file size, open files, processes), a separate process group, "
    "a stripped environment, a separate unprivileged user per slot only when run as root; NOT isolated: "
    "the network, the host filesystem (whatever that user may write), and processes that leave the group",
}


class SandboxWarning(UserWarning):
    """The sandbox runs with weaker isolation than asked for or than it could have."""


@dataclass(frozen=True)
class Isolation:
    mode: str  # "namespaces" | "rlimits"
    unshare: str | None
    python: str
    drop_privileges: bool  # started as root: each slot runs as its own unprivileged user
    reason: str = ""  # why namespaces are not used, in rlimits mode
    #: namespaces mode: the host folders bound (read-only) into the candidate's new root, and its symlinks
    root_binds: tuple[str, ...] = ()
    root_links: tuple[tuple[str, str], ...] = ()


SYSTEM_FOLDERS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def root_layout(python: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """What the candidate's root holds: the system folders (symlinks, as on merged-/usr systems,
    stay symlinks), and the interpreter's own prefix when it lives elsewhere."""
    binds, links = [], []
    for name in SYSTEM_FOLDERS:
        path = "/" + name
        if os.path.islink(path):
            links.append((name, os.readlink(path)))
        elif os.path.isdir(path):
            binds.append(path)
    prefix = str(Path(os.path.realpath(python)).parent.parent)
    if not any(prefix == b or prefix.startswith(b + "/") for b in binds):
        binds.append(prefix)
    return tuple(binds), tuple(links)


def runnable_by_others(path: str) -> bool:
    """Whether a user who is neither owner nor in the group can execute `path` (every folder searchable)."""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)
    except OSError:
        return False


def interpreter(requested: str | None, drop_privileges: bool) -> str:
    if requested:
        found = shutil.which(requested)
        if not found:
            raise ConfigError(f"sandbox.python: no interpreter found at {requested!r}")
        return found
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    for path in candidates:
        if path and os.path.exists(path) and (not drop_privileges or runnable_by_others(path)):
            return path
    raise ConfigError(f"sandbox.python: none of {candidates} can be run by the sandbox user; "
                      "name one with sandbox.python")


@functools.lru_cache(maxsize=None)
def detect(requested: str = "auto", python: str | None = None) -> Isolation:
    """The isolation to use; `requested` is SandboxConfig.isolation. Tries a real namespaced run once."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    unshare = shutil.which("unshare")
    python_path = interpreter(python, drop_privileges=root)
    if requested == "rlimits":
        return _fallback(python_path, root, "rlimits mode was asked for", warn=True)
    reason = ""
    if not sys.platform.startswith("linux"):
        reason = f"namespaces need Linux, this is {sys.platform}"
    elif not root:
        reason = "namespaces need root (the sandbox creates them and then drops to an unprivileged user)"
    elif not unshare:
        reason = "util-linux `unshare` is not installed"
    else:
        reason = _try_namespaces(unshare, python_path)
    if not reason:
        binds, links = root_layout(python_path)
        return Isolation("namespaces", unshare, python_path, drop_privileges=True, root_binds=binds, root_links=links)
    if requested == "namespaces":
        raise ConfigError(f"sandbox.isolation: 'namespaces' is not available here: {reason}")
    return _fallback(python_path, root, reason, warn=True)


def _try_namespaces(unshare: str, python: str) -> str:
    probe = "import os; print(os.getpid())"  # 1: it is the first process of its own PID namespace
    try:
        done = subprocess.run([unshare, *UNSHARE_FLAGS, python, "-I", "-S", "-c", probe], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare` could not run: {exc}"
    if done.returncode != 0 or done.stdout.strip() != "1":
        return f"`unshare` failed here (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return ""


def _fallback(python: str, root: bool, reason: str, warn: bool) -> Isolation:
    if warn:
        warnings.warn(f"code sandbox in rlimits mode ({reason}): {WHAT_IS_ISOLATED['rlimits']}",
                      SandboxWarning, stacklevel=3)
    return Isolation("rlimits", None, python, drop_privileges=root, reason=reason)
