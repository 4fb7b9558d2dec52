"""How the long-lived jobs use Python's cyclic garbage collector.

The engine makes millions of short-lived, acyclic objects (events, legs, user states,
CDRs): reference counting frees them, and the collector only spends time scanning them.
With the default thresholds a worker holding many calls spent a fifth of its time in the
collector (py-spy, `docs/benchmarks.md`). So start-up objects are frozen (never scanned
again) and the youngest generation is collected every 50,000 allocations, not every 700;
cycles (asyncio's and Faust's, in the worker) are still collected.
"""

from __future__ import annotations

import gc


def collect_rarely() -> None:
    """Freeze what exists now and collect the young generations far less often."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
