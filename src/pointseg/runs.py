"""The run store: what a run directory holds, how a run starts and resumes, and how a finished run is loaded.

A run directory holds ``config.yaml`` (the resolved config), ``run.json`` (the inputs the run trains on and
one record per invocation: command, start time, step it started from, git commit, versions),
``metrics.jsonl``, ``checkpoints/last.pt`` and, once training has finished, ``model.pt``.

A run is created only after its set-up has succeeded, and a new run that fails before its first checkpoint
is removed, so a retry is never refused. A resumed run keeps its config (only ``RESUMABLE`` keys may change)
and its inputs: the data root by path, point / id / tag files by path and SHA-256.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pointseg import __version__, build
from pointseg.backends import onnx_model, resolve_backend
from pointseg.build import TrainInputs, build_model_from_config, head_data
from pointseg.config import default_config, dump_config, flatten, merge, upgrade, validate
from pointseg.data.bands import BandScaling
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import EvalDataset
from pointseg.data.raster import ground_sample_distance
from pointseg.data.sources import ImageFolder, Source
from pointseg.engine import CHECKPOINT, METRICS, pick_device
from pointseg.inference import cpu_model
from pointseg.io import check_writable, read_torch_file, write_json, write_text, write_torch_file
from pointseg.models import DEFAULT_HEAD, SegmentationModel
from pointseg.models.hypercolumn import graph_refusal
from pointseg.predictor import Predictor, model_pixels

CONFIG, INFO, MODEL, LOCK = "config.yaml", "run.json", "model.pt", ".lock"  # and the loop's CHECKPOINT, METRICS
# Keys a resumed run may change: how long it trains and where/how fast it runs, never what it learns per step.
RESUMABLE = ("train.steps", "train.device", "train.threads", "train.num_workers", "train.log_every",
             "train.checkpoint_every", "data.cache_dir", "data.cache_max_gb")
FILE_INPUTS = {"points": "--points", "labeled": "--labeled", "tags": "--tags", "init": "--init"}
PATH_LISTS = {"unlabeled": "--unlabeled", "rasters": "--raster", "masks": "--mask"}  # recorded by path


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_inputs(inputs: TrainInputs) -> dict[str, Any]:
    """The inputs as stored in ``run.json``: absolute paths, and a SHA-256 for each file."""
    record: dict[str, Any] = {"data_root": str(Path(inputs.data_root).resolve()) if inputs.data_root else None}
    for name in PATH_LISTS:
        record[name] = [str(Path(d).resolve()) for d in getattr(inputs, name)]
    record["datasets"] = {name: str(Path(root).resolve()) for name, root in inputs.dataset_roots}
    for name in FILE_INPUTS:
        path = getattr(inputs, name)
        record[name] = {"path": str(Path(path).resolve()), "sha256": sha256(path)} if path else None
    return record


def resume_inputs(run_dir: Path, recorded: dict[str, Any], given: TrainInputs) -> TrainInputs:
    """The recorded inputs of a run; an input given again must be the same path, and files must be unchanged."""
    def same(flag: str, recorded_path: str | None, given_path: str | Path | None) -> None:
        if given_path is not None and (recorded_path is None or Path(given_path).resolve() != Path(recorded_path)):
            raise ValueError(f"{run_dir}: the run was started with {flag} {recorded_path or '(none)'}; "
                             f"{flag} {given_path} differs. A resumed run keeps its inputs: leave {flag} out, or "
                             "start a new run in another --out")

    same("--data-root", recorded["data_root"], given.data_root)
    roots = recorded.get("datasets", {})
    for name, root in given.dataset_roots:
        same(f"--data-root {name}=", roots.get(name), root)
    for name, flag in PATH_LISTS.items():
        paths = getattr(given, name)
        if paths and [str(Path(d).resolve()) for d in paths] != recorded.get(name, []):
            raise ValueError(f"{run_dir}: the run was started with {flag} {recorded.get(name) or '(none)'}; "
                             f"{list(map(str, paths))} differs. A resumed run keeps its inputs")
    files: dict[str, str | None] = {}
    for name, flag in FILE_INPUTS.items():
        entry = recorded.get(name)
        same(flag, entry and entry["path"], getattr(given, name))
        files[name] = entry and entry["path"]
        if entry is None:
            continue
        if not Path(entry["path"]).is_file():
            raise FileNotFoundError(f"{entry['path']}: not found; the run in {run_dir} was started with it ({flag})")
        digest = sha256(entry["path"])
        if digest != entry["sha256"]:
            raise ValueError(f"{entry['path']}: changed since the run in {run_dir} started (SHA-256 "
                             f"{entry['sha256'][:12]} -> {digest[:12]}); a resumed run trains on the same inputs. "
                             "Restore the file or start a new run in another --out")
    return TrainInputs(recorded["data_root"], files["points"], files["labeled"], tuple(recorded["unlabeled"]),
                       files["tags"], tuple(recorded.get("rasters", ())), tuple(recorded.get("masks", ())),
                       tuple(roots.items()), files.get("init"))


def resume_config(run_dir: Path, settings: dict) -> dict:
    """The saved config of the run in ``run_dir`` with ``settings`` over it; only ``RESUMABLE`` keys may differ."""
    try:
        saved = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{run_dir / CONFIG}: cannot read the run's config ({e})") from e
    base = merge(default_config(), upgrade(saved))  # keys added since the run started get their defaults
    cfg = validate(merge(base, settings))
    old, new = flatten(base), flatten(cfg)
    refused = [k for k in {**old, **new} if new.get(k) != old.get(k) and k not in RESUMABLE]
    if refused:
        listed = ", ".join(f"{k}={new.get(k)!r} (the run has {old.get(k)!r})" for k in refused)
        raise ValueError(f"{run_dir}: a resumed run keeps its config, but {listed} differ. Only "
                         f"{', '.join(RESUMABLE)} may change on --resume; start a new run in another --out for others")
    return cfg


def read_info(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{run_dir / INFO}: cannot read the run's record ({e})") from e


def trained_in(run_dir: Path) -> str:
    """The precision and CPU (or device) of a run's last training invocation, as words: ``bf16 on <CPU>``."""
    last = read_info(run_dir)["invocations"][-1]
    precision = last.get("precision", "bf16" if last.get("amp") else "float32")
    where = last.get("cpu") if last.get("device", "cpu") == "cpu" else last.get("device")
    return f"{precision} on {where or 'an unrecorded CPU'}"


