"""The results log: one JSON line per finished problem, appended as each finishes.

Append-only and flushed line by line, so a Ctrl-C or a kill loses nothing that
had finished; a rerun reads the log back and skips what is done. A kill in the
middle of a write can leave one torn last line: it is dropped on load (that
problem simply runs again), never duplicated.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from ttc.core.types import Solution


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    return record["config"], record["id"]


class ResultsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """Every complete record; a torn trailing line is cut off the file."""
        if not self.path.exists():
            return []
        records, good_bytes = [], 0
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn line")
                    records.append(json.loads(raw))
                except ValueError:
                    break  # everything after a torn line is suspect; those problems rerun
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as fh:
                fh.truncate(good_bytes)
        return records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, default=str) + "\n").encode()
        # One write of the whole line, then flush and fsync: finished work survives a kill or power cut.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.append(r)


def solution_record(solution: Solution, *, config: str, strategy: str, budget: dict, seed: int) -> dict[str, Any]:
    """What one finished problem leaves in results.jsonl."""
    p = solution.problem
    return {
        "config": config, "strategy": strategy, "budget": budget, "seed": seed,
        "id": p.id, "reference": p.reference, "answer": solution.answer, "correct": solution.correct,
        "usage": solution.usage.to_dict(),
        "candidates": [
            {"answer": c.answer, "correct": c.correct, "num_tokens": c.num_tokens,
             "finish_reason": c.finish_reason, "score": c.step_scores[-1] if c.step_scores else None}
            for c in solution.candidates
        ],
        "metrics": solution.metrics,
        "metadata": p.metadata,
    }
