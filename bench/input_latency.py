"""Input latency of the console while a backfill runs, against the same keys with no job running.

    python bench/input_latency.py [--size S|M] [--samples N] [--no-journal] [--profile]

Sets up, in temp folders that are always removed (also on Ctrl-C or a failure): an embedded
Postgres, a database seeded at --size (default M) with the legacy baseline, Stage A (v2) and
the console's schema applied, and the demo's deploy env file. Then it runs the real console
(`make_app`) headless under Textual's Pilot at 120x40, in one process, in three phases of up
to --samples key presses each (default 200). The baseline has a console of its own, and the
loaded and after phases share a second one. So what the console accumulates as keys go by
(see BENCHMARKS.md) weighs no more on the loaded phase than on the baseline.

1. baseline: no job has run. Keys cycle f (the backfill's job screen, new), escape
   (dashboard), j (journal, new, read from the database) and d (dashboard). After f the
   next key waits, untimed, until the screen has its plan.
2. loaded: f, then enter starts the real backfill (a worker thread; two copy connections).
   While it runs, keys cycle escape (dashboard), j, d and J (the running job's screen, which
   redraws its progress and log every 0.2 s). Ends at --samples or when the backfill
   ends, whichever comes first; a sample counts only if its frame came before the end.
   If the samples run out first, the backfill is cancelled.
3. after: the backfill has ended; the same keys as in the loaded phase (J shows the
   finished job), so the two differ only by the running job.
--no-journal leaves j and d out of every cycle.

What one sample measures: from the moment the key is due (its gap after the previous key
has passed; it is then handed to Pilot, `pilot.press(key)`, which posts it to the app the
way a terminal driver does) to the first frame of the screen that key leads to. Pilot runs
on the UI's own event loop, so a stall of the loop (a garbage collection between keys)
delays the hand-over itself; timing from the due moment counts that wait, as an operator
would feel it. The app's `_display` is wrapped. Textual calls it with each compositor
update of the top screen, after the key's action, the screen switch, layout and every
widget's render. The wrapper also builds the terminal output a real driver would send
(`render_segments`; the headless driver skips it). It takes the time when the screen is
the expected one; for J, the job's screen must also have its progress figures. So a sample
covers key event -> action -> screen switch -> layout -> render -> output ready, on the UI
thread, with the backfill's threads competing for the GIL and both cores. A key whose
screen draws no frame within 1 s (20x the target) counts as never drawn: an infinite
latency in the percentiles. The report says which keys and screens these were, and whether
that screen's update timer was dead (Textual cannot repaint it then).

The time `await pilot.press()` takes is not the latency. After posting the key it waits
until the process looks idle (`wait_for_idle`: process CPU time over 20 ms sleeps, up to
1 s, twice). That costs 40 ms or more when nothing happens, and up to seconds when worker
threads keep the process busy. So each press runs as a task of its own, and its duration
is printed only for comparison ("press() p50"). Keys come the way a quick operator types:
the next one 150-350 ms (random, fixed seed) after the previous key's frame. This also
keeps them out of step with the 0.2 s redraw timer. Work a key leaves behind after its
first frame (a footer rebuilt, a status or journal query landing) can delay the next key.
An operator would feel that too, so it is part of the figures.

Percentiles are nearest-rank. Also printed per phase:
- the machine's 1-minute load average at its start and end (other work on the two cores
  slows every figure), the process's CPU use (all threads; 100% = one core) and, for the
  loaded phase, the backfill's rows/s over the measured window (from the job's own progress
  figures);
- where the UI thread's time went: its CPU time per counted key (the key's own work, what
  it left behind, the redraw timers); Footer rebuilds per key (`Footer.recompose`, counted
  by a wrapper that calls Textual's own method); the heap (objects the garbage collector
  tracks) at the phase's start and end; full (generation 2) garbage collections, in any
  thread (they hold the GIL, so the UI stands still), how long they took in all and the
  longest; stalls of the UI event loop (a
  5 ms ticker late by 50 ms or more: how many, the longest); and how many samples over
  the target overlapped a full garbage collection.
--profile runs cProfile on the UI thread during the loaded phase and prints where its time
went. Profiling slows the UI, so its latencies are not the benchmark's.

The target (issue 17; issue 4 had 100 ms): p95 <= 50 ms in the loaded phase. It prints PASS or FAIL and exits 0
either way; 1 only when something failed to run (a crash of the console included).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import math
import os
import pstats
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psycopg
from psycopg import sql
from textual.pilot import Pilot
from textual.widgets import Footer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cutover_tui.demo.embedded import create_database, embedded_postgres
from cutover_tui.demo.envfile_text import DEMO_ENV
from cutover_tui.demo.seed import SIZES, seed_legacy
from cutover_tui.rules.mapping import TABLES
from cutover_tui.store.db import ensure_console_schema
from cutover_tui.store.session import Settings, resolve_settings
from cutover_tui.tui.app import CutoverApp, make_app
from cutover_tui.tui.screens.job import JobScreen
from cutover_tui.tui.screens.journal import JournalScreen
from cutover_tui.tui.widgets.job_progress import JobProgress
from cutover_tui.work import migrate

TARGET_P95_MS = 50.0
SIZE = (120, 40)
MISS_AFTER = 1.0  # no frame of the expected screen this long after the key: counted as never drawn
GAP = (0.15, 0.35)  # seconds from a key's frame (or its miss) to the next key, drawn at random
STALL = 0.05  # a UI loop stall this long or longer is counted
Predicate = Callable[[object], bool]


# -- the database ---------------------------------------------------------------------------

def seeded_database(server_url: str, size: str) -> tuple[str, int]:
    """A database at Stage A: legacy seeded at `size`, v2 and the console schema applied."""
    url = create_database(server_url, f"latency_{size.lower()}")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply_legacy_baseline(conn, ROOT / "sql")
        started = time.monotonic()
        seed_legacy(conn, SIZES[size])
        print(f"[{size}] seeded in {time.monotonic() - started:.1f} s", flush=True)
        migrate.apply_plan(conn, migrate.plan(conn, ROOT / "sql"))
        ensure_console_schema(conn)
        conn.execute("VACUUM ANALYZE")
        rows = sum(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.legacy))).fetchone()[0]
                   for t in TABLES)
    return url, rows


# -- frames ---------------------------------------------------------------------------------

class FrameWatch:
    """Wraps the app's `_display`: the time of the first frame of the screen a key should show."""

    def __init__(self, app: CutoverApp) -> None:
        self.app = app
        self.original = app._display
        self.expect: Predicate | None = None
        self.at: float | None = None
        self.seen = asyncio.Event()
        self.frames = 0
        app._display = self._display  # type: ignore[method-assign]

    def _display(self, screen, renderable) -> None:
        self.original(screen, renderable)
        if renderable is None or self.app._batch_count:
            return
        render_segments = getattr(renderable, "render_segments", None)
        if render_segments is not None and self.app.is_headless:
            render_segments(self.app.console)  # what a terminal would be sent; headless skips it
        self.frames += 1
        if self.expect is not None and self.at is None and self.expect(screen):
            self.at = time.monotonic()
            self.seen.set()

    def arm(self, expect: Predicate) -> None:
        self.expect, self.at = expect, None
        self.seen.clear()