def prepare_resume(run_dir: Path, settings: dict, given: TrainInputs) -> tuple[dict, TrainInputs]:
    """Config and inputs of the run to resume in ``run_dir``; an error if there is none or anything differs."""
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir}: no run to resume here (no {CONFIG}); check --out, or leave out "
                                "--resume to start a new run")
    info = read_info(run_dir)
    if "inputs" not in info:
        raise ValueError(f"{run_dir / INFO}: the run was started by an older pointseg that did not record its "
                         "inputs, so it cannot be resumed exactly; start a new run in another --out")
    return resume_config(run_dir, settings), resume_inputs(run_dir, info["inputs"], given)


def prepare_new(run_dir: Path, settings: dict, given: TrainInputs) -> tuple[dict, TrainInputs]:
    """Config and inputs of a new run in ``run_dir``; an error if it already holds a run or cannot be written."""
    if (run_dir / CONFIG).exists():
        raise FileExistsError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    check_writable(run_dir)
    return validate(merge(default_config(), settings)), given


def git_commit() -> str:
    """The commit of the pointseg checkout that runs (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def invocation(argv: list[str] | None, from_step: int, **facts: Any) -> dict[str, Any]:
    """One entry of ``run.json``'s ``invocations``: this command, the code that runs it and ``facts`` of the
    machine (e.g. the device and whether bf16 autocast was used), with the CPU's model."""
    return {"argv": argv or [], "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "from_step": from_step, "git_commit": git_commit(), "pointseg_version": __version__,
            "torch_version": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(), **facts}


