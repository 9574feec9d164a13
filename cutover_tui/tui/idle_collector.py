"""Full garbage collections moved to when the operator is not typing, and made short.

Python starts a full collection whenever enough objects have survived the young ones: in
the middle of a key, and more often while a backfill's threads allocate. Each walks the
whole heap, 0.2 s of it live console objects, and screens left behind add about 2 µs per
dead object; it holds the GIL throughout, so the key waits (BENCHMARKS.md).

While the console runs, Python keeps its young collections and leaves the full ones to this
class. It runs one when Python would have wanted one and the operator has been quiet a
moment; if the keys never pause, once `most` times as much has piled up, which bounds the
longest stall. After the first one, what is alive (the modules, the app, the dashboard) is
moved out of the collector's sight with `gc.freeze()`, so later collections walk only what
came after: at most the frozen objects that die later go unreclaimed until the console exits.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from types import ModuleType

# The oldest generation's threshold, high enough that Python never starts a full collection.
_NEVER = 1 << 30


class IdleCollector:
    def __init__(self, *, quiet: float = 1.0, most: int = 3, clock: Callable[[], float] = time.monotonic,
                 heap: ModuleType = gc) -> None:
        self.quiet = quiet
        self.most = most
        self._clock = clock
        self._heap = heap  # the gc module; tests hand in one they drive themselves
        self._saved: tuple[int, int, int] | None = None  # Python's thresholds, while it runs
        self._frozen = False
        self.last_input = clock()
        self.collections = 0

    def start(self) -> None:
        """Take over the full collections, where the collector is CPython's three generations with
        a threshold on the oldest; anywhere else (3.14's incremental collector has none) step aside."""
        if self._saved is None and self.applies():
            self._saved = self._heap.get_threshold()
            self._heap.set_threshold(self._saved[0], self._saved[1], _NEVER)

    def applies(self) -> bool:
        thresholds = self._heap.get_threshold()
        return len(thresholds) == 3 and thresholds[2] > 0 and len(self._heap.get_count()) == 3

    def stop(self) -> None:
        """Python's own thresholds back, and what was frozen collectable again."""
        if self._saved is not None:
            self._heap.set_threshold(*self._saved)
            self._saved = None
        if self._frozen:
            self._heap.unfreeze()
            self._frozen = False

    def saw_input(self) -> None:
        self.last_input = self._clock()

    def tick(self) -> bool:
        """Collect now if one is due and the keys have paused, or too much has piled up;
        say whether it did."""
        if self._saved is None:  # not started: Python runs its own
            return False
        due_after = self._saved[2]  # middle-generation collections Python waits for
        piled = self._heap.get_count()[2]
        if piled < due_after:
            return False
        if self._clock() - self.last_input < self.quiet and piled < due_after * self.most:
            return False
        self._heap.collect()
        self.collections += 1
        if not self._frozen:
            self._heap.freeze()
            self._frozen = True
        return True
