"""The one prediction path: a trained model with everything needed to turn raw pixels into class probabilities.

``evaluate``, ``predict``, ``map``, ``suggest``, ``curate``, ``export`` and the Ray actors all predict through a
``Predictor``; the GeoTIFF writer (``pointseg.mapwriter``) and the tiling (``pointseg.maps``) sit beside it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pointseg.data.bands import BandScaling
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import EvalDataset
from pointseg.data.labels import resize_image, scaled_size
from pointseg.data.raster import RasterSource
from pointseg.inference import autocast, predict_logits, top_class


@dataclass(frozen=True)
class Predictor:
    """A model in eval mode on its device and how it sees images: the bands it reads (``read_bands``, 1-based;
    ``None``: every band but alpha) and their ``scaling`` to [0, 1], the ``scale`` of the original resolution it
    works at and the resampling ``mode``, bf16 autocast (``amp``), test-time ``flips``; its class table
    (``classes``) is the one of the dataset ``head`` it predicts; ``dtype``: of the bands it was trained on."""

    model: torch.nn.Module
    classes: ClassTable
    scaling: BandScaling
    scale: float = 1.0
    mode: str = "area"
    amp: bool = False
    flips: bool = False
    head: str = "seg"
    read_bands: tuple[int, ...] | None = None
    dtype: str | None = None  # of the bands the model was trained on (None: unknown)
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None  # another backend's forward (None: torch runs it)

    @property
    def backend(self) -> str:
        """Who runs the forward pass: ``torch`` or ``onnxruntime`` (``pointseg.backends``)."""
        return "torch" if self.runner is None else "onnxruntime"

    @property
    def precision(self) -> str:
        """The arithmetic of the forward pass: ``bf16`` (autocast), ``float32`` or ``int8`` (onnxruntime's
        quantized graph)."""
        if self.runner is not None:
            return str(getattr(self.runner, "precision", "float32"))
        return "bf16" if self.amp else "float32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def bands(self) -> int:
        """How many bands the model takes."""
        return self.scaling.bands

    def with_flips(self, flips: bool) -> Predictor:
        return dataclasses.replace(self, flips=flips)

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.amp)

    def logits(self, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Scaled ``(B, bands, h, w)`` images -> ``(B, C, H, W)`` float32 logits (``inference.predict_logits``)."""
        return predict_logits(self.model, images, out_size, self.amp, self.flips, self.runner)

    def timed_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``logits`` and the model's wall time (CUDA synchronised)."""
        t0 = time.perf_counter()
        logits = self.logits(images)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return logits, time.perf_counter() - t0

    def raster_source(self, rasters: tuple[str | Path, ...] | list[str | Path],
                      masks: tuple[str | Path, ...] | list[str | Path] = ()) -> RasterSource:
        """``rasters`` read as this model reads them (its bands), with reference ``masks`` if given."""
        return RasterSource(rasters, self.classes, list(self.read_bands) if self.read_bands else None,
                            list(masks) or None)

    def iter_logits(self, dataset: EvalDataset, progress: bool = True, unreadable: list[str] | None = None
                    ) -> Iterator[tuple[dict, torch.Tensor]]:
        """``(sample, logits)`` per image of ``dataset``; logits ``(C, H, W)`` float32 at full label resolution.

        An unreadable image raises ``ValueError``; given a list ``unreadable``, its message goes there instead and
        the image is skipped."""
        self.model.eval()
        for i in tqdm(range(len(dataset)), desc="predict", disable=not progress, leave=False):
            try:
                sample = dataset[i]
                full = sample["mask"].shape if "mask" in sample else dataset.source.size(dataset.refs[i])
            except ValueError as e:
                if unreadable is None:
                    raise
                unreadable.append(str(e))
                continue
            yield sample, self.logits(sample["image"][None], tuple(full))[0].cpu()

    def iter_predictions(self, dataset: EvalDataset, progress: bool = True, unreadable: list[str] | None = None
                         ) -> Iterator[tuple[dict, np.ndarray]]:
        """``(sample, prediction)`` per image; predictions ``(H, W)`` uint8 at full label resolution."""
        for sample, logits in self.iter_logits(dataset, progress, unreadable):
            yield sample, top_class(logits).to(torch.uint8).numpy()

    @torch.no_grad()
    def window_probabilities(self, windows: list[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], float]:
        """Class probabilities ``(C, h, w)`` at full resolution of raw raster windows (``image`` (h, w, B) and
        ``valid``; invalid pixels read as each band's low), and the seconds the model itself took. The model sees
        each window at ``scale``; softmax comes before resampling back (a quarter of the work at scale 0.5, and
        still a distribution per pixel)."""
        sizes = {w["valid"].shape for w in windows}
        images = [torch.from_numpy(self.scaling(model_pixels(w, self.scaling, self.scale, self.mode)))
                  for w in windows]
        if len(sizes) == 1:  # one batch (the usual case: only rasters smaller than a window differ)
            logits, seconds = self.timed_logits(torch.stack(images))
            return list(_at_size(logits.softmax(1), next(iter(sizes)))), seconds
        probs, total = [], 0.0
        for image, w in zip(images, windows, strict=True):
            logits, seconds = self.timed_logits(image[None])
            probs.append(_at_size(logits.softmax(1), w["valid"].shape)[0])
            total += seconds
        return probs, total



def model_pixels(window: dict[str, np.ndarray], scaling: BandScaling, scale: float, mode: str) -> np.ndarray:
    """A window's raw pixels (``image``, and ``valid`` where it has one) with nodata set to the bands' low,
    resampled to ``scale`` with the ``mode`` filter."""
    pixels = np.array(window["image"])
    if "valid" in window:
        pixels[~np.asarray(window["valid"])] = np.asarray(scaling.low).astype(pixels.dtype)
    h, w = pixels.shape[:2]
    return resize_image(pixels, scaled_size(h, w, scale), mode)


def _at_size(probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Probabilities ``(N, C, h, w)`` bilinearly resampled to ``size``."""
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    return probs.cpu().numpy()