def start_run(run_dir: Path, cfg: dict, inputs: TrainInputs, argv: list[str] | None, **facts: Any) -> bool:
    """Create the run directory with ``config.yaml`` and ``run.json``; on failure nothing is left behind.

    Returns whether the directory was made here (``discard_run`` then removes it whole).
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / CONFIG, dump_config(cfg))
        write_json(run_dir / INFO, {"inputs": record_inputs(inputs), "invocations": [invocation(argv, 0, **facts)]})
    except BaseException:
        discard_run(run_dir, created)
        raise
    return created


def record_resume(run_dir: Path, cfg: dict, argv: list[str] | None, from_step: int, **facts: Any) -> None:
    """Append this invocation to ``run.json`` (earlier ones are kept); ``config.yaml`` takes the changed
    ``RESUMABLE`` keys (e.g. a longer ``train.steps``)."""
    info = read_info(run_dir)
    info["invocations"].append(invocation(argv, from_step, **facts))
    write_text(run_dir / CONFIG, dump_config(cfg))
    write_json(run_dir / INFO, info)


def discard_run(run_dir: Path, created: bool) -> None:
    """Remove a run that never reached a checkpoint: the directory if this process made it, else its files."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in (CONFIG, INFO, METRICS, LOCK):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / Path(CHECKPOINT).parent, ignore_errors=True)


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock: a second process training the same run directory is refused, not interleaved."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    with open(run_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{run_dir}: another pointseg process is training this run; wait for it or stop it "
                               "first") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class SavedModel:
    """What a ``model.pt`` holds: weights, the run's config, each head's class table, band scaling."""

    path: Path
    state: dict[str, torch.Tensor]
    cfg: dict
    heads: dict[str, ClassTable]
    scaling: BandScaling
    data: dict[str, dict]  # the data section of each head's dataset (how to read it)
    dtype: str | None = None  # of the bands it was trained on (None: not recorded)


