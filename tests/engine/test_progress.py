"""The time a run has left: steps per second over a window of the last seconds, not since the start."""

from __future__ import annotations

import json

import pytest

from pointseg.engine.progress import PROGRESS, Progress, StepRate, duration_text


def test_the_rate_is_measured_over_the_window_only():
    rate = StepRate(window_s=10)
    assert rate.per_second() is None
    rate.add(1, 0.0)
    assert rate.per_second() is None  # one mark: no speed yet
    for step, t in [(2, 20.0), (3, 40.0)]:  # slow first steps: 20 s each
        rate.add(step, t)
    assert rate.per_second() == pytest.approx(1 / 20)
    for step in range(4, 14):  # then 1 step a second
        rate.add(step, 40.0 + (step - 3))
    # the window's oldest mark is the last one at or before t - 10 s = 40: step 3 at 40 s -> 10 steps in 10 s
    assert rate.per_second() == pytest.approx(1.0)
    assert rate.seconds_left(120) == pytest.approx(120.0)  # since the start it would say 120 / (12 / 50) = 500 s


def test_progress_is_written_for_the_app_and_said_as_a_person_would(tmp_path):
    times = iter([0.0, 1.0, 3.0, 4.0])
    progress = Progress(tmp_path, steps=10, window_s=60, clock=lambda: next(times))
    first = progress.update(1)
    assert first["steps_per_s"] is None and Progress.text(first) == "time left: measuring the speed"
    progress.update(2)  # 1 s after the last write: not written again yet
    assert json.loads((tmp_path / PROGRESS).read_text())["step"] == 1
    third = progress.update(3)
    assert json.loads((tmp_path / PROGRESS).read_text()) == third
    assert third["steps_per_s"] == pytest.approx(2 / 3) and third["seconds_left"] == pytest.approx(7 * 1.5)
    assert Progress.text(third) == "about 10 s left (0.67 steps/s over the last 60 s)"
    progress.update(10)  # the last step is always written
    assert json.loads((tmp_path / PROGRESS).read_text())["step"] == 10


def test_durations_read_as_people_say_them():
    assert [duration_text(s) for s in (None, 45, 89.4, 90, 719, 3600, 3900)] == [
        "?", "45 s", "89 s", "2 min", "12 min", "1 h 00 min", "1 h 05 min"]
