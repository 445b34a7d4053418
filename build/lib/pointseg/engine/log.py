"""What a run logs: the means of each interval of steps, as JSON lines."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any


class IntervalLog:
    """The loss and method logs since the last log line; a line holds their means (NaN and inf left out)."""

    def __init__(self, state: dict | None = None) -> None:
        self.values: dict[str, list[float]] = defaultdict(list, state["values"] if state else {})
        self.images = state["images"] if state else 0
        self.t0 = time.perf_counter()

    def add(self, logs: dict[str, float], images: int) -> None:
        for key, value in logs.items():
            self.values[key].append(value)
        self.images += images

    def line(self) -> dict[str, Any]:
        """The means of this interval plus throughput; starts the next interval."""
        finite = {key: [v for v in values if math.isfinite(v)] for key, values in self.values.items()}
        means = {key: sum(v) / len(v) if v else None for key, v in finite.items()}  # None: e.g. no masks
        means["images_per_s"] = self.images / (time.perf_counter() - self.t0)
        self.values, self.images, self.t0 = defaultdict(list), 0, time.perf_counter()
        return means

    def state_dict(self) -> dict:
        return {"values": dict(self.values), "images": self.images}