@dataclass
class TrainedModel:
    """A finished run's model (in eval mode), config, input band scaling and the class table of each head;
    ``head`` is the head in use (its table is ``classes``)."""

    model: SegmentationModel
    cfg: dict
    heads: dict[str, ClassTable]
    scaling: BandScaling
    head: str
    data: dict[str, dict]
    dtype: str | None = None  # of the bands it was trained on
    path: Path | None = None  # the model file it was loaded from

    @property
    def classes(self) -> ClassTable:
        return self.heads[self.head]

    @property
    def head_cfg(self) -> dict:
        """The run's config with ``data`` as the head's dataset is read."""
        return {**self.cfg, "data": self.data[self.head]}

    def predictor(self, flips: bool = False, backend: str = "auto", int8: bool = False,
                  calibration_rasters: Sequence[str | Path] = (), precision: str = "float32") -> Predictor:
        """The model of the head in use as a ``Predictor`` (``flips``: test-time augmentation) run by ``backend``
        (``pointseg.backends``: ``auto`` is onnxruntime on the CPU, torch on a GPU); ``int8``: onnxruntime's int8
        graph, calibrated on windows of the run's training images, or of ``calibration_rasters`` (the rasters
        being mapped) when those are gone; ``precision``: ``float32`` or ``bf16`` (autocast, torch only: ``auto``
        then picks torch)."""
        predictor = build.build_predictor(self.head_cfg, self.model, self.classes, self.scaling, self.head, flips,
                                          self.dtype, precision)
        if precision == "bf16" and (backend == "onnxruntime" or int8):
            raise ValueError("--precision bf16 runs torch's autocast: leave --backend onnxruntime and --int8 out")
        chosen = "torch" if precision == "bf16" else resolve_backend(backend, predictor.device,
                                                                     graph_refusal(self.model))
        if int8 and chosen != "onnxruntime":
            raise ValueError("--int8 runs onnxruntime's quantized graph on the CPU: leave --backend torch out")
        if chosen == "onnxruntime":
            calibration = self.calibration_windows(calibration_rasters) if int8 else None
            predictor = dataclasses.replace(predictor, runner=onnx_model(self.model, self.path, self.head,
                                                                         calibration))
        return predictor

    def training_source(self) -> Source | None:
        """The images the run trained on (its data root's training split, or its rasters), ``None`` when they are
        gone or unknown."""
        try:
            inputs = read_info(model_file(self.path).parent)["inputs"] if self.path else {}
        except (ValueError, KeyError):
            return None
        cfg = self.head_cfg
        if inputs.get("data_root") and Path(inputs["data_root"]).is_dir():
            try:
                return build.build_source(cfg, inputs["data_root"], require_masks=False)
            except (ValueError, FileNotFoundError):
                return None
        rasters = inputs.get("rasters") or []
        if rasters and all(Path(r).exists() for r in rasters):
            return build.build_raster_source(cfg, tuple(rasters), self.classes)
        return None

    def calibration_windows(self, fallback: Sequence[str | Path] = ()) -> Callable[[int, int, int], list[np.ndarray]]:
        """int8 calibration: ``n`` windows of ``height`` x ``width`` model pixels as the model sees them (scaled;
        each ``(1, B, height, width)`` float32), drawn (seeded) from the run's training images, or from the
        ``fallback`` rasters when those are gone."""
        def windows(n: int, height: int, width: int) -> list[np.ndarray]:
            source = self.training_source() or (build.build_raster_source(self.head_cfg, tuple(fallback),
                                                                          self.classes) if fallback else None)
            if source is None or not source.refs:
                raise ValueError("int8 is calibrated on the run's training images, which are gone: map a raster "
                                 "(its windows calibrate it) or leave --int8 out")
            predictor = build.build_predictor(self.head_cfg, self.model, self.classes, self.scaling, self.head)
            rng, out = np.random.default_rng(0), []
            for i in range(n):
                ref = source.refs[int(rng.integers(len(source.refs)))] if i >= len(source.refs) else source.refs[i]
                size = source.size(ref)
                side = (min(size[0], round(height / predictor.scale)), min(size[1], round(width / predictor.scale)))
                top, left = (int(rng.integers(0, size[k] - side[k] + 1)) for k in (0, 1))
                raw = source.read(ref, (top, left, *side))
                pixels = self.scaling(model_pixels(raw, self.scaling, predictor.scale, predictor.mode))
                pixels = pixels[:, :height, :width]
                pad = ((0, 0), (0, height - pixels.shape[1]), (0, width - pixels.shape[2]))
                out.append(np.pad(pixels, pad, mode="edge")[None].astype(np.float32))
            return out

        return windows

    def dataset(self, data_root: str | Path, split: str, require_masks: bool = True) -> EvalDataset:
        """The images of ``split`` under ``data_root``, read as the head's dataset is read, as the model sees
        them (whole images at its scale, masks at full resolution)."""
        source = build.build_source(self.head_cfg, data_root, split, require_masks=require_masks)
        return build.build_eval_dataset(self.head_cfg, source, self.scaling)

    def images(self, folder: str | Path) -> EvalDataset:
        """A folder of image files (no masks) as the model sees them."""
        return build.build_eval_dataset(self.head_cfg, ImageFolder(folder, self.classes), self.scaling)


