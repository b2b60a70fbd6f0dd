"""One candidate's process: started isolated, spoken to over two pipes, and killed whole.

The pipes carry one JSON object per line. Replies are read with a deadline and a size cap;
nothing the candidate sends is believed beyond "this is the return value".
"""
from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ttc.core.errors import VerifierError
from workers.sandbox import worker
from workers.sandbox.config import SandboxConfig
from workers.sandbox.isolation import UNSHARE_FLAGS, Isolation

WORKER_SOURCE = Path(worker.__file__).read_text()
PIPE_CHUNK = 4096  # at most PIPE_BUF: a pipe reported writable takes it whole, so the write never blocks
SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def uid_base(config: SandboxConfig) -> int:
    """First slot user: as configured, else one block of 256 uids per engine process (by its PID), so
    two engines on one host never share a slot user (its process count, or the kill of its leftovers)."""
    return config.uid_base if config.uid_base is not None else 100_000 + 256 * (os.getpid() % 100_000)


class CallFailed(Exception):
    """A call of the candidate that returned no usable value (it raised, returned non-plain data, died)."""

    def __init__(self, kind: str, message: str = ""):
        self.kind = kind  # raised | refused | exited | timeout | memory | protocol
        super().__init__(f"{kind}: {message}" if message else kind)


