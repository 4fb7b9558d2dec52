"""How the long-lived jobs use Python's cyclic garbage collector.

The engine makes millions of short-lived, acyclic objects (events, legs, user states,
CDRs): reference counting frees them, and the collector only spends time scanning them.
With the default thresholds a worker holding many calls spent a fifth of its time in the
collector (py-spy, `docs/benchmarks.md`). So start-up objects are frozen (never scanned
again) and the youngest generation is collected every 50,000 allocations, not every 700.

A worker's heap is mostly its users' state, which lives for minutes and is acyclic, and
each collection of an older generation scanned all of it: about a second's pause every
twenty young collections with 20,000 users, during which no event was handled. So the
worker also freezes what survives, about once a second (`SurvivorFreezer`): the
collector then scans only what was made since. Frozen objects are still freed by
reference counting; only a reference cycle that was alive when frozen and died later
would stay, so every ten minutes everything is thawed and collected once.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_SECONDS = 600.0


def collect_rarely() -> None:
    """Freeze what exists now and collect the young generations far less often."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class SurvivorFreezer:
    """Call `tick` with the time about once a second: it freezes what has survived so far,
    and every `full_every` seconds thaws everything and collects it once."""

    def __init__(self, full_every: float = FULL_COLLECTION_SECONDS) -> None:
        self.full_every = full_every
        self._next_full: float | None = None

    def tick(self, now: float) -> None:
        if self._next_full is None:
            self._next_full = now + self.full_every
        elif now >= self._next_full:
            gc.unfreeze()
            gc.collect()
            self._next_full = now + self.full_every
        gc.freeze()