def save_model(path: Path, model: SegmentationModel, cfg: dict, heads: ClassTable | Mapping[str, ClassTable],
               scaling: BandScaling, data: Mapping[str, dict] | None = None, dtype: str | None = None) -> None:
    """The trained model for ``evaluate``/``predict``: weights, resolved config, the class table of each head
    (one table: the model's only head), band scaling, and the data section of each head's dataset (default: from
    ``cfg``). ``classes`` holds the first head's table."""
    tables = dict(heads) if isinstance(heads, Mapping) else {model.head_names[0]: heads}
    if list(tables) != model.head_names:
        raise ValueError(f"class tables for heads {list(tables)}, but the model has heads {model.head_names}")
    write_torch_file(path, {"model": model.state_dict(), "config": cfg,
                            "classes": next(iter(tables.values())).to_dict(),
                            "heads": {name: table.to_dict() for name, table in tables.items()},
                            "data": dict(data) if data is not None else head_data(cfg, list(tables)),
                            "scaling": scaling.to_dict(), "dtype": dtype}, "the trained model")


def model_file(run: str | Path) -> Path:
    """``model.pt`` of a run directory, or ``run`` itself when it is a model file."""
    run = Path(run)
    return run if run.is_file() else run / MODEL


def read_model(run: str | Path) -> SavedModel:
    """The weights, config, class table of each head and band scaling in a run's ``model.pt`` (models saved before
    band scaling existed took RGB images in 0..255; before named heads, they had one table)."""
    path = model_file(run)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model here (did training finish? --run takes a run directory "
                                "or its model.pt)")
    state = read_torch_file(path, "the pointseg model", weights_only=False)
    if not isinstance(state, dict) or not {"model", "config", "classes"} <= state.keys():
        raise ValueError(f"{path}: not a pointseg model file (expected weights, config and class table)")
    cfg = merge(default_config(), upgrade(state["config"]))  # keys added since then get their defaults
    tables = state.get("heads") or {DEFAULT_HEAD: state["classes"]}
    heads = {name: ClassTable.from_dict(table) for name, table in tables.items()}
    scaling = BandScaling.from_dict(state["scaling"]) if "scaling" in state else BandScaling.full_range(3)
    data = {**head_data(cfg, list(heads)), **state.get("data", {})}  # files before named heads: `data`, "seg"
    return SavedModel(path, state["model"], cfg, heads, scaling, data, state.get("dtype"))


def load_run(run: str | Path, device: torch.device | str = "auto", head: str | None = None) -> TrainedModel:
    """The model of a finished run (its directory or its ``model.pt``), with its config, classes and scaling.

    Only the model file is read (``read_model``). ``head``: the head (dataset) to use, required when the model has
    several. ``device="auto"``: CUDA when present.
    """
    saved = read_model(run)
    path, cfg, heads, scaling = saved.path, saved.cfg, saved.heads, saved.scaling
    if head is None and len(heads) > 1:
        raise ValueError(f"{path}: the model serves several datasets {list(heads)}: name the one to use "
                         "(--dataset NAME)")
    if head is not None and head not in heads:
        raise ValueError(f"{path}: no head {head!r}; the model has {list(heads)}")
    model = build_model_from_config(cfg, {name: t.num_classes for name, t in heads.items()}, pretrained=False,
                                    in_channels=scaling.bands)
    model.load_state_dict(saved.state)
    head = head or next(iter(heads))
    model.keep_heads([head])  # the model of one dataset: model(image) gives that head's logits
    device = pick_device(device) if isinstance(device, str) else device
    return TrainedModel(model.to(device).eval(), cfg, heads, scaling, head, saved.data, saved.dtype, path)


def training_resolution_cm(run: str | Path, scale: float) -> float | None:
    """Centimetres per model pixel of a run trained on rasters at ``scale`` (``data.scale``): its first raster's
    pixel size over ``scale`` (``None`` for image tiles, whose pixel size is not known, or a raster that is gone)."""
    try:
        rasters = read_info(model_file(run).parent)["inputs"].get("rasters") or []
    except (ValueError, KeyError):
        return None
    if not rasters or not Path(rasters[0]).exists():
        return None
    gsd = ground_sample_distance(rasters[0])
    return None if gsd is None else gsd * 100 / scale
