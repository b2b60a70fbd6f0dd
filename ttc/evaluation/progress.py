"""The progress line of long runs (`ttc run`, `ttc label`)."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Problems done, running accuracy, tokens spent and tokens/s, on one line of standard error
    (or of the stream `enabled` is, when it is one: the command line's terminal)."""

    def __init__(self, total: int, enabled: "bool | TextIO"):
        self.total, self.done, self.correct, self.judged, self.tokens, self.errors = total, 0, 0, 0, 0, 0
        self.start = time.monotonic()
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            stream = sys.stderr if enabled is True else enabled
            # disable=False explicitly: the CLI sets TQDM_DISABLE to silence backend progress bars.
            self.bar = tqdm(total=total, unit="problem", file=stream, dynamic_ncols=True, disable=False)

    def update(self, record: dict[str, Any] | None) -> None:
        if record is None:
            self.errors += 1
        else:
            self.done += 1
            self.tokens += record["usage"]["generated_tokens"]
            if record["correct"] is not None:
                self.judged += 1
                self.correct += bool(record["correct"])
        if self.bar is not None:
            rate = self.tokens / max(time.monotonic() - self.start, 1e-9)
            acc = f"{self.correct / self.judged:.1%}" if self.judged else "n/a"
            self.bar.set_postfix_str(f"acc={acc} tokens={self.tokens} tok/s={rate:.0f} errors={self.errors}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
