"""How far a run is and how long it has left: steps per second measured over the last ``WINDOW_S`` seconds (not
since the start, which counts the first steps' one-off costs, nor over the last few steps, which jump), written to
``progress.json`` in the run directory for the app, and shown on the command line's progress bar.

The time a run takes depends on what a step costs (the raster's bands, ``data.crop``, ``train.batch_size``, the
model) and on the machine: its cores, native bf16 or not, and whatever else runs on it. Measured over a window, the
estimate follows a machine that gets busier or quieter during the run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pointseg.io import write_json

PROGRESS = "progress.json"  # what the loop writes in a run directory
WINDOW_S = 60.0  # seconds of steps the rate is measured over
WRITE_EVERY_S = 2.0  # seconds between writes of progress.json


class StepRate:
    """Steps per second over the last ``window_s`` seconds of ``add``-ed (step, time) marks."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.marks: deque[tuple[int, float]] = deque()

    def add(self, step: int, now: float) -> None:
        """Step ``step`` was reached at time ``now`` (seconds)."""
        self.marks.append((step, now))
        while len(self.marks) > 2 and self.marks[1][1] <= now - self.window_s:
            self.marks.popleft()  # the oldest mark kept is the last one at or before the window's start

    def per_second(self) -> float | None:
        """Steps per second over the window; ``None`` before two marks."""
        if len(self.marks) < 2:
            return None
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def seconds_left(self, steps_left: int) -> float | None:
        rate = self.per_second()
        return steps_left / rate if rate else None


def duration_text(seconds: float | None) -> str:
    """``seconds`` as a person says it: ``45 s``, ``12 min``, ``1 h 05 min`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """The progress of a run of ``steps`` steps in ``run_dir``: ``update(step)`` after each step measures the rate and
    rewrites ``progress.json`` (atomically, at most every ``WRITE_EVERY_S`` seconds, and at the last step)."""

    def __init__(self, run_dir: Path | None, steps: int, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = run_dir / PROGRESS if run_dir is not None else None
        self.steps, self.rate, self.clock = steps, StepRate(window_s), clock
        self.written = float("-inf")

    def update(self, step: int) -> dict:
        now = self.clock()
        self.rate.add(step, now)
        state = {"step": step, "steps": self.steps, "steps_per_s": self.rate.per_second(),
                 "seconds_left": self.rate.seconds_left(self.steps - step), "window_s": self.rate.window_s}
        if self.path is not None and (now - self.written >= WRITE_EVERY_S or step == self.steps):
            write_json(self.path, state)
            self.written = now
        return state

    @staticmethod
    def text(state: dict) -> str:
        """``about 6 min left (0.33 steps/s over the last 60 s)``, or that the rate is being measured."""
        if state.get("steps_per_s") is None:
            return "time left: measuring the speed"
        return (f"about {duration_text(state['seconds_left'])} left ({state['steps_per_s']:.2g} steps/s over the "
                f"last {state['window_s']:.0f} s)")
