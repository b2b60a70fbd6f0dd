"""The error hierarchy users catch: one base, four kinds.

Every message names the field and the value that caused it, so a user can fix
input without reading a traceback.
"""
from __future__ import annotations


class TTCError(Exception):
    """Base of every error ttc raises on purpose."""


class ConfigError(TTCError, ValueError):
    """Bad user input: a field, option or value that cannot be used.

    `problems` holds every problem found, so all of them are reported at once.
    """

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        #: The top-level fields the problems are about, when a schema check knows them.
        self.fields: set[str] = set()
        super().__init__("; ".join(self.problems))


class BudgetError(TTCError, ValueError):
    """A budget that is malformed, or too small to buy even one unit of work."""


class BackendError(TTCError, RuntimeError):
    """A generator or scorer backend failed.

    `retryable` says whether the same request may succeed if sent again
    (a dropped connection, an overloaded server) or not (a dead engine).
    """

    def __init__(self, message: str, *, retryable: bool = False, lost_requests: int = 0, lost_tokens: int = 0):
        self.retryable = retryable
        #: Attempts the backend made and lost before giving up, when it knows (the caller adds the last one).
        self.lost_requests = lost_requests
        self.lost_tokens = lost_tokens
        super().__init__(message)


class VerifierError(TTCError, RuntimeError):
    """A scorer or answer checker failed on a candidate."""


class SolveError(TTCError, RuntimeError):
    """A solve failed part-way; `partial` keeps the candidates already finished.

    Nothing finished is lost: the partial Solution carries every completed
    trajectory and the usage charged so far.
    """

    def __init__(self, message: str, partial=None):
        self.partial = partial
        super().__init__(message)