class LoopStalls:
    """The UI event loop's stalls: how late a 5 ms ticker wakes up."""

    TICK = 0.005

    def __init__(self) -> None:
        self.worst = 0.0
        self.long: list[tuple[float, float]] = []  # (when, how long) for stalls of STALL or more
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.TICK)
            late = time.monotonic() - before - self.TICK
            self.worst = max(self.worst, late)
            if late >= STALL:
                self.long.append((before, late))

    def start(self) -> None:
        self.worst, self.long = 0.0, []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> tuple[float, int]:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        return self.worst, len(self.long)


class Diagnostics:
    """What the UI thread waits for while a phase runs, counted without changing it.
    - Full (generation 2) garbage collections. Whichever thread runs one (the UI's or a
      backfill worker's), it holds the GIL throughout, so the UI stands still. They take
      longer as the heap grows, so the heap's size at the phase's start and end is kept.
    - Footer rebuilds (`Footer.recompose`, after each `refresh_bindings()`): each removes
      every FooterKey and mounts new ones. The wrapper calls Textual's own method."""

    def __init__(self) -> None:
        self.full_gcs: list[tuple[float, float]] = []
        self.footer_rebuilds = 0
        self.heap = (len(gc.get_objects()), 0)
        self._gc_started: dict[int, float] = {}
        self._recompose = Footer.recompose

    def _on_gc(self, event: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        thread = threading.get_ident()
        if event == "start":
            self._gc_started[thread] = time.monotonic()
        elif thread in self._gc_started:
            self.full_gcs.append((self._gc_started.pop(thread), time.monotonic()))

    def __enter__(self) -> Self:
        recompose, diagnostics = self._recompose, self

        async def counted(footer: Footer) -> None:
            diagnostics.footer_rebuilds += 1
            await recompose(footer)

        Footer.recompose = counted  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc) -> None:
        Footer.recompose = self._recompose  # type: ignore[method-assign]
        gc.callbacks.remove(self._on_gc)
        self.heap = (self.heap[0], len(gc.get_objects()))


