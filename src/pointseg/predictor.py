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

    def window_inputs(self, windows: list[dict[str, np.ndarray]], grid: int = 1) -> list[torch.Tensor]:
        """What the model takes of raw raster windows (``image`` (h, w, B) and ``valid``; invalid pixels read as
        each band's low): each at ``scale``, scaled bands ``(B, h', w')``. With ``grid`` k > 1 (``1 / scale``, a
        whole number) each model pixel is the mean of k x k raster pixels, a window padded at its bottom and right
        to multiples of k with its edge pixels, so the windows of a raster fall on one grid (``blend_grid``)."""
        return [torch.from_numpy(self.scaling(model_pixels(w, self.scaling, self.scale, self.mode, grid)))
                for w in windows]

    @torch.no_grad()
    def input_probabilities(self, images: list[torch.Tensor], sizes: list[tuple[int, int]] | None = None
                            ) -> tuple[list[np.ndarray], float]:
        """Class probabilities ``(C, h, w)`` of windows from their model inputs ``images`` (``window_inputs``),
        resampled to ``sizes`` (None: at the images' own, the model's, resolution), and the seconds the model itself
        took. Softmax comes before any resampling, so each pixel keeps a distribution."""
        sizes = sizes or [(i.shape[-2], i.shape[-1]) for i in images]
        if len({tuple(i.shape) for i in images}) == 1 and len(set(sizes)) == 1:  # one batch (only rasters smaller
            logits, seconds = self.timed_logits(torch.stack(images))         # than a window differ)
            return list(_at_size(logits.softmax(1), sizes[0])), seconds
        probs, total = [], 0.0
        for image, size in zip(images, sizes, strict=True):
            logits, seconds = self.timed_logits(image[None])
            probs.append(_at_size(logits.softmax(1), size)[0])
            total += seconds
        return probs, total

    def window_probabilities(self, windows: list[dict[str, np.ndarray]], grid: int = 1
                             ) -> tuple[list[np.ndarray], float]:
        """``input_probabilities`` of raw raster windows: at full resolution with ``grid`` 1, at the model's
        resolution otherwise."""
        return self.input_probabilities(self.window_inputs(windows, grid), window_sizes(windows, grid))


def window_sizes(windows: list[dict[str, np.ndarray]], grid: int) -> list[tuple[int, int]] | None:
    """The full-resolution sizes of raster ``windows`` with ``grid`` 1, else None (their probabilities stay on the
    grid, at the model's resolution)."""
    return [(w["valid"].shape[0], w["valid"].shape[1]) for w in windows] if grid == 1 else None


def blend_grid(scale: float) -> int:
    """Raster pixels per side of the pixels a map's windows are blended at: ``1 / scale`` where that is a whole
    number (the model's own pixels: 2 at scale 0.5), else 1 (each window resampled to full resolution first)."""
    factor = 1 / scale
    return max(1, round(factor)) if abs(factor - round(factor)) < 1e-6 else 1


def model_pixels(window: dict[str, np.ndarray], scaling: BandScaling, scale: float, mode: str,
                 grid: int = 1) -> np.ndarray:
    """A window's raw pixels (``image``, and ``valid`` where it has one) with nodata set to the bands' low,
    resampled to ``scale`` with the ``mode`` filter; with ``grid`` k > 1 (``1 / scale``), padded at the bottom and
    right to multiples of k with its edge pixels and reduced by exactly k (see ``Predictor.window_probabilities``)."""
    pixels = np.array(window["image"])
    if "valid" in window:
        pixels[~np.asarray(window["valid"])] = np.asarray(scaling.low).astype(pixels.dtype)
    h, w = pixels.shape[:2]
    if grid == 1:
        return resize_image(pixels, scaled_size(h, w, scale), mode)
    pad_h, pad_w = -h % grid, -w % grid
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return resize_image(pixels, ((h + pad_h) // grid, (w + pad_w) // grid), mode)


def _at_size(probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Probabilities ``(N, C, h, w)`` bilinearly resampled to ``size``."""
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    return probs.cpu().numpy()
