"""The one place where a config becomes objects, and the only reader of the config: components never read it,
and the workflows, the CLI and the demo ask this module for what they need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pointseg.choices import PRECISIONS
from pointseg.data.bands import BandScaling, stored_band_statistics
from pointseg.data.cache import CachedSource, default_cache_dir
from pointseg.data.classes import ClassTable, default_colors
from pointseg.data.dataset import (
    ConcatSamples,
    DataOptions,
    EvalDataset,
    TrainDataset,
    UnlabeledDataset,
    Windows,
    default_scaling,
)
from pointseg.data.labels import LabelOptions
from pointseg.data.points import PointSet, check_against, load_points, simulate
from pointseg.data.raster import RasterSource
from pointseg.data.sources import ImageFolder, ImageMaskFolder, LoveDA, Source
from pointseg.engine import OptimOptions, TrainOptions, pick_device, seed_everything, stream_seed
from pointseg.fast import FastOptions, ForestOptions, MLPOptions
from pointseg.features import FeatureCache
from pointseg.inference import use_amp
from pointseg.io import NotEnoughSpace, check_space, read_list, size_text
from pointseg.losses import GatedCRFLoss, LossOptions, build_loss
from pointseg.methods import METHODS, Method, MethodOptions
from pointseg.models import FFN_OPTIONS, HYPERCOLUMN_OPTIONS, ModelOptions, SegmentationModel, build_model
from pointseg.models.hypercolumn import warm_start_state
from pointseg.models.segmentation import expand_decoder_state
from pointseg.models.vit import expand_ffn_state
from pointseg.predictor import Predictor
from pointseg.propagation import BLOCK, Propagation, blocks_reached, propagated_labels


@dataclass(frozen=True)
class TrainInputs:
    """What a run trains on, as given on the command line (paths). On ``--resume`` an input left out
    (``None``, or no ``unlabeled`` folders) means "as the run recorded it"."""

    data_root: str | Path | None = None
    points: str | Path | None = None
    labeled: str | Path | None = None
    unlabeled: tuple[str | Path, ...] = field(default_factory=tuple)
    tags: str | Path | None = None
    rasters: tuple[str | Path, ...] = field(default_factory=tuple)  # instead of a data root
    masks: tuple[str | Path, ...] = field(default_factory=tuple)  # a reference mask raster per raster
    dataset_roots: tuple[tuple[str, str | Path], ...] = field(default_factory=tuple)  # (name, root) of `datasets`
    init: str | Path | None = None  # a trained model.pt to start from


@dataclass(frozen=True)
class Initial:
    """A trained model to start from (``--init``): its weights and the class table of each of its heads."""

    state: dict[str, torch.Tensor]
    heads: dict[str, ClassTable]
    data: dict[str, dict]  # the data section of each head's dataset


def dataset_configs(cfg: dict) -> dict[str, dict]:
    """Each dataset of a run (``data.name`` first, then ``datasets``) with its config: the run's config with
    ``data`` as that dataset sees it."""
    out = {cfg["data"]["name"]: cfg}
    for name, fields in cfg["datasets"].items():
        out[name] = {**cfg, "data": {**cfg["data"], **fields, "name": name}}
    return out


def head_data(cfg: dict, names: list[str], initial: dict[str, dict] | None = None) -> dict[str, dict]:
    """The data section of each head ``names`` that has one: this run's datasets', else ``initial``'s (the data
    sections an ``--init`` model or a model file records)."""
    ours = {name: c["data"] for name, c in dataset_configs(cfg).items()}
    theirs = initial or {}
    return {name: ours.get(name) or theirs[name] for name in names if name in ours or name in theirs}


def build_classes(cfg: dict) -> ClassTable:
    data = cfg["data"]
    if data["format"] == "loveda":
        from pointseg.data.classes import LOVEDA_CLASSES

        return LOVEDA_CLASSES
    if data["format"] == "folder":
        if not data["classes"]:
            raise ValueError("data.format=folder needs data.classes=<class table CSV>")
        return ClassTable.from_csv(data["classes"], color_coded=data["color_coded"],
                                   ignore_index=data["ignore_index"])
    raise KeyError(f"unknown data.format {data['format']!r}; valid: ['folder', 'loveda']")


def build_source(cfg: dict, root: str | Path, split: str | None = None, require_masks: bool = True) -> Source:
    """The samples of ``split`` (default ``data.train_split``) under ``root`` (for ``folder`` data, ``split`` is a
    sub-folder if it exists)."""
    data, root = cfg["data"], Path(root)
    split = split or data["train_split"]
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: the data root is a file, not a directory (give the folder that holds {split}/)")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found")
    if data["format"] == "loveda":
        domains = tuple(d for d in data["domains"] if (root / split / d).is_dir())
        if not domains:
            raise ValueError(f"{root}/{split}: none of the LoveDA domains {data['domains']} found")
        return LoveDA(root, split, domains, require_masks=require_masks)
    sub = root / split if split and (root / split).is_dir() else root
    return ImageMaskFolder(sub, build_classes(cfg), data["images"], data["masks"], require_masks=require_masks)


def build_cached(cfg: dict, source: Source) -> Source:
    """``source`` with its decoded samples cached in ``data.cache_dir`` (capped at ``data.cache_max_gb``); a
    source read by window from its own files (rasters) as it is."""
    if not source.cacheable:
        return source
    data = cfg["data"]
    return CachedSource(source, data["cache_dir"], max_bytes=int(data["cache_max_gb"] * 1e9))


def build_scaling(cfg: dict, source: Source) -> BandScaling:
    """How the bands of ``source`` map to [0, 1]: the dtype's range for uint8, else percentiles of sampled windows
    (drawn from the run's ``bands`` seed stream), computed once and kept in the sample cache."""
    directory, _ = cache_location(cfg)
    return stored_band_statistics(source, directory, seed=stream_seed(cfg["seed"], "bands"))


def build_train_dataset(cfg: dict, source: Source, points: PointSet | None,
                        scaling: BandScaling | None = None) -> TrainDataset:
    if points is None:
        missing = [r.image for r in source.refs if r.mask is None]
        if missing:
            raise ValueError(f"{missing[0]}: no mask for dense training ({len(missing)} images lack one); "
                             "pass --points, or --labeled with the ids of images that have masks")
    else:
        refs = [r for r in source.refs if r.id in points.images]
        check_against(points, [r.id for r in source.refs], {r.id: source.size(r) for r in refs},
                      list(source.classes.names))
    data, labels = DataOptions.from_config(cfg), LabelOptions.from_config(cfg)
    bias = data.point_bias
    if bias == "auto":
        bias = 0.9 if isinstance(source, RasterSource) else 0.0
    cached = build_cached(cfg, source)
    scaling = scaling or default_scaling(source)
    propagated = None
    if points is not None and labels.propagate != "none":
        directory, cap_gb = cache_location(cfg)
        propagated = propagated_labels(cached, points, build_propagation(cfg), scaling, directory, data.ignore_index,
                                       max_bytes=int(cap_gb * 1e9) or None)
    windows = Windows(crop=data.crop, scale=data.scale, mode=labels.mode, downsample=labels.downsample,
                      rescale=(data.rescale[0], data.rescale[1]), ignore_index=data.ignore_index,
                      point_bias=float(bias), propagate_weight=labels.propagate_weight)
    return TrainDataset(cached, source.classes.num_classes, windows, points=points, scaling=scaling,
                        propagated=propagated)


def cache_bytes(cfg: dict, source: Source, points: PointSet | None = None) -> int:
    """What training on ``source`` keeps in the sample cache: each used sample decoded (image tiles; rasters are
    read by window and not cached) and the blocks its clicks' propagation writes."""
    refs = [r for r in source.refs if points is None or r.id in points.images]
    total = 0
    if source.cacheable:
        for ref in refs:
            height, width = source.size(ref)
            bands = source.band_count(ref) * np.dtype(source.band_dtype(ref)).itemsize
            pixel = bands + len(source.sample_keys(ref)) - 1  # a byte for each other array (mask, valid)
            total += height * width * pixel
    if points is not None and cfg["labels"]["propagate"] != "none":
        spread = build_propagation(cfg)
        total += sum(blocks_reached(points.images[r.id], source.size(r), spread) for r in refs) * BLOCK * BLOCK
    return total


def check_cache_space(cfg: dict, sources: list[tuple[Source, PointSet | None]]) -> None:
    """Refuse, before anything is written, a run whose cache (of ``sources``, each with its clicks) would not fit
    under ``data.cache_max_gb`` or on the disk of ``data.cache_dir``."""
    directory, cap_gb = cache_location(cfg)
    needed = sum(cache_bytes(cfg, source, points) for source, points in sources)
    what = "the sample cache of this run (decoded images and propagated clicks)"
    if cap_gb and needed > cap_gb * 1e9:
        raise NotEnoughSpace(f"{directory}: {what} needs about {size_text(needed)}, over data.cache_max_gb={cap_gb:g}; "
                             f"raise it (--set data.cache_max_gb=N) or train on fewer images")
    check_space(directory, needed, what, "point data.cache_dir at a larger disk (--set data.cache_dir=DIR)")


def build_propagation(cfg: dict) -> Propagation:
    """How clicks spread (``labels.propagate*``, ``labels.superpixel_*``) at the training scale."""
    labels = LabelOptions.from_config(cfg)
    return Propagation(scale=cfg["data"]["scale"], superpixel_size=labels.superpixel_size,
                       compactness=labels.superpixel_compactness, max_pixels=labels.propagate_max_pixels,
                       patch=labels.propagate_patch, method=labels.propagate)


def build_eval_dataset(cfg: dict, source: Source, scaling: BandScaling | None = None) -> EvalDataset:
    """Whole images at the training resolution (``data.scale``, ``labels.mode`` filter, bands scaled by
    ``scaling``), masks at full resolution."""
    data = DataOptions.from_config(cfg)
    return EvalDataset(build_cached(cfg, source), scale=data.scale, mode=cfg["labels"]["mode"], scaling=scaling,
                       ignore_index=data.ignore_index)


def build_model_from_config(cfg: dict, num_classes: int | dict[str, int], pretrained: bool = True,
                            in_channels: int = 3) -> SegmentationModel:
    m = ModelOptions.from_config(cfg)
    return build_model(m.name, num_classes, encoder=m.encoder,
                       encoder_weights=m.encoder_weights if pretrained else None, in_channels=in_channels,
                       ffn={key: getattr(m, key) for key in FFN_OPTIONS}, decoder_per_dataset=m.decoder_per_dataset,
                       hypercolumn={**{key: getattr(m, key) for key in HYPERCOLUMN_OPTIONS},
                                    "hidden": MLPOptions.from_config(cfg).hidden,
                                    "pixel_sizes": ForestOptions.from_config(cfg).sizes})


def build_method(cfg: dict, model: SegmentationModel, num_classes: int) -> Method:
    """The training method of the ``method`` section (with its own options, ``method.<name>``) and the supervised
    loss of ``loss`` (and its Gated CRF term when ``loss.pairwise_weight`` > 0)."""
    shared, loss = MethodOptions.from_config(cfg), LossOptions.from_config(cfg)
    if shared.name not in METHODS:
        raise KeyError(f"unknown method {shared.name!r}; valid: {sorted(METHODS)}")
    if shared.name == "pseudoseg" and len(model.heads) > 1:
        raise ValueError("method pseudoseg trains one dataset (its classifier and SGC follow one class table); "
                         "use supervised or fixmatch with several datasets")
    kind = METHODS[shared.name]
    own = kind.options_class.from_config(cfg) if kind.options_class else None
    method = kind.create(build_loss_from_config(cfg), model, num_classes, own, shared.unlabeled_weight,
                         cfg["data"]["ignore_index"])
    if loss.pairwise_weight > 0:
        method.add_pairwise(GatedCRFLoss(loss.crf_sigma_xy, loss.crf_sigma_rgb, loss.crf_radius, loss.crf_downsample),
                            loss.pairwise_weight, loss.pairwise_warmup)
    return method


def build_unlabeled_dataset(cfg: dict, sources: list[Source], tags: dict[str, np.ndarray] | None = None,
                            scaling: BandScaling | None = None) -> ConcatSamples:
    """Unlabeled training windows from every source (masks, where present, only for monitoring; ``tags``:
    image-level labels per image id)."""
    data = DataOptions.from_config(cfg)
    with_mask = any(r.mask is not None for s in sources for r in s.refs)  # same keys in every batch
    return ConcatSamples([UnlabeledDataset(build_cached(cfg, s), crop=data.crop, scale=data.scale,
                                           mode=cfg["labels"]["mode"], rescale=(data.rescale[0], data.rescale[1]),
                                           with_mask=with_mask, ignore_index=data.ignore_index, tags=tags,
                                           scaling=scaling) for s in sources])


def read_tags(path: str | Path, class_names: list[str]) -> dict[str, np.ndarray]:
    """Image-level labels from a CSV with columns ``id,classes`` (class names separated by ``;``)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read tags ({e})") from e
    if not rows or not {"id", "classes"} <= set(rows[0]):
        raise ValueError(f"{path}: tags need columns id,classes")
    index = {name: i for i, name in enumerate(class_names)}
    tags = {}
    for row in rows:
        names = [n.strip() for n in row["classes"].split(";") if n.strip()]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"{path}: image {row['id']!r} has unknown classes {unknown}; known: {class_names}")
        tags[row["id"]] = np.isin(np.arange(len(class_names)), [index[n] for n in names]).astype(np.float32)
    return tags


def build_loss_from_config(cfg: dict) -> torch.nn.Module:
    loss = LossOptions.from_config(cfg)
    return build_loss(loss.name, gamma=loss.gamma, multi_class=cfg["labels"]["multi_class"])


def read_ids(path: str | Path) -> list[str]:
    """Sample ids, one per line (blank lines and ``#`` comments skipped)."""
    return read_list(path, "sample ids")


def build_training_sources(cfg: dict, data_root: str | Path, dense: bool, labeled_ids: str | Path | None,
                           unlabeled_dirs: tuple[str | Path, ...]) -> tuple[Source, list[Source]]:
    """The labeled source and the unlabeled ones: the rest of the split (with ``labeled_ids``) and folders."""
    source = build_source(cfg, data_root, require_masks=dense and not labeled_ids)
    unlabeled: list[Source] = [ImageFolder(d, source.classes, recursive=True, images=cfg["data"]["images"])
                               for d in unlabeled_dirs]
    if labeled_ids is not None:
        ids = read_ids(labeled_ids)
        chosen = set(ids)
        rest = [r.id for r in source.refs if r.id not in chosen]
        if rest:
            unlabeled.insert(0, source.subset(rest, "unlabeled"))
        source = source.subset(ids, f"labeled ids of {labeled_ids}")
    return source, unlabeled


@dataclass
class DatasetPart:
    """One dataset of a run: its name (the model head it trains), labeled source and windows, unlabeled windows
    (for methods that use them) and band scaling."""

    name: str
    source: Source
    dataset: TrainDataset
    unlabeled: Dataset | None
    scaling: BandScaling


@dataclass
class Training:
    """What ``train`` needs besides its options: each dataset (the first is ``data``), the model and the method."""

    parts: list[DatasetPart]
    model: SegmentationModel
    method: Method
    tables: dict[str, ClassTable]  # the class table of each model head, in the model's order
    data: dict[str, dict]  # the data section of each model head's dataset

    @property
    def scaling(self) -> BandScaling:
        """How the first dataset's bands map to [0, 1] (saved with the model)."""
        return self.parts[0].scaling

    @property
    def dtype(self) -> str:
        """The data type of the first dataset's bands (saved with the model)."""
        source = self.parts[0].source
        return source.band_dtype(source.refs[0])


def build_raster_classes(cfg: dict, points: PointSet | None) -> ClassTable:
    """The class table of raster training: ``data.classes`` (``value,name,r,g,b`` with the mask rasters' values),
    else the table ``points import`` wrote beside the point file, else the point file's class names."""
    data = cfg["data"]
    if data["classes"]:
        return ClassTable.from_csv(data["classes"], color_coded=False, ignore_index=data["ignore_index"])
    if points is not None and points.path is not None and points.path.with_suffix(".classes.csv").exists():
        table = ClassTable.from_csv(points.path.with_suffix(".classes.csv"), color_coded=False)
        if list(table.names) == points.classes:
            return table
    if points is not None:
        return ClassTable(tuple(points.classes), tuple(default_colors(len(points.classes))))
    raise ValueError("training on --mask rasters needs their class table: --set data.classes=TABLE.csv "
                     "(value,name,r,g,b with the masks' class values)")


def build_raster_source(cfg: dict, rasters: tuple[str | Path, ...], classes: ClassTable,
                        masks: tuple[str | Path, ...] = ()) -> RasterSource:
    """The rasters (bands ``data.bands``), with their reference mask rasters if given."""
    return RasterSource(rasters, classes, cfg["data"]["bands"], list(masks) or None)


def build_training(cfg: dict, inputs: TrainInputs, initial: Initial | None = None) -> Training:
    """The objects of a run; the model is initialised from the run's ``model`` seed stream, or from ``initial``
    (see ``build_run_model``)."""
    points = load_points(inputs.points) if inputs.points else None
    source: Source
    if inputs.rasters:
        if inputs.data_root is not None or inputs.labeled is not None:
            raise ValueError("--raster trains on rasters: leave out --data-root and --labeled")
        if points is None and not inputs.masks:
            raise ValueError("training on rasters needs --points, or a --mask raster per --raster")
        source = build_raster_source(cfg, inputs.rasters, build_raster_classes(cfg, points), inputs.masks)
        unlabeled_sources: list[Source] = []
    elif inputs.data_root is None:
        raise ValueError("--data-root (or --raster) is required to start a run")
    else:
        if inputs.masks:
            raise ValueError("--mask pairs with --raster")
        source, unlabeled_sources = build_training_sources(cfg, inputs.data_root, inputs.points is None,
                                                           inputs.labeled, inputs.unlabeled)
    uses_unlabeled = cfg["method"]["name"] in METHODS and METHODS[cfg["method"]["name"]].uses_unlabeled
    check_cache_space(cfg, [(source, points), *[(s, None) for s in unlabeled_sources if uses_unlabeled]])
    scaling = build_scaling(cfg, source)
    parts = [DatasetPart(cfg["data"]["name"], source, build_train_dataset(cfg, source, points, scaling), None,
                         scaling)]
    parts += build_more_datasets(cfg, inputs, scaling.bands)
    model, tables = build_run_model(cfg, {p.name: p.source.classes for p in parts}, scaling.bands, initial)
    method = build_method(cfg, model, source.classes.num_classes)
    if method.uses_unlabeled:
        image_tags = read_tags(inputs.tags, list(source.classes.names)) if inputs.tags else None
        parts[0].unlabeled = build_unlabeled_dataset(cfg, unlabeled_sources or [source], image_tags, scaling)
        for part in parts[1:]:  # the unlabeled pixels of their own images
            part.unlabeled = build_unlabeled_dataset(dataset_configs(cfg)[part.name], [part.source], None,
                                                     part.scaling)
    return Training(parts, model, method, tables,
                    head_data(cfg, model.head_names, initial.data if initial is not None else None))


def build_run_model(cfg: dict, tables: dict[str, ClassTable], bands: int, initial: Initial | None = None
                    ) -> tuple[SegmentationModel, dict[str, ClassTable]]:
    """The model of a run on datasets ``tables`` (name -> class table) and the class table of each of its heads.

    From ``initial``: its weights (a plain FFN's become the experts of an MoE model, ``expand_ffn_state``; a shared
    decoder every dataset's with ``model.decoder_per_dataset``); a dataset it lacks gets a new head (and
    experts, and a decoder, copied from its first). ``train.trainable=all`` fine-tunes
    everything and keeps the heads of this run's datasets; ``added`` trains the added datasets' heads and experts
    alone and keeps every head (a dataset added to a trained model).
    """
    seed_everything(stream_seed(cfg["seed"], "model"))  # the initial weights
    if initial is None:
        return build_model_from_config(cfg, {n: t.num_classes for n, t in tables.items()}, in_channels=bands), tables
    for name, table in tables.items():
        if name in initial.heads and initial.heads[name].names != table.names:
            raise ValueError(f"--init: its head {name!r} has classes {list(initial.heads[name].names)}, the dataset "
                             f"{name!r} has {list(table.names)}; name the dataset otherwise (data.name) for a new head")
    model = build_model_from_config(cfg, {n: t.num_classes for n, t in initial.heads.items()}, pretrained=False,
                                    in_channels=bands)
    try:
        state = warm_start_state(initial.state, model) or expand_decoder_state(expand_ffn_state(initial.state, model),
                                                                             model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        problem = f"missing {missing[:2]}, unexpected {unexpected[:2]}" if missing or unexpected else ""
    except RuntimeError as e:  # tensors of other shapes
        problem = str(e).splitlines()[-1].strip()
    if problem:
        raise ValueError(f"--init: its weights do not fit model.name={cfg['model']['name']} ({problem}); use the "
                         "model (and model.* settings) it was trained with")
    added = [name for name in tables if name not in initial.heads]
    for name in added:
        model.add_head(name, tables[name].num_classes)
    if cfg["train"]["trainable"] == "added":
        if not added:
            raise ValueError(f"train.trainable=added trains the datasets the --init model lacks, but it has all of "
                             f"{list(tables)}")
        model.datasets_only(added)
        every = {**initial.heads, **tables}
        return model, {name: every[name] for name in model.head_names}
    model.keep_heads(list(tables))
    return model, tables

def build_more_datasets(cfg: dict, inputs: TrainInputs, bands: int) -> list[DatasetPart]:
    """The datasets of ``datasets`` (dense masks, each from its ``--data-root NAME=PATH``)."""
    configs, roots = dataset_configs(cfg), dict(inputs.dataset_roots)
    unknown = sorted(set(roots) - set(cfg["datasets"]))
    if unknown:
        raise ValueError(f"--data-root {unknown[0]}=...: no dataset {unknown[0]!r} in the config (datasets: "
                         f"{sorted(cfg['datasets']) or 'none'}); add it with --set datasets.{unknown[0]}.format=...")
    parts = []
    for name in cfg["datasets"]:
        if name not in roots:
            raise ValueError(f"dataset {name!r} needs its root: --data-root {name}=PATH")
        source = build_source(configs[name], roots[name])
        scaling = build_scaling(configs[name], source)
        if scaling.bands != bands:
            raise ValueError(f"{roots[name]}: dataset {name!r} has {scaling.bands} bands, the first has {bands}; "
                             "the datasets of one model need the same bands")
        parts.append(DatasetPart(name, source, build_train_dataset(configs[name], source, None, scaling), None,
                                 scaling))
    return parts


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes: ``device``, bf16 autocast (``train.amp`` resolved there) and CPU ``threads``
    (0: torch's default)."""

    device: torch.device
    amp: bool
    threads: int


def build_runtime(cfg: dict) -> Runtime:
    train = TrainOptions.from_config(cfg)
    device = pick_device(train.device)
    return Runtime(device, use_amp(train.amp, device), train.threads)




def build_predictor(cfg: dict, model: SegmentationModel, classes: ClassTable, scaling: BandScaling,
                    head: str, flips: bool = False, dtype: str | None = None, precision: str = "float32"
                    ) -> Predictor:
    """The ``Predictor`` of a trained ``model`` whose config (with ``data`` as its ``head``'s dataset is read) is
    ``cfg``: it reads the bands ``data.bands`` and sees images at ``data.scale`` with the ``labels.mode`` filter;
    ``precision``: ``float32`` (the default: a bf16 map can differ from it, whatever ``train.amp`` trained in; see
    BENCHMARKS 11) or ``bf16`` autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {list(PRECISIONS)}, got {precision!r}")
    bands = cfg["data"]["bands"]
    return Predictor(model, classes, scaling, cfg["data"]["scale"], cfg["labels"]["mode"], precision == "bf16",
                     flips, head, tuple(bands) if bands else None, dtype)


def build_train_options(cfg: dict) -> tuple[TrainOptions, OptimOptions]:
    """The options of ``train`` (the training loop) and its optimiser."""
    return TrainOptions.from_config(cfg), OptimOptions.from_config(cfg)


def build_simulated_points(cfg: dict, data_root: str | Path, per_image: int, strategy: str = "uniform") -> PointSet:
    """``per_image`` clicks per training image from its dense mask, seeded with the run's seed."""
    return simulate(build_source(cfg, data_root), per_image, cfg["seed"], strategy)


def describe(cfg: dict) -> str:
    """The recipe in a few words: model, loss, method and schedule."""
    return (f"model `{cfg['model']['name']}`, loss `{cfg['loss']['name']}`, method `{cfg['method']['name']}`, "
            f"{cfg['train']['steps']} steps")


def cache_location(cfg: dict) -> tuple[Path, float]:
    """The decoded-sample cache directory and its size cap in GB (0: none)."""
    data = cfg["data"]
    return (Path(data["cache_dir"]) if data["cache_dir"] else default_cache_dir()), data["cache_max_gb"]


def build_feature_cache(cfg: dict, model: SegmentationModel, source: Source, scaling: BandScaling) -> FeatureCache:
    """The encoder features of a hypercolumn ``model`` for images of ``source`` as the run reads them, cached
    beside the decoded samples (``data.cache_dir``, within ``data.cache_max_gb``)."""
    directory, cap_gb = cache_location(cfg)
    return FeatureCache(model, source, scaling, cfg["data"]["scale"], cfg["labels"]["mode"],
                        cfg["model"]["hypercolumn_stages"], directory, int(cap_gb * 1e9),
                        FastOptions.from_config(cfg).window, cfg["data"]["bands"])


def build_fast_options(cfg: dict) -> FastOptions:
    return FastOptions.from_config(cfg)