# -- phases ---------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, key to frame
    returned: list[float] = field(default_factory=list)  # seconds, key to pilot.press returning
    by_key: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    cpu: float = 0.0  # the process's CPU use, all threads: 1.0 = one core
    ui_cpu: float = 0.0  # seconds of CPU the UI thread used in the phase
    stall: float = 0.0
    stalls: int = 0  # stalls of STALL or more
    load: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load average at the start and the end
    rows_per_second: float | None = None
    missed: list[tuple[str, str, bool]] = field(default_factory=list)  # key, screen, its painter dead
    spans: list[tuple[float, float]] = field(default_factory=list)  # (key, frame) of each counted sample
    full_gcs: list[tuple[float, float]] = field(default_factory=list)  # (start, end), any thread
    heap: tuple[int, int] = (0, 0)  # objects the garbage collector tracks, at the start and the end
    footer_rebuilds: int = 0
    note: str = ""

    def slow_during_gc(self, limit: float) -> tuple[int, int]:
        """Samples slower than `limit`, and how many of them overlap a full garbage collection."""
        slow = [(a, b) for a, b in self.spans if b - a > limit]
        return len(slow), sum(1 for a, b in slow if any(g0 < b and g1 > a for g0, g1 in self.full_gcs))


@dataclass
class Step:
    key: str
    screen: Predicate  # the screen this key leads to
    ready: Predicate | None = None  # and what that screen's first counted frame must already show
    then: Callable[[], bool] | None = None  # not timed: wait until this holds before the next key

    def frame(self, screen) -> bool:
        return self.screen(screen) and (self.ready is None or self.ready(screen))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


async def wait_until(pilot, condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        check_alive(pilot.app)
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)  # not pilot.pause(): that paints the screen itself


async def measure(pilot, watch: FrameWatch, phase: Phase, steps: list[Step], samples: int,
                  rng: random.Random, keep_going: Callable[[], bool] = lambda: True,
                  counts: Callable[[float], bool] = lambda at: True) -> None:
    """Press the cycle of `steps` until `samples` are taken or `keep_going()` is false."""
    stalls = LoopStalls()
    stalls.start()
    started, cpu, ui_cpu, load = time.monotonic(), time.process_time(), time.thread_time(), os.getloadavg()[0]
    presses: list[asyncio.Task] = []
    diagnostics = Diagnostics().__enter__()
    i = 0
    due = time.monotonic()

    def returned(pressed: float) -> Callable[[asyncio.Task], None]:
        return lambda task: phase.returned.append(time.monotonic() - pressed)

    try:
        while len(phase.latencies) < samples and keep_going():
            check_alive(pilot.app)
            step = steps[i % len(steps)]
            i += 1
            watch.arm(step.frame)
            # Timed from when the key was due: if the loop was stalled then (a garbage
            # collection), a terminal's key would have waited just the same.
            pressed = due
            press = asyncio.create_task(pilot.press(step.key))  # sends the key at its first step
            press.add_done_callback(returned(pressed))
            presses.append(press)
            with suppress(TimeoutError):
                await asyncio.wait_for(watch.seen.wait(), MISS_AFTER)
            watch.expect = None
            if watch.at is None:  # no frame: an infinitely late one; say what the screen's painter was doing
                latency, at = math.inf, time.monotonic()
                timer = getattr(pilot.app.screen, "_Screen__update_timer", None)
                phase.missed.append((step.key, type(pilot.app.screen).__name__,
                                     timer is not None and getattr(timer, "_task", None) is None))
                # the next key only once this one has acted, drawn or not (not timed)
                await wait_until(pilot, lambda s=step: s.screen(pilot.app.screen), f"{step.key!r} to change the screen", 30)
            else:
                latency, at = watch.at - pressed, watch.at
            if counts(at):
                phase.latencies.append(latency)
                phase.by_key.setdefault(step.key, []).append(latency)
                phase.spans.append((pressed, at))
            if step.then is not None:
                await wait_until(pilot, step.then, f"{step.key!r} to finish loading")
            due = time.monotonic() + rng.uniform(*GAP)
            await asyncio.sleep(due - time.monotonic())
    finally:
        phase.seconds = time.monotonic() - started
        phase.load = (load, os.getloadavg()[0])
        phase.ui_cpu = time.thread_time() - ui_cpu  # this coroutine runs on the UI thread
        phase.cpu = (time.process_time() - cpu) / phase.seconds if phase.seconds else 0.0
        phase.stall, phase.stalls = await stalls.stop()
        diagnostics.__exit__()
        phase.full_gcs, phase.footer_rebuilds = diagnostics.full_gcs, diagnostics.footer_rebuilds
        phase.heap = diagnostics.heap
        await asyncio.gather(*presses, return_exceptions=True)


