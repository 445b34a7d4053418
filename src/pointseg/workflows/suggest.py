"""Where to click next: every image (a dataset split or rasters) scored by the model's uncertainty, the picks
(``pointseg.suggest``) written as a point file with the clicks so far plus the new clicks (class ``null``), an
overlay picture per image and, for rasters, a GeoPackage to classify in QGIS."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pointseg import runs
from pointseg.choices import SCORES
from pointseg.data.classes import ClassTable
from pointseg.data.points import UNCLASSIFIED, PointSet, check_against, load_points, save_points
from pointseg.data.sources import GeoRef
from pointseg.evaluate import display_rgb
from pointseg.inference import certainty, top_class
from pointseg.io import atomic_path, check_writable
from pointseg.maps import predict_raster
from pointseg.mapwriter import NODATA, MapWriter
from pointseg.predictor import Predictor
from pointseg.report import plot_suggestions
from pointseg.suggest import Suggestion, class_rarity, suggest_clicks

PICK_SIDE = 2048  # rasters: suggestions are picked on at most this many pixels a side (memory bounded)


@dataclass(frozen=True)
class SuggestRequest:
    """``per_image`` clicks to propose per image, scored by ``score`` (``inference.SCORES``), ``min_distance``
    full-resolution pixels apart and from the clicks so far (``None``: ``suggest.auto_distance``), classes with few
    clicks favoured by ``class_weight`` (0: not at all), probabilities averaged over ``flips``, the model run by
    ``backend`` (``pointseg.backends``; ``int8``: its quantized graph) in ``precision`` (``float32`` or ``bf16``)."""

    per_image: int
    score: str = "margin"
    min_distance: float | None = None
    class_weight: float = 1.0
    flips: bool = False
    backend: str = "auto"
    int8: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.per_image < 1:
            raise ValueError(f"--per-image must be at least 1, got {self.per_image}")
        if self.score not in SCORES:
            raise ValueError(f"--score must be one of {list(SCORES)}, got {self.score!r}")
        if self.min_distance is not None and self.min_distance < 0:
            raise ValueError(f"--min-distance must be at least 0, got {self.min_distance}")
        if self.class_weight < 0:
            raise ValueError(f"--class-weight must be at least 0, got {self.class_weight}")


@dataclass
class ScoredImage:
    """One image as the model sees it: ``uncertainty`` and ``predicted`` class per scored pixel (``valid``: where
    it has data), at ``step`` full-resolution pixels per scored pixel, the image's full ``size`` and a ``picture``
    at the scored grid."""

    id: str
    size: tuple[int, int]
    uncertainty: np.ndarray
    predicted: np.ndarray
    valid: np.ndarray | None
    picture: np.ndarray
    step: int = 1


@dataclass
class Suggestions:
    """The clicks so far (``made``) and the suggestions picked image by image; pictures go to ``pictures``."""

    request: SuggestRequest
    classes: ClassTable
    made: PointSet | None
    pictures: Path
    images: dict[str, np.ndarray] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    scores: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = self.made.class_counts() if self.made else np.zeros(self.classes.num_classes, np.int64)
        self.rarity = class_rarity(counts, self.request.class_weight)

    def add(self, image: ScoredImage) -> list[Suggestion]:
        """Pick the next clicks of ``image`` away from its clicks so far; draw them; returns them."""
        existing = self.made.images.get(image.id, np.zeros((0, 3), np.int64)) if self.made else np.zeros((0, 3),
                                                                                                        np.int64)
        try:
            found = suggest_clicks(image.uncertainty, image.predicted, image.valid, existing,
                                   self.rarity, self.request.per_image, self.request.min_distance,
                                   image.size, image.step)
        except ValueError as e:
            raise ValueError(f"{image.id}: {e}") from e
        new = np.array([[s.row, s.col, UNCLASSIFIED] for s in found], dtype=np.int64).reshape(-1, 3)
        self.images[image.id], self.sizes[image.id] = np.concatenate([existing, new]), image.size
        self.scores[image.id] = [None] * len(existing) + [round(s.score, 4) for s in found]
        self._draw(image, existing, new, len(found))
        return found

    def _draw(self, image: ScoredImage, existing: np.ndarray, new: np.ndarray, found: int) -> None:
        shown = max(1, int(np.ceil(max(image.picture.shape[:2]) / 512)))
        per_pixel = [image.step * shown, image.step * shown, 1]
        plot_suggestions(image.picture[::shown, ::shown], image.uncertainty[::shown, ::shown], existing // per_pixel,
                         new // per_pixel, self.classes, self.pictures / f"{image.id.replace('/', '_')}.png",
                         f"{image.id}: {found} suggested clicks")

    def point_set(self, meta: dict) -> PointSet:
        """The clicks so far (images not scored here keep theirs) and the suggestions, with their scores."""
        images, sizes = dict(self.images), dict(self.sizes)
        made = self.made
        if made is not None:
            for k in made.images.keys() - images.keys():
                images[k], sizes[k] = made.images[k], made.sizes[k]
        extra = {k: {**(made.extra.get(k, {}) if made is not None else {}), "suggestion_score": v}
                 for k, v in self.scores.items()}
        return PointSet(list(self.classes.names), images, sizes, {**(made.meta if made else {}), **meta}, None, extra)


def clicks_so_far(points: str | Path | None, names: list[str]) -> PointSet | None:
    made = load_points(points, unclassified=True) if points else None
    if made is not None and made.classes != names:
        raise ValueError(f"{points}: classes {made.classes} differ from the run's classes {names} (names and order "
                         "must match: suggest for the run these clicks trained)")
    return made


def score_tiles(trained: runs.TrainedModel, data_root: str | Path, split: str, made: PointSet | None,
                request: SuggestRequest) -> Iterator[ScoredImage]:
    """Every image of ``split`` scored whole at full label resolution (uncertainty: ``1 - inference.certainty``
    of the kind ``request.score``)."""
    dataset = trained.dataset(data_root, split, require_masks=False)
    source = dataset.source
    if source.band_count(source.refs[0]) != trained.scaling.bands:
        raise ValueError(f"{source.refs[0].image}: {source.band_count(source.refs[0])} bands, but the model takes "
                         f"{trained.scaling.bands}")
    if made is not None:
        check_against(made, [r.id for r in source.refs], {r.id: source.size(r) for r in source.refs
                                                        if r.id in made.images}, list(trained.classes.names))
    for sample, logits in trained.predictor(request.flips, request.backend, request.int8,
                                                       precision=request.precision).iter_logits(dataset):
        probs = logits.softmax(0)
        size = (int(probs.shape[-2]), int(probs.shape[-1]))
        picture = display_rgb(torch.nn.functional.interpolate(sample["image"][None], size=size)[0].numpy())
        yield ScoredImage(sample["id"], size, (1 - certainty(probs, request.score)).numpy(), top_class(probs).numpy(),
                          sample["valid"].numpy() if "valid" in sample else None, picture)


def score_raster(predictor: Predictor, raster: Path, score: str, scratch: Path) -> tuple[ScoredImage, GeoRef]:
    """Map ``raster`` with the uncertainty as its confidence (into ``scratch``), read both back at most
    ``PICK_SIDE`` pixels a side (bounded memory whatever the raster); the image and the raster's georeferencing."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling

    from pointseg.data.raster import display_thumbnail, picture_bands

    source = predictor.raster_source((raster,))
    ref = source.refs[0]
    height, width = source.size(ref)
    step = max(1, int(np.ceil(max(height, width) / PICK_SIDE)))
    shape = (-(-height // step), -(-width // step))
    writer = MapWriter(scratch / "map.tif", predictor.classes, scratch / "certainty.tif")
    predict_raster(predictor, source, ref, writer, certainty_kind=score)
    with rasterio.open(writer.map) as m, rasterio.open(scratch / "certainty.tif") as c:
        predicted = m.read(1, out_shape=shape, resampling=Resampling.nearest)
        certain = c.read(1, out_shape=shape, resampling=Resampling.nearest).astype(np.float64) / 100
    valid = predicted != NODATA
    picture = display_thumbnail(raster, picture_bands(raster, source.bands[ref.image]), max(shape))
    picture = np.asarray(Image.fromarray(picture).resize(shape[::-1], Image.Resampling.BILINEAR))
    image = ScoredImage(ref.id, (height, width), np.where(valid, 1 - certain, 0), np.where(valid, predicted, 0),
                        valid, picture, step)
    return image, source.georef(ref)


def run_suggestion(run: str | Path, out: str | Path, request: SuggestRequest, data_root: str | Path | None = None,
                   split: str = "Train", rasters: tuple[str | Path, ...] = (),
                   points: str | Path | None = None, dataset_name: str | None = None) -> PointSet:
    """Propose the next clicks on the images of ``split`` under ``data_root`` (or on ``rasters``) for the model of
    ``run``, given the clicks made so far (``points``). Writes the point file ``out`` (the clicks so far plus the
    suggestions, whose class is ``null``), an overlay picture per image in ``<out stem>_overlays/`` and, for
    rasters, a GeoPackage ``<out stem>.gpkg`` with a layer per raster that an analyst opens in QGIS to classify.
    ``dataset_name``: the dataset (head) of a model trained on several."""
    out = Path(out)
    if rasters and data_root is not None:
        raise ValueError("give --data-root or --raster, not both")
    if not rasters and data_root is None:
        raise ValueError("suggest needs --data-root (with --split) or --raster")
    check_writable(out.parent)
    trained = runs.load_run(run, head=dataset_name)
    made = clicks_so_far(points, list(trained.classes.names))
    found = Suggestions(request, trained.classes, made, out.parent / f"{out.stem}_overlays")
    layers: list[tuple[str, list[Suggestion], GeoRef]] = []
    if rasters:
        predictor = trained.predictor(request.flips, request.backend, request.int8, precision=request.precision)
        sources = [predictor.raster_source((r,)) for r in rasters]
        if made is not None:
            ids = [s.refs[0].id for s in sources]
            if set(made.images) - set(ids):
                raise ValueError(f"{points}: clicks on rasters {sorted(set(made.images) - set(ids))}, which are not "
                                 f"among --raster {ids}; give the rasters the clicks were made on")
            check_against(made, ids, {s.refs[0].id: s.size(s.refs[0]) for s in sources if s.refs[0].id in made.images},
                          list(trained.classes.names))
        out.parent.mkdir(parents=True, exist_ok=True)
        for raster in rasters:
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=".suggest-") as tmp:
                image, georef = score_raster(predictor, Path(raster), request.score, Path(tmp))
            layers.append((image.id, found.add(image), georef))
    else:
        assert data_root is not None
        for image in score_tiles(trained, data_root, split, made, request):
            found.add(image)
    meta = {"suggested": {"run": str(run), "per_image": request.per_image, "score": request.score,
                          "min_distance": request.min_distance, "class_weight": request.class_weight,
                          "flips": request.flips, "clicks_so_far": str(points) if points else None}}
    suggested = found.point_set(meta)
    save_points(out, suggested)
    if layers:
        write_suggestion_layers(out.with_suffix(".gpkg"), layers, list(trained.classes.names))
    return suggested


def write_suggestion_layers(path: Path, layers: list[tuple[str, list[Suggestion], GeoRef]], names: list[str]
                            ) -> None:
    """A GeoPackage with one point layer per raster (its CRS): rank, score, the model's class and an empty
    ``class`` field for the analyst."""
    import pyogrio
    import shapely
    from rasterio.transform import Affine, xy

    with atomic_path(path) as tmp:
        tmp.unlink()
        for i, (name, found, geo) in enumerate(layers):
            transform = Affine(*geo.transform) if geo.transform else Affine.identity()
            xs, ys = xy(transform, [s.row for s in found], [s.col for s in found], offset="center")
            geometry = shapely.to_wkb(shapely.points(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)))
            fields = [np.arange(1, len(found) + 1), np.array([s.score for s in found]),
                      np.array([names[s.predicted] for s in found], dtype=object),
                      np.array([""] * len(found), dtype=object)]
            pyogrio.raw.write(str(tmp), geometry, fields, ["rank", "score", "model_class", "class"], layer=name,
                              driver="GPKG", geometry_type="Point", crs=geo.crs, append=i > 0)
