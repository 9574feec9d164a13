"""The console's full garbage collections wait for a pause in the keys (BENCHMARKS.md)."""

from __future__ import annotations

import gc

import pytest

from cutover_tui.tui.idle_collector import IdleCollector

DUE = 10  # Python's default: a full collection after ten of the middle generation


class _Heap:
    """The parts of the gc module the collector uses, moved by hand, and a clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.threshold = (700, 10, DUE)
        self.piled = 0  # middle-generation collections since the last full one
        self.full = 0
        self.frozen = False

    def get_threshold(self):
        return self.threshold

    def set_threshold(self, *values):
        self.threshold = values

    def get_count(self):
        return (0, 0, self.piled)

    def collect(self):
        self.full += 1
        self.piled = 0

    def freeze(self):
        self.frozen = True

    def unfreeze(self):
        self.frozen = False


@pytest.fixture
def heap():
    return _Heap()


@pytest.fixture
def collector(heap):
    made = IdleCollector(quiet=1.0, most=8, clock=lambda: heap.now, heap=heap)
    made.start()
    return made


def _typing(heap, collector, seconds: float, every: float = 0.25) -> None:
    """Keys every `every` s, the collector's timer between them: it collects nothing."""
    end = heap.now + seconds
    while heap.now < end:
        heap.now += every
        collector.saw_input()
        assert collector.tick() is False


def test_nothing_is_collected_before_python_would_have(heap, collector):
    heap.piled = DUE - 1
    heap.now += 120
    assert collector.tick() is False and heap.full == 0


def test_before_start_python_keeps_its_own_full_collections(heap):
    idle = IdleCollector(clock=lambda: heap.now, heap=heap)
    heap.piled, heap.now = DUE * 10, heap.now + 120
    assert idle.tick() is False and heap.full == 0 and heap.threshold == (700, 10, DUE)


def test_where_the_oldest_generation_has_no_threshold_it_steps_aside(heap):
    """Python 3.14's incremental collector reports (2000, 10, 0): taking over would collect every tick."""
    heap.threshold = (2000, 10, 0)
    idle = IdleCollector(clock=lambda: heap.now, heap=heap)
    idle.start()
    heap.piled, heap.now = 5, heap.now + 120
    assert not idle.applies() and idle.tick() is False and heap.full == 0
    assert heap.threshold == (2000, 10, 0)  # Python's own settings untouched
    idle.stop()
    assert heap.threshold == (2000, 10, 0) and not heap.frozen


def test_a_due_collection_waits_while_the_operator_types(heap, collector):
    heap.piled = DUE
    _typing(heap, collector, 10)
    heap.now += 0.9
    assert collector.tick() is False
    heap.now += 0.2  # a second since the last key
    assert collector.tick() is True and heap.full == 1 and collector.collections == 1
    assert collector.tick() is False  # nothing due any more


def test_keys_that_never_pause_get_a_collection_once_eight_times_as_much_piled_up(heap, collector):
    heap.piled = DUE * 8 - 1
    _typing(heap, collector, 60)
    heap.piled += 1
    collector.saw_input()
    assert collector.tick() is True and heap.full == 1


def test_what_is_alive_after_the_first_collection_is_frozen_until_the_console_stops(heap, collector):
    assert not heap.frozen
    heap.piled, heap.now = DUE, heap.now + 2
    collector.tick()
    assert heap.frozen
    collector.stop()
    assert not heap.frozen and heap.threshold == (700, 10, DUE)


def test_python_starts_no_full_collection_while_it_runs_and_gets_its_thresholds_back():
    saved = gc.get_threshold()
    collector = IdleCollector()
    collector.start()
    try:
        running = gc.get_threshold()
        assert running[:2] == saved[:2] and running[2] > 10**8
        collector.start()  # twice is once: stop() still restores the thresholds it found
    finally:
        collector.stop()
    assert gc.get_threshold() == saved
    collector.stop()
    assert gc.get_threshold() == saved