async def back_to_dashboard(pilot) -> None:
    app = pilot.app
    if app.screen is not app.dashboard:
        await pilot.press("d")
    await wait_until(pilot, lambda: app.screen is app.dashboard, "the dashboard")


def rows_done(app: CutoverApp) -> int:
    if app.job is None:
        return 0
    items, _, _ = app.job.snapshot()
    return sum(item.done for item in items)


class ConsoleStopped(RuntimeError):
    pass


def check_alive(app: CutoverApp) -> None:
    if app._exception is not None:
        raise ConsoleStopped(f"the console crashed: {type(app._exception).__name__}: {app._exception}")
    if not app.is_running:
        raise ConsoleStopped("the console stopped running")


@asynccontextmanager
async def console(settings: Settings) -> AsyncIterator[tuple[CutoverApp, Pilot, FrameWatch]]:
    """A fresh console under Pilot, on the dashboard with its status; a crash becomes ConsoleStopped.
    On the way out a running job is cancelled and waited for, before the console closes.
    A full garbage collection first, so that the heap a phase starts with holds no garbage of
    an earlier console (the first full collection of the phase would pay for it)."""
    gc.collect()
    app = make_app(settings)
    try:
        async with app.run_test(size=SIZE) as pilot:
            try:
                watch = FrameWatch(app)
                await wait_until(pilot, lambda: app.dashboard.status is not None, "the dashboard's status")
                yield app, pilot, watch
            finally:
                job = app.job
                if job is not None and job.running:  # Ctrl-C or a failure: stop the backfill first
                    job.request_cancel()
                    deadline = time.monotonic() + 120
                    while job.running and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
    except Exception as exc:
        if app._exception is not None:
            raise ConsoleStopped(f"the console crashed: {type(app._exception).__name__}: {app._exception}") from exc
        raise


class Screens:
    """What each key should lead to, in one console."""

    def __init__(self, app: CutoverApp) -> None:
        self.app = app

    def dashboard(self, screen) -> bool:
        return screen is self.app.dashboard

    @staticmethod
    def journal(screen) -> bool:
        return isinstance(screen, JournalScreen)

    def fresh_job(self, screen) -> bool:
        return isinstance(screen, JobScreen) and screen.run is None and screen.kind == "backfill"

    def the_job(self, screen) -> bool:
        return isinstance(screen, JobScreen) and screen.run is not None and screen.run is self.app.job

    @staticmethod
    def progress_shown(screen) -> bool:
        return bool(screen.query_one(JobProgress).items)

    def plan_shown(self) -> bool:
        return isinstance(self.app.screen, JobScreen) and self.app.screen.plan is not None

    def journal_keys(self, journal: bool) -> list[Step]:
        return [Step("j", self.journal), Step("d", self.dashboard)] if journal else []


