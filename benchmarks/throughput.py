"""Training throughput (images/s) of the plain fp32 loop vs the optimised loop (bf16 autocast + channels_last).

Same model, data and batch for both, measured in one process after warm-up steps:

    python benchmarks/throughput.py --data-root ../shared/data/loveda-mini --out benchmarks/results/throughput.json
"""

from __future__ import annotations

import argparse
import time

import torch

from pointseg.build import build_loss_from_config, build_model_from_config, build_source, build_train_dataset
from pointseg.config import load_config
from pointseg.inference import autocast
from pointseg.io import write_json


def images_per_second(cfg: dict, data_root: str, amp: bool, channels_last: bool, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    source = build_source(cfg, data_root, "Train")
    dataset = build_train_dataset(cfg, source, None)
    model = build_model_from_config(cfg, source.classes.num_classes)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    loss_fn = build_loss_from_config(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bs = cfg["train"]["batch_size"]
    batch = [dataset[i % len(dataset)] for i in range(bs)]
    images = torch.stack([b["image"] for b in batch]).to(memory_format=fmt)
    soft = torch.stack([b["soft_mask"] for b in batch])
    weight = torch.stack([b["weight"] for b in batch])
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        with autocast(torch.device("cpu"), amp):
            logits = model(images)
        loss = loss_fn(logits.float(), soft, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * bs / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", required=True)
    p.add_argument("--model", default="unet-mobilenetv2")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(None, [f"model.name={args.model}", "model.encoder_weights=null", "data.domains=[Rural]"])
    plain = images_per_second(cfg, args.data_root, amp=False, channels_last=False, steps=args.steps,
                              warmup=args.warmup)
    fast = images_per_second(cfg, args.data_root, amp=True, channels_last=True, steps=args.steps,
                             warmup=args.warmup)
    result = {"model": args.model, "batch_size": cfg["train"]["batch_size"], "crop": cfg["data"]["crop"],
              "fp32_images_per_s": round(plain, 2), "bf16_channels_last_images_per_s": round(fast, 2),
              "speedup": round(fast / plain, 2), "threads": 2}
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
