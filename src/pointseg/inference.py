"""Whole-image inference: pad to the model's size divisor, predict, up-sample logits to the label size; how sure a
pixel's class probabilities are; bf16 autocast where it is native."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from pointseg.choices import SCORES


def certainty(probs: torch.Tensor, kind: str = "margin") -> torch.Tensor:
    """``probs`` (C, ...) -> certainty in [0, 1] (1: sure) of each pixel: ``margin`` between the two most
    probable classes, ``entropy`` (1 - normalised entropy) or ``max`` probability."""
    if kind not in SCORES:
        raise KeyError(f"unknown uncertainty {kind!r}; valid: {list(SCORES)}")
    if kind == "max":
        return probs.max(0).values
    if kind == "margin":
        top = probs.topk(2, dim=0).values
        return top[0] - top[1]
    entropy = -torch.xlogy(probs, probs).sum(0)
    return 1 - entropy / math.log(probs.shape[0])


def top_class(scores: torch.Tensor) -> torch.Tensor:
    """The index of the largest of ``scores`` (C, ...) along the first axis, the first one on ties (``argmax(0)``),
    computed channel-last: on the CPU a reduction over the first axis of (C, H, W) is about 7x slower."""
    return scores.movedim(0, -1).contiguous().argmax(-1)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPU or CUDA when ``enabled``."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX. Elsewhere bf16 is emulated, and autocast is many times slower than float32 (measured on an AVX2-only
    AMD EPYC: a 3x3 convolution 11x slower, MobileNetV2 U-Net training 12x slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_model() -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``, else the platform's word for it): numbers from different
    CPUs differ (bf16 native or emulated, SIMD width), so runs and benchmarks say which one made them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def use_amp(setting: bool | str, device: torch.device) -> bool:
    """``train.amp``: ``auto`` (bf16 where it is native, see ``native_bf16``), ``true`` or ``false``."""
    return native_bf16(device) if setting == "auto" else bool(setting)


FLIPS = ((), (-1,), (-2,), (-2, -1))  # test-time augmentation: none, left-right, up-down, both


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``(B, C, h, w)`` padded at the bottom and right to multiples of ``divisor`` (reflected; replicated where
    the image is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if not (ph or pw):
        return x
    return F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, image: torch.Tensor, out_size: tuple[int, int] | None = None,
                   amp: bool = True, flips: bool = False,
                   forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``(B, 3, h, w)`` images in [0, 1] -> ``(B, C, H, W)`` float32 logits at ``out_size`` (default ``(h, w)``).

    The input is reflect-padded to a multiple of ``model.size_divisor`` and the padding cropped off the
    logits before bilinear up-sampling. With ``flips`` (test-time augmentation) the model also sees the image
    flipped left-right, up-down and both; the result is the log of the four views' mean class probabilities
    (its softmax is that mean). ``forward``: what runs the model on the padded batch instead of ``model`` itself
    (another backend, ``pointseg.backends``; float32, no autocast).
    """
    if flips:
        views = []
        for axes in FLIPS:
            view = predict_logits(model, image.flip(axes) if axes else image, None, amp, False, forward).softmax(1)
            views.append(view.flip(axes) if axes else view)  # flipped back
        probs = torch.stack(views).mean(0)
        logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        if out_size is not None and tuple(out_size) != tuple(image.shape[-2:]):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits
    device = next(model.parameters()).device
    h, w = image.shape[-2:]
    x = pad_to_multiple(image.to(device), getattr(model, "size_divisor", 1))
    if forward is not None:
        logits = forward(x)[..., :h, :w].float()
    else:
        x = x.contiguous(memory_format=torch.channels_last)  # faster convolutions (CPU: about 1.5x for MobileNetV2)
        with autocast(device, amp):
            logits = model(x)[..., :h, :w].float()  # (B, C, h, w)
    if out_size is not None and tuple(out_size) != (h, w):
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits
