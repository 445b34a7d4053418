"""The click loop as one function: clicks so far -> the fast model (``pointseg.fast``) -> maps of the requested
images -> suggested clicks; then, optionally, the full recipe warm-started from it in the background.

Used by ``pointseg train --fast``, ``pointseg map --fast`` and the benchmark. A fast run is a normal run
directory (``config.yaml``, ``run.json``, ``model.pt``) plus ``fast.json``: the fit's samples, times and click
accuracy; ``predict``, ``evaluate``, ``map``, ``suggest`` and ``export`` take it like any other run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pointseg import build, runs
from pointseg.data.points import UNCLASSIFIED, PointSet, load_points
from pointseg.data.sources import Source
from pointseg.fast import (
    FastOptions,
    ForestOptions,
    Samples,
    click_accuracy,
    collect,
    make_head,
    set_head,
    unit_probabilities,
)
from pointseg.features import FeatureCache, Unit
from pointseg.inference import certainty, top_class
from pointseg.io import write_json
from pointseg.models import is_hypercolumn
from pointseg.propagation import click_window
from pointseg.suggest import class_rarity, suggest_clicks

log = logging.getLogger(__name__)
FAST_MODEL = "hypercolumn-mobilenetv2"
FAST_INFO = "fast.json"


@dataclass
class FastRun:
    """A fitted fast model: its run directory, model and classes, the feature cache it read (and the units of
    the images it was fitted on), the number of samples, the times of each part, and the click accuracy."""

    run_dir: Path
    trained: runs.TrainedModel
    cache: FeatureCache
    units: list[Unit]
    samples: int
    seconds: dict[str, float]
    accuracy: dict | None
    later: Callable[..., dict | None] | None = None  # the click accuracy (its stop callback), when left for later
    head: str = "softmax"
    choice: HeadChoice | None = None

    def compute_accuracy(self, stop: Callable[[], bool] | None = None) -> dict | None:
        """The click accuracy left for later (``fast_train(accuracy=False)``), also written into ``fast.json``;
        given up (``None``, left for later) when ``stop()`` turns true."""
        if self.later is not None:
            accuracy = self.later(stop=stop)
            if accuracy is None and stop is not None and stop():
                return None
            self.accuracy, self.later = accuracy, None
            self.seconds["click_accuracy"] = self.accuracy["seconds"] if self.accuracy else 0.0
            info = json.loads((self.run_dir / FAST_INFO).read_text(encoding="utf-8"))
            write_json(self.run_dir / FAST_INFO, {**info, "seconds": self.seconds, "click_accuracy": self.accuracy})
        return self.accuracy

    def cache_for(self, source: Source) -> FeatureCache:
        """The feature cache of other images (e.g. a validation split), read as the run reads its own."""
        return feature_cache(self.trained, source)

    def probabilities(self, source: Source | None = None) -> dict[str, np.ndarray]:
        """Class probabilities ``(C, h, w)`` at full resolution of every unit of ``source`` (default: the images
        fitted on), by unit name, from cached features (computed on first use)."""
        cache = self.cache if source is None else self.cache_for(source)
        units = self.units if source is None else cache.units()
        return {u.name: unit_probabilities(self.trained.model, cache, u) for u in units}


def feature_cache(trained: runs.TrainedModel, source: Source) -> FeatureCache:
    """The encoder features of ``source``'s images as ``trained`` (a fast model) reads them, cached."""
    cfg = trained.head_cfg
    return build.build_feature_cache(cfg, trained.model, build.build_cached(cfg, source), trained.scaling)


def fast_settings(settings: dict) -> dict:
    """``settings`` with the fast model, unless they name a hypercolumn model already."""
    model = settings.get("model", {})
    if is_hypercolumn(str(model.get("name", ""))):
        return settings
    if model.get("name"):
        log.warning("train --fast fits the fast model %s; model.name=%s is not used", FAST_MODEL, model["name"])
    return {**settings, "model": {**model, "name": FAST_MODEL}}


def fast_train(settings: dict, out: str | Path, inputs: build.TrainInputs, argv: list[str] | None = None,
               accuracy_now: bool = True) -> FastRun:
    """Fit the fast model on ``inputs`` (clicks on tiles or rasters) into the new run directory ``out``; without
    ``accuracy_now`` the click accuracy is left for ``FastRun.compute_accuracy`` (the app paints the map first)."""
    if inputs.points is None:
        raise ValueError("train --fast fits a head on clicks: give --points (dense masks: train without --fast)")
    if inputs.unlabeled or inputs.dataset_roots or inputs.init:
        raise ValueError("train --fast learns from the clicks of one dataset: leave out --unlabeled, --init and "
                         "further --data-root NAME=PATH")
    run_dir = Path(out)
    cfg, inputs = runs.prepare_new(run_dir, fast_settings(settings), inputs)
    runtime = build.build_runtime(cfg)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    times = {}
    t0 = time.perf_counter()
    run = build.build_training(cfg, inputs)
    part, model = run.parts[0], run.model.eval()
    dataset = part.dataset
    times["setup"] = time.perf_counter() - t0
    cache = build.build_feature_cache(cfg, model, dataset.source, part.scaling)
    units = cache.units(dataset.refs)
    cache.check_space(units)
    t0 = time.perf_counter()
    options, clicks = build.build_fast_options(cfg), dataset.points.images  # type: ignore[union-attr]
    names = list(options.candidates) if options.head == "auto" else [options.head]
    sizes = ForestOptions.from_config(cfg).sizes if "forest" in names else None
    samples = collect(model, cache, clicks, dataset.propagated, dataset.propagate_weight, dataset.ignore_index,
                      units, sizes)
    times["features"] = time.perf_counter() - t0
    num_classes = part.source.classes.num_classes
    reach = click_window(0, 0, (1 << 30, 1 << 30), build.build_propagation(cfg))[2]
    t0 = time.perf_counter()
    choice = choose_head(names, cfg, samples, num_classes, options, reach)
    times["choice"] = time.perf_counter() - t0
    head = make_head(choice.name, cfg, num_classes)
    t0 = time.perf_counter()
    head.fit(samples)
    set_head(model, head)
    cfg["model"]["hypercolumn_head"] = head.name
    times["fit"] = time.perf_counter() - t0
    accuracy = choice.scores.get(head.name)  # scored while choosing, else now or later (a head of its own)
    later = None if choice.scored else partial(click_accuracy, samples, make_head(head.name, cfg, num_classes),
                                                options.folds, reach, cfg["seed"], block=options.fold_block)
    if later is not None and accuracy_now:
        accuracy, later = later(), None
    times["click_accuracy"] = sum(v["seconds"] for v in choice.scores.values() if v) if choice.scored else (
        accuracy["seconds"] if accuracy else 0.0)
    created = runs.start_run(run_dir, cfg, inputs, argv, device=str(runtime.device), amp=runtime.amp,
                             parameters=model.parameter_counts())
    try:
        runs.save_model(run_dir / runs.MODEL, model, cfg, run.tables, run.scaling, run.data, run.dtype)
        write_json(run_dir / FAST_INFO, {"samples": len(samples), "clicks": int((samples.click >= 0).sum()),
                                         "encoded": cache.encoded, "seconds": times, "click_accuracy": accuracy,
                                         "head": head.name, "choice": choice.report(),
                                         "head_text": choice.text()})
    except BaseException:
        runs.discard_run(run_dir, created)
        raise
    trained = runs.TrainedModel(model, cfg, run.tables, run.scaling, model.head_names[0], run.data, run.dtype)
    return FastRun(run_dir, trained, cache, units, len(samples), times, accuracy, later, head.name, choice)


@dataclass
class HeadChoice:
    """Which head ``fast.head`` gave: its ``name``, how it was chosen (``auto``: by click accuracy), the click
    accuracy of each head scored, the heads left unscored for want of time, and whether any was scored."""

    name: str
    auto: bool
    scores: dict[str, dict | None] = field(default_factory=dict)
    unscored: list[str] = field(default_factory=list)

    @property
    def scored(self) -> bool:
        return any(v is not None for v in self.scores.values())

    def report(self) -> dict:
        return {"head": self.name, "auto": self.auto, "unscored": self.unscored,
                "click_accuracy": {k: (None if v is None else {"accuracy": v["accuracy"], "miou": v["miou"],
                                                               "seconds": v["seconds"]})
                                   for k, v in self.scores.items()}}

    def text(self) -> str:
        """One line for people: the head and, when chosen, each candidate's click accuracy."""
        if not self.auto:
            return f"head {self.name} (fast.head)"
        scores = ", ".join(f"{k} {v['accuracy']:.1%}" for k, v in self.scores.items() if v is not None)
        if not scores:
            return f"head {self.name} (too few clicks to compare heads by click accuracy)"
        skipped = f"; not scored in time: {', '.join(self.unscored)}" if self.unscored else ""
        return f"head {self.name}, chosen by click accuracy ({scores}{skipped})"


def choose_head(names: Sequence[str], cfg: dict, samples: Samples, num_classes: int, options: FastOptions,
                reach: float) -> HeadChoice:
    """The head among ``names`` with the best cross-validated click accuracy (ties: the earlier name), each scored
    while ``options.budget_s`` lasts (the first always); one name: that head, not scored here."""
    if len(names) == 1:
        return HeadChoice(names[0], auto=False)
    choice, t0 = HeadChoice(names[0], auto=True), time.perf_counter()
    for name in names:
        if name != names[0] and time.perf_counter() - t0 > options.budget_s:
            choice.unscored.append(name)
            continue
        choice.scores[name] = click_accuracy(samples, make_head(name, cfg, num_classes), options.folds, reach,
                                             cfg["seed"], block=options.fold_block)
        if choice.scores[name] is None:  # too few clicks for folds: nothing to choose by
            return HeadChoice(names[0], auto=True, scores=choice.scores)
    choice.name = max(choice.scores, key=lambda k: (choice.scores[k]["accuracy"], choice.scores[k]["miou"],  # type: ignore[index]
                                                     -names.index(k)))
    log.info("fast model: %s", choice.text())
    return choice