async def drive(settings: Settings, samples: int, journal: bool, profile: bool, phases: list[Phase],
                info: dict) -> None:
    """The three phases, appended to `phases` as they start (so a failure keeps what was measured).
    The baseline has a console of its own, so that what it leaves behind does not weigh on the
    loaded phase; the loaded and after phases share one (the after phase needs the ended job)."""
    rng = random.Random(4)

    # 1. baseline: nothing running
    async with console(settings) as (app, pilot, watch):
        on = Screens(app)
        baseline = Phase("baseline")
        phases.append(baseline)
        await measure(pilot, watch, baseline, [Step("f", on.fresh_job, then=on.plan_shown), Step("escape", on.dashboard),
                                               *on.journal_keys(journal)], samples, rng)

    async with console(settings) as (app, pilot, watch):
        on = Screens(app)
        # 2. loaded: the backfill running
        await pilot.press("f")
        await wait_until(pilot, on.plan_shown, "the backfill's plan")
        plan = app.screen.plan
        if plan.refused:
            raise RuntimeError(f"the runbook refuses the backfill: {' '.join(plan.refused)}")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.job is not None, "the backfill to start", timeout=10)
        job = app.job
        loaded = Phase("loaded")
        phases.append(loaded)
        profiler = cProfile.Profile() if profile else None
        rows_before, window_start = rows_done(app), time.monotonic()
        if profiler:
            profiler.enable()
        try:
            await measure(pilot, watch, loaded, [Step("escape", on.dashboard), *on.journal_keys(journal),
                                                 Step("J", on.the_job, on.progress_shown)], samples, rng,
                          keep_going=lambda: job.running,
                          counts=lambda at: job.finished is None or at <= job.finished)
        finally:
            if profiler:
                profiler.disable()
        window_end = min(time.monotonic(), job.finished or math.inf)
        loaded.rows_per_second = (rows_done(app) - rows_before) / (window_end - window_start)
        loaded.note = ("the backfill was still running after the last sample (cancelled then)" if job.running
                       else f"the backfill ended after {len(loaded.latencies)} samples")
        if profiler:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(50)
            info["profile"] = out.getvalue()

        # 3. after: the same keys, the job ended
        job.request_cancel()
        await wait_until(pilot, lambda: not job.running, "the backfill to end", timeout=600)
        info["job_seconds"], info["job_state"] = job.elapsed(), job.state
        if job.report is not None:
            info["report_seconds"] = job.report.model_dump(by_alias=True).get("durationSeconds")
        await back_to_dashboard(pilot)
        after = Phase("after")
        phases.append(after)
        await measure(pilot, watch, after, [Step("J", on.the_job, on.progress_shown), Step("escape", on.dashboard),
                                            *on.journal_keys(journal)], samples, rng)
        info["frames"] = watch.frames


# -- output ---------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return "never" if math.isinf(seconds) else f"{seconds * 1000:.1f}"


def row(name: str, lat: list[float], ph: Phase | None = None) -> str:
    extra = ""
    if ph is not None:
        rate = "" if ph.rows_per_second is None else f"{ph.rows_per_second:,.0f}"
        load = f"{ph.load[0]:.1f}-{ph.load[1]:.1f}"
        extra = f" {ms(percentile(ph.returned, 50)):>11} {ph.cpu:>5.0%} {rate:>9} {load:>9}"
    return (f"{name:<22} {len(lat):>7} {ms(percentile(lat, 50)):>8} {ms(percentile(lat, 95)):>8} "
            f"{ms(percentile(lat, 99)):>8} {ms(max(lat) if lat else math.nan):>8}" + extra)


