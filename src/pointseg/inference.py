"""Whole-image inference: pad to the model's size divisor, predict, up-sample logits to the label size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pointseg.data.dataset import EvalDataset


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPU or CUDA when ``enabled``."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


@torch.no_grad()
def predict_logits(model: torch.nn.Module, image: torch.Tensor, out_size: tuple[int, int] | None = None,
                   amp: bool = True) -> torch.Tensor:
    """``(B, 3, h, w)`` images in [0, 1] -> ``(B, C, H, W)`` float32 logits at ``out_size`` (default ``(h, w)``).

    The input is reflect-padded to a multiple of ``model.size_divisor`` and the padding cropped off the
    logits before bilinear up-sampling.
    """
    device = next(model.parameters()).device
    h, w = image.shape[-2:]
    d = getattr(model, "size_divisor", 1)
    ph, pw = (-h) % d, (-w) % d
    x = image.to(device)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    with autocast(device, amp):
        logits = model(x)[..., :h, :w].float()  # (B, C, h, w)
    if out_size is not None and tuple(out_size) != (h, w):
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits


def iter_logits(model: torch.nn.Module, dataset: EvalDataset, amp: bool = True, progress: bool = True,
                unreadable: list[str] | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield ``(sample, logits)`` per image; logits are ``(C, H, W)`` float32 at full label resolution.

    An unreadable image raises ``ValueError``; given a list ``unreadable``, its message is appended there
    instead and the image skipped.
    """
    model.eval()
    for i in tqdm(range(len(dataset)), desc="predict", disable=not progress, leave=False):
        try:
            sample = dataset[i]
            full = sample["mask"].shape if "mask" in sample else dataset.cache.source.image_size(dataset.refs[i])
        except ValueError as e:
            if unreadable is None:
                raise
            unreadable.append(str(e))
            continue
        yield sample, predict_logits(model, sample["image"][None], tuple(full), amp)[0].cpu()


def iter_predictions(model: torch.nn.Module, dataset: EvalDataset, amp: bool = True, progress: bool = True,
                     unreadable: list[str] | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield ``(sample, prediction)`` per image; predictions are ``(H, W)`` uint8 at full label resolution."""
    for sample, logits in iter_logits(model, dataset, amp, progress, unreadable):
        yield sample, logits.argmax(0).to(torch.uint8).numpy()
