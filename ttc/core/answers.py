"""Final answers: pulling one out of a completion, and deciding whether two agree.

Extraction is plain regex because it runs on every sample. Equivalence first
tries a cheap string normalisation, since majority voting compares the same few
strings over and over, and only then asks math-verify (sympy), which is slow.

math-verify runs in a child process. Its own timeout uses SIGALRM, which only
works on the main thread, and the engine calls us from a background thread; and
some answers (10^{10^{10}}, chained factorials) send sympy into big-integer
arithmetic in C that no in-process timeout can interrupt. A child process can
simply be killed, so a pathological answer costs a few seconds, not the run.
"""
from __future__ import annotations

import atexit
import functools
from fractions import Fraction
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from typing import Callable, Sequence

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "the answer is X", "final answer: X", "**Answer:** X": "answer" must be followed
# by "is" or ":" so that prose such as "the answer depends on" is not taken. A
# lookahead, so that matches may overlap: in "Final Answer: The final answer is
# $5$" the inner phrase is the one that counts.
# The answer may follow on the next line ("the answer is:\n42").
_ANSWER_PHRASE = re.compile(r"(?=\banswer\b[ \t]*(?:\*\*)?[ \t]*(?:is\b[ \t]*:?|:)\s*(.+))", re.IGNORECASE)
_LEADING_MATH = re.compile(r"\$([^$]+)\$|\\\((.+?)\\\)")
# A leading minus counts as a sign only where it cannot be a subtraction ("5-3").
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-\u2212])?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/\d+)?"
)


def extract_answer(text: str) -> str | None:
    """The final answer in a completion: last \\boxed{}, else last "answer is X", else last number."""
    return _last_boxed(text) or _last_answer_phrase(text) or _last_number(text)


def has_final_answer(text: str) -> bool:
    """Whether the text states a final answer (a closed \\boxed{...}): a step-level search ends
    a trajectory there rather than asking for more steps."""
    return _last_boxed(text) is not None


def states_answer(text: str) -> bool:
    """Whether the text states its answer explicitly (a boxed one, or "the answer is X"), not merely
    ends on a number: a thinking that stopped without one has its answer forced."""
    return _last_boxed(text) is not None or _last_answer_phrase(text) is not None