def report(size: str, rows: int, phases: list[Phase], info: dict) -> bool:
    print()
    print(f"[{size}] legacy rows {rows:,}; backfill {info.get('job_state')} in {info.get('job_seconds', 0):.1f} s "
          f"(its report: {info.get('report_seconds')} s); {info.get('frames', 0)} frames drawn in the loaded and after phases")
    print()
    print(f"{'phase':<22} {'samples':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'press() p50':>11} {'CPU':>5} {'rows/s':>9} {'load':>9}")
    for ph in phases:
        print(row(ph.name, ph.latencies, ph))
    print()
    print(f"{'UI thread':<9} {'CPU/key ms':>10} {'footer rebuilds/key':>19} {'heap objects':>17} {'full GCs':>8} "
          f"{'GC s':>5} {'GC max ms':>9} {'stalls >=50ms':>13} {'stall max ms':>12} {'samples >50ms':>14} "
          f"{'of them in a GC':>15}")
    for ph in phases:
        n = len(ph.latencies) or math.nan
        pauses = [b - a for a, b in ph.full_gcs]
        slow, in_gc = ph.slow_during_gc(TARGET_P95_MS / 1000)
        heap = f"{ph.heap[0] / 1e6:.2f}M -> {ph.heap[1] / 1e6:.2f}M"
        print(f"{ph.name:<9} {ms(ph.ui_cpu / n):>10} {ph.footer_rebuilds / n:>19.1f} {heap:>17} {len(pauses):>8} "
              f"{sum(pauses):>5.1f} {ms(max(pauses, default=math.nan)):>9} {ph.stalls:>13} {ms(ph.stall):>12} "
              f"{slow:>14} {in_gc:>15}")
    if any(ph.missed for ph in phases):
        print()
        print(f"without the presses that drew no frame within {MISS_AFTER:.0f} s:")
        for ph in phases:
            print(row(f"{ph.name}, drawn only", [v for v in ph.latencies if math.isfinite(v)]))
    print()
    print("per key, p50 / p95 ms:")
    for ph in phases:
        print(f"  {ph.name:<9} " + "   ".join(f"{key}: {ms(percentile(v, 50))} / {ms(percentile(v, 95))} (n={len(v)})"
                                            for key, v in ph.by_key.items()))
    for ph in phases:
        if ph.missed:
            keys = sorted({(key, screen) for key, screen, _ in ph.missed})
            dead = sum(1 for *_, d in ph.missed if d)
            print(f"NO FRAME: {ph.name}: {len(ph.missed)} presses drew no frame within {MISS_AFTER:.0f} s "
                  f"({', '.join(f'{k} -> {s}' for k, s in keys)}); in {dead} of them the screen's update timer "
                  f"had no task (it cannot paint until something else forces a refresh)")
        if ph.note:
            print(f"note: {ph.name}: {ph.note}")

    def p95(ph: Phase, drawn_only: bool = False) -> float:
        return percentile([v for v in ph.latencies if math.isfinite(v) or not drawn_only], 95)

    def ratio(a: float, b: float) -> str:
        return "-" if not (math.isfinite(a) and math.isfinite(b)) or b == 0 else f"{a / b:.2f}"

    if len(phases) < 3:
        return False
    base, loaded, after = phases
    print()
    missed = any(ph.missed for ph in phases)
    print(f"ratio loaded / baseline, p95: {ratio(p95(loaded), p95(base))}"
          + (f"   (drawn only: {ratio(p95(loaded, True), p95(base, True))})" if missed else ""))
    print(f"ratio loaded / after (same keys), p95: {ratio(p95(loaded), p95(after))}"
          + (f"   (drawn only: {ratio(p95(loaded, True), p95(after, True))})" if missed else ""))
    target = p95(loaded)
    ok = bool(loaded.latencies) and target * 1000 <= TARGET_P95_MS
    print(f"{'PASS' if ok else 'FAIL'}  input latency p95 during the backfill {ms(target)} ms "
          f"(target <= {TARGET_P95_MS:.0f} ms, {len(loaded.latencies)} samples"
          + (f", {len(loaded.missed)} never drawn; drawn only: {ms(p95(loaded, True))} ms)" if loaded.missed else ")"))
    if "profile" in info:
        print("\ncProfile of the UI thread during the loaded phase:\n" + info["profile"])
    return ok


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["S", "M"], default="M")
    parser.add_argument("--samples", type=int, default=200, help="key presses per phase (default 200)")
    parser.add_argument("--no-journal", action="store_true",
                        help="leave j (journal) and d (dashboard) out of the key cycles")
    parser.add_argument("--profile", action="store_true", help="cProfile the UI thread during the loaded phase")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupted)  # cleaned up like Ctrl-C
    phases: list[Phase] = []
    info: dict = {}
    rows = 0
    try:
        with embedded_postgres(prefix="cutover-bench-latency-pg-") as server_url, \
                tempfile.TemporaryDirectory(prefix="cutover-bench-latency-") as folder:
            url, rows = seeded_database(server_url, args.size)
            env_file = Path(folder) / "deploy.env"
            env_file.write_text(DEMO_ENV, encoding="utf-8")
            settings = resolve_settings(runbook_path=ROOT / "runbook.toml", env_file=env_file, database_url=url,
                                        operator="bench", report_dir=Path(folder) / "reports", environ={})
            asyncio.run(drive(settings, args.samples, not args.no_journal, args.profile, phases, info))
    except KeyboardInterrupt:
        during = f"during the {phases[-1].name} phase" if phases else "while setting up"
        print(f"interrupted {during}; any running backfill was cancelled, the embedded Postgres and the temp "
              "folders removed", file=sys.stderr)
        return 1
    except Exception as exc:  # a benchmark that could not run says why and exits 1
        if phases:
            report(args.size, rows, phases, info)
        print(f"\nFAILED TO RUN: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not isinstance(exc, ConsoleStopped):
            raise
        return 1
    report(args.size, rows, phases, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