class CandidateProcess:
    def __init__(self, config: SandboxConfig, isolation: Isolation, slot: int):
        self.config, self.isolation = config, isolation
        self.uid = uid_base(config) + slot if isolation.drop_privileges else None
        self.deadline = time.monotonic() + config.timeout_s
        self.timed_out = self.memory = False
        self.exited = False
        self._buffer = b""
        self._workdir: str | None = None
        self._captured: tuple[str, bool] | None = None
        self._start()

    # -------------------------------------------------------------- start and stop
    def _limits(self) -> dict[str, int]:
        c = self.config
        limits = {"RLIMIT_CPU": c.cpu_s or math.ceil(c.timeout_s) + 1, "RLIMIT_AS": c.memory_mb << 20,
                  "RLIMIT_FSIZE": c.file_size_mb << 20, "RLIMIT_NOFILE": c.open_files, "RLIMIT_CORE": 0}
        if self.uid is not None:  # per-user count: only meaningful for a user of its own
            limits["RLIMIT_NPROC"] = c.processes
        return limits

    def _start(self) -> None:
        namespaces = self.isolation.mode == "namespaces"
        if namespaces:
            workdir = "/tmp/work"  # inside its private tmpfs: gone with the namespace
        else:
            workdir = self._workdir = tempfile.mkdtemp(prefix="ttc-sandbox-")
        request_r, self._request_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        settings = {"namespaces": namespaces, "workdir": workdir, "tmpfs_bytes": self.config.tmp_size_mb << 20,
                    "root_binds": list(self.isolation.root_binds), "root_links": dict(self.isolation.root_links),
                    "uid": self.uid, "gid": self.uid, "limits": self._limits(),
                    "request_fd": request_r, "reply_fd": reply_w}
        # -u: what the candidate prints reaches the output file at once; a buffered tail would be lost
        # when close() kills the worker, and whether it was depended on a race with the worker's exit.
        command = [self.isolation.python, "-I", "-S", "-u", "-c", WORKER_SOURCE, json.dumps(settings)]
        if namespaces:
            command = [self.isolation.unshare, *UNSHARE_FLAGS, *command]
        self._output = tempfile.TemporaryFile(prefix="ttc-sandbox-out-")
        env = dict(SANDBOX_ENV, HOME=workdir, TMPDIR=workdir)
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT,
                                         pass_fds=(request_r, reply_w), env=env, cwd="/", start_new_session=True)
        except OSError as exc:
            self._close_fds(request_r, reply_w)
            request_r = reply_w = -1  # closed once: a second close could hit a number another thread reuses
            self.close()
            raise VerifierError(f"code sandbox: cannot start {command[0]}: {exc}") from exc
        finally:
            self._close_fds(request_r, reply_w)
        ready = self._receive()
        if ready is None or "setup_error" in ready:
            detail = (ready or {}).get("setup_error") or f"the worker exited ({self.proc.poll()}): {self.output()[0][-300:]}"
            self.close()
            if self.timed_out:
                raise VerifierError("code sandbox: set-up did not finish within the time limit")
            raise VerifierError(f"code sandbox: set-up failed: {detail}")

    @staticmethod
    def _close_fds(*fds: int) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> int | None:
        """Kill the whole tree, leave nothing behind; returns the exit status (negative: a signal)."""
        self._close_fds(getattr(self, "_request_w", -1), getattr(self, "_reply_r", -1))
        self._request_w = self._reply_r = -1
        proc = getattr(self, "proc", None)
        status = None
        if proc is not None:
            # Killed before it is reaped: until then its PID (its group's id) cannot be reused, so the
            # kill never reaches another process group. Its replies are all in; nothing is lost.
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its group; in namespaces mode its PID namespace dies with it
            except (ProcessLookupError, PermissionError):
                pass
            status = proc.wait()
        if self.uid is not None and self.isolation.mode == "rlimits":
            # Processes that left the group (setsid daemons) still run as this slot's user: kill them all.
            subprocess.run(["kill", "-KILL", "-1"], user=self.uid, group=self.uid, extra_groups=[],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if hasattr(self, "_output") and not self._output.closed:
            self.output()  # kept, then the file goes
            self._output.close()
        if status is not None and -status == signal.SIGXCPU:
            self.timed_out = True
        return status

    def output(self) -> tuple[str, bool]:
        """What it printed (stdout and stderr), cut at output_bytes; and whether it was cut."""
        if self._captured is None and not self._output.closed:
            keep = self.config.output_bytes
            self._output.seek(0)
            data = self._output.read(keep + 1)
            self._captured = (data[:keep].decode("utf-8", "replace"), len(data) > keep)
        return self._captured or ("", False)

    # -------------------------------------------------------------- talking
    def _send(self, message: dict) -> None:
        """Write one request within the deadline: a candidate that stops reading cannot block the judge."""
        data = (json.dumps(message) + "\n").encode()
        with selectors.DefaultSelector() as sel:
            sel.register(self._request_w, selectors.EVENT_WRITE)
            while data:
                left = self.deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.timed_out = True
                    raise CallFailed("timeout", "the candidate stopped reading its input")
                try:
                    data = data[os.write(self._request_w, data[:PIPE_CHUNK]):]
                except (BrokenPipeError, OSError):
                    self.exited = True
                    raise CallFailed("exited", "the candidate's process is gone") from None

    def _receive(self) -> dict | None:
        """The next reply, or None when the process closed its end or the deadline passed."""
        cap = self.config.max_message_bytes
        with selectors.DefaultSelector() as sel:
            sel.register(self._reply_r, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = self.deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.timed_out = True
                    return None
                chunk = os.read(self._reply_r, 1 << 16)
                if not chunk:
                    self.exited = True
                    return None
                self._buffer += chunk
                if len(self._buffer) > cap:
                    self._give_up()
                    raise CallFailed("protocol", f"a reply longer than {cap} bytes")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self._give_up()
            raise CallFailed("protocol", "a reply that is not JSON") from None
        if not isinstance(message, dict):
            self._give_up()
            raise CallFailed("protocol", "a reply that is not an object")
        return message

    def _give_up(self) -> None:
        """After a protocol error the reply stream is out of step: nothing more is asked of this process."""
        self.exited = True

    def _expect(self) -> dict:
        if self.timed_out or self.exited:
            raise CallFailed("timeout" if self.timed_out else "exited")
        message = self._receive()
        if message is None:
            raise CallFailed("timeout" if self.timed_out else "exited", "no reply from the candidate")
        return message

    def load(self, source: str, entry_point: str) -> None:
        """Run the solution's module code; raises CallFailed when it cannot be loaded."""
        self._send({"source": source, "entry_point": entry_point})
        reply = self._expect()
        if "load_error" in reply:
            kind = "memory" if reply["load_error"] == "MemoryError" else "raised"
            self.memory = self.memory or kind == "memory"
            raise CallFailed(kind, f"{reply['load_error']}: {reply.get('message', '')}")
        if reply.get("loaded") is not True:
            raise CallFailed("protocol", "an unexpected reply to loading")

    def call(self, args: tuple, kwargs: dict):
        try:
            request = {"args": worker.encode(tuple(args)), "kwargs": worker.encode(dict(kwargs))}
        except worker.NotPlainData as exc:
            raise TypeError(f"the tests pass a value that is not plain data to the candidate: {exc}") from None
        self._send(request)
        reply = self._expect()
        if "value" in reply:
            try:
                return worker.decode(reply["value"])
            except (ValueError, TypeError, RecursionError, OverflowError) as exc:
                self._give_up()
                raise CallFailed("protocol", f"a malformed return value ({exc})") from None
        if "refused" in reply:
            raise CallFailed("refused", f"the return value is not plain data ({reply['refused']})")
        if reply.get("raised") == "MemoryError":
            self.memory = True
            raise CallFailed("memory", "MemoryError")
        if "raised" in reply:
            raise CallFailed("raised", f"{reply['raised']}: {reply.get('message', '')}")
        raise CallFailed("protocol", "an unexpected reply to a call")
