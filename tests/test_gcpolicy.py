"""The worker's collector policy (streams/gcpolicy.py): survivors are frozen, and a
reference cycle that died while frozen is still collected at the next full collection."""

from __future__ import annotations

import gc
import weakref

from streams.gcpolicy import SurvivorFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_survivors_are_frozen_and_a_frozen_cycle_is_collected_at_the_full_collection() -> None:
    freezer = SurvivorFreezer(full_every=600.0)
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle, alive when frozen
        gone = weakref.ref(a)
        freezer.tick(0.0)
        assert gc.get_freeze_count() > 0
        del a, b  # now garbage, but frozen: young collections do not see it
        gc.collect(1)
        assert gone() is not None
        freezer.tick(599.0)
        assert gone() is not None
        freezer.tick(600.0)  # the full collection thaws and collects everything
        assert gone() is None
        assert gc.get_freeze_count() > 0  # and freezes what is left
    finally:
        gc.unfreeze()
