"""The training engine: the loop (``loop``) and the pieces it is made of, one file each."""

from pointseg.engine.batches import StepBatches, step_batches
from pointseg.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from pointseg.engine.device import configure_determinism, peak_memory_mb, pick_device
from pointseg.engine.log import IntervalLog
from pointseg.engine.loop import CHECKPOINT, METRICS, Placement, TrainOptions, train
from pointseg.engine.optim import OptimOptions, build_optimizer, warmup_cosine
from pointseg.engine.seeding import STREAMS, rng_state, seed_everything, set_rng_state, stream_seed
from pointseg.engine.step import Task, TrainStep

__all__ = ["CHECKPOINT", "CHECKPOINT_FORMAT", "METRICS", "STREAMS", "IntervalLog", "OptimOptions", "Placement",
           "StepBatches", "Task", "TrainOptions", "TrainStep", "build_optimizer", "configure_determinism",
           "load_checkpoint", "peak_memory_mb", "pick_device", "rng_state", "save_checkpoint", "seed_everything",
           "set_rng_state", "step_batches", "stream_seed", "train", "warmup_cosine"]
