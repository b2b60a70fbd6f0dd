"""One generated-token budget shared by a batch of prompts (used by `auto`).

Every prompt is first probed at the probe's own cost. Prompts whose probe is
confident stop there; what the batch did not spend on probes is then split
evenly among the prompts that are still hard. So compute moves from easy
prompts to hard ones, and the batch as a whole never spends more than its total.
A share is a cap, not a target: what a hard prompt leaves unspent (the
allocator stopped it, or its best-of-N's vote settled early) is not handed on,
because the other prompts' shares were fixed when it was split.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace

from ttc.core.budget import Ledger
from ttc.core.errors import BudgetError


class SharedBudget:
    """The batch's one budget: members report their probes, then each hard one awaits its share."""

    def __init__(self, total: int, members: int):
        if members < 1:
            raise BudgetError(f"a shared budget needs at least one member, got {members}")
        self.total = total
        self.members = members
        self._reports: dict[object, tuple[int, bool]] = {}
        self._shares: dict[object, int] = {}
        self._ready = asyncio.Event()

    def report(self, key: object, spent: int, hard: bool) -> None:
        """A member's probe is done: what it spent, and whether it wants more."""
        if key in self._reports:
            return
        self._reports[key] = (spent, hard)
        if len(self._reports) == self.members:
            left = self.total - sum(s for s, _ in self._reports.values())
            hard_keys = [k for k, (_, h) in self._reports.items() if h]
            if hard_keys and left > 0:
                share, extra = divmod(left, len(hard_keys))
                self._shares = {k: share + (1 if i < extra else 0) for i, k in enumerate(hard_keys)}
            self._ready.set()

    async def share(self, key: object) -> int:
        """Tokens this member may still spend, once every member has reported."""
        await self._ready.wait()
        return self._shares.get(key, 0)

    @staticmethod
    def grant(ledger: Ledger, share: int) -> None:
        """Let a ledger spend `share` more generated tokens beyond what it has spent."""
        ledger.budget = replace(ledger.budget, generated_tokens=ledger.usage.generated_tokens + share)