def _last_boxed(text: str) -> str | None:
    # Walk back from the last box: a truncated completion may leave it unclosed.
    for m in reversed(list(_BOXED.finditer(text))):
        depth = 1
        for i in range(m.end(), len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            if depth == 0:
                content = text[m.end():i].strip()
                if content:
                    return content
                break
    return None


def _last_answer_phrase(text: str) -> str | None:
    for m in reversed(list(_ANSWER_PHRASE.finditer(text))):
        answer = _answer_like(_strip_decoration(m.group(1)))
        if answer:
            return answer
    return None


# Small models write "the answer is not ...", "the answer is indeed \boxed{}": prose, not
# answers. Such phrases would enter the vote and cost a math-verify call per pair.
_PROSE_LEAD = re.compile(r"^(?:[A-Za-z]+[ \t,]+)+(?=[-\u2212$\\(\[{\d.])")
_MATHY = re.compile(r"[\d$\\^=]")
_NOT_ANSWERS = frozenset(
    "not a an the that this it is in to of as be also simply clearly indeed correct incorrect "
    "written given shown below above following obtained unknown undefined none".split()
)


def _answer_like(x: str) -> str | None:
    """x if it reads as an answer; prose words before a number or formula are dropped, and of an
    equation ("40 * 48 = 1920", "x = 5") the right-hand side is the answer."""
    if not re.search(r"\w", x):
        return None  # punctuation alone (":", "**") is no answer
    if "=" in x and not re.search(r"[<>!]=|=[<>]|\\(?:le|ge|ne)q?\b", x):
        x = x.rsplit("=", 1)[1].strip()
        if not re.search(r"\w", x):
            return None
    if _MATHY.search(x):
        x = _PROSE_LEAD.sub("", x)  # "ultimately 18" -> "18"
        return None if x.replace(" ", "") in ("", "\\boxed{}", "\\fbox{}") else x
    words = x.split()
    if len(words) == 1 and len(x) <= 24 and x.lower().strip("()") not in _NOT_ANSWERS:
        return x  # a one-word answer: "Monday", "(B)"
    return None


def _strip_decoration(x: str) -> str:
    x = x.strip()
    # "The final answer is $5$. I hope it is correct." -- the maths is the answer.
    m = _LEADING_MATH.match(x)
    if m:
        x = m.group(1) or m.group(2)
    previous = None
    while x != previous:  # "**$5$**." needs several passes
        previous = x
        x = x.strip().removesuffix(".").strip("*").strip()
        if len(x) >= 2 and x[0] == x[-1] == "$":
            x = x[1:-1]
    return x


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return numbers[-1].replace("\u2212", "-").replace(",", "")


# --------------------------------------------------------------- equivalence

_UNIT = re.compile(r"(?<=\S)\s*\\(?:text|mbox|textrm|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?$")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


@functools.lru_cache(maxsize=65536)
def _normalise(s: str) -> str:
    s = s.strip().replace("\u2212", "-").replace("\\$", "").replace("$", "")
    s = s.strip().removesuffix(".").strip()
    s = _UNIT.sub("", s)
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s.strip()


def answers_match(a: str, b: str) -> bool:
    """Whether answer `a` is mathematically equivalent to `b` (the reference, where there is one)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if "\n" in a or "\n" in b:
        # Programs (the answers of code problems) are not mathematics: the same lines (indentation
        # kept, trailing spaces and blank lines not), or different. Running them is the execution
        # verifier's job, not this one's.
        return _program_lines(a) == _program_lines(b)
    na, nb = _normalise(a), _normalise(b)
    if not na or not nb:
        return False
    return _equivalent(na, nb)


def _program_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")


def _as_fraction(s: str) -> Fraction | None:
    """Exact value of a plain number ("12", "-0.5", "3/4"), else None."""
    if not _PLAIN_NUMBER.fullmatch(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


@functools.lru_cache(maxsize=65536)
def _equivalent(a: str, b: str) -> bool:
    if a.replace(" ", "") == b.replace(" ", ""):
        return True
    # Two plain numbers are compared exactly here: most answers are numbers, and the
    # math-verify round trip (a child process, sympy) is ~1000x slower.
    fa, fb = _as_fraction(a), _as_fraction(b)
    if fa is not None and fb is not None:
        return fa == fb
    return _math_verify.check(a, b)


def group_answers(answers: Sequence[str | None],
                  equivalent: Callable[[str, str], bool] | None = answers_match) -> list[list[int]]:
    """Indices of equivalent answers, clustered in order of first appearance; None answers in none.

    Identical strings always share a cluster and are compared once; a new distinct string joins the
    first cluster whose first answer it is `equivalent` to (None: identical strings only), so D
    distinct answers in C clusters cost at most D x C comparisons."""
    clusters: list[list[int]] = []
    representatives: list[str] = []
    by_string: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        k = by_string.get(answer)
        if k is None:
            if equivalent is not None:
                k = next((j for j, rep in enumerate(representatives) if equivalent(answer, rep)), None)
            if k is None:
                k = len(representatives)
                representatives.append(answer)
                clusters.append([])
            by_string[answer] = k
        clusters[k].append(i)
    return clusters


# ---------------------------------------------------- the math-verify worker

_CHECK_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 120.0  # importing sympy on a loaded machine can be slow
_WORKER_MEMORY_BYTES = 4 << 30


class _MathVerifyWorker:
    """One child process running math-verify; killed and replaced when a check overruns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one request in flight on the pipe at a time
        self._proc: subprocess.Popen[str] | None = None
        self._broken = False

    def check(self, prediction: str, reference: str) -> bool:
        with self._lock:
            if self._broken:
                return False
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                assert self._proc is not None and self._proc.stdin is not None
                self._proc.stdin.write(json.dumps([prediction, reference]) + "\n")
                self._proc.stdin.flush()
                return self._read_line(_CHECK_TIMEOUT_S) == "1"
            except Exception as e:
                logger.warning("math-verify gave no verdict on %.80r vs %.80r (%s); counted as no match",
                               prediction, reference, e)
                self.stop()
                return False

    def _start(self) -> None:
        # Run as a module from the directory holding the package, not as a script:
        # a script's own folder goes first on sys.path, and a module there named like
        # one of the standard library's would then shadow it in the child.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen([sys.executable, "-m", "ttc.core.answers"], cwd=root, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            if self._read_line(_START_TIMEOUT_S) != "ready":
                raise RuntimeError("unexpected greeting")
        except Exception:
            # A child that cannot start (math-verify missing, say) would fail the
            # same way on every call; say so once instead of respawning forever.
            self._broken = True
            logger.error("math-verify worker failed to start; only exact matches will count from now on")
            raise

    def _read_line(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer within {timeout:g} s")
        line = self._proc.stdout.readline()
        if not line:
            raise EOFError("worker exited")
        return line.strip()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


_math_verify = _MathVerifyWorker()
# A worker stuck in sympy would outlive us: it only notices a closed stdin between checks.
atexit.register(_math_verify.stop)


def _serve() -> None:
    """The worker's loop: a JSON [prediction, reference] per line in, "1" or "0" per line out."""
    try:
        import resource

        # Runaway arithmetic should end in MemoryError here, not in the host's OOM killer.
        limit = _WORKER_MEMORY_BYTES
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # It warns that we turned its timeout off; the parent's kill is the timeout.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    config = [LatexExtractionConfig(), ExprExtractionConfig()]

    @functools.lru_cache(maxsize=4096)
    def parsed(answer: str) -> list:
        # The LaTeX extractor only looks inside math delimiters; None disables SIGALRM.
        return parse(f"${answer}$", extraction_config=config, parsing_timeout=None)

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            prediction, reference = json.loads(line)
            # verify() is not symmetric: the reference goes first, as "gold".
            ok = verify(parsed(reference), parsed(prediction), timeout_seconds=None)
        except Exception:
            ok = False
        print("1" if ok else "0", flush=True)


if __name__ == "__main__":
    _serve()