@dataclass
class Round:
    """One round of the loop: the fast run, the maps (predicted classes, full resolution) of the requested units
    and the seconds they took, and the suggested clicks (the clicks so far plus unclassified suggestions)."""

    fast: FastRun
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    map_seconds: float = 0.0
    suggestions: PointSet | None = None


def suggest_from(probabilities: Mapping[str, np.ndarray], units: Sequence[Unit], made: PointSet, per_image: int,
                 score: str = "margin", class_weight: float = 1.0) -> PointSet:
    """``per_image`` suggested clicks on each whole-image unit (``pointseg.suggest``'s rule) from its
    probabilities: the clicks so far plus the suggestions, unclassified."""
    rarity = class_rarity(made.class_counts(), class_weight)
    images, sizes = {k: v for k, v in made.images.items()}, dict(made.sizes)
    for unit in units:
        if unit.window is not None:
            raise ValueError("suggestions from the loop are for image tiles; for a raster use pointseg suggest")
        probs = torch.from_numpy(probabilities[unit.name])
        existing = made.images.get(unit.ref.id, np.zeros((0, 3), np.int64))
        size = (int(probs.shape[1]), int(probs.shape[2]))
        found = suggest_clicks((1 - certainty(probs, score)).numpy(), top_class(probs).numpy(), None, existing,
                               rarity, per_image, None, size)
        new = np.array([[s.row, s.col, UNCLASSIFIED] for s in found], dtype=np.int64).reshape(-1, 3)
        images[unit.ref.id], sizes[unit.ref.id] = np.concatenate([existing, new]), size
    return PointSet(made.classes, images, sizes, {**made.meta, "suggested_by": "fast model"})


def fast_round(settings: dict, out: str | Path, inputs: build.TrainInputs, suggest: int = 0,
               argv: list[str] | None = None) -> Round:
    """One round: fit the fast model into ``out``, map the images it was fitted on from cached features, and with
    ``suggest`` > 0 propose that many clicks per image (``FastRun.probabilities(source)`` maps others)."""
    fast = fast_train(settings, out, inputs, argv)
    t0 = time.perf_counter()
    probabilities = fast.probabilities()
    maps = {name: p.argmax(0).astype(np.uint8) for name, p in probabilities.items()}
    result = Round(fast, maps, time.perf_counter() - t0)
    if suggest:
        made = load_points(inputs.points)  # type: ignore[arg-type]
        result.suggestions = suggest_from(probabilities, fast.units, made, suggest)
    return result


def full_recipe(fast_run: str | Path, out: str | Path, inputs: build.TrainInputs, settings: Sequence[str] = (),
                background: bool = True, threads: int = 1, log: Path | None = None) -> subprocess.Popen:
    """Start the full recipe warm-started from ``fast_run`` (``train --init``) in a process of its own, at a lower
    priority and on ``threads`` threads so the fast loop stays responsive; its output goes to ``log`` (a file,
    or this process's terminal); returns the process."""
    cmd = [sys.executable, "-m", "pointseg", "train", "--init", str(fast_run), "--out", str(out),
           "--set", f"train.threads={threads}", *[a for s in settings for a in ("--set", s)]]
    if inputs.data_root:
        cmd += ["--data-root", str(inputs.data_root)]
    cmd += [a for r in inputs.rasters for a in ("--raster", str(r))]
    if inputs.points:
        cmd += ["--points", str(inputs.points)]
    nice = (lambda: os.nice(10)) if background and hasattr(os, "nice") else None
    with log.open("w", encoding="utf-8") if log else contextlib.nullcontext() as output:  # the child keeps its own
        return subprocess.Popen(cmd, preexec_fn=nice, stdout=output,  # noqa: PLW1509 (a niceness change only)
                                stderr=subprocess.STDOUT if output else None)


def warm_start_settings(settings: dict, init: str | Path) -> dict:
    """``settings`` for a run started from ``init``: from a fast run, the U-Net with a hypercolumn head and the
    fast run's hypercolumn (PEARL's warm start), unless the settings name a model."""
    saved = runs.read_model(init).cfg["model"]
    name = str(saved["name"])
    if not is_hypercolumn(name) or name.startswith("unet-") or settings.get("model", {}).get("name"):
        return settings
    warm = "unet-" + name
    log.info("--init %s is a fast run: training model %s, its hypercolumn head starting from the fit", init, warm)
    hypercolumn = {k: v for k, v in saved.items() if k.startswith("hypercolumn_")}
    if saved.get("hypercolumn_head", "softmax") != "softmax":
        log.info("--init %s: its %s head is not a linear head; the full model's hypercolumn head starts afresh and "
                 "its encoder from the fast run's", init, saved["hypercolumn_head"])
    hypercolumn["hypercolumn_head"] = "softmax"  # the U-Net's logits are added to a linear head's
    return {**settings, "model": {**settings.get("model", {}), **hypercolumn, "name": warm}}
